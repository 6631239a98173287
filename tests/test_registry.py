"""What every registered method promises, whatever its family.

Every method in `jaxplain.METHODS` must: return a finite `Attribution`; reuse its compiled
program for new params, inputs, keys and targets; give the same answer for every
`chunk_size`; give the same answer for the same key; explain several targets in one pass
as separate calls would; and run inside a caller's own `jax.jit`. These contracts are
checked here once, for every method and for the settings that take a program path of
their own (`VARIANTS`), rather than in each family's tests. A method added to the registry
without an entry in `CALLS` fails `test_every_method_is_covered`.
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


class Attention(nn.Module):
    """2 x 2 patches, a class token, one pre-LN self-attention block, a head on the class token."""

    @nn.compact
    def __call__(self, images):
        TRACES.append(1)
        x = nn.Conv(8, (2, 2), strides=(2, 2), name="patches")(images)
        x = x.reshape(x.shape[0], -1, 8)
        cls = jnp.broadcast_to(self.param("cls", nn.initializers.normal(1.0), (1, 1, 8)), (x.shape[0], 1, 8))
        x = jnp.concatenate([cls, x], axis=1)
        x = x + nn.MultiHeadDotProductAttention(num_heads=4, name="attention")(nn.LayerNorm()(x))
        return nn.Dense(3, name="head")(x[:, 0])


def _model(module, x, seed):
    variables = module.init(jax.random.PRNGKey(seed), x[:1])
    return jaxplain.Model.from_linen(module, variables)


IMAGES = np.random.default_rng(0).uniform(size=(2, 4, 4, 1)).astype(np.float32)
TOKENS = np.array([[1, 5, 2, 0], [3, 3, 7, 6]], np.int32)
BACKGROUND = np.random.default_rng(1).uniform(size=(16, 4, 4, 1)).astype(np.float32)
GROUPS = jaxplain.patch_mask((4, 4, 1), (2, 2, 1))  # 4 groups

# name -> (input, settings): small settings, so that every program compiles quickly. A
# method that chunks its points has 16 or more, so that chunks of 3 loop and leave a
# partial last chunk (see CHUNKED).
CALLS = {
    "saliency": (IMAGES, {}),
    "input_x_gradient": (IMAGES, {}),
    "integrated_gradients": (IMAGES, {"steps": 16}),
    "expected_gradients": (IMAGES, {"background": BACKGROUND, "samples": 16}),
    "blur_ig": (IMAGES, {"steps": 16, "max_sigma": 1.0}),
    "guided_ig": (IMAGES, {"steps": 4}),
    "idgi": (IMAGES, {"steps": 16}),
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
    "layer_integrated_gradients": (IMAGES, {"layer": "conv1", "steps": 16}),
    "neuron_gradient": (IMAGES, {"layer": "conv2", "neuron": 3}),
    "neuron_integrated_gradients": (IMAGES, {"layer": "conv2", "neuron": 3, "steps": 16}),
    "fullgrad": (IMAGES, {}),
    "token_attributions": (TOKENS, {"steps": 16}),
    "occlusion": (IMAGES, {"window": (1, 1, 1), "stride": 1}),
    "feature_ablation": (IMAGES, {"feature_mask": GROUPS}),
    "exact_shapley": (IMAGES, {"feature_mask": GROUPS}),
    "shapley_sampling": (IMAGES, {"feature_mask": GROUPS, "samples": 16}),
    "kernel_shap": (IMAGES, {"feature_mask": GROUPS, "samples": 16}),
    "lime": (IMAGES, {"feature_mask": GROUPS, "samples": 16}),
    "banzhaf": (IMAGES, {"feature_mask": GROUPS, "samples": 16}),
    "attention_rollout": (IMAGES, {}),
    "attention_flow": (IMAGES, {}),
    "gradient_weighted_attention": (IMAGES, {}),
    "xrai": (IMAGES, {"steps": 16}),
}
# Methods that read attention maps: they explain the Attention model.
ATTENTION = {"attention_rollout", "attention_flow", "gradient_weighted_attention"}
# Settings that take a program path of their own: case -> (method, settings).
VARIANTS = {
    "integrated_gradients[nonuniform]": ("integrated_gradients", {"steps": 16, "schedule": "nonuniform"}),
    "integrated_gradients[pilot_gauss]": ("integrated_gradients", {"steps": 16, "schedule": "pilot_gauss"}),
    "integrated_gradients[auto]": (
        "integrated_gradients",
        {"steps": "auto", "tolerance": 0.01, "max_steps": 64},
    ),
    "lrp[epsilon]": ("lrp", {}),
    "lrp[gamma]": ("lrp", {"rule": "gamma"}),
    "lrp[alpha1beta0]": ("lrp", {"rule": "alpha1beta0"}),
    "fullgrad[raw]": ("fullgrad", {"post_process": False}),
    # a randomized method runs once per noisy copy, with a key of its own
    "smoothgrad[kernel_shap]": (
        "smoothgrad",
        {"method": jaxplain.kernel_shap, "samples": 3, "method_options": {"samples": 8}},
    ),
}
# case -> (method, input, settings)
CASES = {
    **{name: (name, x, settings) for name, (x, settings) in CALLS.items()},
    **{case: (name, CALLS[name][0], settings) for case, (name, settings) in VARIANTS.items()},
}
CASE_NAMES = sorted(CASES)


def _tiered(cases):
    """The cases, the settings variants (their own program paths, tested in their own
    files too), attention_flow (a host max flow) and xrai (host segmentation; its own
    file tests it in the default tier) in the slow tier."""
    return [
        pytest.param(case, marks=pytest.mark.slow)
        if case in VARIANTS or case in ("attention_flow", "xrai")
        else case
        for case in cases
    ]


def _info(case):
    return jaxplain.METHODS[CASES[case][0]]


def _explains_a_class(case):
    return not CASES[case][0].startswith("neuron_")


KEY = jax.random.key(0)


def explain(case, model, x, *, key=KEY, **overrides):
    name, _, settings = CASES[case]
    info = jaxplain.METHODS[name]
    settings = {**settings, **overrides}
    if info.randomized:
        settings["key"] = key
    if _explains_a_class(case):
        settings.setdefault("target", 1)
    return info.function(model, x, **settings)


def models(case, seed=0):
    name, x, _ = CASES[case]
    module = Tokens() if x is TOKENS else Attention() if name in ATTENTION else ConvNet()
    return _model(module, x, seed), x


def traces(case, model, x, **settings):
    """How often a first call traces the model: the call is traced, not compiled
    (`jax.eval_shape`), with the model's module as an instance of a new subclass, so that
    nothing traced before is reused."""
    module = model.apply_fn.module
    fresh = jaxplain.Model.from_linen(type(type(module).__name__, (type(module),), {})(), model.params)
    before = len(TRACES)
    jax.eval_shape(lambda: explain(case, fresh, x, **settings).values)
    return len(TRACES) - before


def assert_same(got, expected, scale):
    """Equal to float rounding, relative to `scale` (the size of the values compared)."""
    got, expected = np.asarray(got, np.float64), np.asarray(expected, np.float64)
    assert got.shape == expected.shape, (got.shape, expected.shape)
    assert float(np.abs(got - expected).max(initial=0.0)) <= 1e-5 * scale


def test_every_method_is_covered():
    assert set(CALLS) == set(jaxplain.METHODS)


@pytest.mark.parametrize("case", _tiered(CASE_NAMES))
def test_new_params_inputs_keys_and_targets_reuse_the_program(case):
    """A new Model of an equal module (new params), new inputs, a new key and a new
    target: the model is not traced again."""
    model, x = models(case)
    first = explain(case, model, x)
    assert isinstance(first, jaxplain.Attribution)
    assert np.all(np.isfinite(first.values)) and float(jnp.abs(first.values).max()) > 0
    other, _ = models(case, seed=1)
    traced = len(TRACES)
    moved = x if x is TOKENS else 0.5 * x + 0.25  # still in [0, 1], the z-box bounds
    target = {"target": 0} if _explains_a_class(case) else {}
    again = explain(case, other, moved, key=jax.random.key(1), **target)
    assert len(TRACES) == traced, f"{case} recompiled for new params, inputs, keys or targets"
    assert np.all(np.isfinite(again.values)) and not np.allclose(again.values, first.values)


# case -> (option, size): 16 or more points in chunks of 3 run as a loop (more chunks than
# the engine lays out one after another) with a partial last chunk (shapley_sampling
# rounds a chunk to whole pairs of orders); 3 noisy copies in chunks of 2 leave a partial
# one. steps="auto" sizes its own chunks (test_scale checks it without room).
CHUNKED = {
    case: ("noise_chunk_size", 2) if _info(case).wraps else ("chunk_size", 3)
    for case in CASE_NAMES
    if {"chunk_size", "noise_chunk_size"} & _info(case).parameters and CASES[case][2].get("steps") != "auto"
}


@pytest.mark.parametrize("case", _tiered(sorted(CHUNKED)))
def test_chunk_size_does_not_change_the_answer(case):
    model, x = models(case)
    option, size = CHUNKED[case]
    whole = explain(case, model, x)
    chunked = explain(case, model, x, **{option: size})
    scale = float(jnp.abs(whole.values).max())
    assert_same(chunked.values, whole.values, scale)
    if whole.delta is not None:
        assert_same(chunked.delta, whole.delta, scale)


@pytest.mark.parametrize("case", [case for case in CASE_NAMES if _info(case).randomized])
def test_same_key_same_result_other_key_other_result(case):
    model, x = models(case)
    first = explain(case, model, x, key=jax.random.key(3)).values
    np.testing.assert_array_equal(first, explain(case, model, x, key=jax.random.key(3)).values)
    assert not np.allclose(first, explain(case, model, x, key=jax.random.key(4)).values)


@pytest.mark.parametrize("case", _tiered([case for case in CASE_NAMES if _explains_a_class(case)]))
def test_several_targets_in_one_pass_equal_separate_calls(case):
    """target (batch, k) explains k classes per example with one trace of the model, and
    column j equals a call with column j: values, delta and extras."""
    model, x = models(case)
    targets = np.array([[0, 1], [1, 0]])
    assert traces(case, model, x, target=targets) <= traces(case, model, x, target=targets[:, 0]), (
        f"{case} traced the model once per target"
    )
    separate = [explain(case, model, x, target=column) for column in targets.T]
    both = explain(case, model, x, target=targets)
    assert both.values.shape == (x.shape[0], 2) + separate[0].values.shape[1:]
    np.testing.assert_array_equal(both.target, targets)
    scale = max(float(jnp.abs(one.values).max()) for one in separate)
    for j, one in enumerate(separate):
        assert_same(both.values[:, j], one.values, scale)
        assert (both.delta is None) == (one.delta is None)
        if one.delta is not None:
            assert_same(both.delta[:, j], one.delta, scale)
        assert set(both.extras) == set(one.extras)
        jax.tree_util.tree_map(
            lambda b, o: assert_same(b[:, j], o, max(float(np.abs(o).max()), scale)), both.extras, one.extras
        )


@pytest.mark.parametrize("case", _tiered(CASE_NAMES))
def test_runs_inside_a_callers_jit(case):
    model, x = models(case)
    eager = explain(case, model, x).values

    @jax.jit
    def explained(params, x):
        return explain(case, model.replace(params=params), x).values

    np.testing.assert_allclose(
        explained(model.params, x), eager, rtol=1e-5, atol=1e-6 * float(jnp.abs(eager).max())
    )


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
        "method": "integrated_gradients",
        "steps": 4,
    }
    assert registry.options_of("smoothgrad", {"wrap": None}) == {}
    assert registry.options_of(lambda model, x, **options: None, {"wrap": "saliency"}) == {"wrap": "saliency"}
    with pytest.raises(ValueError, match="wrap names the method a noise method wraps; saliency wraps none"):
        registry.options_of("saliency", {"wrap": "saliency"})
    with pytest.raises(TypeError, match="once"):
        registry.options_of("smoothgrad", {"wrap": "saliency", "method": "saliency"})
    baseline = np.zeros((1, 4, 4, 1), np.float32)
    function, arrays, static, takes_key = registry.bind(
        "smoothgrad", {"wrap": "integrated_gradients", "baseline": baseline, "steps": 4}, caller="metric"
    )
    assert function is jaxplain.smoothgrad and takes_key
    assert set(arrays) == {"baseline"} and static == (("method", "integrated_gradients"), ("steps", 4))
    assert not registry.bind(jaxplain.saliency, {}, caller="metric")[3]
    assert registry.takes_key(functools.partial(jaxplain.vargrad, method=jaxplain.saliency))
    assert not registry.takes_key(functools.partial(jaxplain.integrated_gradients, steps=4))
    with pytest.raises(TypeError, match="pass key to the metric itself"):
        registry.bind("kernel_shap", {"key": jax.random.key(0)}, caller="metric")
