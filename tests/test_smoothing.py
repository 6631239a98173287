"""SmoothGrad, SmoothGrad-squared and VarGrad around any method."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import linear_model, mlp_model

import jaxplain
from jaxplain.methods.smoothing import smoothgrad, smoothgrad_sq, vargrad

KEY = jax.random.key(0)


@pytest.mark.parametrize(
    "method, options", [(jaxplain.saliency, {}), (jaxplain.integrated_gradients, {"steps": 16})]
)
def test_zero_noise_gives_back_the_wrapped_method(method, options, rng):
    model = mlp_model(features=5)
    x = rng.normal(size=(3, 5)).astype(np.float32)
    plain = method(model, x, target="predicted", **options)
    smooth = smoothgrad(
        model, x, method=method, target="predicted", key=KEY, samples=4, noise_scale=0.0, **options
    )
    np.testing.assert_allclose(smooth.values, plain.values, rtol=1e-5, atol=1e-7)
    np.testing.assert_array_equal(smooth.target, plain.target)
    squared = smoothgrad_sq(
        model, x, method=method, target="predicted", key=KEY, samples=4, noise_scale=0.0, **options
    )
    np.testing.assert_allclose(squared.values, plain.values**2, rtol=1e-5, atol=1e-7)
    variance = vargrad(
        model, x, method=method, target="predicted", key=KEY, samples=4, noise_scale=0.0, **options
    )
    np.testing.assert_allclose(variance.values, 0.0, atol=1e-6)


def test_linear_model_closed_forms(rng):
    """IG of a linear model at x + e is w * (x + e - b): its mean over the noise is
    w * (x - b + mean(e)) and its variance w^2 var(e), var(e) = (scale * range(x))^2."""
    weights = rng.normal(size=(4, 2)).astype(np.float32)
    model = linear_model(weights)
    x = rng.normal(size=(2, 4)).astype(np.float32)
    scale = 0.1
    sigma = scale * (x.max(axis=1) - x.min(axis=1))
    variance = vargrad(
        model,
        x,
        method=jaxplain.integrated_gradients,
        target=1,
        key=KEY,
        samples=4000,
        noise_scale=scale,
        steps=2,
    )
    np.testing.assert_allclose(variance.values, weights[:, 1] ** 2 * sigma[:, None] ** 2, rtol=0.1)
    mean = smoothgrad(model, x, method=jaxplain.saliency, target=1, key=KEY, samples=8, noise_scale=scale)
    np.testing.assert_allclose(mean.values, np.broadcast_to(weights[:, 1], x.shape), rtol=1e-5)


def test_targets_are_resolved_on_the_clean_input(rng):
    model = mlp_model(features=5, num_classes=4)
    x = rng.normal(size=(3, 5)).astype(np.float32)
    predicted = np.asarray(model(jnp.asarray(x))).argmax(1)
    a = smoothgrad(
        model, x, method=jaxplain.saliency, target="predicted", key=KEY, samples=6, noise_scale=0.5
    )
    np.testing.assert_array_equal(a.target, predicted)


def test_per_example_baselines_follow_their_example(rng):
    model = mlp_model(features=5)
    x = rng.normal(size=(3, 5)).astype(np.float32)
    baseline = rng.normal(size=(3, 5)).astype(np.float32)
    smooth = smoothgrad(
        model,
        x,
        method=jaxplain.integrated_gradients,
        target=0,
        key=KEY,
        samples=2,
        noise_scale=0.0,
        baseline=baseline,
        steps=8,
    )
    plain = jaxplain.integrated_gradients(model, x, target=0, baseline=baseline, steps=8)
    np.testing.assert_allclose(smooth.values, plain.values, rtol=1e-5, atol=1e-7)


def test_bad_arguments(rng):
    model = mlp_model(features=5)
    x = rng.normal(size=(3, 5)).astype(np.float32)
    with pytest.raises(TypeError, match="key is required"):
        smoothgrad(model, x, method=jaxplain.saliency, target=0, key=None)
    with pytest.raises(ValueError, match="samples must be >= 1"):
        smoothgrad(model, x, method=jaxplain.saliency, target=0, key=KEY, samples=0)
    with pytest.raises(ValueError, match="noise_scale must be a finite number >= 0.0"):
        smoothgrad(model, x, method=jaxplain.saliency, target=0, key=KEY, noise_scale=-1)
    with pytest.raises(TypeError, match="method must be a jaxplain method"):
        smoothgrad(model, x, method=42, target=0, key=KEY)
    with pytest.raises(ValueError, match="'no_such_method' is not a jaxplain method"):
        smoothgrad(model, x, method="no_such_method", target=0, key=KEY)


def test_the_method_by_name_by_function_and_by_default(rng):
    """method="integrated_gradients" is the registered function; saliency is the default."""
    model = mlp_model(features=5)
    x = rng.normal(size=(2, 5)).astype(np.float32)
    by_name = smoothgrad(model, x, method="integrated_gradients", target=0, key=KEY, samples=3, steps=4)
    by_function = smoothgrad(
        model, x, method=jaxplain.integrated_gradients, target=0, key=KEY, samples=3, steps=4
    )
    np.testing.assert_array_equal(by_name.values, by_function.values)
    default = vargrad(model, x, target=0, key=KEY, samples=3)
    np.testing.assert_array_equal(
        default.values, vargrad(model, x, method=jaxplain.saliency, target=0, key=KEY, samples=3).values
    )


@pytest.mark.parametrize("wrapper", [smoothgrad, smoothgrad_sq, vargrad])
def test_the_method_first_still_works_and_warns(wrapper, rng):
    """The form before the method became an option, wrapper(method, model, x, ...), gives
    the same answer for one release, with a DeprecationWarning naming the new form."""
    model = mlp_model(features=5)
    x = rng.normal(size=(2, 5)).astype(np.float32)
    new = wrapper(model, x, method=jaxplain.integrated_gradients, target=0, key=KEY, samples=3, steps=4)
    name = wrapper.__name__
    with pytest.warns(DeprecationWarning, match=rf"{name}\(model, x, method=jaxplain.saliency"):
        old = wrapper(jaxplain.integrated_gradients, model, x, target=0, key=KEY, samples=3, steps=4)
    np.testing.assert_array_equal(old.values, new.values)
    with pytest.warns(DeprecationWarning):  # the partial that metrics took, the model as a keyword
        partial = functools.partial(wrapper, jaxplain.integrated_gradients)
        keyword = partial(model=model, x=x, target=0, key=KEY, samples=3, steps=4)
    np.testing.assert_array_equal(keyword.values, new.values)
    with pytest.raises(TypeError, match="twice"):
        wrapper(jaxplain.saliency, model, x, method=jaxplain.saliency, target=0, key=KEY)


@pytest.mark.parametrize("wrapper", [pytest.param(smoothgrad, marks=pytest.mark.slow), vargrad])
def test_a_randomized_method_gets_its_own_key_per_copy_and_its_own_options(wrapper, rng):
    """Around kernel_shap: its own `samples` through method_options, a key per noisy copy
    split from the wrapper's (the copies' sampling differs, so even without noise the
    variance is that of kernel_shap's estimate), and the chunk does not change the draws."""
    model = mlp_model(features=5)
    x = rng.normal(size=(3, 5)).astype(np.float32)
    options = dict(target=0, key=KEY, samples=4, method_options={"samples": 16})
    first = wrapper(model, x, method=jaxplain.kernel_shap, **options)
    chunked = wrapper(model, x, method=jaxplain.kernel_shap, noise_chunk_size=3, **options)
    np.testing.assert_allclose(chunked.values, first.values, rtol=1e-5, atol=1e-7)
    exact = jaxplain.exact_shapley(model, x, target=0).values
    noiseless = vargrad(model, x, method=jaxplain.kernel_shap, noise_scale=0.0, **options)
    assert float(np.asarray(noiseless.values).max()) > 0.0
    # the copies are kernel_shap estimates with 16 samples: their mean is near the exact values
    mean = smoothgrad(model, x, method=jaxplain.kernel_shap, noise_scale=0.0, **options)
    assert np.linalg.norm(mean.values - exact) < 0.2 * np.linalg.norm(exact)


