"""Bad input: a clear error naming the argument, raised at the boundary, not from inside jit."""

import functools
import json
import os
import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import linear_model

import jaxplain

X = np.ones((3, 4), np.float32)
MODEL = linear_model(np.ones((4, 2), np.float32))
BOUNDARY_FILES = {"_checks.py", "model.py", "schedules.py"}


def raises_at_boundary(error, match, call):
    with pytest.raises(error, match=match) as info:
        call()
    assert os.path.basename(str(info.traceback[-1].path)) in BOUNDARY_FILES


ig = jaxplain.integrated_gradients


@pytest.mark.parametrize(
    "error, match, call",
    [
        (ValueError, "cannot be applied to x of shape", lambda: ig(MODEL, np.ones((3, 5)), target=0)),
        (ValueError, "x must have a leading batch axis", lambda: ig(MODEL, np.ones(()), target=0)),
        (TypeError, "x must be floating point", lambda: ig(MODEL, np.ones((3, 4), int), target=0)),
        (TypeError, "x must hold real numbers", lambda: ig(MODEL, np.array([["a"] * 4] * 3), target=0)),
        (ValueError, "x contains NaN", lambda: ig(MODEL, np.full((3, 4), np.nan), target=0)),
        (ValueError, "x contains NaN or infinite", lambda: ig(MODEL, np.full((3, 4), np.inf), target=0)),
        (ValueError, "baseline contains NaN", lambda: ig(MODEL, X, target=0, baseline=np.nan)),
        (
            ValueError,
            "baseline of shape \\(5,\\) cannot be broadcast",
            lambda: ig(MODEL, X, target=0, baseline=np.zeros(5)),
        ),
        (
            ValueError,
            "baseline of shape \\(2, 4\\)",
            lambda: ig(MODEL, X, target=0, baseline=np.zeros((2, 4))),
        ),
        (
            ValueError,
            "target holds 0..2, outside the model's classes 0..1",
            lambda: ig(MODEL, X, target=[0, 1, 2]),
        ),
        (ValueError, "target holds -1", lambda: ig(MODEL, X, target=-1)),
        (ValueError, "target has length 2 but x holds 3", lambda: ig(MODEL, X, target=[0, 1])),
        (ValueError, "target has shape \\(2, 2\\)", lambda: ig(MODEL, X, target=[[0, 1], [1, 0]])),
        (TypeError, "target must hold integers", lambda: ig(MODEL, X, target=0.5)),
        (
            ValueError,
            "target must be an int, an int array, 'predicted'",
            lambda: ig(MODEL, X, target="argmax"),
        ),
        (ValueError, "target is required", lambda: ig(MODEL, X, target=None)),
        (
            ValueError,
            "top_k\\(3\\) but the model has 2 classes",
            lambda: ig(MODEL, X, target=jaxplain.top_k(3)),
        ),
        (ValueError, "steps must be >= 1, got 0", lambda: ig(MODEL, X, target=0, steps=0)),
        (TypeError, "steps must be an int", lambda: ig(MODEL, X, target=0, steps=2.5)),
        (ValueError, "schedule must be one of", lambda: ig(MODEL, X, target=0, schedule="simpson")),
        (
            ValueError,
            "schedule='trapezoid' needs steps >= 2",
            lambda: ig(MODEL, X, target=0, steps=1, schedule="trapezoid"),
        ),
        (ValueError, "chunk_size must be >= 1, got 0", lambda: ig(MODEL, X, target=0, chunk_size=0)),
        (TypeError, "model must be a jaxplain.Model", lambda: ig(lambda x: x, X, target=0)),
        (
            ValueError,
            "model must return \\(batch, classes\\)",
            lambda: ig(jaxplain.Model.from_callable(lambda x: x[:1]), X, target=0),
        ),
        (ValueError, "x contains NaN", lambda: jaxplain.saliency(MODEL, np.full((3, 4), np.nan), target=0)),
        (ValueError, "target holds 5", lambda: jaxplain.input_x_gradient(MODEL, X, target=5)),
    ],
)
def test_bad_input_is_named(error, match, call):
    raises_at_boundary(error, match, call)


def test_good_variants_of_the_same_arguments_pass():
    ig(MODEL, X.tolist(), target=np.int64(1), baseline=np.zeros((1, 4)), steps=1)
    ig(MODEL, jnp.asarray(X), target=jnp.array([0, 1, 1]), chunk_size=1000)


# --- a model that returns a tuple or a dict (issue 18, item 8) ---------------------------


class _TwoOutputs(nn.Module):
    """Returns (logits, features), as big_vision's BiT does; or {"logits": ...}."""

    as_dict: bool = False

    @nn.compact
    def __call__(self, x, train: bool = True):
        features = nn.Dense(3, name="features")(x)
        logits = nn.Dense(2, name="head")(features)
        return {"logits": logits, "features": features} if self.as_dict else (logits, features)


