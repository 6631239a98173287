"""LRP rules as data objects and composites (rules per layer by name, kind and position).

The rule strings are checked to be exactly the composites they stand for; a composite that
sets gamma on one convolution, and a rule written by the user, against an independent
float64 implementation of LRP on a two-layer network; layer names of Linen and NNX models.
"""

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import jaxplain
from jaxplain.methods.rules import (
    AlphaBeta,
    Composite,
    Epsilon,
    Gamma,
    LayerInfo,
    Rule,
    ZBox,
    epsilon_alpha2_beta1,
    epsilon_gamma_box,
    epsilon_plus,
    lrp,
    lrp_layers,
)


def _filled(module, shape, seed=0):
    """Linen variables filled in numpy (no compiled init), with non-zero biases."""
    rng = np.random.default_rng(seed)
    shapes = jax.eval_shape(module.init, jax.random.PRNGKey(0), jax.ShapeDtypeStruct(shape, jnp.float32))
    return jax.tree_util.tree_map(lambda s: jnp.asarray(rng.normal(scale=0.7, size=s.shape), s.dtype), shapes)


class TwoLayer(nn.Module):
    """Conv_0 (2x2, VALID, 2 channels) -> ReLU -> flatten -> Dense_0 (3 classes)."""

    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Conv(2, (2, 2), padding="VALID")(x))
        return nn.Dense(3)(x.reshape(x.shape[0], -1))


class Block(nn.Module):
    @nn.compact
    def __call__(self, x):
        return nn.relu(nn.Dense(5)(x))


class Deeper(nn.Module):
    """Two convolutions and two dense layers, one of them inside a submodule."""

    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Conv(3, (2, 2))(x))
        x = nn.relu(nn.Conv(2, (2, 2))(x))
        x = Block()(x.reshape(x.shape[0], -1))
        return nn.Dense(3, name="head")(x)


@pytest.fixture(scope="module")
def two_layer():
    module = TwoLayer()
    variables = _filled(module, (1, 4, 4, 1))
    return jaxplain.Model.from_linen(module, variables), variables["params"]


@pytest.fixture(scope="module")
def deeper():
    module = Deeper()
    return jaxplain.Model.from_linen(module, _filled(module, (1, 5, 5, 1), seed=1))


@pytest.fixture
def images():
    return np.random.default_rng(0).uniform(0, 1, (3, 4, 4, 1)).astype(np.float32)


# ---------------------------------------------------------------------------------------
# An independent float64 LRP of TwoLayer: the convolution as a matrix built by loops


def _conv_matrix(kernel):
    """The VALID 2x2 convolution of a 4x4x1 image as a (16, 18) matrix (outputs i, j, o)."""
    kernel = np.asarray(kernel, np.float64)
    matrix = np.zeros((16, 3, 3, kernel.shape[-1]))
    for i in range(3):
        for j in range(3):
            for di in range(2):
                for dj in range(2):
                    matrix[(i + di) * 4 + (j + dj), i, j, :] += kernel[di, dj, 0, :]
    return matrix.reshape(16, 18)


def _stab(z, epsilon):
    return z + epsilon * np.where(z >= 0, 1.0, -1.0)


def _lrp64(params, x, target, rules):
    """`rules` = (conv rule, dense rule), each (modify(weights, bias) -> (weights, bias), epsilon)."""
    m1 = _conv_matrix(params["Conv_0"]["kernel"])
    b1 = np.tile(np.asarray(params["Conv_0"]["bias"], np.float64), 9)
    m2 = np.asarray(params["Dense_0"]["kernel"], np.float64)
    b2 = np.asarray(params["Dense_0"]["bias"], np.float64)
    (conv_rule, conv_eps), (dense_rule, dense_eps) = rules
    out = []
    for example in np.asarray(x, np.float64).reshape(len(x), 16):
        hidden = np.maximum(example @ m1 + b1, 0)
        y = hidden @ m2 + b2
        relevance = np.zeros(3)
        relevance[target] = y[target]
        for inputs, (weights, bias), epsilon in (
            (hidden, dense_rule(m2, b2), dense_eps),
            (example, conv_rule(m1, b1), conv_eps),
        ):
            z = inputs @ weights + bias
            relevance = inputs * (weights @ (relevance / _stab(z, epsilon)))
        out.append(relevance)
    return np.stack(out).reshape(x.shape)


