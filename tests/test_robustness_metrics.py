"""Robustness metrics: closed forms on linear models, slow references, invariances, errors."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import TinyMLP, linear_model, mlp_model

import jaxplain
from jaxplain.attribution import Attribution
from jaxplain.metrics.robustness import (
    _shifts,
    _translated,
    avg_sensitivity,
    consistency,
    continuity,
    local_lipschitz_estimate,
    max_sensitivity,
    relative_input_stability,
    relative_output_stability,
    relative_representation_stability,
    sensitivity_max,
)

KEY = jax.random.key(0)
MLP = mlp_model(features=4)
X = np.random.default_rng(3).uniform(0.5, 1.5, size=(3, 4)).astype(np.float32)  # no zero entry
D = np.random.default_rng(4).uniform(-0.05, 0.05, size=(4,) + X.shape).astype(np.float32)
IDENTITY = jaxplain.Model.from_callable(lambda x: x)  # logits = x: predicts the largest feature


def squares(model, x, *, target):
    """A user's method: phi(x) = x^2 (the model is not read)."""
    del model
    return Attribution(values=x**2, target=target)


class Hidden(nn.Module):
    @nn.compact
    def __call__(self, x):
        hidden = nn.Dense(4, use_bias=False, name="hidden")(x)
        return jnp.stack([hidden.sum(-1), jnp.zeros_like(hidden[:, 0])], -1)


# logits (sum(x), 0): gradient x input of class 0 is x itself
SUM = jaxplain.Model.from_callable(lambda x: jnp.stack([x.sum(-1), jnp.zeros_like(x[:, 0])], -1))


def sum_linen():
    """`SUM` as a Linen model whose layer "hidden" is x."""
    variables = {"params": {"hidden": {"kernel": jnp.eye(4)}}}
    return jaxplain.Model.from_linen(Hidden(), variables)


# The metrics that re-run the explainer on random copies, all on the MLP with saliency.
RANDOM = {
    "max_sensitivity": lambda **kw: max_sensitivity(jaxplain.saliency, MLP, **kw),
    "avg_sensitivity": lambda **kw: avg_sensitivity(jaxplain.saliency, MLP, **kw),
    "local_lipschitz_estimate": lambda **kw: local_lipschitz_estimate(jaxplain.saliency, MLP, **kw),
    "relative_input_stability": lambda **kw: relative_input_stability(jaxplain.saliency, MLP, **kw),
    "relative_output_stability": lambda **kw: relative_output_stability(jaxplain.saliency, MLP, **kw),
    "relative_representation_stability": lambda **kw: relative_representation_stability(
        jaxplain.saliency, MLP, layer="Dense_1", **kw
    ),
}


# --- slow references: a Python loop over the copies --------------------------------------


_saliency = jax.jit(lambda x, t: jaxplain.saliency(MLP, x, target=t).values)
_outputs = jax.jit(MLP.__call__)


@jax.jit
def _layer(x):  # Dense_1's output, captured by Flax itself
    _, state = TinyMLP(num_classes=3).apply(
        MLP.params, x, capture_intermediates=True, mutable=["intermediates"]
    )
    return state["intermediates"]["Dense_1"]["__call__"][0]


def _flat(a):
    return np.asarray(a, np.float64).reshape(len(X), -1)


def _relative(a, b, eps=1e-6):
    return (b - a) / np.where(a == 0, eps, a)


def reference(name, x, perturbations, target=1):
    """Each metric by its formula, copy by copy, in float64."""
    clean, outputs = _flat(_saliency(x, target)), _flat(_outputs(x))
    scores = []
    for d in perturbations:
        copy = x + d
        moved, copy_outputs = _flat(_saliency(copy, target)), _flat(_outputs(copy))
        change = np.linalg.norm(moved - clean, axis=1)
        same = copy_outputs.argmax(1) == outputs.argmax(1)
        relative = np.linalg.norm(_relative(clean, moved), axis=1)
        score = {
            "max_sensitivity": change / np.linalg.norm(clean, axis=1),
            "avg_sensitivity": change / np.linalg.norm(clean, axis=1),
            "local_lipschitz_estimate": change / np.linalg.norm(_flat(d), axis=1),
            "relative_input_stability": relative
            / np.maximum(np.linalg.norm(_relative(_flat(x), _flat(copy)), axis=1), 1e-6),
            "relative_output_stability": relative
            / np.maximum(np.linalg.norm(copy_outputs - outputs, axis=1), 1e-6),
            "relative_representation_stability": relative
            / np.maximum(np.linalg.norm(_relative(_flat(_layer(x)), _flat(_layer(copy))), axis=1), 1e-6),
        }[name]
        scores.append(np.where(same, score, np.nan) if name.startswith("relative") else score)
    scores = np.stack(scores, axis=1)
    return np.nanmean(scores, axis=1) if name == "avg_sensitivity" else np.nanmax(scores, axis=1)


