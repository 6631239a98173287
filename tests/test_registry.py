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
    "banzhaf": (IMAGES, {"feature_mask": GROUPS, "samples": 8}),
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


CHUNKED = [name for name in NAMES if {"chunk_size", "noise_chunk_size"} & jaxplain.METHODS[name].parameters]


@pytest.mark.parametrize("name", CHUNKED)
def test_chunk_size_does_not_change_the_answer(name):
    model, x = models(name)
    option = "noise_chunk_size" if jaxplain.METHODS[name].wraps else "chunk_size"
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


def test_resolve_options_of_and_bind():
    """The registry resolves names, reads a noise method's wrap= as its method option and
    splits options into traced arrays and static settings; whether a method takes a key
    is what it was registered with, also through a functools.partial."""
    import functools

    from jaxplain.methods import registry

    assert registry.resolve("saliency") is jaxplain.saliency
    assert registry.resolve(jaxplain.vargrad) is jaxplain.vargrad
    with pytest.raises(ValueError, match="not a jaxplain method"):
        registry.resolve("no_such_method")
    with pytest.raises(TypeError, match="method must be a jaxplain method"):
        registry.resolve(3)
    assert jaxplain.METHODS["smoothgrad"].wraps and not jaxplain.METHODS["saliency"].wraps
    assert registry.options_of("smoothgrad", {"wrap": "integrated_gradients", "steps": 4}) == {
        "method": "integrated_gradients", "steps": 4}
    assert registry.options_of("smoothgrad", {"wrap": None}) == {}
    assert registry.options_of(lambda model, x, **options: None, {"wrap": "saliency"}) == {"wrap": "saliency"}
    with pytest.raises(ValueError, match="wrap names the method a noise method wraps; saliency wraps none"):
        registry.options_of("saliency", {"wrap": "saliency"})
    with pytest.raises(TypeError, match="once"):
        registry.options_of("smoothgrad", {"wrap": "saliency", "method": "saliency"})
    baseline = np.zeros((1, 4, 4, 1), np.float32)
    function, arrays, static, takes_key = registry.bind(
        "smoothgrad", {"wrap": "integrated_gradients", "baseline": baseline, "steps": 4}, caller="metric")
    assert function is jaxplain.smoothgrad and takes_key
    assert set(arrays) == {"baseline"} and static == (("method", "integrated_gradients"), ("steps", 4))
    assert not registry.bind(jaxplain.saliency, {}, caller="metric")[3]
    assert registry.takes_key(functools.partial(jaxplain.vargrad, method=jaxplain.saliency))
    assert not registry.takes_key(functools.partial(jaxplain.integrated_gradients, steps=4))
    with pytest.raises(TypeError, match="pass key to the metric itself"):
        registry.bind("kernel_shap", {"key": jax.random.key(0)}, caller="metric")
