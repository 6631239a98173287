"""Bad input: a clear error naming the argument, raised at the boundary, not from inside jit."""

import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxplain

from conftest import linear_model

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
        (ValueError, "baseline of shape \\(5,\\) cannot be broadcast", lambda: ig(MODEL, X, target=0, baseline=np.zeros(5))),
        (ValueError, "baseline of shape \\(2, 4\\)", lambda: ig(MODEL, X, target=0, baseline=np.zeros((2, 4)))),
        (ValueError, "target holds 0..2, outside the model's classes 0..1", lambda: ig(MODEL, X, target=[0, 1, 2])),
        (ValueError, "target holds -1", lambda: ig(MODEL, X, target=-1)),
        (ValueError, "target has length 2 but x holds 3", lambda: ig(MODEL, X, target=[0, 1])),
        (ValueError, "target has shape \\(2, 2\\)", lambda: ig(MODEL, X, target=[[0, 1], [1, 0]])),
        (TypeError, "target must hold integers", lambda: ig(MODEL, X, target=0.5)),
        (ValueError, "target must be an int, an int array, 'predicted'", lambda: ig(MODEL, X, target="argmax")),
        (ValueError, "target is required", lambda: ig(MODEL, X, target=None)),
        (ValueError, "top_k\\(3\\) but the model has 2 classes", lambda: ig(MODEL, X, target=jaxplain.top_k(3))),
        (ValueError, "steps must be >= 1, got 0", lambda: ig(MODEL, X, target=0, steps=0)),
        (TypeError, "steps must be an int", lambda: ig(MODEL, X, target=0, steps=2.5)),
        (ValueError, "schedule must be one of", lambda: ig(MODEL, X, target=0, schedule="simpson")),
        (ValueError, "schedule='trapezoid' needs steps >= 2", lambda: ig(MODEL, X, target=0, steps=1, schedule="trapezoid")),
        (ValueError, "chunk_size must be >= 1, got 0", lambda: ig(MODEL, X, target=0, chunk_size=0)),
        (TypeError, "model must be a jaxplain.Model", lambda: ig(lambda x: x, X, target=0)),
        (ValueError, "model must return \\(batch, classes\\)", lambda: ig(jaxplain.Model.from_callable(lambda x: x.sum(1)), X, target=0)),
        (ValueError, "model must return \\(batch, classes\\)", lambda: ig(jaxplain.Model.from_callable(lambda x: x[:1]), X, target=0)),
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
    structure = r"a dict \(\['features'\] float32\[3, 3\], \['logits'\] float32\[3, 2\]\)" if as_dict else (
        r"a tuple \(\[0\] float32\[3, 2\], \[1\] float32\[3, 3\]\)"
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
    with pytest.raises(TypeError, match=r"model.replace\(apply_fn=lambda params, x: apply\(params, x\)\[0\]\)"):
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
        (TypeError, "x must be floating point to be differentiated, got dtype bool", lambda: ig(MODEL, X > 0, target=0)),
        # predictions instead of scores: every gradient is zero, without an error
        (TypeError, "floating-point scores \\(logits\\), got dtype int32", lambda: jaxplain.saliency(jaxplain.Model.from_callable(_int_scores), X, target=0)),
        (TypeError, "floating-point scores \\(logits\\), got dtype complex64",
         lambda: jaxplain.occlusion(jaxplain.Model.from_callable(lambda x: (x @ np.ones((4, 2))).astype(jnp.complex64)), X, target=0, window=(1,))),
        (ValueError, "add a class axis, e.g. return scores\\[:, None\\]", lambda: ig(jaxplain.Model.from_callable(lambda x: x.sum(1)), X, target=0)),
        (ValueError, "reduce the other axes", lambda: ig(jaxplain.Model.from_callable(lambda x: x), np.ones((2, 3, 3, 1)), target=0)),
        (ValueError, "one example without its batch axis: pass x\\[None\\]", lambda: jaxplain.saliency(MODEL, X[0], target=0)),
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
        (TypeError, "absolute must be True or False, got str", lambda: jaxplain.saliency(MODEL, X, target=0, absolute="no")),
        (TypeError, "relu must be True or False, got int", lambda: jaxplain.grad_cam(_CNN, IMAGES, target=0, layer="conv", relu=1)),
        (TypeError, "post_process must be True or False, got str", lambda: jaxplain.fullgrad(_MLP, X, target=0, post_process="False")),
        (ValueError, "method 'nope' is not a method of _Mlp", lambda: jaxplain.Model.from_linen(_Mlp(), {}, method="nope")),
        (TypeError, "method must be a method name, a function or None, got int", lambda: jaxplain.Model.from_linen(_Mlp(), {}, method=3)),
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
        (TypeError, "smoothgrad wraps another method; pass functools.partial",
         lambda: M.sensitivity_max(jaxplain.smoothgrad, MODEL, X, target=0, key=KEY, samples=2)),
        (TypeError, "method must return a jaxplain.Attribution, got an array of shape \\(3, 4\\)",
         lambda: M.sensitivity_max(lambda model, x, target: x, MODEL, X, target=0, key=KEY, samples=2)),
        (ValueError, "method returned values of shape \\(3, 4\\) for x of shape \\(6, 4\\)",
         lambda: M.sensitivity_max(lambda model, x, target: jaxplain.Attribution(jnp.ones((3, 4)), target), MODEL, X, target=0, key=KEY, samples=2)),
        # a correlation over one subset is always NaN
        (ValueError, "samples must be >= 2", lambda: M.faithfulness_correlation(MODEL, X, SAL, target=0, key=KEY, samples=1)),
        (ValueError, "samples must be >= 2", lambda: M.sensitivity_n(MODEL, X, SAL, target=0, key=KEY, subset_sizes=(1,), samples=1)),
        # no features: ZeroDivisionError inside the rank computation
        (ValueError, "attribution must have a batch axis and features, got shape \\(3, 0\\)", lambda: M.spearman(np.ones((3, 0)), np.ones((3, 0)))),
        (TypeError, "percentages must be a non-empty sequence", lambda: M.road(MODEL, X, SAL, target=0, key=KEY, percentages=None)),
        (TypeError, "methods must be a list or dict of methods", lambda: jaxplain.evaluate("saliency", MODEL, X, target=0, key=KEY)),
        (TypeError, "methods must be a list or dict of methods", lambda: jaxplain.evaluate(None, MODEL, X, target=0, key=KEY)),
        (TypeError, "options a dict", lambda: jaxplain.evaluate([(jaxplain.saliency, "absolute")], MODEL, X, target=0, key=KEY)),
        (TypeError, "metrics must be a sequence of names", lambda: jaxplain.evaluate(["saliency"], MODEL, X, target=0, key=KEY, metrics="infidelity")),
        (ValueError, "score_output must be one of", lambda: jaxplain.evaluate(["saliency"], MODEL, X, target=0, key=KEY, score_output="prob")),
    ],
)
def test_metric_arguments_are_named(error, match, call):
    raises_named(error, match, call)