@pytest.mark.parametrize("name", list(RANDOM))
def test_each_metric_matches_its_formula_copy_by_copy(name):
    value = RANDOM[name](x=X, target=1, key=None, perturbations=D)
    np.testing.assert_allclose(value, reference(name, X, D), rtol=2e-4)
    assert np.all(np.asarray(value) > 0)


@pytest.mark.parametrize("name", list(RANDOM))
def test_batch_equals_each_example_alone(name):
    batch = RANDOM[name](x=X, target=1, key=None, perturbations=D)
    alone = [
        RANDOM[name](x=X[i : i + 1], target=1, key=None, perturbations=D[:, i : i + 1])[0] for i in range(3)
    ]
    np.testing.assert_allclose(batch, alone, rtol=1e-4)  # float32 rounding of h(x') - h(x)


# Every metric draws its copies the same way: uniform (the sensitivities, the stabilities) or
# Gaussian (the Lipschitz estimate) noise from fold_in(key, i); the rest in the slow tier.
@pytest.mark.parametrize(
    "name",
    [
        n if n in ("max_sensitivity", "local_lipschitz_estimate") else pytest.param(n, marks=pytest.mark.slow)
        for n in RANDOM
    ],
)
def test_same_key_same_result(name):
    scale = {"sigma": 0.05} if name == "local_lipschitz_estimate" else {"radius": 0.05}
    first = RANDOM[name](x=X, target=1, key=KEY, samples=3, **scale)
    np.testing.assert_array_equal(first, RANDOM[name](x=X, target=1, key=KEY, samples=3, **scale))
    assert not np.allclose(first, RANDOM[name](x=X, target=1, key=jax.random.key(1), samples=3, **scale))


def test_the_draws_do_not_depend_on_the_chunk():
    # copy i draws from fold_in(key, i) in every metric (the same call as the key test's)
    one_at_a_time = max_sensitivity(
        jaxplain.saliency, MLP, X, target=1, key=KEY, samples=3, radius=0.05, noise_chunk_size=1
    )
    at_once = max_sensitivity(jaxplain.saliency, MLP, X, target=1, key=KEY, samples=3, radius=0.05)
    np.testing.assert_allclose(one_at_a_time, at_once, rtol=1e-5)


# --- known answers --------------------------------------------------------------------------


def test_saliency_of_a_linear_model_does_not_move():
    model = linear_model(np.random.default_rng(0).normal(size=(4, 3)).astype(np.float32))
    for metric in (max_sensitivity, avg_sensitivity, local_lipschitz_estimate):
        np.testing.assert_allclose(
            metric(jaxplain.saliency, model, X, target=1, key=KEY, samples=4), 0.0, atol=1e-7
        )
    np.testing.assert_allclose(continuity(jaxplain.saliency, model, X, target=1), 0.0, atol=1e-7)
    assert sensitivity_max is max_sensitivity  # Captum's name for the same function


def test_sensitivities_of_gradient_x_input_by_hand():
    # phi = w * x with w = (1, 1): phi(x + d) - phi(x) = d, ||phi(x)|| = ||(1, 2)|| = sqrt(5)
    model = linear_model(np.array([[1.0, 0.0], [1.0, 0.0]], np.float32))
    x = np.array([[1.0, 2.0]], np.float32)
    d = np.array([[[0.1, 0.0]], [[0.0, -0.2]]], np.float32)
    run = functools.partial(jaxplain.input_x_gradient)
    options = dict(target=0, key=None, perturbations=d)
    np.testing.assert_allclose(max_sensitivity(run, model, x, **options), [0.2 / np.sqrt(5)], rtol=1e-6)
    np.testing.assert_allclose(avg_sensitivity(run, model, x, **options), [0.15 / np.sqrt(5)], rtol=1e-6)
    np.testing.assert_allclose(max_sensitivity(run, model, x, normalize=False, **options), [0.2], rtol=1e-6)
    np.testing.assert_allclose(avg_sensitivity(run, model, x, normalize=False, **options), [0.15], rtol=1e-6)


