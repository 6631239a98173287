"""Layer and neuron attributions: closed forms, completeness, Captum's layer-IG semantics,
FullGrad's exact decomposition, several neurons in one pass. The engine's guarantees
(several targets, chunks, no retrace) are checked for every method in test_registry.py."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import TinyMLP, linear_model

import jaxplain
from jaxplain import models
from jaxplain.methods import layers


class ConvReLU(nn.Module):
    features: int

    @nn.compact
    def __call__(self, x):
        return nn.relu(nn.Conv(self.features, (3, 3))(x))


class GapCNN(nn.Module):
    """Two conv + ReLU blocks, global average pool, dense head: Grad-CAM has a closed form."""

    num_classes: int = 4

    @nn.compact
    def __call__(self, x):
        x = ConvReLU(5, name="block")(x)
        x = ConvReLU(6, name="features")(x)
        return nn.Dense(self.num_classes, name="head")(x.mean(axis=(1, 2)))


class Identity(nn.Module):
    @nn.compact
    def __call__(self, x):
        return x


class IdentityFirst(nn.Module):
    """An identity module, then the smooth TinyMLP."""

    @nn.compact
    def __call__(self, x):
        return TinyMLP(num_classes=3, name="mlp")(Identity()(x))


class BatchNormCNN(nn.Module):
    """Conv (bias) -> BatchNorm -> ReLU -> max-pool, twice, then dense -> ReLU -> dense."""

    @nn.compact
    def __call__(self, x):
        for features in (4, 6):
            x = nn.Conv(features, (3, 3))(x)
            x = nn.relu(nn.BatchNorm(use_running_average=True)(x))
            x = nn.max_pool(x, (2, 2), strides=(2, 2))
        x = nn.relu(nn.Dense(8)(x.reshape(x.shape[0], -1)))
        return nn.Dense(3)(x)


def linen(module, shape, seed=0):
    """`module` with random variables drawn in numpy from the shapes `init` would give.

    Compiling `module.init` (eagerly or jitted) takes seconds per model on the test
    machine; this takes milliseconds. Kernels are N(0, 1/fan_in), BatchNorm variances and
    scales U(0.5, 1.5), every other leaf (biases, means) N(0, 0.1^2).
    """
    shapes = jax.eval_shape(module.init, jax.random.PRNGKey(0), jnp.zeros((1,) + shape))
    leaves, treedef = jax.tree_util.tree_flatten_with_path(shapes)
    rng = np.random.default_rng(seed)

    def draw(path, leaf):
        name = jax.tree_util.keystr(path)
        if "kernel" in name or "embedding" in name:
            return rng.normal(0.0, 1.0 / np.sqrt(np.prod(leaf.shape[:-1])), leaf.shape)
        if "var" in name or "scale" in name:
            return rng.uniform(0.5, 1.5, leaf.shape)
        return rng.normal(0.0, 0.1, leaf.shape)

    variables = [jnp.asarray(draw(path, leaf), leaf.dtype) for path, leaf in leaves]
    return jaxplain.Model.from_linen(module, jax.tree_util.tree_unflatten(treedef, variables))


def small_mlp(seed=0):
    """conftest's smooth TinyMLP (tanh, softplus) on 5 features."""
    return linen(TinyMLP(num_classes=3), (5,), seed)


def gap_cnn(seed=0):
    return linen(GapCNN(), (6, 6, 2), seed)


def batch_norm_cnn():
    """BatchNormCNN with random biases, BatchNorm scales, shifts and running statistics."""
    return linen(BatchNormCNN(), (8, 8, 2), seed=3)


def images(rng, batch=3, shape=(6, 6, 2)):
    return rng.normal(size=(batch,) + shape).astype(np.float32)


def test_layer_names_are_flax_paths_with_output_shapes(rng):
    model, x = gap_cnn(), images(rng)
    assert layers.layer_names(model, x) == {
        "block/Conv_0": (3, 6, 6, 5),
        "block": (3, 6, 6, 5),
        "features/Conv_0": (3, 6, 6, 6),
        "features": (3, 6, 6, 6),
        "head": (3, 4),
    }
    resnet = layers.layer_names(_resnet(), jax.ShapeDtypeStruct((2, 8, 8, 3), jnp.float32))
    assert resnet["stage2_block1/shortcut_bn"] == (2, 4, 4, 8)
    assert resnet["stage1_block1"] == (2, 8, 8, 4)


