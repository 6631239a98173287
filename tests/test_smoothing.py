"""SmoothGrad, SmoothGrad-squared and VarGrad around any method."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxplain
from jaxplain.methods.smoothing import smoothgrad, smoothgrad_sq, vargrad

from conftest import linear_model, mlp_model

KEY = jax.random.key(0)


@pytest.mark.parametrize("method, options", [(jaxplain.saliency, {}), (jaxplain.integrated_gradients, {"steps": 16})])
def test_zero_noise_gives_back_the_wrapped_method(method, options, rng):
    model = mlp_model(features=5)
    x = rng.normal(size=(3, 5)).astype(np.float32)
    plain = method(model, x, target="predicted", **options)
    smooth = smoothgrad(method, model, x, target="predicted", key=KEY, samples=4, noise_scale=0.0, **options)
    np.testing.assert_allclose(smooth.values, plain.values, rtol=1e-5, atol=1e-7)
    np.testing.assert_array_equal(smooth.target, plain.target)
    squared = smoothgrad_sq(method, model, x, target="predicted", key=KEY, samples=4, noise_scale=0.0, **options)
    np.testing.assert_allclose(squared.values, plain.values**2, rtol=1e-5, atol=1e-7)
    variance = vargrad(method, model, x, target="predicted", key=KEY, samples=4, noise_scale=0.0, **options)
    np.testing.assert_allclose(variance.values, 0.0, atol=1e-6)


def test_linear_model_closed_forms(rng):
    """IG of a linear model at x + e is w * (x + e - b): its mean over the noise is
    w * (x - b + mean(e)) and its variance w^2 var(e), var(e) = (scale * range(x))^2."""
    weights = rng.normal(size=(4, 2)).astype(np.float32)
    model = linear_model(weights)
    x = rng.normal(size=(2, 4)).astype(np.float32)
    scale = 0.1
    sigma = scale * (x.max(axis=1) - x.min(axis=1))
    variance = vargrad(jaxplain.integrated_gradients, model, x, target=1, key=KEY, samples=4000,
                       noise_scale=scale, steps=2)
    np.testing.assert_allclose(variance.values, weights[:, 1] ** 2 * sigma[:, None] ** 2, rtol=0.1)
    mean = smoothgrad(jaxplain.saliency, model, x, target=1, key=KEY, samples=8, noise_scale=scale)
    np.testing.assert_allclose(mean.values, np.broadcast_to(weights[:, 1], x.shape), rtol=1e-5)


def test_same_key_same_result_and_chunking_does_not_change_it(rng):
    model = mlp_model(features=5)
    x = rng.normal(size=(3, 5)).astype(np.float32)
    first = smoothgrad(jaxplain.saliency, model, x, target=0, key=KEY, samples=10)
    again = smoothgrad(jaxplain.saliency, model, x, target=0, key=KEY, samples=10, noise_chunk_size=3)
    other = smoothgrad(jaxplain.saliency, model, x, target=0, key=jax.random.key(1), samples=10)
    np.testing.assert_allclose(again.values, first.values, rtol=1e-5, atol=1e-7)
    assert not np.allclose(other.values, first.values)


def test_targets_are_resolved_on_the_clean_input_and_several_share_a_pass(rng):
    model = mlp_model(features=5, num_classes=4)
    x = rng.normal(size=(3, 5)).astype(np.float32)
    predicted = np.asarray(model(jnp.asarray(x))).argmax(1)
    a = smoothgrad(jaxplain.saliency, model, x, target="predicted", key=KEY, samples=6, noise_scale=0.5)
    np.testing.assert_array_equal(a.target, predicted)
    both = smoothgrad(jaxplain.saliency, model, x, target=[[1, 2]], key=KEY, samples=6)
    one = smoothgrad(jaxplain.saliency, model, x, target=2, key=KEY, samples=6)
    np.testing.assert_allclose(both.values[:, 1], one.values, rtol=1e-5, atol=1e-7)


def test_per_example_baselines_follow_their_example(rng):
    model = mlp_model(features=5)
    x = rng.normal(size=(3, 5)).astype(np.float32)
    baseline = rng.normal(size=(3, 5)).astype(np.float32)
    smooth = smoothgrad(jaxplain.integrated_gradients, model, x, target=0, key=KEY, samples=2,
                        noise_scale=0.0, baseline=baseline, steps=8)
    plain = jaxplain.integrated_gradients(model, x, target=0, baseline=baseline, steps=8)
    np.testing.assert_allclose(smooth.values, plain.values, rtol=1e-5, atol=1e-7)


def test_bad_arguments(rng):
    model = mlp_model(features=5)
    x = rng.normal(size=(3, 5)).astype(np.float32)
    with pytest.raises(TypeError, match="key is required"):
        smoothgrad(jaxplain.saliency, model, x, target=0, key=None)
    with pytest.raises(ValueError, match="samples must be >= 1"):
        smoothgrad(jaxplain.saliency, model, x, target=0, key=KEY, samples=0)
    with pytest.raises(ValueError, match="noise_scale must be in"):
        smoothgrad(jaxplain.saliency, model, x, target=0, key=KEY, noise_scale=-1)
    with pytest.raises(TypeError, match="method must be a jaxplain method"):
        smoothgrad("saliency", model, x, target=0, key=KEY)


@pytest.mark.parametrize("wrapper", [smoothgrad, vargrad])
def test_a_randomized_method_gets_its_own_key_per_copy_and_its_own_options(wrapper, rng):
    """Around kernel_shap: its own `samples` through method_options, a key per noisy copy
    split from the wrapper's (the copies' sampling differs, so even without noise the
    variance is that of kernel_shap's estimate), and the chunk does not change the draws."""
    model = mlp_model(features=5)
    x = rng.normal(size=(3, 5)).astype(np.float32)
    options = dict(target=0, key=KEY, samples=4, method_options={"samples": 16})
    first = wrapper(jaxplain.kernel_shap, model, x, **options)
    chunked = wrapper(jaxplain.kernel_shap, model, x, noise_chunk_size=3, **options)
    np.testing.assert_allclose(chunked.values, first.values, rtol=1e-5, atol=1e-7)
    exact = jaxplain.exact_shapley(model, x, target=0).values
    noiseless = vargrad(jaxplain.kernel_shap, model, x, noise_scale=0.0, **options)
    assert float(np.asarray(noiseless.values).max()) > 0.0
    # the copies are kernel_shap estimates with 16 samples: their mean is near the exact values
    mean = smoothgrad(jaxplain.kernel_shap, model, x, noise_scale=0.0, **options)
    assert np.linalg.norm(mean.values - exact) < 0.2 * np.linalg.norm(exact)


