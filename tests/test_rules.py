"""Modified-gradient methods: guided backprop, deconvnet, DeepLIFT, DeepLIFT SHAP and LRP.

Each method is checked against what it must satisfy (summation-to-delta, conservation,
closed forms on linear models, known identities such as LRP-0 = gradient x input on ReLU
networks) and against independent slow implementations written here.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import linear_model

import jaxplain
from jaxplain import models
from jaxplain.methods import rules


def _init(module, shape, seed=0, dtype=jnp.float32):
    """Random variables for a Linen module, filled in numpy from their abstract shapes
    (compiling `module.init` of a ResNet would take most of this file's time)."""
    rng = np.random.default_rng(seed)
    shapes = jax.eval_shape(module.init, jax.random.PRNGKey(seed), jax.ShapeDtypeStruct(shape, dtype))

    def fill(path, leaf):
        name = jax.tree_util.keystr(path)
        if "kernel" in name or "embedding" in name:
            fan_in = int(np.prod(leaf.shape[:-1]))
            return jnp.asarray(rng.normal(scale=np.sqrt(2.0 / fan_in), size=leaf.shape), leaf.dtype)
        if "scale" in name or "var" in name:
            return jnp.ones(leaf.shape, leaf.dtype)
        if "bias" in name or "mean" in name:
            return jnp.zeros(leaf.shape, leaf.dtype)
        return jnp.asarray(rng.normal(scale=0.02, size=leaf.shape), leaf.dtype)

    return jax.tree_util.tree_map_with_path(fill, shapes)


def _linen(module, shape, seed=0):
    variables = _init(module, shape, seed)
    return jaxplain.Model.from_linen(module, variables)


def _without_biases(model):
    params = jax.tree_util.tree_map_with_path(
        lambda path, p: jnp.zeros_like(p) if "bias" in jax.tree_util.keystr(path) else p,
        model.params,
    )
    return model.replace(params=params)


def _with_biases(model, seed=1):
    """Non-zero biases (Flax initialises them to zero)."""
    rng = np.random.default_rng(seed)
    params = jax.tree_util.tree_map_with_path(
        lambda path, p: (
            p + rng.normal(scale=0.2, size=p.shape).astype(p.dtype)
            if "bias" in jax.tree_util.keystr(path)
            else p
        ),
        model.params,
    )
    return model.replace(params=params)


def relu_mlp(features=6, num_classes=4, activation=nn.relu):
    module = models.MLP(num_classes=num_classes, features=(16, 12), activation=activation)
    return _linen(module, (1, features))


def small_cnn(num_classes=5):
    return _linen(models.SmallCNN(num_classes=num_classes, channels=(4, 6), dense=16), (1, 8, 8, 1))


def resnet():
    """A narrow two-stage ResNet (small stem; a ResNet-18's identity and projection blocks)
    whose BatchNorm has non-trivial running statistics."""
    module = models.ResNet(num_classes=4, stage_sizes=(1, 1), block="basic", stem="small", num_filters=8)
    variables = _init(module, (1, 8, 8, 3))
    rng = np.random.default_rng(3)

    def perturb(path, leaf):
        name = jax.tree_util.keystr(path)
        if "mean" in name:
            return jnp.asarray(rng.normal(scale=0.3, size=leaf.shape), leaf.dtype)
        if "var" in name:
            return jnp.asarray(rng.uniform(0.5, 2.0, size=leaf.shape), leaf.dtype)
        if "bias" in name or "scale" in name:
            return leaf + jnp.asarray(rng.normal(scale=0.2, size=leaf.shape), leaf.dtype)
        return leaf

    return jaxplain.Model.from_linen(module, jax.tree_util.tree_map_with_path(perturb, variables))


@jax.jit
def _forward(model, x):
    return model(x)


def _target_outputs(model, x, target):
    logits = np.asarray(_forward(model, jnp.asarray(x)), np.float64)
    return logits[np.arange(len(x)), target]


def _sums(values):
    return np.asarray(values, np.float64).reshape(values.shape[0], -1).sum(axis=1)


# ---------------------------------------------------------------------------------------
# DeepLIFT


MODELS = {
    "mlp": (lambda: _with_biases(relu_mlp()), (5, 6)),
    "tanh_mlp": (lambda: _with_biases(relu_mlp(activation=nn.tanh)), (5, 6)),
    "small_cnn": (lambda: _with_biases(small_cnn()), (3, 8, 8, 1)),
    "resnet": (resnet, (2, 8, 8, 3)),
}


@pytest.mark.parametrize("name", sorted(MODELS))
def test_deeplift_summation_to_delta(name, rng):
    make, shape = MODELS[name]
    model = make()
    x = rng.normal(size=shape).astype(np.float32)
    target = np.arange(shape[0]) % 4
    for baseline in (0.0, rng.normal(scale=0.5, size=shape).astype(np.float32)):
        a = rules.deeplift(model, x, target=target, baseline=baseline)
        reference = np.broadcast_to(baseline, shape).astype(np.float32)
        difference = _target_outputs(model, x, target) - _target_outputs(model, reference, target)
        np.testing.assert_allclose(a.output_difference, difference, rtol=1e-5, atol=1e-6)
        gap = np.abs(_sums(a.values) - difference)
        assert np.all(gap <= 1e-4 * np.maximum(np.abs(difference), 1e-2)), (gap, difference)
        np.testing.assert_allclose(a.delta, _sums(a.values) - difference, atol=1e-5)


@pytest.mark.parametrize(
    "activation",
    [jax.nn.leaky_relu, jax.nn.softplus, jax.nn.silu, jax.checkpoint(jax.nn.elu)],
    ids=["leaky_relu", "softplus", "silu", "checkpointed_elu"],
)
def test_deeplift_rescales_whole_jax_nn_activation_functions(activation, rng):
    """Jitted, custom_jvp and checkpointed elementwise functions are each one activation."""
    model = _with_biases(relu_mlp(activation=activation))
    x = rng.normal(size=(4, 6)).astype(np.float32)
    reference = rng.normal(size=(4, 6)).astype(np.float32)
    a = rules.deeplift(model, x, target=2, baseline=reference)
    difference = _target_outputs(model, x, [2] * 4) - _target_outputs(model, reference, [2] * 4)
    np.testing.assert_allclose(_sums(a.values), difference, rtol=1e-4, atol=1e-6)


def test_deeplift_shap_sums_to_mean_reference_difference_and_averages_deeplift(rng):
    model = _with_biases(small_cnn())
    x = rng.normal(size=(3, 8, 8, 1)).astype(np.float32)
    references = rng.normal(scale=0.5, size=(4, 8, 8, 1)).astype(np.float32)
    target = np.array([0, 3, 1])
    a = rules.deeplift_shap(model, x, target=target, background=references, chunk_size=3)
    mean_reference = np.mean(
        [_target_outputs(model, np.broadcast_to(r, x.shape), target) for r in references], axis=0
    )
    difference = _target_outputs(model, x, target) - mean_reference
    np.testing.assert_allclose(a.output_difference, difference, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(_sums(a.values), difference, rtol=1e-4, atol=1e-5)
    separate = np.mean(
        [rules.deeplift(model, x, target=target, baseline=r).values for r in references], axis=0
    )
    np.testing.assert_allclose(a.values, separate, rtol=1e-5, atol=1e-6)


def test_deeplift_on_linear_model_equals_integrated_gradients_and_closed_form(rng):
    weights = rng.normal(size=(6, 3)).astype(np.float32)
    model = linear_model(weights, rng.normal(size=3).astype(np.float32))
    x = rng.normal(size=(4, 6)).astype(np.float32)
    baseline = rng.normal(size=(4, 6)).astype(np.float32)
    target = np.array([0, 2, 1, 2])
    expected = weights[:, target].T * (x - baseline)
    a = rules.deeplift(model, x, target=target, baseline=baseline)
    ig = jaxplain.integrated_gradients(model, x, target=target, baseline=baseline, steps=4)
    np.testing.assert_allclose(a.values, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(a.values, ig.values, rtol=1e-5, atol=1e-6)


def slow_deeplift_mlp(params, x, reference, target, activation):
    """Independent float64 reference: multipliers propagated layer by layer in numpy."""
    layers = [params[f"Dense_{i}"] for i in range(len(params))]
    out = []
    for xi, ri, ti in zip(x.astype(np.float64), reference.astype(np.float64), target):
        a, ar, secants = xi, ri, []
        for layer in layers[:-1]:
            w, b = np.asarray(layer["kernel"], np.float64), np.asarray(layer["bias"], np.float64)
            z, zr = a @ w + b, ar @ w + b
            a, ar = activation(z), activation(zr)
            equal = np.isclose(z, zr, rtol=1e-12, atol=0)
            derivative = (activation(z + 1e-6) - activation(z - 1e-6)) / 2e-6
            secants.append(np.where(equal, derivative, (a - ar) / np.where(equal, 1, z - zr)))
        m = np.asarray(layers[-1]["kernel"], np.float64)[:, ti]
        for layer, secant in zip(layers[-2::-1], secants[::-1]):
            m = np.asarray(layer["kernel"], np.float64) @ (secant * m)
        out.append(m * (xi - ri))
    return np.stack(out)


@pytest.mark.parametrize("activation", ["relu", "tanh"])
def test_deeplift_equals_slow_float64_multipliers(activation, rng):
    flax_activation, numpy_activation = {
        "relu": (nn.relu, lambda z: np.maximum(z, 0)),
        "tanh": (nn.tanh, np.tanh),
    }[activation]
    model = _with_biases(relu_mlp(activation=flax_activation))
    x = rng.normal(size=(4, 6)).astype(np.float32)
    reference = rng.normal(size=(4, 6)).astype(np.float32)
    target = np.array([1, 0, 3, 2])
    a = rules.deeplift(model, x, target=target, baseline=reference)
    expected = slow_deeplift_mlp(model.params["params"], x, reference, target, numpy_activation)
    np.testing.assert_allclose(a.values, expected, rtol=1e-4, atol=1e-6)


def test_deeplift_max_pool_rule_closed_form():
    """One 2x2 window: F = max(x). x = [[3, 1], [0, 2]], x' = [[0, 5], [1, 1]]: pool(x) = 3,
    pool(x') = 5, m = 5; g * (m - 5) = 0 goes to x's argmax and g * (3 - m) = -2 to x''s
    argmax (0, 1), whose multiplier is -2 / (1 - 5) = 0.5."""
    model = jaxplain.Model.from_callable(lambda x: nn.max_pool(x, (2, 2), strides=(2, 2)).reshape(-1, 1))
    x = np.array([[3.0, 1.0], [0.0, 2.0]], np.float32).reshape(1, 2, 2, 1)
    reference = np.array([[0.0, 5.0], [1.0, 1.0]], np.float32).reshape(1, 2, 2, 1)
    a = rules.deeplift(model, x, target=0, baseline=reference)
    np.testing.assert_allclose(a.values[0, :, :, 0], [[0.0, -2.0], [0.0, 0.0]], atol=1e-7)
    np.testing.assert_allclose(a.delta, 0.0, atol=1e-7)


# ---------------------------------------------------------------------------------------
# LRP


@pytest.mark.parametrize("make, shape", [(relu_mlp, (5, 6)), (small_cnn, (3, 8, 8, 1))])
def test_lrp_epsilon_conserves_relevance_without_biases(make, shape, rng):
    model = _without_biases(make())
    x = rng.normal(size=shape).astype(np.float32)
    a = rules.lrp(model, x, target="predicted", rule="epsilon", epsilon=1e-9)
    outputs = _target_outputs(model, x, np.asarray(a.target))
    np.testing.assert_allclose(_sums(a.values), outputs, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(a.output_difference, outputs, rtol=1e-5)
    np.testing.assert_allclose(a.delta, 0.0, atol=1e-5)


@pytest.mark.parametrize("name", ["mlp", "small_cnn", "resnet"])
def test_lrp_zero_is_gradient_times_input_on_relu_networks(name, rng):
    """LRP-0 (epsilon -> 0) equals gradient x input on ReLU networks, biases and BatchNorm
    included (Ancona et al. 2018, arXiv:1711.06104)."""
    make, shape = MODELS[name]
    model = make()
    x = rng.normal(size=shape).astype(np.float32)
    a = rules.lrp(model, x, target=1)
    expected = jaxplain.input_x_gradient(model, x, target=1).values
    scale = float(jnp.max(jnp.abs(expected)))
    assert float(jnp.max(jnp.abs(a.values - expected))) <= 1e-5 * scale


def test_lrp_gamma_zero_equals_epsilon_and_gamma_changes_the_answer(rng):
    model = _with_biases(small_cnn())
    x = rng.normal(size=(2, 8, 8, 1)).astype(np.float32)
    epsilon = rules.lrp(model, x, target=1, rule="epsilon")
    gamma_zero = rules.lrp(model, x, target=1, rule="gamma", gamma=0.0)
    np.testing.assert_allclose(gamma_zero.values, epsilon.values, rtol=1e-5, atol=1e-7)
    gamma = rules.lrp(model, x, target=1, rule="gamma", gamma=0.25)
    assert float(jnp.max(jnp.abs(gamma.values - epsilon.values))) > 1e-3 * float(
        jnp.max(jnp.abs(epsilon.values))
    )


def test_lrp_gamma_on_linear_model_closed_form(rng):
    weights = rng.normal(size=(5, 2)).astype(np.float32)
    bias = rng.normal(size=2).astype(np.float32)
    x = rng.uniform(0.1, 1.0, size=(3, 5)).astype(np.float32)
    a = rules.lrp(linear_model(weights, bias), x, target=0, rule="gamma", gamma=0.5)
    w = weights[:, 0] + 0.5 * np.maximum(weights[:, 0], 0)
    denominator = x @ w + bias[0] + 0.5 * max(bias[0], 0)
    expected = x * w / denominator[:, None] * (x @ weights[:, 0] + bias[0])[:, None]
    np.testing.assert_allclose(a.values, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("make, shape", [(relu_mlp, (8, 6)), (small_cnn, (8, 8, 8, 1))])
def test_lrp_alpha1beta0_is_non_negative_and_conserves_without_biases(make, shape, rng):
    """z+: relevance flows only along positive contributions, so for a positive target
    output it stays non-negative down to the input, and is conserved without biases."""
    model = _without_biases(make())
    x = rng.uniform(0.0, 1.0, size=shape).astype(np.float32)
    logits = np.asarray(_forward(model, jnp.asarray(x)))
    positive = logits.max(axis=1) > 0  # z+ explains positive outputs
    x, logits = x[positive], logits[positive]
    assert len(x) >= 3
    target = logits.argmax(axis=1)
    a = rules.lrp(model, x, target=target, rule="alpha1beta0")
    assert float(jnp.min(a.values)) >= 0.0
    np.testing.assert_allclose(_sums(a.values), logits[np.arange(len(x)), target], rtol=1e-4)


def test_lrp_zbox_closed_form_and_conservation_at_the_first_layer(rng):
    """One dense layer with a bias: R_i = (x_i w_i - l_i w+_i - h_i w-_i) / sum(...) F(x);
    the bias is left out of the denominator, so the relevance sums to F(x)."""
    weights = rng.normal(size=(5, 2)).astype(np.float32)
    bias = rng.normal(size=2).astype(np.float32)
    low, high = -np.ones(5, np.float32), 2 * np.ones(5, np.float32)
    x = rng.uniform(-1.0, 2.0, size=(4, 5)).astype(np.float32)
    model = linear_model(weights, bias)
    a = rules.lrp(model, x, target=1, rule="zbox", low=low, high=high)
    w = weights[:, 1]
    terms = x * w - low * np.maximum(w, 0) - high * np.minimum(w, 0)
    outputs = x @ w + bias[1]
    np.testing.assert_allclose(
        a.values, terms / terms.sum(1, keepdims=True) * outputs[:, None], rtol=1e-5, atol=1e-6
    )
    np.testing.assert_allclose(_sums(a.values), outputs, rtol=1e-5)


def test_lrp_zbox_carries_bounds_through_reshape_and_a_sign_flipping_normalisation(rng):
    """x (2, 3) -> (x - mean) * scale with some negative scales -> flatten -> dense: the
    bounds [l, h] become [min, max] of the mapped ends, and the z-box relevance of the
    dense layer's inputs comes back to x element by element (the bound terms cancel the
    shift's share, since W = W+ + W-)."""
    mean = rng.normal(size=(2, 3)).astype(np.float32)
    scale = np.array([[1.5, -2.0, 0.5], [-1.0, 1.0, 3.0]], np.float32)
    weights = rng.normal(size=(6, 2)).astype(np.float32)
    model = jaxplain.Model(
        lambda p, x: ((x - p["mean"]) * p["scale"]).reshape(x.shape[0], -1) @ p["w"],
        {"mean": mean, "scale": scale, "w": weights},
    )
    x = rng.uniform(0.0, 1.0, size=(3, 2, 3)).astype(np.float32)
    a = rules.lrp(model, x, target=0, rule="zbox", low=0.0, high=1.0)
    ends = np.stack([(0.0 - mean) * scale, (1.0 - mean) * scale])
    lo, hi = ends.min(axis=0).reshape(-1), ends.max(axis=0).reshape(-1)
    inputs = ((x - mean) * scale).reshape(3, -1)
    w = weights[:, 0]
    terms = inputs * w - lo * np.maximum(w, 0) - hi * np.minimum(w, 0)
    relevance = terms / terms.sum(1, keepdims=True) * (inputs @ w)[:, None]
    np.testing.assert_allclose(a.values, relevance.reshape(x.shape), rtol=1e-4, atol=1e-6)


def test_lrp_composite_conserves_on_bias_free_cnn(rng):
    model = _without_biases(small_cnn())
    x = rng.uniform(0.0, 1.0, size=(3, 8, 8, 1)).astype(np.float32)
    a = rules.lrp(model, x, target="predicted", rule="composite", low=0.0, high=1.0, gamma=0.25)
    outputs = _target_outputs(model, x, np.asarray(a.target))
    np.testing.assert_allclose(_sums(a.values), outputs, rtol=1e-4, atol=1e-6)
    plain = rules.lrp(model, x, target="predicted")
    assert float(jnp.max(jnp.abs(a.values - plain.values))) > 1e-3 * float(jnp.max(jnp.abs(plain.values)))


# ---------------------------------------------------------------------------------------
# Guided backprop and deconvnet


def _slow_rectified(model, x, target, backward):
    """Independent reference: the MLP's forward pass written here with a custom_vjp ReLU
    whose backward pass is `backward(z, g)`, differentiated one example at a time."""

    @jax.custom_vjp
    def relu(z):
        return jnp.maximum(z, 0)

    relu.defvjp(lambda z: (jnp.maximum(z, 0), z), lambda z, g: (backward(z, g),))
    p = model.params["params"]

    def forward(xi):
        h = xi
        for i in range(len(p) - 1):
            h = relu(h @ p[f"Dense_{i}"]["kernel"] + p[f"Dense_{i}"]["bias"])
        last = p[f"Dense_{len(p) - 1}"]
        return h @ last["kernel"] + last["bias"]

    return np.stack([jax.grad(lambda xi: forward(xi)[t])(xi) for xi, t in zip(jnp.asarray(x), target)])


@pytest.mark.parametrize(
    "method, backward",
    [
        (rules.guided_backprop, lambda z, g: jnp.where((z > 0) & (g > 0), g, 0.0)),
        (rules.deconvnet, lambda z, g: jnp.maximum(g, 0.0)),
    ],
)
def test_rectified_methods_equal_slow_custom_vjp_relu(method, backward, rng):
    model = _with_biases(relu_mlp())
    x = rng.normal(size=(5, 6)).astype(np.float32)
    target = np.array([0, 1, 2, 3, 1])
    a = method(model, x, target=target)
    np.testing.assert_allclose(a.values, _slow_rectified(model, x, target, backward), rtol=1e-5, atol=1e-7)
    saliency = jaxplain.saliency(model, x, target=target).values
    assert float(jnp.max(jnp.abs(a.values - saliency))) > 1e-3


@pytest.mark.parametrize("method", [rules.guided_backprop, rules.deconvnet])
def test_rectified_methods_without_relu_are_the_gradient(method, rng):
    model = relu_mlp(activation=nn.tanh)
    x = rng.normal(size=(4, 6)).astype(np.float32)
    np.testing.assert_allclose(
        method(model, x, target=2).values, jaxplain.saliency(model, x, target=2).values, rtol=1e-6, atol=1e-7
    )


# ---------------------------------------------------------------------------------------
# Every method


class UserMLP(nn.Module):
    """A user's model calling jax.nn.relu and flax.linen.relu directly (no activation field)."""

    @nn.compact
    def __call__(self, x):
        x = jax.nn.relu(nn.Dense(16, name="Dense_0")(x))
        x = nn.relu(nn.Dense(12, name="Dense_1")(x))
        return nn.Dense(4, name="Dense_2")(x)


def _calls(model, x, target):
    references = np.linspace(-1, 1, 3 * x.shape[1], dtype=np.float32).reshape(3, -1)
    return {
        "guided_backprop": lambda: rules.guided_backprop(model, x, target=target),
        "deconvnet": lambda: rules.deconvnet(model, x, target=target),
        "deeplift": lambda: rules.deeplift(model, x, target=target, baseline=0.5),
        "deeplift_shap": lambda: rules.deeplift_shap(model, x, target=target, background=references),
        "lrp": lambda: rules.lrp(model, x, target=target),
        "lrp_gamma": lambda: rules.lrp(model, x, target=target, rule="gamma"),
        "lrp_alpha1beta0": lambda: rules.lrp(model, x, target=target, rule="alpha1beta0"),
        "lrp_composite": lambda: rules.lrp(model, x, target=target, rule="composite", low=-3.0, high=3.0),
    }


METHOD_NAMES = (
    "deconvnet",
    "deeplift",
    "deeplift_shap",
    "guided_backprop",
    "lrp",
    "lrp_alpha1beta0",
    "lrp_composite",
    "lrp_gamma",
)


@pytest.mark.parametrize("method", METHOD_NAMES)
def test_user_linen_model_with_direct_relu_calls_equals_zoo_model(method, rng):
    zoo = _with_biases(relu_mlp())
    user = jaxplain.Model.from_linen(UserMLP(), zoo.params)
    x = rng.normal(size=(3, 6)).astype(np.float32)
    np.testing.assert_allclose(_forward(user, jnp.asarray(x)), _forward(zoo, jnp.asarray(x)), rtol=1e-6)
    ours = _calls(user, x, 1)[method]()
    theirs = _calls(zoo, x, 1)[method]()
    np.testing.assert_allclose(ours.values, theirs.values, rtol=1e-5, atol=1e-7)
    assert np.all(np.isfinite(ours.values)) and float(jnp.max(jnp.abs(ours.values))) > 0


# ---------------------------------------------------------------------------------------
# What is refused, and why


def test_text_classifier_deeplift_sums_to_delta_and_guided_backprop_is_finite(rng):
    # attention, LayerNorm and GELU have rules (tests/test_transformer_rules.py); guided
    # backprop only changes ReLUs (any max(z, c), such as LayerNorm's clamp of the variance
    # at zero) and takes the plain gradient through the rest
    module = models.TextClassifier(
        vocab_size=11, num_classes=2, max_length=5, embed_dim=8, num_heads=2, mlp_dim=8
    )
    variables = _init(module, (1, 5), dtype=jnp.int32)
    model = jaxplain.Model.from_linen(module, variables, method="logits_from_embeddings")
    embeddings = rng.normal(size=(2, 5, 8)).astype(np.float32)
    lifted = rules.deeplift(model, embeddings, target=0)
    np.testing.assert_allclose(_sums(lifted.values), lifted.output_difference, rtol=1e-4, atol=1e-5)
    assert np.all(np.isfinite(rules.lrp(model, embeddings, target=0).values))
    guided = rules.guided_backprop(model, embeddings, target=0)
    assert guided.values.shape == embeddings.shape and np.all(np.isfinite(guided.values))


def test_guided_backprop_refuses_relus_inside_a_loop(rng):
    weights = jnp.asarray(rng.normal(size=(3, 4, 4)).astype(np.float32))

    def looped(w, x):
        return jax.lax.scan(lambda h, wi: (jax.nn.relu(h @ wi), None), x, w)[0]

    with pytest.raises(ValueError, match="guided_backprop cannot propagate through `scan` holding ReLUs"):
        rules.guided_backprop(jaxplain.Model(looped, weights), np.ones((2, 4), np.float32), target=0)


def test_an_elementwise_function_written_out_is_an_activation(rng):
    # x * x and exp(x) are elementwise functions of one value: DeepLIFT takes their secant
    # (x + x' and (e^x - e^x') / (x - x')), LRP passes f(z) / z
    x = rng.normal(size=(2, 3)).astype(np.float32)
    square = jaxplain.Model.from_callable(lambda x: (x * x) @ jnp.ones((3, 2)))
    np.testing.assert_allclose(rules.deeplift(square, x, target=0).values, x * x, rtol=1e-6)
    np.testing.assert_allclose(rules.lrp(square, x, target=0).values, x * x, rtol=1e-6)
    exp = jaxplain.Model.from_callable(lambda x: jnp.exp(x) @ jnp.ones((3, 2)))
    np.testing.assert_allclose(
        rules.deeplift(exp, x, target=0, baseline=0.5).values, np.exp(x) - np.exp(0.5), rtol=1e-5
    )


def test_an_operation_without_a_rule_is_refused_with_its_primitive_and_location():
    model = jaxplain.Model.from_callable(lambda x: jnp.max(x, axis=1, keepdims=True) * jnp.ones((1, 2)))
    x = np.ones((2, 3), np.float32)
    with pytest.raises(
        ValueError,
        match=r"deeplift cannot propagate through `reduce_max` of an x-dependent value \(.*test_rules.py",
    ):
        rules.deeplift(model, x, target=0)
    with pytest.raises(ValueError, match="lrp cannot propagate through `reduce_max`"):
        rules.lrp(model, x, target=0)


@pytest.mark.parametrize(
    "error, match, call",
    [
        (
            ValueError,
            "deeplift explains the model's logits",
            lambda m, x: rules.deeplift(m.with_output("probs"), x, target=0),
        ),
        (
            ValueError,
            "lrp explains the model's logits",
            lambda m, x: rules.lrp(m.with_output("log_probs"), x, target=0),
        ),
        (ValueError, "rule must be one of", lambda m, x: rules.lrp(m, x, target=0, rule="z+")),
        (
            ValueError,
            "low is required for the z-box rule",
            lambda m, x: rules.lrp(m, x, target=0, rule="zbox"),
        ),
        (
            ValueError,
            "x must lie within \\[low, high\\]",
            lambda m, x: rules.lrp(m, x, target=0, rule="zbox", low=0.0, high=0.5),
        ),
        (
            ValueError,
            "high of shape \\(5,\\) cannot be broadcast",
            lambda m, x: rules.lrp(m, x, target=0, rule="zbox", low=-9, high=np.ones(5)),
        ),
        (
            ValueError,
            "low and high are used by the z-box rule only",
            lambda m, x: rules.lrp(m, x, target=0, low=0.0),
        ),
        (
            ValueError,
            "epsilon must be a finite number >= 0.0",
            lambda m, x: rules.lrp(m, x, target=0, epsilon=-1.0),
        ),
        (
            TypeError,
            "gamma must be a number",
            lambda m, x: rules.lrp(m, x, target=0, rule="gamma", gamma="big"),
        ),
        (
            ValueError,
            "background must have shape \\(M, 6\\)",
            lambda m, x: rules.deeplift_shap(m, x, target=0, background=np.zeros(6)),
        ),
        (
            ValueError,
            "baseline of shape \\(5,\\) cannot be broadcast",
            lambda m, x: rules.deeplift(m, x, target=0, baseline=np.zeros(5)),
        ),
        (ValueError, "target holds 7", lambda m, x: rules.guided_backprop(m, x, target=7)),
    ],
)
def test_bad_input_is_named(error, match, call, rng):
    x = rng.uniform(-1, 1, size=(2, 6)).astype(np.float32)
    with pytest.raises(error, match=match):
        call(relu_mlp(), x)


def test_docstring_examples():
    import doctest

    result = doctest.testmod(rules, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0