def test_grad_cam_of_global_average_pool_head_is_its_closed_form(rng):
    """Head F_t = sum_c w[c, t] mean_hw A[h, w, c] + b_t, so dF_t/dA[h, w, c] = w[c, t] / (H W)
    everywhere: alpha_c = w[c, t] / (H W) and cam = relu(sum_c alpha_c A_c)
    = relu(sum_c w[c, t] A[..., c]) / (H W)."""
    model, x = gap_cnn(), images(rng, batch=4)
    target = np.array([0, 3, 1, 2])
    a = layers.grad_cam(model, x, target=target, layer="features")
    _, state = model.apply_fn.module.apply(
        model.params, x, capture_intermediates=True, mutable=["intermediates"]
    )
    activation = state["intermediates"]["features"]["__call__"][0]  # (4, 6, 6, 6)
    w = model.params["params"]["head"]["kernel"]  # (6, 4)
    expected = jax.nn.relu(jnp.einsum("bhwc,cb->bhw", activation, w[:, target])) / 36.0
    np.testing.assert_allclose(a.extras["layer_map"], expected, rtol=1e-5, atol=1e-6)
    assert a.values.shape == (4, 6, 6)  # upsampled to x's size (here the same)
    signed = layers.grad_cam(model, x, target=target, layer="features", relu=False, upsample=False)
    np.testing.assert_allclose(jax.nn.relu(signed.values), expected, rtol=1e-5, atol=1e-6)
    assert float(signed.values.min()) < 0


def test_grad_cam_upsamples_to_the_input_size():
    model = jaxplain.load_model("checkpoints/digits_cnn")
    x = jaxplain.data.load("digits").x_test[:2]
    a = layers.grad_cam(model, x, target="predicted", layer="Conv_1")
    assert a.extras["layer_map"].shape == (2, 4, 4) and a.values.shape == (2, 8, 8)
    expected = jax.image.resize(a.extras["layer_map"], (2, 8, 8), "bilinear")
    np.testing.assert_allclose(a.values, expected, rtol=1e-6)


def test_gradient_x_activation_of_last_hidden_layer_sums_to_logit_minus_bias(rng):
    """F = W relu(z) + c with z = Dense_1's output: sum_j z_j dF_t/dz_j
    = sum_j z_j W_jt 1[z_j > 0] = sum_j W_jt relu(z_j) = F_t - c_t."""
    model = linen(models.MLP(num_classes=3, features=(8, 6)), (5,))
    variables = model.params
    x = rng.normal(size=(6, 5)).astype(np.float32)
    a = layers.layer_gradient_x_activation(model, x, target="predicted", layer="Dense_1")
    assert a.values.shape == (6, 6)  # shaped like the layer
    logits = model(jnp.asarray(x))
    bias = variables["params"]["Dense_2"]["bias"]
    expected = logits[np.arange(6), a.target] - bias[a.target]
    np.testing.assert_allclose(a.values.sum(axis=1), expected, rtol=1e-5, atol=1e-6)


def test_layer_integrated_gradients_is_complete_on_an_mlp_layer(rng):
    model = small_mlp()
    x = rng.normal(size=(8, 5)).astype(np.float32)
    a = layers.layer_integrated_gradients(model, x, target="predicted", layer="Dense_1", steps=64)
    assert a.values.shape == (8, 16)
    assert float(a.relative_delta.max()) <= 1e-4
    # everything after Dense_1 reads only its output: both differences agree
    np.testing.assert_allclose(a.extras["layer_output_difference"], a.output_difference, atol=1e-5)
    logits = model(jnp.asarray(x))
    rows = np.arange(8)
    expected = logits[rows, a.target] - model(jnp.zeros_like(x))[rows, a.target]
    np.testing.assert_allclose(a.output_difference, expected, rtol=1e-5)


