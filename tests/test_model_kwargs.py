"""`model_kwargs=`: per-example model arguments, held fixed and never attributed.

The contract, for every registered method: with `model_kwargs`, example i's answer is the
method's answer on x[i] alone for the model with example i's arguments built in (its
key folded with i). Models in the styles users bring: a Linen `__call__(x, scale)`, a
text model `__call__(tokens, lengths)` with padding, and a plain function.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_registry import ATTENTION, BACKGROUND, CASES, GROUPS

import jaxplain

KEY = jax.random.PRNGKey(3)
SCALES = np.array([0.5, 2.0], np.float32)
LENGTHS = np.array([2, 4], np.int32)
TARGETS = np.array([0, 2])


class ScaledConvNet(nn.Module):
    """ConvNet of the registry tests whose second feature map is scaled per example."""

    @nn.compact
    def __call__(self, x, scale, deterministic: bool = False):
        del deterministic  # set to True by Model.from_linen, as for Dropout models
        x = nn.relu(nn.Conv(3, (3, 3), name="conv1")(x))
        x = nn.max_pool(x, (2, 2), strides=(2, 2))
        x = nn.relu(nn.Conv(4, (3, 3), name="conv2")(x)) * scale[:, None, None, None]
        return nn.Dense(3, name="head")(x.reshape(x.shape[0], -1))


class PaddedTokens(nn.Module):
    """Embedding, mean over the first `lengths` tokens, dense head (the SST-2 style)."""

    pad_id: int = 0

    @nn.compact
    def __call__(self, tokens, lengths):
        embedded = jnp.tanh(nn.Embed(8, 4, name="embedding")(tokens))
        valid = (jnp.arange(tokens.shape[1])[None, :] < lengths[:, None]).astype(embedded.dtype)
        pooled = (embedded * valid[..., None]).sum(axis=1) / lengths[:, None].astype(embedded.dtype)
        return nn.Dense(3, name="head")(pooled)


class ScaledAttention(nn.Module):
    """The registry tests' Attention model, its attention output scaled per example."""

    @nn.compact
    def __call__(self, images, scale):
        x = nn.Conv(8, (2, 2), strides=(2, 2), name="patches")(images)
        x = x.reshape(x.shape[0], -1, 8)
        cls = jnp.broadcast_to(self.param("cls", nn.initializers.normal(1.0), (1, 1, 8)), (x.shape[0], 1, 8))
        x = jnp.concatenate([cls, x], axis=1)
        attended = nn.MultiHeadDotProductAttention(num_heads=4, name="attention")(nn.LayerNorm()(x))
        return nn.Dense(3, name="head")((x + attended * scale[:, None, None])[:, 0])


def _setup(x, method=None):
    if method in ATTENTION:
        module, name, values = ScaledAttention(), "scale", SCALES
    elif np.issubdtype(x.dtype, np.integer):
        module, name, values = PaddedTokens(), "lengths", LENGTHS
    else:
        module, name, values = ScaledConvNet(), "scale", SCALES
    variables = module.init(jax.random.PRNGKey(0), x[:1], values[:1])
    return module, variables, name, values


def _one_example_model(module, variables, name, value):
    """The model with example i's argument built in, as a user would write it by hand."""

    def method(module, rows, **kwargs):
        return module(rows, **{name: jnp.full((rows.shape[0],), value)}, **kwargs)

    return jaxplain.Model.from_linen(module, variables, method=method)


def _call(method, model, x, settings, *, index=None, **extra):
    info = jaxplain.METHODS[method]
    options = dict(settings)
    if "target" in info.parameters:
        options["target"] = TARGETS if index is None else TARGETS[index : index + 1]
    if info.randomized:
        options["key"] = KEY if index is None else jax.random.fold_in(KEY, index)
    return info.function(model, x, **options, **extra)


def _check_case(case):
    method, x, settings = CASES[case]
    module, variables, name, values = _setup(x, method)
    model = jaxplain.Model.from_linen(module, variables)
    got = _call(method, model, x, settings, model_kwargs={name: values})
    for i in range(len(x)):
        alone = _call(
            method, _one_example_model(module, variables, name, values[i]), x[i : i + 1], settings, index=i
        )
        for field in ("values", "target", "delta", "output_difference"):
            a, b = getattr(got, field), getattr(alone, field)
            assert (a is None) == (b is None), (case, field)
            if a is not None:
                np.testing.assert_allclose(a[i], b[0], rtol=2e-4, atol=2e-5, err_msg=f"{case} {field} {i}")


# One path method, one sampled method, the rules and a layer method in the default tier;
# every registered method and variant in the slow tier.
FAST = (
    "integrated_gradients",
    "kernel_shap",
    "lrp",
    "layer_integrated_gradients",
)


@pytest.mark.parametrize("case", FAST)
def test_each_example_is_explained_with_its_own_arguments(case):
    _check_case(case)


@pytest.mark.slow
@pytest.mark.parametrize("case", sorted(set(CASES) - set(FAST)))
def test_every_method_explains_each_example_with_its_own_arguments(case):
    _check_case(case)


