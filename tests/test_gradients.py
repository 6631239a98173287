import jax.numpy as jnp
import numpy as np
from conftest import linear_model

import jaxplain


def test_saliency_and_input_x_gradient_on_a_linear_model(rng):
    weights = rng.normal(size=(5, 3)).astype(np.float32)
    model = linear_model(weights)
    x = rng.normal(size=(4, 5)).astype(np.float32)
    target = np.array([0, 1, 2, 1])
    s = jaxplain.saliency(model, x, target=target)
    np.testing.assert_allclose(s.values, weights[:, target].T, rtol=1e-6)
    np.testing.assert_array_equal(s.target, target)
    assert s.delta is None and s.relative_delta is None
    np.testing.assert_allclose(
        jaxplain.saliency(model, x, target=target, absolute=True).values,
        np.abs(weights[:, target].T),
        rtol=1e-6,
    )
    ixg = jaxplain.input_x_gradient(model, x, target=target)
    np.testing.assert_allclose(ixg.values, x * weights[:, target].T, rtol=1e-6)


def test_input_x_gradient_equals_ig_from_zero_on_a_linear_model(rng):
    model = linear_model(rng.normal(size=(5, 3)).astype(np.float32))
    x = rng.normal(size=(4, 5)).astype(np.float32)
    ig = jaxplain.integrated_gradients(model, x, target="predicted", steps=3)
    ixg = jaxplain.input_x_gradient(model, x, target="predicted")
    np.testing.assert_allclose(ixg.values, ig.values, rtol=1e-5, atol=1e-6)


def test_saliency_several_targets_on_a_nonlinear_model(rng):
    w = jnp.asarray(rng.normal(size=(3, 4)), jnp.float32)
    model = jaxplain.Model.from_callable(lambda x: jnp.tanh(x) @ w)
    x = jnp.asarray(rng.normal(size=(2, 3)), jnp.float32)
    a = jaxplain.saliency(model, x, target=[[1, 3]])
    assert a.values.shape == (2, 2, 3)
    derivative = 1 - jnp.tanh(x) ** 2
    np.testing.assert_allclose(a.values[:, 0], derivative * w[:, 1], rtol=1e-5)
    np.testing.assert_allclose(a.values[:, 1], derivative * w[:, 3], rtol=1e-5)