def test_local_lipschitz_of_gradient_x_input_by_hand():
    # phi = w * x, w = (3, 1): ||w * d|| / ||d|| is 3, 1 and sqrt(10 / 2) for these d;
    # a copy equal to x has no quotient and is left out
    model = linear_model(np.array([[3.0], [1.0]], np.float32))
    x = np.array([[0.5, -1.0]], np.float32)
    d = np.array([[[0.0, 1.0]], [[1.0, 1.0]], [[0.0, 0.0]], [[2.0, 0.0]]], np.float32)
    value = local_lipschitz_estimate(jaxplain.input_x_gradient, model, x, target=0, key=None, perturbations=d)
    np.testing.assert_allclose(value, [3.0], rtol=1e-6)
    nothing = local_lipschitz_estimate(
        jaxplain.input_x_gradient, model, x, target=0, key=None, perturbations=0 * d
    )
    assert np.isnan(nothing).all()


def test_a_randomized_method_makes_the_same_draws_for_every_copy():
    # SmoothGrad of gradient x input on a linear model: w * (x + mean noise). With the same
    # draws at x and x + d (d keeps x's range, so the noise scale too), the change is w * d.
    model = linear_model(np.array([[3.0], [1.0], [2.0]], np.float32))
    x = np.array([[0.0, 1.0, 0.5]], np.float32)
    d = np.array([[[0.0, 0.0, 0.2]]], np.float32)
    method = functools.partial(jaxplain.smoothgrad, method="input_x_gradient", samples=4)
    value = local_lipschitz_estimate(method, model, x, target=0, key=KEY, perturbations=d)
    np.testing.assert_allclose(value, [2.0], rtol=1e-5)


def test_continuity_of_gradient_x_input_by_hand():
    # phi = w * x, w = (1, 2, 3, 4), x = (0, 1, 0, 0): one step right gives (0, 0, 1, 0),
    # |phi - phi'|_1 = 2 + 3 = 5, ||x - x'|| = sqrt(2); one step left (1, 0, 0, 0): 2 + 1 = 3
    model = linear_model(np.array([[1.0], [2.0], [3.0], [4.0]], np.float32))
    x = np.array([[0.0, 1.0, 0.0, 0.0]], np.float32)
    value = continuity(jaxplain.input_x_gradient, model, x, target=0, shifts=(1, -1))
    np.testing.assert_allclose(value, [5 / np.sqrt(2)], rtol=1e-6)
    left = continuity(jaxplain.input_x_gradient, model, x, target=0, shifts=(-1, -1))
    np.testing.assert_allclose(left, [3 / np.sqrt(2)], rtol=1e-6)
    constant = continuity(
        jaxplain.input_x_gradient, model, np.ones((1, 4), np.float32), target=0, shifts=(1, 2)
    )
    assert np.isnan(constant).all()  # no shift changes a constant input


def test_continuity_shifts_follow_quantus():
    # Quantus 0.6.0: nr_steps = 28 over a width of 28: dx = 57 // 28 = 2, shifts -26, ..., 28
    np.testing.assert_array_equal(_shifts(None, 28, 28), [s for s in range(-26, 29, 2) if s != 0])
    np.testing.assert_array_equal(_shifts(None, None, 3), [-2, -1, 1, 2, 3, 3])  # 7 steps, clipped


@pytest.mark.slow  # importing Quantus imports torch
def test_translation_matches_quantus_on_images():
    quantus = pytest.importorskip("quantus.functions.perturb_func")
    images = np.random.default_rng(0).uniform(size=(2, 5, 6, 3)).astype(np.float32)  # NHWC
    for shift in (-6, -2, 0, 3, 6):
        ours = np.asarray(_translated(jnp.asarray(images), shift, 2))
        theirs = quantus.batched_translation(images.transpose(0, 3, 1, 2), "black", shift, direction="x")
        np.testing.assert_allclose(ours, theirs.transpose(0, 2, 3, 1), rtol=1e-6)


def test_continuity_batch_equals_loop_on_images():
    model = linear_model(np.random.default_rng(0).normal(size=(2 * 3 * 2, 2)).astype(np.float32))
    images = np.random.default_rng(1).uniform(size=(3, 2, 3, 2)).astype(np.float32)
    batch = continuity(jaxplain.input_x_gradient, model, images, target=0)
    alone = [continuity(jaxplain.input_x_gradient, model, images[i : i + 1], target=0)[0] for i in range(3)]
    assert np.all(np.asarray(batch) > 0)
    np.testing.assert_allclose(batch, alone, rtol=1e-5)


