"""DeepLIFT and LRP on transformers, MLP-Mixers, GroupNorm CNNs and RNNs.

What each rule promises (jaxplain.methods.rules' docstring) and is checked here:

* DeepLIFT sums to F(x) - F(x') exactly, through LayerNorm / RMSNorm / GroupNorm, softmax
  attention, GELU written out in primitives, products of two inputs and lax.scan, with
  biases, class tokens and position embeddings: its multipliers carry every difference.
* LRP with attention="constant" (Ali et al. 2022: normalising factors and attention
  weights held) and epsilon -> 0 sums to F(x) on a network without biases or other
  constant terms (a zero class token, no position embeddings).
* LRP-0 is gradient x input of the model with the held values stop-gradiented, and with
  attention="attnlrp" also with every product of two inputs split in halves
  (u * v -> (u * sg(v) + sg(u) * v) / 2): checked against a transformer written out by
  hand with those stop-gradients, an implementation that shares no code with the
  interpreter.
* An RNN run by lax.scan gives the same attributions as the same cell in a Python loop.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import jaxplain
from jaxplain.methods import rules


def _sums(values):
    return np.asarray(values).reshape(values.shape[0], -1).sum(axis=1)


@jax.jit
def _forward(model, x):
    return model(x)


def _outputs(model, x, target):
    return np.asarray(_forward(model, jnp.asarray(x)))[:, target]


# ---------------------------------------------------------------------------------------
# Models in the styles of vision_transformer, big_vision and the Flax examples


class Block(nn.Module):
    pre_norm: bool = True
    bias: bool = True
    norm: str = "layer"

    def _norm(self):
        if self.norm == "rms":
            return nn.RMSNorm()
        return nn.LayerNorm(use_bias=self.bias)

    @nn.compact
    def __call__(self, x):
        width = x.shape[-1]
        attention = nn.MultiHeadDotProductAttention(num_heads=2, use_bias=self.bias)

        def mlp(h):
            h = nn.gelu(nn.Dense(2 * width, use_bias=self.bias)(h))
            return nn.Dense(width, use_bias=self.bias)(h)

        if self.pre_norm:
            x = x + attention(self._norm()(x))
            return x + mlp(self._norm()(x))
        x = self._norm()(x + attention(x))
        return self._norm()(x + mlp(x))


class TinyViT(nn.Module):
    """Patch embedding, class token, position embeddings, `depth` blocks, head on the class token."""

    pre_norm: bool = True
    bias: bool = True
    norm: str = "layer"
    num_classes: int = 3
    depth: int = 1

    @nn.compact
    def __call__(self, x, train: bool = False):
        b = x.shape[0]
        tokens = nn.Conv(8, (2, 2), strides=(2, 2), use_bias=self.bias)(x).reshape(b, -1, 8)
        init = nn.initializers.normal(0.5) if self.bias else nn.initializers.zeros
        cls = self.param("cls", init, (1, 1, 8))
        tokens = jnp.concatenate([jnp.broadcast_to(cls, (b, 1, 8)), tokens], axis=1)
        if self.bias:
            tokens = tokens + self.param("position", nn.initializers.normal(0.5), (1, tokens.shape[1], 8))
        for _ in range(self.depth):
            tokens = Block(self.pre_norm, self.bias, self.norm)(tokens)
        out = nn.LayerNorm(use_bias=self.bias)(tokens[:, 0]) if self.norm == "layer" else tokens[:, 0]
        return nn.Dense(self.num_classes, use_bias=self.bias)(out)


class MixerBlock(nn.Module):
    bias: bool = True

    @nn.compact
    def __call__(self, x):
        h = jnp.swapaxes(nn.LayerNorm(use_bias=self.bias)(x), 1, 2)
        h = nn.Dense(x.shape[1], use_bias=self.bias)(nn.gelu(nn.Dense(8, use_bias=self.bias)(h)))
        x = x + jnp.swapaxes(h, 1, 2)
        h = nn.LayerNorm(use_bias=self.bias)(x)
        return x + nn.Dense(x.shape[-1], use_bias=self.bias)(nn.gelu(nn.Dense(16, use_bias=self.bias)(h)))


class TinyMixer(nn.Module):
    bias: bool = True
    depth: int = 1

    @nn.compact
    def __call__(self, x):
        b = x.shape[0]
        x = nn.Conv(8, (2, 2), strides=(2, 2), use_bias=self.bias)(x).reshape(b, -1, 8)
        for _ in range(self.depth):
            x = MixerBlock(self.bias)(x)
        x = nn.LayerNorm(use_bias=self.bias)(x).mean(axis=1)
        return nn.Dense(3, use_bias=self.bias)(x)


class StdConv(nn.Conv):
    """big_vision's weight-standardised convolution."""

    def param(self, name, *args, **kwargs):
        param = super().param(name, *args, **kwargs)
        if name == "kernel":
            param = param - param.mean(axis=(0, 1, 2))
            param = param / (param.std(axis=(0, 1, 2)) + 1e-5)
        return param