def _plain(w, b):
    return w, b


def _gamma(gamma):
    return lambda w, b: (w + gamma * np.maximum(w, 0), b + gamma * np.maximum(b, 0))


def _no_bias(w, b):
    return w, np.zeros_like(b)


@dataclasses.dataclass(frozen=True)
class NoBias(Rule):
    """A user's rule: LRP-0 with the bias left out."""

    def forward(self, layer, a):
        return layer.linear(a)


# ---------------------------------------------------------------------------------------
# Known answers


def test_gamma_on_one_named_conv_equals_float64_lrp(two_layer, images):
    model, params = two_layer
    composite = Composite(name_map={"Conv_0": Gamma(0.5)}, default=Epsilon(0.01))
    values = lrp(model, images, target=2, rule=composite).values
    expected = _lrp64(params, images, 2, ((_gamma(0.5), 1e-9), (_plain, 0.01)))
    np.testing.assert_allclose(values, expected, rtol=2e-4, atol=1e-6)
    all_epsilon = _lrp64(params, images, 2, ((_plain, 0.01), (_plain, 0.01)))
    assert np.abs(expected - all_epsilon).max() > 1e-2  # gamma changes the answer


def test_a_users_rule_equals_float64_lrp_and_conserves_relevance(two_layer, images):
    model, params = two_layer
    a = lrp(model, images, target=0, rule=NoBias())
    expected = _lrp64(params, images, 0, ((_no_bias, 1e-9), (_no_bias, 1e-9)))
    np.testing.assert_allclose(a.values, expected, rtol=2e-4, atol=1e-6)
    # without biases in the rule, relevance is conserved: sum(values) = F_0(x)
    np.testing.assert_allclose(np.asarray(a.values).reshape(3, -1).sum(1), a.output_difference, rtol=1e-4)
    assert np.abs(np.asarray(a.delta)).max() < 1e-4


def test_alpha2_beta1_closed_form_on_one_dense_layer():
    w = jnp.array([[2.0, 0.0], [-1.0, 0.0], [3.0, 0.0]])
    b = jnp.array([-1.0, 0.0])
    model = jaxplain.Model(lambda p, x: x @ p["w"] + p["b"], {"w": w, "b": b})
    x = jnp.array([[1.0, 2.0, -1.0]])
    # contributions 2, -2, -3; bias -1; y = -4. z+ = 2 (+ b+ = 0), z- = -5 + (-1) = -6
    # R = y * (2 * contribution+ / z+ - 1 * contribution- / z-)
    y = -4.0
    expected = y * (2 * np.array([2.0, 0.0, 0.0]) / 2.0 - np.array([0.0, -2.0, -3.0]) / -6.0)
    values = lrp(model, x, target=0, rule=AlphaBeta(2.0, 1.0)).values
    np.testing.assert_allclose(values[0], expected, rtol=1e-5)


def test_zbox_object_with_per_example_bounds_closed_form():
    w = jnp.array([[1.0], [-2.0]])
    model = jaxplain.Model(lambda p, x: x @ p, w)
    x = jnp.array([[0.5, 0.5], [1.0, 0.0]])
    low, high = jnp.array([[0.0, 0.0], [-1.0, -1.0]]), 1.0
    values = lrp(model, x, target=0, rule=ZBox(low, high)).values
    # z = W a - W+ low - W- high, R = R_y * (a w - low w+ - high w-) / z
    for i in range(2):
        terms = (
            np.array(x[i]) * w[:, 0]
            - np.array(low[i]) * np.maximum(w[:, 0], 0)
            - high * np.minimum(w[:, 0], 0)
        )
        expected = terms / terms.sum() * float(x[i] @ w[:, 0])
        np.testing.assert_allclose(values[i], expected, rtol=1e-5, atol=1e-7)


# ---------------------------------------------------------------------------------------
# The strings are composites