def test_a_plain_function_model_and_per_example_baselines():
    w = jnp.array([[1.0, -2.0], [0.5, 3.0], [2.0, 1.0]])

    def f(params, x, offset):
        return x @ params + offset[:, None] * x.sum(axis=1, keepdims=True) ** 2

    model = jaxplain.Model(f, w)
    x = jnp.array([[1.0, 2.0, 3.0], [0.5, -1.0, 2.0]])
    offset = jnp.array([0.1, -0.3])
    baseline = jnp.array([[0.0, 0.0, 0.0], [1.0, 1.0, 1.0]])
    result = jaxplain.integrated_gradients(
        model, x, target=1, baseline=baseline, steps=32, model_kwargs={"offset": offset}
    )
    for i in range(2):
        alone = jaxplain.Model(lambda p, r, o=offset[i]: f(p, r, jnp.full((r.shape[0],), o)), w)
        expected = jaxplain.integrated_gradients(
            alone, x[i : i + 1], target=1, baseline=baseline[i : i + 1], steps=32
        )
        np.testing.assert_allclose(result.values[i], expected.values[0], rtol=1e-5, atol=1e-6)
    # completeness holds with the arguments held fixed at both ends of the path
    assert float(jnp.abs(result.delta).max()) < 1e-4


def test_the_same_program_serves_new_arguments():
    x = CASES["integrated_gradients"][1]
    module, variables, name, values = _setup(x)
    model = jaxplain.Model.from_linen(module, variables)
    first = jaxplain.integrated_gradients(model, x, target=0, steps=8, model_kwargs={name: values})
    from jaxplain.methods import arguments

    traces = arguments._run._cache_size()
    second = jaxplain.integrated_gradients(model, x, target=0, steps=8, model_kwargs={name: values[::-1] * 3})
    assert arguments._run._cache_size() == traces
    assert not np.allclose(first.values, second.values)


def test_padding_beyond_the_length_gets_no_attribution():
    x = CASES["token_attributions"][1]
    module, variables, name, values = _setup(x)
    model = jaxplain.Model.from_linen(module, variables)
    result = jaxplain.token_attributions(model, x, target=TARGETS, steps=16, model_kwargs={name: values})
    assert np.all(np.asarray(result.values)[0, 2:] == 0)
    assert np.any(np.asarray(result.values)[0, :2] != 0)


@pytest.mark.parametrize(
    "model_kwargs, message",
    [
        ([1.0, 2.0], "model_kwargs must be a dict"),
        ({"scale": np.ones(3, np.float32)}, r"model_kwargs\['scale'\] has shape \(3,\)"),
        ({"scale": np.float32(1.0)}, r"model_kwargs\['scale'\] has shape \(\)"),
        ({"not a name": np.ones(2)}, "keyword argument names"),
    ],
)
def test_bad_model_kwargs_are_named(model_kwargs, message):
    x = CASES["saliency"][1]
    module, variables, _, _ = _setup(x)
    model = jaxplain.Model.from_linen(module, variables)
    with pytest.raises((TypeError, ValueError), match=message):
        jaxplain.saliency(model, x, target=0, model_kwargs=model_kwargs)


def test_background_and_feature_mask_stay_shared():
    # expected_gradients' background (16 rows) and a (4, 4, 1) feature mask are not split
    x = CASES["saliency"][1]
    module, variables, name, values = _setup(x)
    model = jaxplain.Model.from_linen(module, variables)
    jaxplain.expected_gradients(
        model, x, target=0, background=BACKGROUND, samples=4, key=KEY, model_kwargs={name: values}
    )
    jaxplain.feature_ablation(model, x, target=0, feature_mask=GROUPS, model_kwargs={name: values})


def test_explain_dataset_passes_each_batch_its_rows(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.uniform(size=(5, 4, 4, 1)).astype(np.float32)
    scales = rng.uniform(0.5, 2.0, size=5).astype(np.float32)
    module, variables, name, _ = _setup(x)
    model = jaxplain.Model.from_linen(module, variables)
    summary = jaxplain.explain_dataset(
        "saliency",
        model,
        x,
        out=str(tmp_path / "run"),
        target=1,
        batch_size=2,
        progress=False,
        model_kwargs={name: scales},
    )
    assert summary.examples == 5
    stored = jaxplain.load_attributions(str(tmp_path / "run"))
    expected = jaxplain.saliency(model, x, target=1, model_kwargs={name: scales})
    np.testing.assert_allclose(stored.values, expected.values, rtol=1e-6)
    # other arguments are another run: the folder is refused, nothing is overwritten
    with pytest.raises(ValueError, match="out"):
        jaxplain.explain_dataset(
            "saliency",
            model,
            x,
            out=str(tmp_path / "run"),
            target=1,
            batch_size=2,
            progress=False,
            model_kwargs={name: scales * 2},
        )
    with pytest.raises(ValueError, match=r"model_kwargs\['scale'\] has shape \(4,\)"):
        jaxplain.explain_dataset(
            "saliency",
            model,
            x,
            out=str(tmp_path / "other"),
            target=1,
            progress=False,
            model_kwargs={name: scales[:4]},
        )
