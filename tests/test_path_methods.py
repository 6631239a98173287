"""Expected Gradients, Blur IG, Guided IG and IDGI: closed forms, completeness, invariances.

Chunk-size invariance, same key same result, several targets in one pass and no retrace
are checked for every method in test_registry.py."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import TinyCNN, linear_model, mlp_model

import jaxplain
from jaxplain.blur import gaussian as _blur
from jaxplain.methods.integrated import blur_ig, expected_gradients, guided_ig, idgi

KEY = jax.random.key(0)


def _cnn():
    module = TinyCNN()
    variables = module.init(jax.random.PRNGKey(1), jnp.zeros((1, 6, 6, 2)))
    return jaxplain.Model.from_linen(module, variables)


# ---- expected gradients -------------------------------------------------------------


def test_expected_gradients_on_a_linear_model_is_exact_for_the_drawn_references(rng):
    weights = rng.normal(size=(5, 3)).astype(np.float32)
    x = rng.normal(size=(4, 5)).astype(np.float32)
    background = rng.normal(size=(9, 5)).astype(np.float32)
    a = expected_gradients(linear_model(weights), x, target=2, background=background, key=KEY, samples=3000)
    np.testing.assert_allclose(a.delta, 0.0, atol=1e-5)  # sum = F(x) - mean F(drawn b)
    expected = weights[:, 2] * (x - background.mean(axis=0))  # the expectation
    np.testing.assert_allclose(a.values, expected, atol=0.05 * np.abs(expected).max())


def test_expected_gradients_names_a_background_of_the_wrong_shape(rng):
    x = rng.normal(size=(3, 5)).astype(np.float32)
    with pytest.raises(ValueError, match="background must hold M >= 1 reference examples of shape \\(5,\\)"):
        expected_gradients(mlp_model(features=5), x, target=0, background=np.zeros((4, 3)), key=KEY)


# ---- blur IG ------------------------------------------------------------------------


def test_blur_is_normalised_and_sigma_zero_is_the_identity(rng):
    blur = jax.jit(_blur, static_argnums=2)  # in a program, as blur_ig calls it
    x = jnp.asarray(rng.normal(size=(2, 7, 5, 3)), jnp.float32)
    np.testing.assert_allclose(blur(x, 0.0, 3.0), x, atol=1e-6)
    blurred = blur(x, 2.0, 3.0)
    np.testing.assert_allclose(blurred.mean(axis=(1, 2)), x.mean(axis=(1, 2)), atol=0.15)
    assert float(blurred.std()) < float(x.std())
    constant = jnp.ones((1, 6, 6, 1))
    np.testing.assert_allclose(blur(constant, 1.5, 2.0), constant, rtol=1e-5)  # rows sum to 1


def test_blur_ig_on_a_linear_model_equals_its_closed_form(rng):
    """grad F = w everywhere, so the sum of w * (step changes) telescopes: w * (x - blur(x))."""
    x = rng.normal(size=(2, 6, 6, 2)).astype(np.float32)
    weights = rng.normal(size=(72, 3)).astype(np.float32)
    a = blur_ig(linear_model(weights), x, target=1, max_sigma=3.0, steps=5)
    expected = weights[:, 1].reshape(6, 6, 2) * (x - np.asarray(_blur(jnp.asarray(x), 3.0, 3.0)))
    np.testing.assert_allclose(a.values, expected, rtol=1e-4, atol=1e-5)


def test_blur_ig_converges(rng):
    model = _cnn()
    x = rng.normal(size=(2, 6, 6, 2)).astype(np.float32)
    coarse = blur_ig(model, x, target=0, max_sigma=3.0, steps=4)
    fine = blur_ig(model, x, target=0, max_sigma=3.0, steps=64)
    assert float(jnp.max(fine.relative_delta)) < float(jnp.max(coarse.relative_delta))
    assert float(jnp.max(fine.relative_delta)) < 0.01
    with pytest.raises(ValueError, match="blur_ig needs spatial axes"):
        blur_ig(mlp_model(features=5), np.zeros((2, 5), np.float32), target=0)


# ---- IDGI ---------------------------------------------------------------------------


def test_idgi_on_a_linear_model_equals_its_closed_form(rng):
    """g = w at every point and each step changes F by w.(x - b)/steps, so
    phi = w^2 / |w|^2 * w.(x - b)."""
    weights = rng.normal(size=(5, 2)).astype(np.float32)
    x = rng.normal(size=(3, 5)).astype(np.float32)
    a = idgi(linear_model(weights), x, target=0, steps=7)
    w = weights[:, 0]
    np.testing.assert_allclose(a.values, (w**2 / (w**2).sum()) * (x @ w)[:, None], rtol=1e-5, atol=1e-6)


def test_idgi_completeness_is_exact_at_any_step_count(rng):
    model = mlp_model(features=5)
    x = rng.normal(size=(4, 5)).astype(np.float32)
    for steps in (2, 9):
        assert float(jnp.max(jnp.abs(idgi(model, x, target="predicted", steps=steps).relative_delta))) < 1e-4


# ---- guided IG ----------------------------------------------------------------------


def slow_guided_ig(grad, x, baseline, steps, fraction, max_dist):
    """An independent numpy transcription of the Guided IG algorithm, one example."""
    x, baseline = np.asarray(x, np.float64).ravel(), np.asarray(baseline, np.float64).ravel()
    current, attribution = baseline.copy(), np.zeros_like(x)
    total = np.abs(x - baseline).sum()
    for step in range(steps):
        g = np.asarray(grad(current), np.float64)
        alpha = (step + 1) / steps
        low, high = max(alpha - max_dist, 0.0), min(alpha + max_dist, 1.0)
        low_point, high_point = baseline + low * (x - baseline), baseline + high * (x - baseline)
        target = total * (1 - alpha)
        blocked = np.zeros(x.shape, bool)
        for _ in range(100):
            old = current.copy()
            with np.errstate(divide="ignore", invalid="ignore"):
                progress = np.where(x != baseline, (current - baseline) / (x - baseline), high)
            current = np.where(progress < low, low_point, current)
            l1 = np.abs(current - x).sum()
            if np.isclose(l1, target, rtol=1e-5, atol=1e-7 * (1 + total)):
                attribution += (current - old) * g
                break
            blocked |= current == high_point
            free = np.where(blocked, np.inf, np.abs(g))
            threshold = np.quantile(free, fraction, method="lower")
            chosen = (free <= threshold) & ~blocked
            available = (np.abs(current - high_point) * chosen).sum()
            gamma = (l1 - target) / available if available > 0 else np.inf
            if gamma > 1:
                current = np.where(chosen, high_point, current)
            else:
                current = np.where(chosen, current + gamma * (high_point - current), current)
            attribution += (current - old) * g
            if gamma <= 1:
                break
    return attribution


def test_guided_ig_agrees_with_a_slow_float64_transcription(rng):
    with jax.enable_x64(True):
        model = mlp_model(features=6, dtype=jnp.float64)
        x = jnp.asarray(rng.normal(size=(2, 6)))
        fast = guided_ig(model, x, target=1, steps=20, fraction=0.25, max_dist=0.1)
        for i in range(2):
            grad = jax.grad(lambda z: model(z[None])[0, 1])
            slow = slow_guided_ig(grad, x[i], np.zeros(6), 20, 0.25, 0.1)
            np.testing.assert_allclose(fast.values[i], slow, rtol=1e-6, atol=1e-9)


def test_guided_ig_linear_closed_form_and_completeness(rng):
    weights = rng.normal(size=(5, 3)).astype(np.float32)
    x = rng.normal(size=(3, 5)).astype(np.float32)
    a = guided_ig(linear_model(weights), x, target=2, steps=16)
    np.testing.assert_allclose(a.values, weights[:, 2] * x, rtol=1e-4, atol=1e-5)  # any path, same integral
    model = mlp_model(features=5)
    coarse = guided_ig(model, x, target=0, steps=8)
    fine = guided_ig(model, x, target=0, steps=256)
    assert float(jnp.max(fine.relative_delta)) < float(jnp.max(coarse.relative_delta))