@pytest.mark.parametrize(
    "string, options, objects",
    [
        # the simple rules are covered by the composites below (slow tier for time)
        pytest.param("epsilon", {"epsilon": 0.01}, Epsilon(0.01), marks=pytest.mark.slow),
        pytest.param("gamma", {"gamma": 0.3}, Gamma(0.3), marks=pytest.mark.slow),
        pytest.param("alpha1beta0", {}, AlphaBeta(1.0, 0.0), marks=pytest.mark.slow),
        (
            "zbox",
            {"epsilon": 0.01, "low": 0.0, "high": 1.0},
            Composite(first=ZBox(0.0, 1.0), default=Epsilon(0.01)),
        ),
        (
            "composite",
            {"epsilon": 0.01, "gamma": 0.3, "low": 0.0, "high": 1.0},
            epsilon_gamma_box(0.0, 1.0, epsilon=0.01, gamma=0.3),
        ),
    ],
)
def test_rule_strings_equal_their_objects(deeper, string, options, objects):
    x = np.random.default_rng(1).uniform(0, 1, (2, 5, 5, 1)).astype(np.float32)
    old = lrp(deeper, x, target=1, rule=string, **options)
    new = lrp(deeper, x, target=1, rule=objects)
    np.testing.assert_array_equal(old.values, new.values)
    np.testing.assert_array_equal(old.delta, new.delta)


def test_epsilon_everywhere_equals_rule_epsilon_and_type_maps_of_classes_equal_kinds(deeper):
    x = np.random.default_rng(2).uniform(0, 1, (2, 5, 5, 1)).astype(np.float32)
    everywhere = Composite(
        name_map={"Block_0/*": Epsilon(0.1)},
        type_map={"conv": Epsilon(0.1)},
        first=Epsilon(0.1),
        default=Epsilon(0.1),
    )
    np.testing.assert_array_equal(
        lrp(deeper, x, target=0, rule=everywhere).values,
        lrp(deeper, x, target=0, rule="epsilon", epsilon=0.1).values,
    )
    by_kind = Composite(type_map={"conv": AlphaBeta(2.0, 1.0), "dense": Gamma(0.2)}, default=Epsilon(0.1))
    by_class = Composite(
        type_map={nn.Conv: AlphaBeta(2.0, 1.0), nnx.Linear: Gamma(0.2)}, default=Epsilon(0.1)
    )
    np.testing.assert_array_equal(
        lrp(deeper, x, target=0, rule=by_kind).values, lrp(deeper, x, target=0, rule=by_class).values
    )


def test_precedence_name_map_then_first_then_type_map(two_layer, images):
    model, _ = two_layer
    named = lrp(
        model, images, target=1, rule=Composite(name_map={"params/Conv_0": Gamma(0.5)}, default=Epsilon(0.01))
    )
    first = lrp(model, images, target=1, rule=Composite(first=Gamma(0.5), default=Epsilon(0.01)))
    typed = lrp(
        model,
        images,
        target=1,
        rule=Composite(
            name_map={"Conv_*": Gamma(0.5)},
            type_map={"conv": AlphaBeta()},
            first=Epsilon(),
            default=Epsilon(0.01),
        ),
    )
    np.testing.assert_array_equal(named.values, first.values)
    np.testing.assert_array_equal(named.values, typed.values)


def test_zennit_presets_are_type_maps(deeper):
    assert epsilon_plus(epsilon=0.1) == Composite(
        type_map={"conv": AlphaBeta(1.0, 0.0)}, default=Epsilon(0.1)
    )
    assert epsilon_alpha2_beta1().rule_for(LayerInfo("x", "conv", True)) == AlphaBeta(2.0, 1.0)
    assert epsilon_alpha2_beta1().rule_for(LayerInfo("x", "dense", False)) == Epsilon(1e-6)
    box = epsilon_gamma_box(0.0, 1.0)
    assert isinstance(box.rule_for(LayerInfo("x", "conv", True)), ZBox)
    assert box.rule_for(LayerInfo("x", "conv", False)) == Gamma(0.25)


def test_composite_batch_equals_each_example_alone(two_layer, images):
    model, _ = two_layer
    composite = Composite(
        name_map={"Dense_0": AlphaBeta(2.0, 1.0)}, first=ZBox(0.0, 1.0), default=Epsilon(0.01)
    )
    batch = lrp(model, images[:2], target=[0, 2], rule=composite).values
    for i in range(2):
        alone = lrp(model, images[i : i + 1], target=[2 * i], rule=composite).values
        np.testing.assert_allclose(batch[i : i + 1], alone, rtol=1e-5, atol=1e-7)