def _two_outputs(as_dict):
    module = _TwoOutputs(as_dict)
    return module, module.init(jax.random.PRNGKey(0), X)


@pytest.mark.parametrize("as_dict", [False, True])
@pytest.mark.parametrize("output", ["logits", "probs"])
@pytest.mark.parametrize(
    "call",
    [
        lambda m: jaxplain.saliency(m, X, target=0),
        lambda m: jaxplain.lrp(m, X, target=0),
        lambda m: jaxplain.layer_gradient_x_activation(m, X, target=0, layer="features"),
        lambda m: jaxplain.metrics.deletion(m, X, X, target=0, steps=2),
    ],
)
def test_model_returning_a_tuple_or_dict_says_what_it_returned(as_dict, output, call):
    module, variables = _two_outputs(as_dict)
    model = jaxplain.Model.from_linen(module, variables, output=output)
    structure = (
        r"a dict \(\['features'\] float32\[3, 3\], \['logits'\] float32\[3, 2\]\)"
        if as_dict
        else (r"a tuple \(\[0\] float32\[3, 2\], \[1\] float32\[3, 3\]\)")
    )
    with pytest.raises(TypeError, match=structure) as info:
        call(model)
    select = "['logits']" if as_dict else "[0]"
    assert f"method=lambda module, x: module(x, train=False){select}" in str(info.value)


def test_following_the_advice_for_a_tuple_output_gives_the_logits_attribution():
    module, variables = _two_outputs(False)
    # The advice in the error: a Linen `method` keeps the layer names (for layer methods).
    chosen = jaxplain.Model.from_linen(module, variables, method=lambda module, x: module(x, train=False)[0])
    logits_only = jaxplain.Model(lambda v, x: module.apply(v, x)[0], variables)
    np.testing.assert_allclose(
        jaxplain.saliency(chosen, X, target=1).values, jaxplain.saliency(logits_only, X, target=1).values
    )
    assert jaxplain.layer_gradient_x_activation(chosen, X, target=1, layer="features").values.shape == (3, 3)
    # Any other Model: select through apply_fn, as the error says.
    bad = jaxplain.Model.from_callable(lambda x: {"logits": module.apply(variables, x)[0]})
    with pytest.raises(TypeError, match=r"from_callable\(lambda x: f\(x\)\['logits'\]\)"):
        jaxplain.integrated_gradients(bad, X, target=1)
    apply = logits_only.apply_fn
    wrapped = logits_only.replace(apply_fn=lambda params, x: (apply(params, x), x))
    with pytest.raises(
        TypeError, match=r"model.replace\(apply_fn=lambda params, x: apply\(params, x\)\[0\]\)"
    ):
        jaxplain.saliency(wrapped, X, target=1)


# --- issue 18: hostile inputs end in a named error, never one from inside JAX/NumPy -------

JAXPLAIN_DIR = os.path.dirname(jaxplain.__file__)


def raises_named(error, match, call):
    """`call()` raises `error` matching `match`, from a line of jaxplain's own."""
    with pytest.raises(error, match=match) as info:
        call()
    assert str(info.traceback[-1].path).startswith(JAXPLAIN_DIR), info.traceback[-1]


def _int_scores(x):
    return (x @ np.ones((4, 2), np.float32) > 0).astype(jnp.int32)


@pytest.mark.parametrize(
    "error, match, call",
    [
        # bool x was cast to float silently while int x was refused
        (
            TypeError,
            "x must be floating point to be differentiated, got dtype bool",
            lambda: ig(MODEL, X > 0, target=0),
        ),
        # predictions instead of scores: every gradient is zero, without an error
        (
            TypeError,
            "floating-point scores \\(logits\\), got dtype int32",
            lambda: jaxplain.saliency(jaxplain.Model.from_callable(_int_scores), X, target=0),
        ),
        (
            TypeError,
            "floating-point scores \\(logits\\), got dtype complex64",
            lambda: jaxplain.occlusion(
                jaxplain.Model.from_callable(lambda x: (x @ np.ones((4, 2))).astype(jnp.complex64)),
                X,
                target=0,
                window=(1,),
            ),
        ),
        (
            ValueError,
            "reduce the other axes",
            lambda: ig(jaxplain.Model.from_callable(lambda x: x), np.ones((2, 3, 3, 1)), target=0),
        ),
        (
            ValueError,
            "one example without its batch axis: pass x\\[None\\]",
            lambda: jaxplain.saliency(MODEL, X[0], target=0),
        ),
    ],
)
def test_hostile_inputs_are_named(error, match, call):
    raises_named(error, match, call)


class _Mlp(nn.Module):
    @nn.compact
    def __call__(self, x):
        return nn.Dense(2, name="head")(nn.Dense(3, name="hidden")(x))