class GroupNormCNN(nn.Module):
    """BiT-style: bias-free standardised convolutions, GroupNorm, ReLU, global average pool."""

    bias: bool = True

    @nn.compact
    def __call__(self, x):
        x = StdConv(8, (3, 3), use_bias=False)(x)
        x = nn.relu(nn.GroupNorm(num_groups=2, use_bias=self.bias)(x))
        x = StdConv(8, (3, 3), use_bias=False)(x)
        x = nn.relu(nn.GroupNorm(num_groups=4, use_bias=self.bias)(x))
        return nn.Dense(3, use_bias=self.bias)(x.mean(axis=(1, 2)))


def _model(module, x, seed=0):
    variables = jax.jit(module.init)(jax.random.key(seed), jnp.asarray(x))
    return jaxplain.Model.from_linen(module, variables)


# one family of each kind in the default tier, all of them in the slow tier
FAST = {"groupnorm_cnn"}


def _tiered(names, fast):
    return [name if name in fast else pytest.param(name, marks=pytest.mark.slow) for name in sorted(names)]


IMAGES = {
    "vit_pre_norm": lambda bias: TinyViT(pre_norm=True, bias=bias),
    "vit_post_norm": lambda bias: TinyViT(pre_norm=False, bias=bias),
    "vit_rms_norm": lambda bias: TinyViT(norm="rms", bias=bias),
    "vit_two_blocks": lambda bias: TinyViT(bias=bias, depth=2),
    "mixer": lambda bias: TinyMixer(bias=bias),
    "groupnorm_cnn": lambda bias: GroupNormCNN(bias=bias),
}


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(0).normal(size=(2, 4, 4, 1)).astype(np.float32)


# the default tier checks DeepLIFT's exactness on the hand-written transformer below
@pytest.mark.parametrize("name", _tiered(IMAGES, set()))
def test_deeplift_sums_to_the_output_difference(name, images):
    # in float64: in float32 the secants of nearly equal values fall back to derivatives,
    # which leaves gaps of ~1e-4 relative
    with jax.enable_x64(True):
        images = images.astype(np.float64)
        model = _model(IMAGES[name](True), images)
        baseline = 0.3 * np.random.default_rng(1).normal(size=images.shape[1:])
        result = rules.deeplift(model, images, target=1, baseline=baseline)
        expected = _outputs(model, images, 1) - _outputs(model, baseline[None], 1)
        np.testing.assert_allclose(result.output_difference, expected, rtol=1e-6)  # float32 parameters
        np.testing.assert_allclose(_sums(result.values), expected, rtol=1e-6, atol=1e-9)
        assert float(np.abs(result.values).max()) > 0


@pytest.mark.parametrize("name", _tiered(IMAGES, FAST))
def test_lrp_holding_attention_and_norms_conserves_without_constant_terms(name, images):
    model = _model(IMAGES[name](False), images)
    result = rules.lrp(model, images, target=0)
    np.testing.assert_allclose(_sums(result.values), _outputs(model, images, 0), rtol=2e-4, atol=2e-5)
    np.testing.assert_allclose(result.delta, 0.0, atol=5e-5)


@pytest.mark.slow  # a second DeepLIFT program on the ViT
def test_deeplift_from_a_zero_baseline_through_norms_of_a_zero_input(images):
    # LayerNorm of the zero reference divides by sqrt(eps): its factor is huge there, the
    # multipliers are still exact
    model = _model(TinyViT(bias=True), images)
    result = rules.deeplift(model, images, target=2)
    np.testing.assert_allclose(_sums(result.values), result.output_difference, rtol=2e-4, atol=2e-5)


@pytest.mark.slow  # four LRP programs on the ViT; the conservation tests run the default rule
def test_lrp_runs_every_rule_on_a_transformer(images):
    model = _model(TinyViT(bias=True), images)
    for options in (
        {"rule": "gamma"},
        {"rule": "alpha1beta0"},
        {"rule": "epsilon", "epsilon": 0.1, "attention": "attnlrp"},
        {"rule": "zbox", "low": -4.0, "high": 4.0},
    ):
        values = rules.lrp(model, images, target=0, **options).values
        assert values.shape == images.shape and np.all(np.isfinite(values)), options


