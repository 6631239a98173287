"""Attention rollout, attention flow and gradient-weighted attention.

Each is checked against a slow float64 implementation written here from the papers, on
attention weights captured another way: Flax's own `sow_weights=True` intermediates
(Linen `nn.MultiHeadDotProductAttention`, NNX `nnx.MultiHeadAttention`) or a model that
sows its hand-written attention and takes an additive perturbation of it, so that the
gradients with respect to the attention maps come from `jax.grad`. Max flows are checked
against minimum cuts found by enumeration (max-flow min-cut) and against networkx.
"""

import doctest
import itertools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import jaxplain
from jaxplain.methods import attention

WIDTH = 8


class Block(nn.Module):
    """A pre-LN ViT block: multi-head self-attention and an MLP, each with a residual."""

    sow_weights: bool = False

    @nn.compact
    def __call__(self, x):
        y = nn.LayerNorm()(x)
        x = x + nn.MultiHeadDotProductAttention(num_heads=2, qkv_features=WIDTH)(
            y, sow_weights=self.sow_weights
        )
        return x + nn.Dense(WIDTH)(nn.gelu(nn.Dense(2 * WIDTH)(nn.LayerNorm()(x))))


class ViT(nn.Module):
    """Patch embedding (a strided conv), an optional class token, position embeddings,
    two blocks, a linear head on the class token (or the mean token without one)."""

    patch: int = 2
    class_token: bool = True
    sow_weights: bool = False

    @nn.compact
    def __call__(self, images):
        x = nn.Conv(WIDTH, (self.patch, self.patch), strides=(self.patch, self.patch), name="patches")(images)
        x = x.reshape(x.shape[0], -1, WIDTH)
        if self.class_token:
            cls = self.param("cls", nn.initializers.normal(1.0), (1, 1, WIDTH))
            x = jnp.concatenate([jnp.broadcast_to(cls, (x.shape[0], 1, WIDTH)), x], axis=1)
        x = x + self.param("position", nn.initializers.normal(1.0), (1, x.shape[1], WIDTH))
        for i in range(2):
            x = Block(self.sow_weights, name=f"block{i}")(x)
        pooled = x[:, 0] if self.class_token else x.mean(axis=1)
        return nn.Dense(3, name="head")(nn.LayerNorm()(pooled))