class _Cnn(nn.Module):
    @nn.compact
    def __call__(self, x):
        return nn.Dense(2)(nn.Conv(2, (1, 1), name="conv")(x).mean(axis=(1, 2)))


IMAGES = np.ones((1, 2, 2, 1), np.float32)
_MLP = jaxplain.Model.from_linen(_Mlp(), _Mlp().init(jax.random.PRNGKey(0), X))
_CNN = jaxplain.Model.from_linen(_Cnn(), _Cnn().init(jax.random.PRNGKey(0), IMAGES))


@pytest.mark.parametrize(
    "error, match, call",
    [
        # bool("no") is True: flags were cast, so any string turned them on
        (
            TypeError,
            "absolute must be True or False, got str",
            lambda: jaxplain.saliency(MODEL, X, target=0, absolute="no"),
        ),
        (
            TypeError,
            "relu must be True or False, got int",
            lambda: jaxplain.grad_cam(_CNN, IMAGES, target=0, layer="conv", relu=1),
        ),
        (
            TypeError,
            "post_process must be True or False, got str",
            lambda: jaxplain.fullgrad(_MLP, X, target=0, post_process="False"),
        ),
        (
            ValueError,
            "method 'nope' is not a method of _Mlp",
            lambda: jaxplain.Model.from_linen(_Mlp(), {}, method="nope"),
        ),
        (
            TypeError,
            "method must be a method name, a function or None, got int",
            lambda: jaxplain.Model.from_linen(_Mlp(), {}, method=3),
        ),
    ],
)
def test_flags_and_methods_are_named(error, match, call):
    raises_named(error, match, call)


M = jaxplain.metrics
KEY = jax.random.key(0)
SAL = np.ones((3, 4), np.float32)


@pytest.mark.parametrize(
    "error, match, call",
    [
        (
            ValueError,
            "'no_such_method' is not a jaxplain method",
            lambda: M.sensitivity_max("no_such_method", MODEL, X, target=0, key=KEY, samples=2),
        ),
        (
            TypeError,
            "method must return a jaxplain.Attribution, got an array of shape \\(3, 4\\)",
            lambda: M.sensitivity_max(lambda model, x, target: x, MODEL, X, target=0, key=KEY, samples=2),
        ),
        (
            ValueError,
            "method returned values of shape \\(3, 4\\) for x of shape \\(6, 4\\)",
            lambda: M.sensitivity_max(
                lambda model, x, target: jaxplain.Attribution(jnp.ones((3, 4)), target),
                MODEL,
                X,
                target=0,
                key=KEY,
                samples=2,
            ),
        ),
        # a correlation over one subset is always NaN
        (
            ValueError,
            "samples must be >= 2",
            lambda: M.faithfulness_correlation(MODEL, X, SAL, target=0, key=KEY, samples=1),
        ),
        (
            ValueError,
            "samples must be >= 2",
            lambda: M.sensitivity_n(MODEL, X, SAL, target=0, key=KEY, subset_sizes=(1,), samples=1),
        ),
        # no features: ZeroDivisionError inside the rank computation
        (
            ValueError,
            "attribution must have a batch axis and features, got shape \\(3, 0\\)",
            lambda: M.spearman(np.ones((3, 0)), np.ones((3, 0))),
        ),
        (
            TypeError,
            "percentages must be a non-empty sequence",
            lambda: M.road(MODEL, X, SAL, target=0, key=KEY, percentages=None),
        ),
        (
            TypeError,
            "methods must be a list or dict of methods",
            lambda: jaxplain.evaluate("saliency", MODEL, X, target=0, key=KEY),
        ),
        (
            TypeError,
            "methods must be a list or dict of methods",
            lambda: jaxplain.evaluate(None, MODEL, X, target=0, key=KEY),
        ),
        (
            TypeError,
            "options a dict",
            lambda: jaxplain.evaluate([(jaxplain.saliency, "absolute")], MODEL, X, target=0, key=KEY),
        ),
        (
            TypeError,
            "metrics must be 'all' or a sequence of names",
            lambda: jaxplain.evaluate(["saliency"], MODEL, X, target=0, key=KEY, metrics="infidelity"),
        ),
        (
            ValueError,
            "score_output must be one of",
            lambda: jaxplain.evaluate(["saliency"], MODEL, X, target=0, key=KEY, score_output="prob"),
        ),
    ],
)
def test_metric_arguments_are_named(error, match, call):
    raises_named(error, match, call)


# --- amortized: checked before any training, labelling or first stage -------------------

AM = jaxplain.amortized
_NET = AM.MLPExplainer(num_classes=2, feature_shape=(4,), features=(4,), head_features=(4,))
_LABELS = AM.Labels(
    np.zeros((3, 2, 4), np.float32),
    np.zeros((3, 2), np.float32),
    np.zeros((3, 2), np.float32),
    {"method": "exact_shapley", "settings": {}},
)
FIT = dict(epochs=1, progress=False)


