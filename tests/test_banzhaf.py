"""banzhaf: the worked example of docs/architecture.md ("Adding a method").

Checked against an independent float64 enumeration of all coalitions; the properties
every method must have (chunk invariance, same key same answer, several targets in one
pass, no retrace) are checked for it with every method in test_registry.py.
"""

import itertools

import jax
import numpy as np
import pytest

import jaxplain

MASK = np.array([0, 0, 1, 2, 3, 3])  # 6 features in 4 groups
RNG = np.random.default_rng(7)
W1 = RNG.normal(size=(6, 8)) / 2
W2 = RNG.normal(size=(8, 3))


def numpy_model(x):
    return np.tanh(x @ W1) @ W2


MODEL = jaxplain.Model(
    lambda p, x: jax.numpy.tanh(x @ p[0]) @ p[1], (W1.astype(np.float32), W2.astype(np.float32))
)
X = RNG.normal(size=(3, 6)).astype(np.float32)
BASELINE = RNG.normal(size=(6,)).astype(np.float32) / 4


def exact_banzhaf(x, target):
    """phi_g = 2^-(G-1) sum over coalitions S of the others of v(S + g) - v(S), float64."""
    groups = MASK.max() + 1
    x64, base64 = x.astype(np.float64), BASELINE.astype(np.float64)
    phi = np.zeros((x.shape[0], groups))
    for bits in itertools.product([0, 1], repeat=groups):
        z = np.array(bits, bool)
        value = numpy_model(np.where(z[MASK], x64, base64))[:, target]
        phi += np.where(z, value[:, None], -value[:, None])  # + v(S + g) where g in z, - v(S) else
    return phi / 2 ** (groups - 1)


def per_group(values):
    return np.stack([np.asarray(values)[:, MASK == g][:, 0] for g in range(MASK.max() + 1)], -1)


def test_converges_to_the_exact_banzhaf_values():
    exact = exact_banzhaf(X, 1)
    errors = []
    for samples in (256, 4096, 65536):
        a = jaxplain.banzhaf(
            MODEL, X, target=1, baseline=BASELINE, feature_mask=MASK, samples=samples, key=jax.random.key(0)
        )
        errors.append(np.linalg.norm(per_group(a.values) - exact) / np.linalg.norm(exact))
    assert errors[-1] < 0.03, errors
    assert errors[0] > errors[-1], errors
    difference = (
        numpy_model(X.astype(np.float64))[:, 1] - numpy_model(BASELINE[None].astype(np.float64))[:, 1]
    )
    np.testing.assert_allclose(a.output_difference, difference, rtol=1e-5, atol=1e-6)
    assert a.delta is None and a.relative_delta is None


def test_equals_shapley_on_an_additive_model_in_expectation():
    """Banzhaf and Shapley values coincide on a model additive over the groups."""
    weights = RNG.normal(size=(6, 2)).astype(np.float32)
    model = jaxplain.Model(lambda w, x: x @ w, weights)
    shapley = jaxplain.exact_shapley(model, X, target=0, baseline=BASELINE, feature_mask=MASK)
    a = jaxplain.banzhaf(
        model, X, target=0, baseline=BASELINE, feature_mask=MASK, samples=65536, key=jax.random.key(1)
    )
    scale = np.abs(np.asarray(shapley.values)).max()
    np.testing.assert_allclose(a.values, shapley.values, atol=0.03 * scale)


def test_a_group_never_or_always_present_is_nan():
    a = jaxplain.banzhaf(MODEL, X, target=0, feature_mask=MASK, samples=1, key=jax.random.key(0))
    assert np.isnan(np.asarray(a.values)).all()


@pytest.mark.parametrize("samples", [0, -3, 2.5, "many"])
def test_bad_samples_name_the_argument(samples):
    with pytest.raises((TypeError, ValueError), match="samples"):
        jaxplain.banzhaf(MODEL, X, target=0, samples=samples, key=jax.random.key(0))
