"""Bad input: a clear error naming the argument, raised at the boundary, not from inside jit."""

import os

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