@pytest.mark.parametrize(
    "error, match, call",
    [
        # epochs=0 ended in an IndexError after "training"; NaN or negative rates trained silently
        (
            ValueError,
            "epochs must be >= 1, got 0",
            lambda: AM.train_supervised(_NET, MODEL, X, _LABELS, epochs=0),
        ),
        (
            ValueError,
            "learning_rate must be a finite number > 0.0, got nan",
            lambda: AM.train_supervised(_NET, MODEL, X, _LABELS, learning_rate=np.nan, **FIT),
        ),
        (
            TypeError,
            "learning_rate must be a number, got str",
            lambda: AM.train_fastshap(_NET, MODEL, X, learning_rate="1e-3", **FIT),
        ),
        (
            ValueError,
            "seed must be >= 0, got -1",
            lambda: AM.train_supervised(_NET, MODEL, X, _LABELS, seed=-1, **FIT),
        ),
        (
            ValueError,
            "validation_fraction must be < 1",
            lambda: AM.train_supervised(_NET, MODEL, X, _LABELS, validation_fraction=1.0, **FIT),
        ),
        (
            ValueError,
            "rank_weight must be a finite number >= 0.0",
            lambda: AM.train_supervised(_NET, MODEL, X, _LABELS, rank_weight=-1, **FIT),
        ),
        (
            TypeError,
            "labels must be jaxplain.amortized.Labels",
            lambda: AM.train_supervised(_NET, MODEL, X, _LABELS.values, **FIT),
        ),
        (
            ValueError,
            "x contains NaN",
            lambda: AM.train_supervised(_NET, MODEL, np.full((3, 4), np.nan), _LABELS, **FIT),
        ),
        (
            ValueError,
            "labels explain examples of shape \\(4,\\) but x holds examples of shape \\(3,\\)",
            lambda: AM.train_supervised(_NET, MODEL, X[:, :3], _LABELS, **FIT),
        ),
        (
            TypeError,
            "network must be an explainer network",
            lambda: AM.train_supervised(None, MODEL, X, _LABELS, **FIT),
        ),
        (
            ValueError,
            "build it with num_classes=2 and feature_shape=\\(4,\\)",
            lambda: AM.train_supervised(
                AM.MLPExplainer(num_classes=3, feature_shape=(4,), features=(4,)), MODEL, X, _LABELS, **FIT
            ),
        ),
        (
            ValueError,
            "reference of shape \\(5,\\) is not a scalar or one example of shape \\(4,\\)",
            lambda: AM.train_fastshap(_NET, MODEL, X, reference=np.zeros(5), **FIT),
        ),
        (
            ValueError,
            "reference contains NaN",
            lambda: AM.train_fastshap(_NET, MODEL, X, reference=np.nan, **FIT),
        ),
        (
            TypeError,
            "surrogate must be a Surrogate",
            lambda: AM.train_fastshap(_NET, MODEL, X, surrogate="model", **FIT),
        ),
        (
            ValueError,
            "samples must be >= 1, got 0",
            lambda: AM.train_surrogate(jaxplain.models.MLP(num_classes=2), MODEL, X, samples=0, **FIT),
        ),
        (
            TypeError,
            "classifier must be a flax.linen.Module",
            lambda: AM.train_surrogate("mlp", MODEL, X, **FIT),
        ),
        (
            ValueError,
            "build it with num_classes=2",
            lambda: AM.train_surrogate(jaxplain.models.MLP(num_classes=5, features=(4,)), MODEL, X, **FIT),
        ),
        (
            ValueError,
            "candidates must be >= 1, got 0",
            lambda: AM.pretrain_encoder(_NET, MODEL, X, candidates=0, **FIT),
        ),
        (
            ValueError,
            "temperature must be a finite number > 0.0",
            lambda: AM.pretrain_encoder(_NET, MODEL, X, temperature=0.0, **FIT),
        ),
        (
            ValueError,
            "drop_probability must be < 1",
            lambda: AM.pretrain_encoder(_NET, MODEL, X, drop_probability=1.0, **FIT),
        ),
        # these failed only after stage 1 (contrastive pre-training) had run
        (
            ValueError,
            "label_fraction must be in \\(0, 1\\]",
            lambda: AM.train_cortx(_NET, MODEL, X, _LABELS, label_fraction=0.0, **FIT),
        ),
        (
            ValueError,
            "labels hold 2 examples but x holds 3",
            lambda: AM.train_cortx(_NET, MODEL, X, _LABELS.rows([0, 1]), label_fraction=0.5, **FIT),
        ),
        (
            ValueError,
            "head_epochs must be >= 1",
            lambda: AM.train_cortx(_NET, MODEL, X, _LABELS, label_fraction=0.5, head_epochs=0, **FIT),
        ),
        (ValueError, "n must be >= 1, got 0", lambda: AM.labelled_rows(0, 0.5)),
        (
            TypeError,
            "explainer must be a jaxplain.amortized.Explainer",
            lambda: AM.selective(None, MODEL, X, target=0, tolerance=0.1),
        ),
        (TypeError, r"path must be a path \(str or os.PathLike\), got int", lambda: AM.load(3)),
    ],
)
def test_amortized_arguments_are_named(error, match, call):
    raises_named(error, match, call)


