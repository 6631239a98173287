"""Synthetic tasks whose true attributions are known, to check attribution methods against.

`synthetic_additive` is tabular: the label's log-odds is a sum of one-feature terms
g_i(x_i), so the exact Shapley values are known in closed form (`additive_shapley`).
`synthetic_text` is a token task: the label is carried only by planted trigger tokens,
so a faithful attribution concentrates on the planted positions.

References:
  Lundberg, Lee, "A Unified Approach to Interpreting Model Predictions", NeurIPS
  (2017). https://arxiv.org/abs/1705.07874
  Sundararajan, Najmi, "The many Shapley values for model explanation", ICML (2020).
  https://arxiv.org/abs/1908.08474
  Zhou, Booth, Ribeiro, Shah, "Do Feature Attribution Methods Correctly Attribute
  Features?", AAAI (2022). https://arxiv.org/abs/2104.14403
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxplain.data.dataset import Dataset, split_dataset

ADDITIVE_SIZE = 2000
ADDITIVE_THRESHOLD = 1.5

TEXT_SIZE = 2000
TEXT_LENGTH = 16
TEXT_VOCAB_SIZE = 64
TEXT_TRIGGERS = ((1, 2, 3, 4), (5, 6, 7, 8))
_FIRST_FILLER = 9


class Term(NamedTuple):
    """One term g_i of the additive model: its formula, the function and E[g_i(X_i)]."""

    formula: str
    function: Callable
    mean: float


def _module(value):
    # Tracers are `jax.Array`s too, so the true model also runs under `jax.jit` and `jax.grad`.
    return jnp if isinstance(value, jax.Array) else np


# Means are exact for X ~ N(0, 1): odd terms average to 0, E[X^2] = 1, and
# E[2 * 1{X > 0.5}] = 2 P(X > 0.5) = erfc(0.5 / sqrt(2)).
ADDITIVE_TERMS = (
    Term("2 x", lambda v: 2.0 * v, 0.0),
    Term("-x", lambda v: -v, 0.0),
    Term("x^2", lambda v: v * v, 1.0),
    Term("1.5 sin(2 x)", lambda v: 1.5 * _module(v).sin(2.0 * v), 0.0),
    Term("2 [x > 0.5]", lambda v: 2.0 * (v > 0.5), math.erfc(0.5 / math.sqrt(2.0))),
    Term("0", lambda v: 0.0 * v, 0.0),
    Term("0", lambda v: 0.0 * v, 0.0),
    Term("0", lambda v: 0.0 * v, 0.0),
)
ZERO_EFFECT = (5, 6, 7)


def additive_terms(x):
    """The terms g_i(x_i) of the true additive model, one per feature.

    Args:
      x: inputs `(..., 8)`: a JAX array, or anything NumPy makes an array of.

    Returns:
      `(..., 8)`, entry i holding g_i(x_i); a JAX array for JAX input, else NumPy.
    """
    x = x if isinstance(x, jax.Array) else np.asarray(x)
    _check_features("x", x)
    columns = [term.function(x[..., i]) for i, term in enumerate(ADDITIVE_TERMS)]
    return _module(x).stack(columns, axis=-1)


def additive_logit(x):
    """The true model of `synthetic_additive`: f(x) = sum_i g_i(x_i).

    With the terms in `ADDITIVE_TERMS` (features 5, 6 and 7 have no effect):

        f(x) = 2 x_0 - x_1 + x_2^2 + 1.5 sin(2 x_3) + 2 [x_4 > 0.5].

    The label is 1 when f(x) + e > 1.5 for logistic noise e ~ Logistic(0, 1), so
    P(y = 1 | x) = sigmoid(f(x) - 1.5): f(x) - 1.5 is the exact log-odds.

    It accepts JAX arrays and traces under `jax.jit`, so it can be wrapped as a model
    and explained. Its term in x_4 is a step, flat almost everywhere: gradient-based
    methods see nothing of feature 4, though its Shapley value is +-2 whenever x and
    the baseline lie on opposite sides of 0.5.

    Args:
      x: inputs `(..., 8)`.

    Returns:
      f(x), `(...)`.

    Example:
      >>> import numpy as np
      >>> from jaxplain.data import additive_logit
      >>> float(additive_logit(np.array([1.0, 1.0, 0.5, 0.0, 1.0, 3.0, 3.0, 3.0])))
      3.25
    """
    return additive_terms(x).sum(axis=-1)


def additive_shapley(x, baseline=None):
    """Exact Shapley values of the true model `additive_logit`.

    For an additive model every feature's marginal contribution is the same in every
    coalition, so the Shapley value is that contribution. Against one baseline b
    (baseline Shapley, Sundararajan & Najmi 2020):

        phi_i = g_i(x_i) - g_i(b_i),   sum_i phi_i = f(x) - f(b).

    With `baseline=None`, against the data distribution X ~ N(0, I) (interventional
    Shapley, the value SHAP estimates with background data):

        phi_i = g_i(x_i) - E[g_i(X_i)],   sum_i phi_i = f(x) - E[f(X)],

    where each E[g_i(X_i)] is exact, in closed form (see `ADDITIVE_TERMS`), not
    sampled. Features 5, 6 and 7 get exactly 0.

    Args:
      x: inputs `(..., 8)`.
      baseline: None, or baselines `(..., 8)` broadcastable against `x`.

    Returns:
      phi, `x` and `baseline` broadcast together: `(..., 8)`.

    Example:
      >>> import numpy as np
      >>> from jaxplain.data import additive_shapley
      >>> x = np.array([1.0, 1.0, 0.5, 0.0, 1.0, 3.0, 3.0, 3.0])
      >>> additive_shapley(x, np.zeros(8)).tolist()
      [2.0, -1.0, 0.25, 0.0, 2.0, 0.0, 0.0, 0.0]
      >>> additive_shapley(x).round(3).tolist()  # against X ~ N(0, I)
      [2.0, -1.0, -0.75, 0.0, 1.383, 0.0, 0.0, 0.0]
    """
    if baseline is None:
        reference = np.array([term.mean for term in ADDITIVE_TERMS])
    else:
        _check_features("baseline", baseline)
        try:
            np.broadcast_shapes(np.shape(x), np.shape(baseline))
        except ValueError:
            raise ValueError(
                f"baseline of shape {np.shape(baseline)} cannot be broadcast against x of shape {np.shape(x)}"
            ) from None
        reference = additive_terms(baseline)
    return additive_terms(x) - reference


def _check_features(name: str, value) -> None:
    shape = np.shape(value)
    if len(shape) < 1 or shape[-1] != len(ADDITIVE_TERMS):
        raise ValueError(
            f"{name} must have {len(ADDITIVE_TERMS)} features on its last axis, got shape {shape}"
        )


def synthetic_additive(*, rng: np.random.Generator, test_fraction: float) -> Dataset:
    """2,000 examples of 8 standard-normal features; the label's log-odds is additive.

    x ~ N(0, I_8), float32 `(n, 8)`; y = 1{f(x) + e > 1.5} with f = `additive_logit`
    and e ~ Logistic(0, 1), which gives roughly balanced classes (about 50% ones) and a
    Bayes accuracy of about 83%. `extras` holds the truth: "logit" (f), "shapley"
    (`additive_shapley`), "terms" (the g_i as `Term`s), "zero_effect" (features 5, 6
    and 7) and "threshold" (1.5).
    """
    x = rng.standard_normal((ADDITIVE_SIZE, len(ADDITIVE_TERMS))).astype(np.float32)
    noise = rng.logistic(size=ADDITIVE_SIZE)
    y = additive_logit(x) + noise > ADDITIVE_THRESHOLD
    return split_dataset(
        "synthetic_additive",
        x,
        y,
        rng=rng,
        test_fraction=test_fraction,
        num_classes=2,
        feature_names=tuple(f"x{i}" for i in range(len(ADDITIVE_TERMS))),
        extras={
            "logit": additive_logit,
            "shapley": additive_shapley,
            "terms": ADDITIVE_TERMS,
            "zero_effect": ZERO_EFFECT,
            "threshold": ADDITIVE_THRESHOLD,
        },
    )


def synthetic_text(*, rng: np.random.Generator, test_fraction: float) -> Dataset:
    """2,000 token sequences whose class is set by 1 or 2 planted trigger tokens.

    Each sequence has T = 16 int32 token ids from a vocabulary of V = 64. Id 0 is
    padding and never occurs. Class 0's triggers are ids 1-4 and class 1's are ids
    5-8; ids 9-63 are filler. Classes alternate before shuffling, so they are exactly
    balanced. Each sequence gets 1 or 2 (equally likely) trigger tokens of its class,
    drawn uniformly from that class's four, at distinct positions drawn uniformly;
    every other position holds a uniform filler id. So the triggers are the only
    evidence of the label.

    `extras`: "planted_train" and "planted_test", bool masks `(n, T)` of the planted
    positions; "triggers", int32 `(2, 4)`, the trigger ids of each class;
    "vocab_size" (64) and "max_length" (16).
    """
    labels = rng.permutation(np.arange(TEXT_SIZE) % 2)
    counts = rng.integers(1, 3, size=TEXT_SIZE)
    # A row's `count` smallest random keys pick distinct positions uniformly.
    ranks = rng.random((TEXT_SIZE, TEXT_LENGTH)).argsort(axis=1).argsort(axis=1)
    planted = ranks < counts[:, None]
    triggers = np.asarray(TEXT_TRIGGERS, np.int32)
    choice = rng.integers(0, triggers.shape[1], size=(TEXT_SIZE, TEXT_LENGTH))
    filler = rng.integers(_FIRST_FILLER, TEXT_VOCAB_SIZE, size=(TEXT_SIZE, TEXT_LENGTH))
    tokens = np.where(planted, triggers[labels[:, None], choice], filler).astype(np.int32)

    dataset = split_dataset(
        "synthetic_text",
        tokens,
        labels,
        rng=rng,
        test_fraction=test_fraction,
        num_classes=2,
        extras={"triggers": triggers, "vocab_size": TEXT_VOCAB_SIZE, "max_length": TEXT_LENGTH},
    )
    planted_by_split = {
        f"planted_{part}": planted[dataset.extras[f"{part}_indices"]] for part in ("train", "test")
    }
    return dataclasses.replace(dataset, extras={**dataset.extras, **planted_by_split})