def test_lrp_attention_option_is_checked(images):
    model = _model(TinyViT(bias=False), images)
    with pytest.raises(ValueError, match="attention must be one of"):
        rules.lrp(model, images, target=0, attention="rollout")


# ---------------------------------------------------------------------------------------
# LRP-0 against gradient x input of a hand-written transformer with stop-gradients


def _hand_transformer(params, x, mode=None):
    """A one-block pre-LN causal transformer on (batch, tokens, width) with biases, written out.

    mode None: the model. "constant": LayerNorm's 1/std and the attention weights
    stop-gradiented, GELU as z * sg(gelu(z) / z). "attnlrp": the same for the norms and
    GELU, the softmax kept, and the two products q.k and a.v split in halves.
    """
    sg = jax.lax.stop_gradient

    def norm(h, scale):
        centred = h - h.mean(-1, keepdims=True)
        factor = jax.lax.rsqrt((centred**2).mean(-1, keepdims=True) + 1e-6)
        return centred * (factor if mode is None else sg(factor)) * scale

    def gelu(z):
        return jax.nn.gelu(z) if mode is None else z * sg(jax.nn.gelu(z) / z)

    def product(spec, u, v):
        if mode == "attnlrp":
            return (jnp.einsum(spec, u, sg(v)) + jnp.einsum(spec, sg(u), v)) / 2
        return jnp.einsum(spec, u, v)

    h = norm(x, params["scale1"])
    q, k, v = (jnp.einsum("btd,dhe->bthe", h, params[n]) + params[n + "_bias"] for n in "qkv")
    logits = product("bqhe,bkhe->bhqk", q, k) / np.sqrt(q.shape[-1])
    causal = jnp.tril(jnp.ones((x.shape[1], x.shape[1]), bool))  # masked as flax masks
    weights = jax.nn.softmax(jnp.where(causal, logits, jnp.finfo(logits.dtype).min), axis=-1)
    if mode == "constant":
        weights = sg(weights)
    attended = product("bhqk,bkhe->bqhe", weights, v)
    x = x + jnp.einsum("bthe,hed->btd", attended, params["out"]) + params["out_bias"]
    h = gelu(norm(x, params["scale2"]) @ params["up"] + params["up_bias"])
    x = x + h @ params["down"]
    return x.mean(axis=1) @ params["head"] + params["head_bias"]


def _hand_params(rng, width=6, heads=2, depth=3):
    def normal(*shape):
        return jnp.asarray(rng.normal(size=shape, scale=0.7).astype(np.float32))

    params = {n: normal(width, heads, depth) for n in "qkv"}
    params.update({n + "_bias": normal(heads, depth) for n in "qkv"})
    params.update(
        scale1=normal(width),
        scale2=normal(width),
        out=normal(heads, depth, width),
        out_bias=normal(width),
        up=normal(width, 12),
        up_bias=normal(12),
        down=normal(12, width),
        head=normal(width, 3),
        head_bias=normal(3),
    )
    return params


@pytest.mark.parametrize("attention", ["constant", "attnlrp"])
def test_lrp_zero_is_gradient_times_input_of_the_stop_gradient_transformer(attention, rng):
    params = _hand_params(rng)
    x = jnp.asarray(rng.normal(size=(2, 4, 6)).astype(np.float32))
    model = jaxplain.Model(_hand_transformer, params)
    result = rules.lrp(model, x, target=1, epsilon=1e-12, attention=attention)

    def surrogate(x):
        return _hand_transformer(params, x, mode=attention)[:, 1].sum()

    np.testing.assert_allclose(jax.jit(surrogate)(x), _outputs(model, x, 1).sum(), rtol=1e-5)
    expected = x * jax.jit(jax.grad(surrogate))(x)
    np.testing.assert_allclose(result.values, expected, rtol=2e-3, atol=2e-5)