def test_method_options_and_keywords_must_not_name_the_same_option(rng):
    model = mlp_model(features=5)
    x = rng.normal(size=(2, 5)).astype(np.float32)
    with pytest.raises(TypeError, match="steps given both"):
        smoothgrad(jaxplain.integrated_gradients, model, x, target=0, key=KEY, steps=4,
                   method_options={"steps": 8})
    with pytest.raises(TypeError, match="method_options must be a dict"):
        smoothgrad(jaxplain.saliency, model, x, target=0, key=KEY, method_options=[("steps", 8)])
    with pytest.raises(TypeError, match="not as a method option"):
        smoothgrad(jaxplain.kernel_shap, model, x, target=0, key=KEY, method_options={"key": KEY})


@pytest.mark.parametrize("call, error, match", [
    (lambda m, x: smoothgrad(jaxplain.saliency, m, x, target=0, key=KEY, noise_scale=float("inf")),
     ValueError, "noise_scale must be finite"),
    (lambda m, x: smoothgrad(smoothgrad, m, x, target=0, key=KEY), TypeError, "wraps another method"),
])
def test_bad_noise_settings_are_named(call, error, match, rng):
    """An infinite noise scale gave NaN attributions; a bare noise wrapper as the method
    failed inside the program, missing x."""
    with pytest.raises(error, match=match):
        call(mlp_model(features=5), rng.normal(size=(2, 5)).astype(np.float32))