def test_an_explainer_refuses_inputs_of_another_kind_than_it_was_trained_on():
    from jaxplain.amortized import explainer, networks

    trained = explainer.make(
        _NET,
        networks.init(_NET, X),
        recipe="fastshap",
        num_classes=2,
        input_shape=[4],
        input_dtype="float32",
        reference=0.0,
        feature_mask=None,
        efficiency=True,
        completeness=True,
        output_scale=1.0,
        teacher=None,
        label_fraction=0.0,
    )
    assert trained(MODEL, X, target=0).values.shape == (3, 4)
    # int x was taken as token ids and explained without complaint
    raises_named(
        TypeError,
        "x has dtype int64; this explainer was trained on float32",
        lambda: trained(MODEL, X.astype(np.int64), target=0),
    )
    raises_named(
        TypeError, "efficiency must be True or False", lambda: trained(MODEL, X, target=0, efficiency="no")
    )
    raises_named(
        TypeError,
        "tolerance must be a number, got str",
        lambda: AM.selective(trained, MODEL, X, target=0, tolerance="0.1"),
    )


# --- models: the zoo, max_pool and train -------------------------------------------------

_SMALL = jaxplain.data.Dataset("tiny", X, np.array([0, 1, 1], np.int32), X[:2], np.array([1, 0], np.int32), 2)


def _with(**fields):
    import dataclasses

    return dataclasses.replace(_SMALL, **fields)


@pytest.mark.parametrize(
    "error, match, call",
    [
        (ValueError, "num_classes must be >= 1, got 0", lambda: jaxplain.models.build("mlp", num_classes=0)),
        (
            ValueError,
            "window_shape must be >= 1 on every axis",
            lambda: jaxplain.models.max_pool(jnp.ones((1, 4, 4, 1)), (0, 0)),
        ),
        (
            ValueError,
            "padding must be 'VALID', 'SAME'",
            lambda: jaxplain.models.max_pool(jnp.ones((1, 4, 4, 1)), (2, 2), padding="same"),
        ),
        (
            TypeError,
            "data must be a jaxplain.data.Dataset",
            lambda: jaxplain.train(_Mlp(), (X, [0, 1, 1]), epochs=1),
        ),
        # out-of-range and fractional labels trained silently (optax takes them; int32 truncated 0.5)
        (
            ValueError,
            "the labels go up to 5 but the module has 2 classes",
            lambda: jaxplain.train(_Mlp(), _with(y_train=np.array([0, 5, 1])), epochs=1),
        ),
        (
            TypeError,
            "y_train must hold integer class indices, got dtype float64",
            lambda: jaxplain.train(_Mlp(), _with(y_train=np.array([0, 0.5, 1])), epochs=1),
        ),
        (
            ValueError,
            "y_train must hold one class per example",
            lambda: jaxplain.train(_Mlp(), _with(y_train=np.array([0, 1])), epochs=1),
        ),
        (
            ValueError,
            "x_train contains NaN",
            lambda: jaxplain.train(_Mlp(), _with(x_train=np.full((3, 4), np.nan)), epochs=1),
        ),
        (
            ValueError,
            "x_test must hold at least one example",
            lambda: jaxplain.train(_Mlp(), _with(x_test=X[:0], y_test=np.zeros(0, int)), epochs=1),
        ),
        (
            ValueError,
            "learning_rate must be a finite number > 0.0",
            lambda: jaxplain.train(_Mlp(), _SMALL, epochs=1, learning_rate=-1e-3),
        ),
        (
            ValueError,
            "warmup_fraction must be in \\[0.0, 1.0\\]",
            lambda: jaxplain.train(_Mlp(), _SMALL, epochs=1, warmup_fraction=2.0),
        ),
        (ValueError, "seed must be >= 0", lambda: jaxplain.train(_Mlp(), _SMALL, epochs=1, seed=-1)),
    ],
)
def test_model_zoo_and_training_arguments_are_named(error, match, call):
    raises_named(error, match, call)


def test_training_for_a_single_step_works():
    # one epoch of one batch: Optax's schedule raised (decay steps not beyond the warm-up)
    result = jaxplain.train(_Mlp(), _SMALL, epochs=np.int64(1), batch_size=64, progress=False)
    assert len(result.history) == 1