# ---------------------------------------------------------------------------------------
# Layer names of Linen and NNX models


def test_linen_layer_names(deeper):
    x = np.zeros((1, 5, 5, 1), np.float32)
    assert lrp_layers(deeper, x) == (
        LayerInfo("Conv_0", "conv", True),
        LayerInfo("Conv_1", "conv", False),
        LayerInfo("Block_0/Dense_0", "dense", False),
        LayerInfo("head", "dense", False),
    )


class NnxNet(nnx.Module):
    def __init__(self, rngs):
        self.conv = nnx.Conv(1, 2, (2, 2), padding="VALID", rngs=rngs)
        self.layers = nnx.List([nnx.Linear(18, 4, rngs=rngs), nnx.Linear(4, 3, rngs=rngs)])

    def __call__(self, x):
        x = nnx.relu(self.conv(x)).reshape(x.shape[0], -1)
        return self.layers[1](nnx.relu(self.layers[0](x)))


def test_nnx_layer_names_and_a_name_map_on_them(images):
    model = jaxplain.Model.from_nnx(NnxNet(nnx.Rngs(0)))
    assert [layer.name for layer in lrp_layers(model, images)] == ["conv", "layers/0", "layers/1"]
    named = Composite(name_map={"conv": Gamma(0.5), "layers/*": Epsilon(0.01)})
    expected = Composite(first=Gamma(0.5), default=Epsilon(0.01))
    np.testing.assert_array_equal(
        lrp(model, images, target=0, rule=named).values, lrp(model, images, target=0, rule=expected).values
    )


def test_plain_function_names_are_parameter_paths():
    params = {"hidden": {"w": jnp.ones((2, 3))}, "w_out": jnp.ones((3, 1))}
    model = jaxplain.Model(
        lambda p, x: jnp.tanh(x @ p["hidden"]["w"]).astype(jnp.float32) @ p["w_out"], params
    )
    assert lrp_layers(model, jnp.ones((1, 2))) == (
        LayerInfo("hidden", "dense", True),
        LayerInfo("w_out", "dense", False),
    )


# ---------------------------------------------------------------------------------------
# Errors


@dataclasses.dataclass
class Unhashable(Rule):
    def forward(self, layer, a):
        return layer.linear(a)


@pytest.mark.parametrize(
    "error, match, make",
    [
        (
            ValueError,
            r"'Conv_9' matches no layer; the model's layers are \['Conv_0', 'Dense_0'\]",
            lambda: Composite(name_map={"Conv_9": Gamma()}),
        ),
        (ValueError, "type_map keys must be", lambda: Composite(type_map={"linear": Gamma()})),
        (ValueError, "type_map keys must be", lambda: Composite(type_map={nn.relu: Gamma()})),
        (
            TypeError,
            r"name_map\['Conv_0'\] must be an LRP Rule",
            lambda: Composite(name_map={"Conv_0": "gamma"}),
        ),
        (TypeError, "rule must be hashable", lambda: Unhashable()),
        (
            ValueError,
            "ZBox needs a first layer.*'Dense_0' is not one",
            lambda: Composite(name_map={"Dense_0": ZBox(0.0, 1.0)}),
        ),
        (
            ValueError,
            "every ZBox of a composite bounds the same input",
            lambda: Composite(first=ZBox(0.0, 1.0), default=ZBox(0.0, 2.0)),
        ),
        (ValueError, "x must lie within", lambda: ZBox(0.0, 0.5)),
        (TypeError, "rule must be one of", lambda: 3),
        (ValueError, "rule must be one of", lambda: "z+"),
        (TypeError, "gamma must be a number", lambda: Gamma("big")),
    ],
)
def test_bad_rules_are_named(two_layer, images, error, match, make):
    model, _ = two_layer
    with pytest.raises(error, match=match):
        lrp(model, images, target=0, rule=make())


def test_options_of_the_strings_are_refused_with_objects(two_layer, images):
    model, _ = two_layer
    with pytest.raises(ValueError, match="epsilon go with the rule strings"):
        lrp(model, images, target=0, rule=Epsilon(0.1), epsilon=0.1)
    with pytest.raises(ValueError, match="low, high go with the rule strings"):
        lrp(model, images, target=0, rule=epsilon_gamma_box(0.0, 1.0), low=0.0, high=1.0)