class TextAttention(nn.Module):
    """Token ids, hand-written two-head attention with a padding mask (id 0), two layers,
    a head on the first token. Each layer sows its attention weights and adds
    `perturbations[l]` to them when given: what the reference gradients differentiate."""

    heads: int = 2
    layers: int = 2

    @nn.compact
    def __call__(self, tokens, perturbations=None, lengths=None):
        x = nn.Embed(11, WIDTH)(tokens)
        keep = tokens != 0 if lengths is None else jnp.arange(tokens.shape[1]) < lengths[:, None]
        keep = keep[:, None, None, :]
        for layer in range(self.layers):
            q, k, v = (nn.DenseGeneral((self.heads, WIDTH // self.heads))(x) for _ in range(3))
            logits = jnp.einsum("bqhd,bkhd->bhqk", q, k) / np.sqrt(WIDTH // self.heads)
            weights = jax.nn.softmax(jnp.where(keep, logits, -1e9), axis=-1)
            self.sow("intermediates", "weights", weights)
            if perturbations is not None:
                weights = weights + perturbations[layer]
            mixed = jnp.einsum("bhqk,bkhd->bqhd", weights, v).reshape(x.shape)
            x = x + nn.Dense(WIDTH)(mixed)
            x = x + nn.Dense(WIDTH)(jnp.tanh(nn.Dense(WIDTH)(x)))
        return nn.Dense(3)(x[:, 0])


class NnxEncoder(nnx.Module):
    """Embeddings (batch, T, 3) -> two nnx.MultiHeadAttention layers -> mean -> 3 classes."""

    def __init__(self, rngs):
        self.embed = nnx.Linear(3, WIDTH, rngs=rngs)
        self.attention0 = nnx.MultiHeadAttention(num_heads=2, in_features=WIDTH, decode=False, rngs=rngs)
        self.attention1 = nnx.MultiHeadAttention(num_heads=2, in_features=WIDTH, decode=False, rngs=rngs)
        self.head = nnx.Linear(WIDTH, 3, rngs=rngs)

    def __call__(self, x):
        h = self.embed(x)
        h = h + self.attention0(h)
        h = h + self.attention1(h)
        return self.head(h.mean(axis=1))


# Compiled once per module and shape (eagerly, every operation would compile on its own).
SCORES = jax.jit(lambda model, x: model(x))
INIT = jax.jit(lambda module, key, x: module.init(key, x), static_argnums=0)
SOWN = jax.jit(lambda module, v, x: module.apply(v, x, mutable=["intermediates"])[1], static_argnums=0)
IMAGES = np.random.default_rng(0).normal(size=(2, 4, 6, 3)).astype(np.float32)  # 2 x 3 patches of 2
TOKENS = np.array([[1, 5, 2, 7, 0], [1, 3, 3, 9, 4]], np.int32)  # 0 pads


def _vit(x=IMAGES, **config):
    module = ViT(**config)
    variables = INIT(module, jax.random.PRNGKey(0), x[:1])
    return module, variables, jaxplain.Model.from_linen(module, variables)


def _text():
    module = TextAttention()
    variables = INIT(module, jax.random.PRNGKey(1), TOKENS[:1])
    return module, variables, jaxplain.Model.from_linen(module, variables)


def _vit_weights(module, variables, x):
    """Each block's attention weights (B, heads, N, N) as Flax sows them."""
    state = SOWN(module.clone(sow_weights=True), variables, x)
    blocks = state["intermediates"]
    return [
        np.asarray(blocks[f"block{i}"]["MultiHeadDotProductAttention_0"]["attention_weights"][0], np.float64)
        for i in range(2)
    ]


def _text_weights(module, variables, x):
    state = SOWN(module, variables, x)
    return [np.asarray(w, np.float64) for w in state["intermediates"]["weights"]]


def _nnx_weights(encoder, x):
    """NnxEncoder's attention weights (B, heads, N, N), by hand in float64 from its
    parameters (checked by its output)."""

    def read(variable):
        return np.asarray(variable[...], np.float64)

    h = x.astype(np.float64) @ read(encoder.embed.kernel) + read(encoder.embed.bias)
    weights = []
    for layer in (encoder.attention0, encoder.attention1):
        q, k, v = (
            np.einsum("btd,dhe->bthe", h, read(dense.kernel)) + read(dense.bias)
            for dense in (layer.query, layer.key, layer.value)
        )
        logits = np.einsum("bqhe,bkhe->bhqk", q, k) / np.sqrt(q.shape[-1])
        w = np.exp(logits - logits.max(axis=-1, keepdims=True))
        weights.append(w / w.sum(axis=-1, keepdims=True))
        mixed = np.einsum("bhqk,bkhe->bqhe", weights[-1], v)
        h = h + np.einsum("bqhe,heo->bqo", mixed, read(layer.out.kernel)) + read(layer.out.bias)
    logits = h.mean(axis=1) @ read(encoder.head.kernel) + read(encoder.head.bias)
    np.testing.assert_allclose(logits, SCORES(jaxplain.Model.from_nnx(encoder), x), rtol=1e-4, atol=1e-5)
    return weights


# --- float64 references, from the papers ------------------------------------------------


def _reference_layers(weights, head_fusion="mean", residual=0.5):
    """A_hat per layer (B, N, N): heads fused, residual mixed in, rows renormalised."""
    fuse = {"mean": np.mean, "max": np.max, "min": np.min}[head_fusion]
    layers = []
    for w in weights:
        fused = fuse(w.reshape(w.shape[0], -1, *w.shape[-2:]), axis=1)
        mixed = residual * np.eye(fused.shape[-1]) + (1 - residual) * fused
        layers.append(mixed / mixed.sum(axis=-1, keepdims=True))
    return layers


def _reference_rollout(weights, query, **settings):
    rollout = None
    for layer in _reference_layers(weights, **settings):
        rollout = layer if rollout is None else layer @ rollout
    return rollout.mean(axis=1) if query == "mean" else rollout[:, query]


def _min_cut(layers, query, sink):
    """Max flow by max-flow min-cut: the cheapest cut over every set of middle nodes."""
    depth, tokens = len(layers), layers[0].shape[-1]
    nodes = [(level, i) for level in range(depth + 1) for i in range(tokens)]
    source, target = (depth, query), (0, sink)
    free = [n for n in nodes if n not in (source, target)]
    best = np.inf
    for chosen in itertools.product((False, True), repeat=len(free)):
        side = {source} | {n for n, c in zip(free, chosen) if c}
        cut = sum(
            layers[level - 1][i, j]
            for level, i in side
            if level > 0
            for j in range(tokens)
            if (level - 1, j) not in side
        )
        best = min(best, cut)
    return best


def _spread(tokens, class_token, patch, shape):
    """Token relevance (B, N) as (B, H, W): each pixel its patch's value (np.kron)."""
    patches = tokens[:, 1:] if class_token else tokens
    grid = patches.reshape(tokens.shape[0], shape[1] // patch, shape[2] // patch)
    return np.stack([np.kron(g, np.ones((patch, patch))) for g in grid])


# --- rollout ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "settings",
    [{}, pytest.param({"head_fusion": "max", "residual": 0.3, "query": 4}, marks=pytest.mark.slow)],
)
def test_rollout_equals_a_hand_computed_rollout_of_flax_attention_weights(settings):
    """The acceptance check: a 2-layer ViT's rollout equals the float64 rollout of the
    attention weights Flax sows, and spreads each patch's value over its 2 x 2 pixels."""
    module, variables, model = _vit()
    result = jaxplain.attention_rollout(model, IMAGES, **settings)
    query = settings.get("query", 0)
    options = {k: v for k, v in settings.items() if k != "query"}
    expected = _reference_rollout(_vit_weights(module, variables, IMAGES), query, **options)
    np.testing.assert_allclose(result.extras["tokens"], expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(result.values, _spread(expected, True, 2, IMAGES.shape), rtol=1e-5, atol=1e-6)
    assert result.values.shape == IMAGES.shape[:3]
    np.testing.assert_array_equal(result.target, np.argmax(SCORES(model, IMAGES), axis=1))
    if query != "mean":  # the query's row of a product of row-stochastic matrices
        np.testing.assert_allclose(result.extras["tokens"].sum(axis=1), 1.0, rtol=1e-5)


def test_rollout_of_nnx_attention_and_of_hand_written_attention_over_tokens():
    """nnx.MultiHeadAttention (its weights computed inside jax.nn.dot_product_attention,
    with a head-group axis before the batch axis) and a Linen model's own softmax over
    token ids with a padding mask: both equal the float64 rollout of their weights
    (computed by hand from the NNX parameters; sown by the Linen model)."""
    encoder = NnxEncoder(nnx.Rngs(0))
    x = np.random.default_rng(2).normal(size=(2, 5, 3)).astype(np.float32)
    weights = _nnx_weights(encoder, x)
    result = jaxplain.attention_rollout(jaxplain.Model.from_nnx(encoder), x, query="mean")
    assert result.values.shape == (2, 5)
    np.testing.assert_allclose(result.values, _reference_rollout(weights, "mean"), rtol=1e-5, atol=1e-6)

    module, variables, model = _text()
    result = jaxplain.attention_rollout(model, TOKENS, residual=0.2)
    expected = _reference_rollout(_text_weights(module, variables, TOKENS), 0, residual=0.2)
    np.testing.assert_allclose(result.values, expected, rtol=1e-5, atol=1e-6)
    assert float(result.values[0, 4]) < 1e-6  # the padding token is never attended to


# --- flow ---------------------------------------------------------------------------------


def test_max_flows_equal_minimum_cuts_and_networkx():
    """On 2-layer 3-token graphs the flow equals the cheapest cut found by enumerating
    every cut; on a 3-layer 5-token graph, networkx's max flow (if installed)."""
    rng = np.random.default_rng(3)
    for query in range(3):
        layers = _reference_layers([rng.dirichlet(np.ones(3), size=(1, 3)) for _ in range(2)], residual=0.3)
        layers = [layer[0] for layer in layers]
        flows = attention.max_flows(np.stack(layers), query=query)
        expected = [_min_cut(layers, query, sink) for sink in range(3)]
        np.testing.assert_allclose(flows, expected, atol=1e-6)
    nx = pytest.importorskip("networkx")
    capacities = rng.dirichlet(np.ones(5) * 0.5, size=(3, 5))
    graph = nx.DiGraph()
    for level, i, j in itertools.product(range(3), range(5), range(5)):
        graph.add_edge((level + 1, i), (level, j), capacity=capacities[level, i, j])
    expected = [nx.maximum_flow_value(graph, (3, 2), (0, sink)) for sink in range(5)]
    np.testing.assert_allclose(attention.max_flows(capacities, query=2), expected, atol=1e-6)


@pytest.mark.slow  # the default tier keeps rollout, Chefer's rule and max flows on small graphs
def test_attention_flow_is_the_max_flow_through_the_models_attention():
    """A 2-layer ViT's flow from its class token equals the minimum cut of the float64
    layers built from Flax's sown weights; a flow is bounded by the query's first cut
    and the flows of one example never exceed 1 each."""
    x = IMAGES[:1, :2, :4]  # 1 x 2 patches and a class token: 3 tokens
    module, variables, model = _vit(x)
    result = jaxplain.attention_flow(model, x, residual=0.4)
    layers = _reference_layers(_vit_weights(module, variables, x), residual=0.4)
    expected = np.array([[_min_cut([layer[0] for layer in layers], 0, sink) for sink in range(3)]])
    np.testing.assert_allclose(result.extras["tokens"], expected, atol=1e-6)
    np.testing.assert_allclose(result.values, _spread(expected, True, 2, x.shape), atol=1e-6)
    assert result.values.shape == (1, 2, 4)


# --- gradient-weighted attention ------------------------------------------------------------


def test_gradient_weighted_attention_equals_chefers_rule_with_jax_grad():
    """Chefer et al.'s rule in float64 on the sown weights and jax.grad of the target
    logit with respect to an additive perturbation of each attention map, for two
    targets per example in one pass."""
    module, variables, model = _text()
    targets = np.array([[0, 2], [1, 0]])
    result = jaxplain.gradient_weighted_attention(model, TOKENS, target=targets)
    weights = _text_weights(module, variables, TOKENS)
    zeros = [jnp.zeros(w.shape, jnp.float32) for w in weights]
    for j in range(targets.shape[1]):

        def chosen(perturbations, j=j):
            logits = module.apply(variables, TOKENS, perturbations)
            return logits[np.arange(2), targets[:, j]].sum()

        grads = [np.asarray(g, np.float64) for g in jax.jit(jax.grad(chosen))(zeros)]
        relevance = np.broadcast_to(np.eye(5), (2, 5, 5))
        for w, g in zip(weights, grads):
            relevance = relevance + np.maximum(g * w, 0).mean(axis=1) @ relevance
        expected = (relevance - np.eye(5))[:, 0]
        np.testing.assert_allclose(result.values[:, j], expected, rtol=1e-4, atol=1e-7)
    np.testing.assert_array_equal(result.target, targets)
    assert np.abs(result.values).max() > 1e-3


def test_gradient_weighted_attention_on_images_leaves_out_the_class_token():
    _, _, model = _vit()
    result = jaxplain.gradient_weighted_attention(model, IMAGES, target=1)
    tokens = np.asarray(result.extras["tokens"])
    assert tokens.shape == (2, 7) and result.values.shape == (2, 4, 6)
    np.testing.assert_allclose(result.values, _spread(tokens, True, 2, IMAGES.shape))
    assert (tokens >= 0).all()  # sums and products of non-negative maps


@pytest.mark.slow  # the default tier keeps rollout, Chefer's rule and max flows on small graphs
def test_a_model_without_class_token_maps_every_token_to_its_patch():
    """Global-average pooling, 6 patch tokens: the mean row of a min-fused rollout equals
    the reference and spreads all six tokens; query='cls' is refused."""
    module, variables, model = _vit(class_token=False)
    result = jaxplain.attention_rollout(model, IMAGES, head_fusion="min", query="mean")
    expected = _reference_rollout(_vit_weights(module, variables, IMAGES), "mean", head_fusion="min")
    np.testing.assert_allclose(result.extras["tokens"], expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(result.values, _spread(expected, False, 2, IMAGES.shape), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="query='cls': ViT has no class token"):
        jaxplain.attention_rollout(model, IMAGES)


@pytest.mark.slow  # the default tier keeps rollout, Chefer's rule and max flows on small graphs
def test_model_kwargs_give_each_example_its_own_arguments():
    """With model_kwargs (per-example lengths), each example gets what the method gives
    it alone, for a model with its length built in."""
    module, variables, model = _text()
    lengths = np.array([3, 5], np.int32)
    together = jaxplain.gradient_weighted_attention(
        model, TOKENS, target=2, model_kwargs={"lengths": lengths}
    )
    for i, length in enumerate(lengths):
        alone = jaxplain.Model.from_linen(
            module,
            variables,
            method=lambda m, t, length=length: m(t, lengths=jnp.full((t.shape[0],), length)),
        )
        expected = jaxplain.gradient_weighted_attention(alone, TOKENS[i : i + 1], target=2)
        np.testing.assert_allclose(together.values[i], expected.values[0], rtol=1e-5, atol=1e-7)
        assert float(np.abs(together.values[i, length:]).max(initial=0)) < 1e-6  # masked tokens


# --- errors -------------------------------------------------------------------------------


class Mlp(nn.Module):
    @nn.compact
    def __call__(self, x):
        return nn.Dense(3)(x.reshape(x.shape[0], -1))


def test_errors_name_the_argument_or_the_model():
    variables = Mlp().init(jax.random.PRNGKey(0), IMAGES[:1])
    mlp = jaxplain.Model.from_linen(Mlp(), variables, output="probs")
    with pytest.raises(ValueError, match=r"Mlp has no self-attention maps.*\(2, 3\) over axes \(1,\)"):
        jaxplain.attention_rollout(mlp, IMAGES)
    _, _, model = _vit()
    with pytest.raises(ValueError, match="head_fusion must be one of"):
        jaxplain.attention_rollout(model, IMAGES, head_fusion="median")
    with pytest.raises(ValueError, match=r"residual must be in \[0.0, 1.0\]"):
        jaxplain.attention_flow(model, IMAGES, residual=1.5)
    with pytest.raises(ValueError, match="query must be 'cls', 'mean' or a token index"):
        jaxplain.gradient_weighted_attention(model, IMAGES, target=0, query=-1)
    with pytest.raises(ValueError, match="query must be 'cls' or a token index"):
        jaxplain.attention_flow(model, IMAGES, query="mean")
    with pytest.raises(ValueError, match="query 7 is not one of ViT's 7 tokens"):
        jaxplain.attention_rollout(model, IMAGES, query=7)
    with pytest.raises(ValueError, match="target holds"):
        jaxplain.gradient_weighted_attention(model, IMAGES, target=3)
    _, _, text = _text()
    padded = jaxplain.Model(
        lambda params, x: text.apply_fn(params, jnp.pad(x, ((0, 0), (0, 2)))), text.params
    )
    with pytest.raises(ValueError, match="attends over 6 tokens but x has 4 positions"):
        jaxplain.attention_rollout(padded, TOKENS[:, :4])

    def five_tokens(params, images):  # 5 tokens: not the patches of 4 x 6 pixels (+ 1)
        return text.apply_fn(params, jnp.broadcast_to(jnp.asarray(TOKENS[:1]), (images.shape[0], 5)))

    with pytest.raises(ValueError, match="attends over 5 tokens, which are not the square patches"):
        jaxplain.attention_rollout(jaxplain.Model(five_tokens, text.params), IMAGES)


def test_docstring_examples():
    result = doctest.testmod(attention, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0