def test_additive_shapley_names_a_baseline_that_does_not_broadcast():
    raises_named(
        ValueError,
        "baseline of shape \\(2, 8\\) cannot be broadcast against x of shape \\(3, 8\\)",
        lambda: jaxplain.data.additive_shapley(np.zeros((3, 8)), np.zeros((2, 8))),
    )


class _Tokens(nn.Module):
    @nn.compact
    def __call__(self, ids):
        return nn.Dense(2)(nn.Embed(5, 3, name="token_embedding")(ids).mean(axis=1))


_IDS = np.array([[1, 2, 0], [3, 4, 0]], np.int32)
_TOKENS = jaxplain.Model.from_linen(_Tokens(), _Tokens().init(jax.random.PRNGKey(0), _IDS))


@pytest.mark.parametrize(
    "match, ids, baseline",
    [
        # nn.Embed does not bound-check: ids past the table gave NaN, negative ones wrapped
        (
            "x holds token ids 1..9, outside the embedding table of 'token_embedding' \\(ids 0..4\\)",
            _IDS * 2 + 1,
            None,
        ),
        ("x holds token ids -1..4", _IDS - 1 * (_IDS == 0), None),
        ("baseline holds token ids 7..7", _IDS, 7),
    ],
)
def test_token_ids_outside_the_embedding_table_are_named(match, ids, baseline):
    raises_named(
        ValueError,
        match,
        lambda: jaxplain.token_attributions(_TOKENS, ids, target=0, baseline=baseline, steps=2),
    )


# --- viz: pictures check what they draw before drawing (issue 18) ------------------------

from jaxplain import viz  # noqa: E402

_IMGS = np.linspace(0, 1, 2 * 4 * 4).reshape(2, 4, 4, 1).astype(np.float32)
_MAPS = np.linspace(-1, 1, 2 * 4 * 4).reshape(2, 4, 4)
_WORDS = [["good", "film"], ["bad"]]
_CURVE = {"cost": [1, 2], "median_l2": [0.1, 0.01]}


@pytest.mark.parametrize(
    "error, match, draw",
    [
        # IndexError after the first panel
        (
            ValueError,
            "values holds attributions of 1 examples for 2 inputs",
            lambda p: viz.image_attributions(_IMGS, _MAPS[:1], p),
        ),
        # wrong ranks were resized or drawn without complaint, or failed inside jax.image
        (
            ValueError,
            "inputs must be \\(n, H, W\\) or \\(n, H, W, C\\) images, got shape \\(2, 16\\)",
            lambda p: viz.image_attributions(_IMGS.reshape(2, 16), _MAPS, p),
        ),
        (
            ValueError,
            "values must be \\(n, h, w\\) or \\(n, h, w, c\\) attributions, got shape \\(2, 4, 4, 1, 1\\)",
            lambda p: viz.image_attributions(_IMGS, _MAPS[..., None, None], p),
        ),
        # NaN drew a blank heat-map
        (
            ValueError,
            "values contains NaN or infinite values",
            lambda p: viz.image_attributions(_IMGS, _MAPS * np.nan, p),
        ),
        (ValueError, "inputs contains NaN", lambda p: viz.image_attributions(_IMGS + np.inf, _MAPS, p)),
        (
            ValueError,
            "inputs is empty \\(shape \\(0, 4, 4, 1\\)\\)",
            lambda p: viz.image_attributions(_IMGS[:0], _MAPS[:0], p),
        ),
        (
            ValueError,
            "columns must be >= 1, got 0",
            lambda p: viz.image_attributions(_IMGS, _MAPS, p, columns=0),
        ),
        (
            ValueError,
            "percentile must be in \\[0.0, 100.0\\], got 200",
            lambda p: viz.image_attributions(_IMGS, _MAPS, p, percentile=200),
        ),
        (
            ValueError,
            "titles has 1 entries for 2 inputs",
            lambda p: viz.image_attributions(_IMGS, _MAPS, p, titles=["a"]),
        ),
        (
            ValueError,
            "percentile must be in",
            lambda p: viz.method_grid(_IMGS, {"ig": _MAPS}, p, percentile=-1),
        ),
        (
            ValueError,
            "attributions of method 'ig' contains NaN",
            lambda p: viz.method_grid(_IMGS, {"ig": _MAPS * np.nan}, p),
        ),
        (
            ValueError,
            "feature_names has 1 entries for 3 features",
            lambda p: viz.tabular_attributions(np.ones((2, 3)), p, feature_names=["a"]),
        ),
        (
            ValueError,
            "values must be \\(examples, features\\); for one example pass values\\[None\\]",
            lambda p: viz.tabular_attributions(np.ones(3), p),
        ),
        (ValueError, "values contains NaN", lambda p: viz.tabular_attributions(np.full((2, 3), np.nan), p)),
        (
            ValueError,
            "row_labels has 1 entries for 2 examples",
            lambda p: viz.tabular_attributions(np.ones((2, 3)), p, row_labels=["a"]),
        ),
        # embedding attributions (n, L, D) were flattened: the values of other tokens were shown
        (
            ValueError,
            "values row 0 has shape \\(3, 2\\); expected one value per token",
            lambda p: viz.text_html(_WORDS, np.ones((2, 3, 2)), p),
        ),
        (
            TypeError,
            "tokens must hold one sequence of strings per row",
            lambda p: viz.text_html(["good film", "bad"], np.ones((2, 9)), p),
        ),
        (
            ValueError,
            "values row 1 contains NaN",
            lambda p: viz.text_html(_WORDS, np.array([[1.0, 2.0], [np.nan, 0.0]]), p),
        ),
        (ValueError, "tokens holds no tokens", lambda p: viz.text_html([[]], np.ones((1, 0)), p)),
        # IndexError
        (
            ValueError,
            "row 0 has 2 tokens but only 1 values",
            lambda p: viz.token_attributions(_WORDS, np.ones((2, 1)), p),
        ),
        (
            ValueError,
            "values has 1 rows for 2 rows of tokens",
            lambda p: viz.token_attributions(_WORDS, np.ones((1, 2)), p),
        ),
        (
            TypeError,
            "curves_by_case\\['a'\\] must be a non-empty dict",
            lambda p: viz.convergence({"a": 3}, p),
        ),
        (
            TypeError,
            "curves_by_case\\['a'\\]\\['gl'\\] must be a dict with 'cost' and 'median_l2'",
            lambda p: viz.convergence({"a": {"gl": [1, 2]}}, p),
        ),
        (
            ValueError,
            "2 costs for 1 errors",
            lambda p: viz.convergence({"a": {"gl": {**_CURVE, "median_l2": [1.0]}}}, p),
        ),
        (TypeError, "size must be \\(H, W\\), two ints, got 8", lambda p: viz.spatial_map(_MAPS, 8)),
        (
            ValueError,
            "values must be \\(n, h, w\\) or \\(n, h, w, c\\)",
            lambda p: viz.spatial_map(np.zeros((2, 4)), (8, 8)),
        ),
        (ValueError, "values is empty", lambda p: viz.clip_scale(np.zeros(0))),
        (ValueError, "percentile must be in", lambda p: viz.clip_scale(np.ones(3), 101)),
    ],
)
def test_pictures_name_what_they_cannot_draw_before_drawing(tmp_path, error, match, draw):
    raises_named(error, match, lambda: draw(str(tmp_path / "picture.png")))
    assert not list(tmp_path.iterdir())