def test_deeplift_on_the_hand_transformer_sums_to_delta_far_from_and_near_the_reference(rng):
    with jax.enable_x64(True):  # differences of 1e-3 need more than float32's digits
        params = jax.tree_util.tree_map(lambda a: a.astype(jnp.float64), _hand_params(rng))
        x = jnp.asarray(rng.normal(size=(2, 4, 6)))
        model = jaxplain.Model(_hand_transformer, params)
        for scale in (0.5, 1e-3):
            reference = x + scale * jnp.asarray(rng.normal(size=x.shape))
            result = rules.deeplift(model, x, target=0, baseline=reference)
            np.testing.assert_allclose(_sums(result.values), result.output_difference, rtol=1e-9)


# ---------------------------------------------------------------------------------------
# Scan, NNX, and what is refused


class LoopedLSTM(nn.Module):
    scan: bool = True

    @nn.compact
    def __call__(self, x):
        cell = nn.OptimizedLSTMCell(6, name="cell")
        if self.scan:
            carry, outputs = nn.RNN(cell, return_carry=True)(x)
        else:
            carry = cell.initialize_carry(jax.random.key(0), x[:, 0].shape)
            for t in range(x.shape[1]):
                carry, _ = cell(carry, x[:, t])
        return nn.Dense(2)(carry[1])


@pytest.mark.parametrize("method", ["deeplift", pytest.param("lrp", marks=pytest.mark.slow)])
def test_an_rnn_under_scan_equals_the_same_cell_in_a_python_loop(method, rng):
    x = rng.normal(size=(2, 3, 3)).astype(np.float32)
    variables = jax.jit(LoopedLSTM(scan=True).init)(jax.random.key(0), jnp.asarray(x))
    scanned = jaxplain.Model.from_linen(LoopedLSTM(scan=True), variables)
    looped = jaxplain.Model.from_linen(LoopedLSTM(scan=False), variables)
    np.testing.assert_allclose(scanned(jnp.asarray(x)), looped(jnp.asarray(x)), rtol=1e-5, atol=1e-6)
    run = getattr(rules, method)
    ours, theirs = run(scanned, x, target=1), run(looped, x, target=1)
    np.testing.assert_allclose(ours.values, theirs.values, rtol=1e-4, atol=1e-6)
    if method == "deeplift":
        # the LSTM's gates are products of two x-dependent values: the split is exact
        np.testing.assert_allclose(_sums(ours.values), ours.output_difference, rtol=1e-4, atol=1e-6)


class NnxBlock(nnx.Module):
    def __init__(self, rngs):
        self.norm = nnx.LayerNorm(6, rngs=rngs)
        self.attention = nnx.MultiHeadAttention(num_heads=2, in_features=6, decode=False, rngs=rngs)
        self.up = nnx.Linear(6, 12, rngs=rngs)
        self.head = nnx.Linear(6, 3, rngs=rngs)

    def __call__(self, x):
        x = x + self.attention(self.norm(x))
        x = x + self.up(x)[..., :6] * nnx.gelu(self.up(x)[..., 6:])  # a gated unit
        return self.head(x.mean(axis=1))


def test_nnx_transformer_with_a_gated_unit(rng):
    model = jaxplain.Model.from_nnx(NnxBlock(nnx.Rngs(0)))
    x = rng.normal(size=(2, 4, 6)).astype(np.float32)
    lifted = rules.deeplift(model, x, target=2, baseline=0.1)
    np.testing.assert_allclose(_sums(lifted.values), lifted.output_difference, rtol=2e-4, atol=2e-5)
    assert np.all(np.isfinite(rules.lrp(model, x, target=2, attention="attnlrp").values))


def test_a_while_loop_is_refused_with_the_reason(rng):
    def looped(w, x):
        return jax.lax.while_loop(lambda c: c[0] < 3, lambda c: (c[0] + 1, jnp.tanh(c[1] @ w)), (0, x))[1]

    model = jaxplain.Model(looped, jnp.eye(3))
    with pytest.raises(ValueError, match="deeplift cannot propagate through `while`.*not interpreted"):
        rules.deeplift(model, np.ones((2, 3), np.float32), target=0)


@pytest.mark.slow  # the shipped model: a bigger program than the tests' own ViTs
def test_the_shipped_vit():
    digits = jaxplain.load_model("digits_vit")
    x = np.asarray(jaxplain.data.load("digits").x_test[:3], np.float32)
    lifted = rules.deeplift(digits, x, target="predicted")
    np.testing.assert_allclose(_sums(lifted.values), lifted.output_difference, rtol=1e-3, atol=1e-4)
    for attention in ("constant", "attnlrp"):
        relevance = rules.lrp(digits, x, target="predicted", attention=attention)
        assert np.all(np.isfinite(relevance.values)) and float(np.abs(relevance.values).max()) > 0
