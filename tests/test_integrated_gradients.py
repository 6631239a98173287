"""Integrated Gradients: closed forms, convergence, completeness, and a float64 reference.

Chunk-size invariance, several targets in one pass and no retrace are checked for every
method in test_registry.py."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import linear_model, mlp_model

import jaxplain
from jaxplain import schedules

SCHEDULES = sorted(schedules.SCHEDULES)


def slow_integrated_gradients(model, x, baseline, target, alphas, weights):
    """Independent reference: a Python loop over steps and examples calling jax.grad."""
    out = []
    for xi, bi, ti in zip(x, baseline, target):

        def score(z):
            return model(z[None])[0, ti]

        total = jnp.zeros_like(xi)
        for alpha, weight in zip(alphas, weights):
            total = total + weight * jax.grad(score)(bi + alpha * (xi - bi))
        out.append((xi - bi) * total)
    return jnp.stack(out)


@pytest.mark.parametrize("schedule", SCHEDULES)
@pytest.mark.parametrize("steps", [2, 9])
def test_linear_model_gives_weight_times_difference(schedule, steps, rng):
    weights = rng.normal(size=(6, 3)).astype(np.float32)
    model = linear_model(weights, rng.normal(size=3).astype(np.float32))
    x = rng.normal(size=(4, 6)).astype(np.float32)
    baseline = rng.normal(size=(4, 6)).astype(np.float32)
    target = np.array([0, 2, 1, 2])
    a = jaxplain.integrated_gradients(
        model, x, target=target, baseline=baseline, steps=steps, schedule=schedule
    )
    expected = weights[:, target].T * (x - baseline)
    np.testing.assert_allclose(a.values, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(a.delta, 0.0, atol=1e-5)


@pytest.mark.parametrize("baseline", [0.5, np.linspace(-1, 1, 6)])
def test_baseline_scalar_and_one_example(baseline, rng):
    weights = rng.normal(size=(6, 2)).astype(np.float32)
    x = rng.normal(size=(3, 6)).astype(np.float32)
    a = jaxplain.integrated_gradients(linear_model(weights), x, target=1, baseline=baseline)
    np.testing.assert_allclose(a.values, weights[:, 1] * (x - baseline), rtol=1e-5, atol=1e-6)


def power_model(degree):
    """F_c(x) = sum_i c_{ic} x_i^degree: the path integrand is a polynomial of degree-1."""
    return jaxplain.Model(lambda c, x: (x**degree) @ c, jnp.asarray(np.linspace(0.5, 1.5, 8).reshape(4, 2)))


@pytest.mark.parametrize("n", [1, 2, 3, 5])
def test_gauss_legendre_exact_for_polynomial_integrand_of_degree_2n_minus_1(n, rng):
    with jax.enable_x64(True):
        x = jnp.asarray(rng.uniform(0.5, 1.5, size=(3, 4)))
        baseline = jnp.asarray(rng.uniform(-0.5, 0.5, size=(3, 4)))
        coefficients = np.linspace(0.5, 1.5, 8).reshape(4, 2)

        def error(degree):
            a = jaxplain.integrated_gradients(power_model(degree), x, target=1, baseline=baseline, steps=n)
            exact = coefficients[:, 1] * (x**degree - baseline**degree)
            return float(jnp.max(jnp.abs(a.values - exact)))

        assert error(2 * n) < 1e-12  # integrand degree 2n - 1: exact
        assert error(2 * n + 1) > 1e-8  # one degree more: not exact, so the test can fail


def test_riemann_middle_error_falls_like_one_over_n_squared(rng):
    with jax.enable_x64(True):
        model = mlp_model(features=5, dtype=jnp.float64)
        x = jnp.asarray(rng.normal(size=(3, 5)))
        reference = jaxplain.integrated_gradients(model, x, target=0, steps=256).values

        def error(n):
            a = jaxplain.integrated_gradients(model, x, target=0, steps=n, schedule="riemann_middle")
            return float(jnp.linalg.norm(a.values - reference))

        errors = [error(n) for n in (8, 16, 32)]
    ratios = np.array(errors[:-1]) / np.array(errors[1:])
    np.testing.assert_allclose(ratios, 4.0, rtol=0.1)


def test_completeness_on_mlp_with_256_gauss_legendre_steps(rng):
    model = mlp_model(features=5)
    x = rng.normal(size=(16, 5)).astype(np.float32)
    a = jaxplain.integrated_gradients(model, x, target="predicted", steps=256)
    assert a.relative_delta.shape == (16,)
    assert float(jnp.max(a.relative_delta)) <= 1e-3
    # delta is exactly sum(values) - (F(x) - F(0)), independently recomputed here
    logits_x, logits_0 = model(jnp.asarray(x)), model(jnp.zeros_like(x))
    rows = np.arange(16)
    difference = logits_x[rows, a.target] - logits_0[rows, a.target]
    np.testing.assert_allclose(a.delta, a.values.sum(axis=1) - difference, atol=1e-5)


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_agrees_with_slow_float64_loop(schedule, rng):
    with jax.enable_x64(True):
        model = mlp_model(features=5, dtype=jnp.float64)
        x = jnp.asarray(rng.normal(size=(3, 5)))
        baseline = jnp.asarray(rng.normal(size=(3, 5)))
        target = np.array([2, 0, 1])
        a = jaxplain.integrated_gradients(
            model, x, target=target, baseline=baseline, steps=12, schedule=schedule, chunk_size=5
        )
        assert a.values.dtype == jnp.float64
        alphas, weights = schedules.get(schedule, 12)
        expected = slow_integrated_gradients(model, x, baseline, target, alphas, weights)
        relative = jnp.linalg.norm(a.values - expected) / jnp.linalg.norm(expected)
    assert float(relative) <= 1e-6


def test_predicted_and_top_k_targets(rng):
    model = mlp_model(features=5, num_classes=4)
    x = rng.normal(size=(6, 5)).astype(np.float32)
    logits = np.asarray(model(jnp.asarray(x)))
    predicted = jaxplain.integrated_gradients(model, x, target="predicted", steps=8)
    np.testing.assert_array_equal(predicted.target, logits.argmax(axis=1))
    explicit = jaxplain.integrated_gradients(model, x, target=logits.argmax(axis=1), steps=8)
    np.testing.assert_allclose(predicted.values, explicit.values, rtol=1e-6)
    top = jaxplain.integrated_gradients(model, x, target=jaxplain.top_k(2), steps=8)
    np.testing.assert_array_equal(top.target, np.argsort(-logits, axis=1)[:, :2])
    np.testing.assert_allclose(top.values[:, 0], predicted.values, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("output", ["probs", "log_probs"])
def test_probability_outputs(output, rng):
    model = mlp_model(features=5).with_output(output)
    x = rng.normal(size=(4, 5)).astype(np.float32)
    logits = model.with_output("logits")(jnp.asarray(x))
    expected = jax.nn.softmax(logits) if output == "probs" else jax.nn.log_softmax(logits)
    np.testing.assert_allclose(model(jnp.asarray(x)), expected, rtol=1e-6)
    a = jaxplain.integrated_gradients(model, x, target="predicted", steps=128)
    assert float(jnp.max(a.relative_delta)) <= 1e-3