def test_relative_stabilities_of_gradient_x_input_by_hand():
    # phi = x (gradient x input of class 0 of SUM), so (phi' - phi) / phi = d / x: RIS = 1;
    # ROS divides by ||h(x') - h(x)|| = |sum d|: d = (0.1, 0, ..) gives 1, d = (0.05, 0.05, ..)
    # gives ||(0.05, 0.1)|| / 0.1 = sqrt(1.25)
    x = np.array([[1.0, 0.5, 0.2, 0.1]], np.float32)
    d = np.array([[[0.1, 0.0, 0.0, 0.0]], [[0.05, 0.05, 0.0, 0.0]]], np.float32)
    options = dict(target=0, key=None, perturbations=d)
    ris = relative_input_stability(jaxplain.input_x_gradient, SUM, x, **options)
    np.testing.assert_allclose(ris, [1.0], rtol=1e-5)
    ros = relative_output_stability(jaxplain.input_x_gradient, SUM, x, **options)
    np.testing.assert_allclose(ros, [np.sqrt(1.25)], rtol=1e-5)
    # the layer "hidden" is x itself: RRS = RIS
    rrs = relative_representation_stability(
        jaxplain.input_x_gradient, sum_linen(), x, layer="hidden", **options
    )
    np.testing.assert_allclose(rrs, [1.0], rtol=1e-5)


def test_copies_that_change_the_prediction_are_left_out():
    # phi = x^2 at x = (1, 0.5) (class 0): d = (0.1, 0) keeps the class, RIS term
    # ((1.1^2 - 1) / 1) / 0.1 = 2.1; d = (0, 1) makes it class 1 (its term would be 8 / 2 = 4)
    x = np.array([[1.0, 0.5]], np.float32)
    d = np.array([[[0.1, 0.0]], [[0.0, 1.0]]], np.float32)
    value = relative_input_stability(squares, IDENTITY, x, target=0, key=None, perturbations=d)
    np.testing.assert_allclose(value, [2.1], rtol=1e-5)
    only_flipped = relative_input_stability(
        squares, IDENTITY, x, target=0, key=None, perturbations=d + [0, 1]
    )
    assert np.isnan(only_flipped).all()


def test_eps_stands_for_zero_entries_and_bounds_the_denominator():
    # x_0 = 0: both relative changes divide d_0 by eps; phi = x^2 moves by d_0^2 there
    x = np.array([[0.0, 2.0]], np.float32)
    d = np.array([[[0.5, 0.0]]], np.float32)
    value = relative_input_stability(squares, IDENTITY, x, target=1, key=None, perturbations=d, eps=1e-2)
    np.testing.assert_allclose(value, [0.25 / 0.5], rtol=1e-5)


# --- consistency --------------------------------------------------------------------------


def test_consistency_by_hand():
    # predictions 0, 0, 1, 1; top-1 explanations {0}, {0}, {0}, {1}
    x = np.array([[2.0, 0.0], [3.0, 0.0], [0.0, 1.0], [0.0, 2.0]], np.float32)
    phi = np.array([[5.0, 1.0], [-4.0, 1.0], [3.0, 0.0], [0.0, 1.0]], np.float32)
    value = consistency(IDENTITY, x, phi, k=1)
    np.testing.assert_allclose(value, [0.5, 0.5, 0.0, np.nan])
    # by sign: (+,+), (-,+), (+,0), (0,+): no two alike
    assert np.isnan(consistency(IDENTITY, x, phi, discretisation="sign")).all()
    same_signs = consistency(IDENTITY, x, np.abs(phi) + 1, discretisation="sign")
    np.testing.assert_allclose(same_signs, [1 / 3, 1 / 3, 1 / 3, 1 / 3])


def test_consistency_is_a_property_of_the_batch():
    x = np.array([[2.0, 0.0], [3.0, 0.0], [0.0, 1.0]], np.float32)
    phi = np.array([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0]], np.float32)
    np.testing.assert_allclose(consistency(IDENTITY, x[:2], phi[:2], k=1), [1.0, 1.0])
    np.testing.assert_allclose(consistency(IDENTITY, x, phi, k=1), [0.5, 0.5, 0.0])  # one more example


# --- errors ---------------------------------------------------------------------------------

