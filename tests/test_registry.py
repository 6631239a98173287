"""What every registered method promises, whatever its family.

Every method in `jaxplain.METHODS` must: return a finite `Attribution`; reuse its compiled
program for new params, inputs and keys; give the same answer for every `chunk_size`;
give the same answer for the same key; and run inside a caller's own `jax.jit`. A method
added to the registry without an entry in `CALLS` fails `test_every_method_is_covered`.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxplain

# Every trace of a test model's forward pass appends here.
TRACES = []


class ConvNet(nn.Module):
    """Conv + ReLU, max-pool, conv + ReLU, dense head: every family can explain it."""

    @nn.compact
    def __call__(self, x):
        TRACES.append(1)
        x = nn.relu(nn.Conv(3, (3, 3), name="conv1")(x))
        x = nn.max_pool(x, (2, 2), strides=(2, 2))
        x = nn.relu(nn.Conv(4, (3, 3), name="conv2")(x))
        return nn.Dense(3, name="head")(x.reshape(x.shape[0], -1))


class Tokens(nn.Module):
    """Embedding, mean over tokens, dense head: a minimal text classifier."""

    pad_id: int = 0

    @nn.compact
    def __call__(self, tokens):
        TRACES.append(1)
        embedded = nn.Embed(8, 4, name="embedding")(tokens)
        return nn.Dense(2, name="head")(jnp.tanh(embedded).mean(axis=1))


def _model(module, x, seed):
    variables = module.init(jax.random.PRNGKey(seed), x[:1])
    return jaxplain.Model.from_linen(module, variables)


IMAGES = np.random.default_rng(0).uniform(size=(2, 4, 4, 1)).astype(np.float32)
TOKENS = np.array([[1, 5, 2, 0], [3, 3, 7, 6]], np.int32)
BACKGROUND = np.random.default_rng(1).uniform(size=(3, 4, 4, 1)).astype(np.float32)
GROUPS = jaxplain.patch_mask((4, 4, 1), (2, 2, 1))  # 4 groups

# name -> (input, settings): small settings, so that every program compiles quickly.
CALLS = {
    "saliency": (IMAGES, {}),
    "input_x_gradient": (IMAGES, {}),
    "integrated_gradients": (IMAGES, {"steps": 5}),
    "expected_gradients": (IMAGES, {"background": BACKGROUND, "samples": 5}),
    "blur_ig": (IMAGES, {"steps": 5, "max_sigma": 1.0}),
    "guided_ig": (IMAGES, {"steps": 4}),
    "idgi": (IMAGES, {"steps": 5}),
    "smoothgrad": (IMAGES, {"method": jaxplain.saliency, "samples": 3}),
    "smoothgrad_sq": (IMAGES, {"method": jaxplain.saliency, "samples": 3}),
    "vargrad": (IMAGES, {"method": jaxplain.saliency, "samples": 3}),
    "guided_backprop": (IMAGES, {}),
    "deconvnet": (IMAGES, {}),
    "deeplift": (IMAGES, {"baseline": 0.1}),
    "deeplift_shap": (IMAGES, {"background": BACKGROUND}),
    "lrp": (IMAGES, {"rule": "composite", "low": 0.0, "high": 1.0}),
    "grad_cam": (IMAGES, {"layer": "conv2"}),
    "layer_gradient_x_activation": (IMAGES, {"layer": "conv1"}),
    "layer_integrated_gradients": (IMAGES, {"layer": "conv1", "steps": 5}),
    "neuron_gradient": (IMAGES, {"layer": "conv2", "neuron": 3}),
    "neuron_integrated_gradients": (IMAGES, {"layer": "conv2", "neuron": 3, "steps": 5}),
    "fullgrad": (IMAGES, {}),
    "token_attributions": (TOKENS, {"steps": 5}),
    "occlusion": (IMAGES, {"window": (2, 2, 1), "stride": 1}),
    "feature_ablation": (IMAGES, {"feature_mask": GROUPS}),
    "exact_shapley": (IMAGES, {"feature_mask": GROUPS}),
    "shapley_sampling": (IMAGES, {"feature_mask": GROUPS, "samples": 4}),
    "kernel_shap": (IMAGES, {"feature_mask": GROUPS, "samples": 8}),
    "lime": (IMAGES, {"feature_mask": GROUPS, "samples": 8}),
}
NAMES = sorted(CALLS)


def _explains_a_class(name):
    return not name.startswith("neuron_")


def explain(name, model, x, *, key=jax.random.key(0), **overrides):
    x_in, settings = CALLS[name]
    info = jaxplain.METHODS[name]
    settings = {**settings, **overrides}
    if info.randomized:
        settings["key"] = key
    if _explains_a_class(name):
        settings["target"] = 1
    if info.family == "noise":
        return info.function(settings.pop("method"), model, x, **settings)
    return info.function(model, x, **settings)


def models(name, seed=0):
    x = CALLS[name][0]
    return _model(Tokens() if x is TOKENS else ConvNet(), x, seed), x


def test_every_method_is_covered():
    assert set(CALLS) == set(jaxplain.METHODS)


@pytest.mark.parametrize("name", NAMES)
def test_new_params_inputs_and_keys_reuse_the_program(name):
    model, x = models(name)
    first = explain(name, model, x)
    assert isinstance(first, jaxplain.Attribution)
    assert np.all(np.isfinite(first.values)) and float(jnp.abs(first.values).max()) > 0
    other, _ = models(name, seed=1)
    traced = len(TRACES)
    moved = x if x is TOKENS else 0.5 * x + 0.25  # still in [0, 1], the z-box bounds
    again = explain(name, other, moved, key=jax.random.key(1))
    assert len(TRACES) == traced, f"{name} recompiled for new params or inputs"
    assert np.all(np.isfinite(again.values)) and not np.allclose(again.values, first.values)


CHUNKED = [name for name in NAMES if "chunk_size" in jaxplain.METHODS[name].function.__code__.co_varnames
           or jaxplain.METHODS[name].family == "noise"]


@pytest.mark.parametrize("name", CHUNKED)
def test_chunk_size_does_not_change_the_answer(name):
    model, x = models(name)
    option = "noise_chunk_size" if jaxplain.METHODS[name].family == "noise" else "chunk_size"
    whole = explain(name, model, x).values
    one = explain(name, model, x, **{option: 1}).values
    scale = float(jnp.abs(whole).max())
    assert float(jnp.abs(one - whole).max()) <= 1e-5 * scale


@pytest.mark.parametrize("name", [name for name in NAMES if jaxplain.METHODS[name].randomized])
def test_same_key_same_result_other_key_other_result(name):
    model, x = models(name)
    first = explain(name, model, x, key=jax.random.key(3)).values
    np.testing.assert_array_equal(first, explain(name, model, x, key=jax.random.key(3)).values)
    assert not np.allclose(first, explain(name, model, x, key=jax.random.key(4)).values)


@pytest.mark.parametrize("name", NAMES)
def test_runs_inside_a_callers_jit(name):
    model, x = models(name)
    eager = explain(name, model, x).values

    @jax.jit
    def explained(params, x):
        return explain(name, model.replace(params=params), x).values

    np.testing.assert_allclose(explained(model.params, x), eager, rtol=1e-5, atol=1e-6 * float(jnp.abs(eager).max()))


def test_resolve_binds_the_wrapped_method_of_a_noise_method():
    import functools

    from jaxplain.methods import registry

    assert registry.resolve("saliency") is jaxplain.saliency
    bound = registry.resolve("smoothgrad", "integrated_gradients")
    assert isinstance(bound, functools.partial) and bound.func is jaxplain.smoothgrad
    assert bound.args == (jaxplain.integrated_gradients,)
    assert registry.randomized("smoothgrad", "saliency") and not registry.randomized("saliency")
    with pytest.raises(ValueError, match="wrap="):
        registry.resolve("smoothgrad")
    with pytest.raises(ValueError, match="not a jaxplain method"):
        registry.resolve("smoothgrad", "no_such_method")