def test_layer_integrated_gradients_on_an_identity_layer_equals_integrated_gradients(rng):
    """Layer = an identity module on the input: A(x) = x, the layer path is the input path."""
    model = linen(IdentityFirst(), (5,))
    x = rng.normal(size=(4, 5)).astype(np.float32)
    baseline = rng.normal(size=(4, 5)).astype(np.float32)
    settings = dict(target=[2, 0, 1, 1], baseline=baseline, steps=7, schedule="riemann_middle")
    layer = layers.layer_integrated_gradients(model, x, layer="Identity_0", **settings)
    plain = jaxplain.integrated_gradients(model, x, **settings)
    np.testing.assert_allclose(layer.values, plain.values, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(layer.delta, plain.delta, rtol=1e-5, atol=1e-7)


def test_layer_integrated_gradients_of_an_affine_first_layer_sums_like_input_ig(rng):
    """A = W x + c is affine, so the layer path A(b) + s (A(x) - A(b)) is A of the input path
    and sum_j (A_j(x) - A_j(b)) g_j = sum_i (x_i - b_i) sum_j W_ji g_j at every node:
    the totals agree for any number of steps, not just in the limit."""
    model = small_mlp()
    x = 3.0 * rng.normal(size=(4, 5)).astype(np.float32)
    settings = dict(target=1, baseline=0.3, steps=2)
    layer = layers.layer_integrated_gradients(model, x, layer="Dense_0", **settings)
    plain = jaxplain.integrated_gradients(model, x, **settings)
    assert float(jnp.abs(plain.delta).max()) > 1e-2  # 2 steps are far from converged ...
    np.testing.assert_allclose(layer.values.sum(axis=1), plain.values.sum(axis=1), rtol=1e-5, atol=1e-6)


def _resnet():
    """A two-stage ResNet (one basic block each, small stem): the blocks of a ResNet-18, less to compile."""
    return linen(
        models.ResNet(
            num_classes=5, stage_sizes=(1, 1), block="basic", num_filters=4, stem="small", activation=nn.gelu
        ),
        (8, 8, 3),
    )


def test_layer_integrated_gradients_inside_a_resnet_block_keeps_the_skip_connection_on_x(rng):
    """Layer = the block's second BatchNorm, whose output y meets the shortcut in
    block(x_in) = act(y + x_in). Along the layer path the shortcut must still read x's
    x_in, so the path starts at G(A(b); x) = the network with block1's output set to
    act(A(b) + x_in(x)), computed here with Flax's own capture and a hand-written
    interceptor, not F(b)."""
    model = _resnet()
    module, variables = model.apply_fn.module, model.params
    x = 2.0 * images(rng, batch=2, shape=(8, 8, 3))
    baseline = np.zeros_like(x)
    layer = "stage1_block1/BatchNorm_1"
    a = layers.layer_integrated_gradients(
        model, x, target=[[1, 3]], layer=layer, baseline=baseline, steps=24, chunk_size=24
    )
    assert a.values.shape == (2, 2, 8, 8, 4)

    @jax.jit  # one compiled program: applying a ResNet op by op takes seconds
    def start_of_path(x, baseline):
        _, state = module.apply(variables, baseline, capture_intermediates=True, mutable=["intermediates"])
        at_baseline = state["intermediates"]["stage1_block1"]["BatchNorm_1"]["__call__"][0]

        def interceptor(next_fun, args, kwargs, context):
            if context.module.path == ("stage1_block1",) and context.method_name == "__call__":
                return nn.gelu(at_baseline + args[0])  # args[0]: the block's input at x
            return next_fun(*args, **kwargs)

        with nn.intercept_methods(interceptor):
            return module.apply(variables, x)

    start = start_of_path(x, baseline)
    logits = model(jnp.asarray(x))
    expected = logits[:, [1, 3]] - start[:, [1, 3]]
    np.testing.assert_allclose(a.extras["layer_output_difference"], expected, rtol=1e-4, atol=1e-6)
    # the skip connection matters here: F(b) is far from the path's start
    gap = np.abs(a.output_difference - a.extras["layer_output_difference"])
    assert np.linalg.norm(gap) > 0.2 * np.linalg.norm(expected)
    # completeness along the layer path, and delta measured against F(x) - F(b)
    totals = a.values.reshape(2, 2, -1).sum(axis=-1)
    np.testing.assert_allclose(totals, expected, rtol=1e-3, atol=1e-5)
    np.testing.assert_allclose(a.delta, totals - a.output_difference, atol=1e-5)


def test_token_attributions_on_synthetic_text_find_the_planted_triggers():
    model = jaxplain.load_model("checkpoints/synthetic_text")
    data = jaxplain.data.load("synthetic_text")
    tokens, planted = data.x_test[:48], data.extras["planted_test"][:48]
    assert layers.embedding_layer(model, tokens) == "token_embedding"
    a = layers.token_attributions(model, tokens, target="predicted", steps=24, chunk_size=24)
    assert a.values.shape == (48, 16)
    assert a.extras["embedding_attributions"].shape == (48, 16, 64)
    # completeness along the embedding path (the padding mask is read from the tokens)
    gap = np.abs(a.values.sum(axis=1) - a.extras["layer_output_difference"])
    assert float((gap / np.abs(a.extras["layer_output_difference"])).max()) <= 1e-3
    # the planted trigger tokens get the highest scores
    scores = np.asarray(a.values)
    for row, mask in zip(scores, planted):
        assert set(np.argsort(-row)[: mask.sum()]) == set(np.flatnonzero(mask))
    # a non-padding baseline token keeps the mask, so F(x) - F(baseline) is recovered too
    same_mask = layers.layer_integrated_gradients(
        model, tokens, target="predicted", layer="token_embedding", baseline=9, steps=24, chunk_size=24
    )
    assert float(same_mask.relative_delta.max()) <= 1e-3


def _by_hand_gradient(model, x, layer_path, unit):
    """d A[unit] / dx for each example, with A from Flax's capture_intermediates."""
    module, variables = model.apply_fn.module, model.params

    def activation(example):
        _, state = module.apply(
            variables, example[None], capture_intermediates=True, mutable=["intermediates"]
        )
        return state["intermediates"][layer_path]["__call__"][0][(0,) + unit]

    return jax.vmap(jax.grad(activation))(jnp.asarray(x))


def test_neuron_gradient_equals_jax_grad_of_the_unit(rng):
    model, x = gap_cnn(), images(rng)
    unit = (2, 3, 1)
    a = layers.neuron_attribution(jaxplain.saliency, model, x, layer="features", neuron=unit)
    expected = _by_hand_gradient(model, x, "features", unit)
    np.testing.assert_allclose(a.values, expected, rtol=1e-5, atol=1e-7)
    assert float(jnp.abs(expected).max()) > 0  # the unit is active
    flat_index = int(np.ravel_multi_index(unit, (6, 6, 6)))
    flat = layers.neuron_gradient(model, x, layer="features", neuron=flat_index)
    np.testing.assert_allclose(flat.values, a.values, rtol=1e-6)
    by_name = layers.neuron_attribution("saliency", model, x, layer="features", neuron=unit)
    np.testing.assert_allclose(by_name.values, a.values, rtol=1e-6)


def test_neuron_integrated_gradients_is_complete_for_the_unit(rng):
    model = small_mlp()
    x = rng.normal(size=(6, 5)).astype(np.float32)
    a = layers.neuron_integrated_gradients(model, x, layer="Dense_1", neuron=3, steps=64)
    assert a.values.shape == (6, 5)
    assert float(a.relative_delta.max()) <= 1e-4
    _, state = model.apply_fn.module.apply(
        model.params, x, capture_intermediates=True, mutable=["intermediates"]
    )
    unit = state["intermediates"]["Dense_1"]["__call__"][0][:, 3]
    _, at_zero = model.apply_fn.module.apply(
        model.params, np.zeros_like(x), capture_intermediates=True, mutable=["intermediates"]
    )
    expected = unit - at_zero["intermediates"]["Dense_1"]["__call__"][0][:, 3]
    np.testing.assert_allclose(a.values.sum(axis=1), expected, rtol=1e-4, atol=1e-6)


def _fullgrad_by_hand(model, x, target):
    """sum(x dF/dx) + sum over bias layers of sum(dF/dz * b), from the raw parts."""
    a = layers.fullgrad(model, x, target=target, post_process=False)
    total = a.values.reshape(x.shape[0], -1).sum(axis=1)
    for part in a.extras["bias_gradients"].values():
        total = total + part.reshape(x.shape[0], -1).sum(axis=1)
    return a, total


def test_fullgrad_decomposition_is_exact_with_batch_norm_biases_and_max_pool(rng):
    model = batch_norm_cnn()
    x = images(rng, batch=4, shape=(8, 8, 2))
    target = np.array([0, 1, 2, 1])
    a, total = _fullgrad_by_hand(model, x, target)
    assert sorted(a.extras["bias_gradients"]) == [
        "BatchNorm_0",
        "BatchNorm_1",
        "Conv_0",
        "Conv_1",
        "Dense_0",
        "Dense_1",
    ]
    logits = np.asarray(model(jnp.asarray(x)))
    expected = logits[np.arange(4), target]
    scale = float(np.abs(expected).max())
    np.testing.assert_allclose(total, expected, atol=1e-5 * scale)
    np.testing.assert_allclose(a.delta, 0.0, atol=1e-5 * scale)
    # BatchNorm's implicit bias is really used: its part is large, not a rounding error
    assert float(jnp.abs(a.extras["bias_gradients"]["BatchNorm_0"]).sum()) > 0.01 * scale
    # the last layer's bias-gradient is its bias at the target: dF_t/dz = one-hot(t)
    bias = model.params["params"]["Dense_1"]["bias"]
    np.testing.assert_allclose(a.extras["bias_gradients"]["Dense_1"], np.eye(3)[target] * bias, rtol=1e-6)


def test_fullgrad_post_processed_maps_have_the_input_size_and_are_non_negative(rng):
    model = batch_norm_cnn()
    x = images(rng, batch=2, shape=(8, 8, 2))
    a = layers.fullgrad(model, x, target="predicted")
    assert a.values.shape == (2, 8, 8)
    assert float(a.values.min()) >= 0.0
    # input part plus the four spatial bias parts, each normalised to at most 1
    assert 1.0 <= float(a.values.max()) <= 5.0


def test_several_neurons_in_one_pass_equal_separate_calls(rng):
    """A list of neurons is explained in one pass, like several targets (which
    test_registry.py checks for every method)."""
    model, x = gap_cnn(), images(rng)
    both = layers.neuron_gradient(model, x, layer="block", neuron=[(1, 2, 0), (1, 2, 2)])
    for j, channel in enumerate((0, 2)):
        one = layers.neuron_gradient(model, x, layer="block", neuron=(1, 2, channel))
        np.testing.assert_allclose(both.values[:, j], one.values, rtol=1e-5, atol=1e-6)


def test_unknown_layer_lists_the_available_ones(rng):
    model, x = gap_cnn(), images(rng)
    with pytest.raises(ValueError, match="layer 'Conv_1' is not a layer of this model") as info:
        layers.layer_integrated_gradients(model, x, target=0, layer="Conv_1")
    for name in ("block/Conv_0", "block", "features/Conv_0", "features", "head"):
        assert name in str(info.value)


@pytest.mark.parametrize(
    "error, match, call",
    [
        (
            TypeError,
            "layer methods need a Flax Linen or NNX model",
            lambda m, x: layers.grad_cam(
                linear_model(np.ones((72, 2), np.float32)), x, target=0, layer="features"
            ),
        ),
        (
            TypeError,
            "layer methods need a Flax Linen or NNX model",
            lambda m, x: layers.fullgrad(
                jaxplain.Model.from_callable(lambda z: z.reshape(z.shape[0], -1)[:, :3]), x, target=0
            ),
        ),
        (
            TypeError,
            "layer must be a module path",
            lambda m, x: layers.layer_gradient_x_activation(m, x, target=0, layer=3),
        ),
        (
            ValueError,
            "grad_cam needs a layer with NHWC output",
            lambda m, x: layers.grad_cam(m, x, target=0, layer="head"),
        ),
        (
            ValueError,
            "neuron \\(6, 0, 0\\) is not an index",
            lambda m, x: layers.neuron_gradient(m, x, layer="features", neuron=(6, 0, 0)),
        ),
        (
            ValueError,
            "neuron 216 is outside the layer's 216 units",
            lambda m, x: layers.neuron_gradient(m, x, layer="features", neuron=216),
        ),
        (
            TypeError,
            "sets the method's target from neuron",
            lambda m, x: layers.neuron_attribution(
                jaxplain.saliency, m, x, layer="features", neuron=0, target=1
            ),
        ),
        (
            ValueError,
            "method 'gradcam' is not a jaxplain method",
            lambda m, x: layers.neuron_attribution("gradcam", m, x, layer="features", neuron=0),
        ),
        (ValueError, "target holds 4", lambda m, x: layers.grad_cam(m, x, target=4, layer="features")),
        (
            ValueError,
            "steps must be >= 1",
            lambda m, x: layers.layer_integrated_gradients(m, x, target=0, layer="block", steps=0),
        ),
        (
            ValueError,
            "post_process=True builds a map of NHWC images",
            lambda m, x: layers.fullgrad(small_mlp(), np.ones((2, 5), np.float32), target=0),
        ),
    ],
)
def test_bad_input_is_named(error, match, call, rng):
    with pytest.raises(error, match=match):
        call(gap_cnn(), images(rng))


def test_a_layer_that_runs_twice_is_refused(rng):
    class Shared(nn.Module):
        @nn.compact
        def __call__(self, x):
            dense = nn.Dense(5)
            return nn.Dense(2)(dense(jnp.tanh(dense(x))))

    model = linen(Shared(), (5,))
    x = rng.normal(size=(2, 5)).astype(np.float32)
    assert "Dense_0" not in layers.layer_names(model, x)
    with pytest.raises(ValueError, match="layer 'Dense_0' runs 2 times"):
        layers.layer_gradient_x_activation(model, x, target=0, layer="Dense_0")
    a = layers.fullgrad(model, x, target=0, post_process=False)  # both calls have a bias part
    assert sorted(a.extras["bias_gradients"]) == ["Dense_0", "Dense_0#1", "Dense_1"]