ERRORS = [
    (
        lambda: max_sensitivity(jaxplain.saliency, MLP, X, target=1, key=KEY, radius=-1.0),
        ValueError,
        "radius",
    ),
    (
        lambda: avg_sensitivity(jaxplain.saliency, MLP, X, target=1, key=KEY, normalize=1),
        TypeError,
        "normalize",
    ),
    (lambda: avg_sensitivity(jaxplain.saliency, MLP, X, target=1, key=KEY, samples=0), ValueError, "samples"),
    (
        lambda: local_lipschitz_estimate(jaxplain.saliency, MLP, X, target=1, key=KEY, sigma="a"),
        TypeError,
        "sigma",
    ),
    (
        lambda: local_lipschitz_estimate(jaxplain.saliency, MLP, X, target=1, key=KEY, perturbations=D),
        TypeError,
        "key",
    ),
    (lambda: local_lipschitz_estimate(jaxplain.saliency, MLP, X, target=1, key=None), TypeError, "key"),
    (
        lambda: local_lipschitz_estimate(
            jaxplain.saliency, MLP, X, target=1, key=None, perturbations=D[:, :2]
        ),
        ValueError,
        "perturbations",
    ),
    (
        lambda: relative_input_stability(jaxplain.saliency, MLP, X, target=1, key=KEY, eps=0.0),
        ValueError,
        "eps",
    ),
    (lambda: relative_output_stability(3, MLP, X, target=1, key=KEY), TypeError, "method"),
    (
        lambda: relative_representation_stability(jaxplain.saliency, MLP, X, target=1, key=KEY, layer="conv"),
        ValueError,
        "layer",
    ),
    (lambda: continuity(jaxplain.saliency, MLP, X, target=1, steps=10), ValueError, "steps"),
    (lambda: continuity(jaxplain.saliency, MLP, X, target=1, shifts=1), TypeError, "shifts"),
    (lambda: continuity(jaxplain.saliency, MLP, X, target=1, axis=0), ValueError, "axis"),
    (lambda: continuity(jaxplain.saliency, MLP, X, target=7), ValueError, "target"),
    (lambda: consistency(IDENTITY, X, X, discretisation="rank"), ValueError, "discretisation"),
    (lambda: consistency(IDENTITY, X, X, k=5), ValueError, "k"),
    (lambda: consistency(IDENTITY, X, X[:, :2]), ValueError, "attribution"),
]


@pytest.mark.parametrize("call, error, name", ERRORS)
def test_errors_name_the_argument(call, error, name):
    with pytest.raises(error, match=name):
        call()


@pytest.mark.slow
def test_one_copy_scores_as_quantus_objectives_do():
    # With one copy the metric is that copy's score: the same numbers as Quantus 0.6.0's
    # objectives on the same explanations, inputs, outputs and layer outputs.
    robustness = pytest.importorskip("quantus.metrics.robustness")
    similarity = pytest.importorskip("quantus.functions.similarity_func")
    d = D[:1]
    x, copy = X.astype(np.float64), (X + d[0]).astype(np.float64)
    e_x, e_copy = _flat(_saliency(X, 1)), _flat(_saliency(X + d[0], 1))
    assert (_flat(_outputs(X)).argmax(1) == _flat(_outputs(X + d[0])).argmax(1)).all()
    quantus = {
        "relative_input_stability": robustness.RelativeInputStability(
            disable_warnings=True
        ).relative_input_stability_objective(x, copy, e_x, e_copy),
        "relative_output_stability": robustness.RelativeOutputStability(
            disable_warnings=True
        ).relative_output_stability_objective(_flat(_outputs(X)), _flat(_outputs(X + d[0])), e_x, e_copy),
        "relative_representation_stability": robustness.RelativeRepresentationStability(
            disable_warnings=True
        ).relative_representation_stability_objective(_flat(_layer(X)), _flat(_layer(X + d[0])), e_x, e_copy),
        "local_lipschitz_estimate": similarity.lipschitz_constant(
            e_x,
            e_copy,
            x,
            copy,
            norm_numerator=similarity.distance_euclidean,
            norm_denominator=similarity.distance_euclidean,
        ),
        "max_sensitivity": np.linalg.norm(e_copy - e_x, axis=1) / np.linalg.norm(e_x, axis=1),
    }
    for name, expected in quantus.items():
        np.testing.assert_allclose(
            RANDOM[name](x=X, target=1, key=None, perturbations=d), expected, rtol=2e-4
        )