def test_pictures_take_an_attribution_and_ragged_tokens(tmp_path):
    attribution = jaxplain.Attribution(jnp.asarray(_MAPS), jnp.zeros(2, jnp.int32))
    # an Attribution used to fail in float(); it draws as its values
    viz.image_attributions(_IMGS, attribution, str(tmp_path / "attribution.png"))
    viz.image_attributions(_IMGS, _MAPS, str(tmp_path / "values.png"))
    assert (tmp_path / "attribution.png").read_bytes() == (tmp_path / "values.png").read_bytes()
    # ragged rows (the second padded) as text_html takes them: an IndexError before
    padded = np.array([[1.0, -1.0], [0.5, 99.0]])
    viz.token_attributions(_WORDS, padded, str(tmp_path / "ragged.png"))
    viz.token_attributions(_WORDS, np.array([[1.0, -1.0], [0.5, 7.0]]), str(tmp_path / "other_padding.png"))
    assert (tmp_path / "ragged.png").read_bytes() == (
        tmp_path / "other_padding.png"
    ).read_bytes()  # padding unused


@pytest.mark.parametrize(
    "error, match, call",
    [
        # "'int' object is not iterable", a failure inside NumPy, and "4" taken as 4
        (
            TypeError,
            "feature_shape must be a tuple of ints, one per axis of an example, got 4",
            lambda: jaxplain.patch_mask(4, (2,)),
        ),
        (
            ValueError,
            "feature_shape must be >= 1 on every axis, got \\(-1,\\)",
            lambda: jaxplain.patch_mask((-1,), (2,)),
        ),
        (TypeError, "feature_shape must be a tuple of ints.*got '4'", lambda: jaxplain.patch_mask("4", (2,))),
        (TypeError, "patch must be a tuple of ints", lambda: jaxplain.patch_mask((4,), 2)),
        (
            ValueError,
            "patch must be >= 1 on every axis, got \\(0,\\)",
            lambda: jaxplain.patch_mask((4,), (0,)),
        ),
        (
            ValueError,
            "patch has 1 sizes for feature_shape \\(4, 4\\) of 2 axes",
            lambda: jaxplain.patch_mask((4, 4), (2,)),
        ),
        # OverflowError from the blur's radius
        (
            ValueError,
            "max_sigma must be a finite number > 0.0, got inf",
            lambda: jaxplain.blur_ig(_CNN, IMAGES, target=0, max_sigma=float("inf")),
        ),
        (
            ValueError,
            "max_sigma must be a finite number > 0.0, got 0",
            lambda: jaxplain.blur_ig(_CNN, IMAGES, target=0, max_sigma=0),
        ),
    ],
)
def test_patch_mask_and_blur_arguments_are_named(error, match, call):
    raises_named(error, match, call)
    np.testing.assert_array_equal(
        jaxplain.patch_mask([4], [np.int64(3)]), [0, 0, 0, 1]
    )  # lists and NumPy ints pass