def test_method_options_and_keywords_must_not_name_the_same_option(rng):
    model = mlp_model(features=5)
    x = rng.normal(size=(2, 5)).astype(np.float32)
    with pytest.raises(TypeError, match="steps given both"):
        smoothgrad(
            model,
            x,
            method=jaxplain.integrated_gradients,
            target=0,
            key=KEY,
            steps=4,
            method_options={"steps": 8},
        )
    with pytest.raises(TypeError, match="method_options must be a dict"):
        smoothgrad(model, x, method=jaxplain.saliency, target=0, key=KEY, method_options=[("steps", 8)])
    with pytest.raises(TypeError, match="not as a method option"):
        smoothgrad(model, x, method=jaxplain.kernel_shap, target=0, key=KEY, method_options={"key": KEY})


@pytest.mark.parametrize(
    "call, error, match",
    [
        (
            lambda m, x: smoothgrad(
                m, x, method=jaxplain.saliency, target=0, key=KEY, noise_scale=float("inf")
            ),
            ValueError,
            "noise_scale must be a finite number",
        ),
        (
            lambda m, x: smoothgrad(m, x, method=jaxplain.saliency, target=0, key=KEY, wrap="saliency"),
            ValueError,
            "wrap names the method a noise method wraps; saliency wraps none",
        ),
    ],
)
def test_bad_noise_settings_are_named(call, error, match, rng):
    """An infinite noise scale gave NaN attributions; wrap= is how callers whose own first
    argument is `method` name the wrapped method, not an option of the noise method."""
    with pytest.raises(error, match=match):
        call(mlp_model(features=5), rng.normal(size=(2, 5)).astype(np.float32))


def test_a_metric_runs_a_noise_method_like_any_other(rng):
    """By name with wrap= (the metric's own first argument is `method`), or as a partial
    with method=: the same program, the same answer."""
    model = mlp_model(features=5)
    x = rng.normal(size=(2, 5)).astype(np.float32)
    by_name = jaxplain.metrics.sensitivity_max(
        "smoothgrad", model, x, target=0, key=KEY, samples=2, wrap="integrated_gradients", steps=4
    )
    bound = functools.partial(smoothgrad, method=jaxplain.integrated_gradients)
    by_partial = jaxplain.metrics.sensitivity_max(bound, model, x, target=0, key=KEY, samples=2, steps=4)
    np.testing.assert_array_equal(by_name, by_partial)
    assert np.all(np.asarray(by_name) > 0)