@pytest.mark.parametrize(
    "error, match, call",
    [
        # "invalid PRNG key data" from inside JAX, at the first batch
        (
            TypeError,
            "key must be a single jax.random.key\\(seed\\)",
            lambda: AM.make_labels("kernel_shap", MODEL, X, key=0, samples=8, progress=False),
        ),
        # a teacher is recorded by name, so that it can be called again
        (
            ValueError,
            "method must be a registered jaxplain method",
            lambda: AM.make_labels(
                functools.partial(jaxplain.vargrad, method=jaxplain.saliency),
                MODEL,
                X,
                key=KEY,
                progress=False,
            ),
        ),
        (
            ValueError,
            "wrap names the method a noise method wraps; saliency wraps none",
            lambda: AM.make_labels("saliency", MODEL, X, wrap="saliency", progress=False),
        ),
    ],
)
def test_make_labels_names_its_key_a_partial_and_a_wrap_of_no_noise_method(error, match, call):
    raises_named(error, match, call)


def test_make_labels_runs_a_noise_method_with_the_method_it_wraps():
    from jaxplain.amortized.labels import method_settings

    labels = AM.make_labels(
        jaxplain.smoothgrad,
        MODEL,
        X,
        key=KEY,
        wrap=jaxplain.integrated_gradients,
        steps=4,
        samples=3,
        progress=False,
    )
    assert labels.teacher["settings"]["method"] == "integrated_gradients"
    direct = jaxplain.smoothgrad(
        MODEL,
        X,
        method=jaxplain.integrated_gradients,
        target=np.arange(2)[None, :],
        key=jax.random.fold_in(KEY, 0),
        samples=3,
        steps=4,
    )
    np.testing.assert_allclose(labels.values, direct.values, rtol=1e-6)
    # what selective calls it again with; a teacher of an earlier version recorded `wrap`
    renamed = {**labels.teacher["settings"], "wrap": labels.teacher["settings"]["method"]}
    del renamed["method"]
    for teacher in (labels.teacher, {**labels.teacher, "settings": renamed}):
        function, settings = method_settings(teacher)
        assert settings["method"] == "integrated_gradients" and "wrap" not in settings
        again = function(
            MODEL,
            X,
            target=np.arange(2)[None, :],
            **{**settings, "key": jax.random.fold_in(settings["key"], 0)},
        )
        np.testing.assert_allclose(again.values, direct.values, rtol=1e-6)


def _saved_explainer(folder, network, x):
    from jaxplain.amortized import explainer, networks

    explainer.make(
        network,
        networks.init(network, x),
        recipe="fastshap",
        num_classes=2,
        input_shape=list(x.shape[1:]),
        input_dtype="float32",
        reference=0.0,
        feature_mask=None,
        efficiency=True,
        completeness=True,
        output_scale=1.0,
        teacher=None,
        label_fraction=0.0,
    ).save(folder)
    return os.path.join(folder, "metadata.json")


@pytest.mark.parametrize(
    "network, x, shape",
    [
        # the conv network's init failed with ZeroDivisionError or a broadcast error
        (AM.ConvExplainer(2, (4, 4, 1), channels=(4, 4)), np.ones((1, 4, 4, 1), np.float32), [4, 4]),
        (AM.ConvExplainer(2, (4, 4, 1), channels=(4, 4)), np.ones((1, 4, 4, 1), np.float32), [16]),
        # a dense network flattens its input: it loaded, and its maps had another shape than x
        (_NET, X, [4, 1, 1]),
    ],
)
def test_an_explainer_whose_input_shape_does_not_fit_is_a_checkpoint_error(tmp_path, network, x, shape):
    metadata_path = _saved_explainer(str(tmp_path / "explainer"), network, x)
    metadata = json.load(open(metadata_path))
    json.dump({**metadata, "input_shape": shape}, open(metadata_path, "w"))
    raises_named(
        jaxplain.io.CheckpointError,
        f"{re.escape(metadata_path)}: field.? 'input_shape'",
        lambda: AM.load(str(tmp_path / "explainer")),
    )
    json.dump(metadata, open(metadata_path, "w"))
    assert (
        AM.load(str(tmp_path / "explainer"))(MODEL if x.ndim == 2 else _CNN, x, target=0).values.shape
        == x.shape
    )
