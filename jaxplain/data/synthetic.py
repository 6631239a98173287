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


OBJECT_SHAPES = ("square", "disc", "cross", "diamond")
OBJECT_COLOUR = (1.0, 0.2, 0.2)
DISTRACTOR_COLOURS = ((0.2, 0.2, 1.0), (0.2, 1.0, 0.2))
_OBJECT_BLOCK = 4096


def object_templates(size: int) -> np.ndarray:
    """The pixels of each shape of `OBJECT_SHAPES` in a `size` x `size` box, bool `(4, size, size)`."""
    centre = np.arange(size) - (size - 1) / 2
    rows, cols = centre[:, None], centre[None, :]
    half, arm = size / 2, max(size / 6, 0.5)
    square = np.ones((size, size), bool)
    disc = rows**2 + cols**2 <= half**2
    cross = (np.abs(rows) <= arm) | (np.abs(cols) <= arm)
    diamond = np.abs(rows) + np.abs(cols) <= half
    return np.stack([square, disc, cross, diamond])


def _draw_objects(rng, labels, image_size, object_size, distractors, noise, templates):
    count = labels.size
    room = image_size - object_size + 1
    corner = rng.integers(0, room, size=(count, 2))
    extra = rng.random(count) < 0.5 if distractors else np.zeros(count, bool)
    other = rng.integers(0, room, size=(count, 2))
    # Redraw both boxes where they touch (a 1-pixel gap), all at once: uniform over the
    # placements that keep them apart, and one exists whenever image_size >= 2 object_size + 1.
    while True:
        clash = extra & (np.abs(other - corner) <= object_size).all(axis=1)
        if not clash.any():
            break
        corner[clash] = rng.integers(0, room, size=(int(clash.sum()), 2))
        other[clash] = rng.integers(0, room, size=(int(clash.sum()), 2))
    other_shape = rng.integers(0, len(OBJECT_SHAPES), size=count)
    other_colour = rng.integers(0, len(DISTRACTOR_COLOURS), size=count)

    def pixels(shape, top_left):
        rows = np.arange(image_size)[None, :, None] - top_left[:, 0, None, None]
        cols = np.arange(image_size)[None, None, :] - top_left[:, 1, None, None]
        inside = (rows >= 0) & (rows < object_size) & (cols >= 0) & (cols < object_size)
        last = object_size - 1
        return inside & templates[shape[:, None, None], rows.clip(0, last), cols.clip(0, last)]

    mask = pixels(labels, corner)
    distractor = pixels(other_shape, other) & extra[:, None, None]
    colours = np.asarray(DISTRACTOR_COLOURS, np.float32)[other_colour][:, None, None, :]
    images = noise * rng.standard_normal((count, image_size, image_size, 3), dtype=np.float32)
    images += np.where(distractor[..., None], colours, np.float32(0))
    images += np.where(mask[..., None], np.asarray(OBJECT_COLOUR, np.float32), np.float32(0))
    return images, mask


def synthetic_objects(
    size: int,
    *,
    image_size: int = 32,
    object_size: int | None = None,
    distractors: bool = True,
    noise: float = 0.1,
    seed: int = 0,
    test_fraction: float = 0.2,
) -> Dataset:
    """Images with an object at a known position: ground truth for the localisation metrics.

    The 4 classes are exactly balanced (in turn, then shuffled). Each RGB image, float32 `(image_size, image_size, 3)`, holds one red object
    (colour `OBJECT_COLOUR`) whose shape is the label: 0 square, 1 disc, 2 cross,
    3 diamond (`OBJECT_SHAPES`, drawn in an `object_size` box, `object_templates`), at
    a uniformly random position. With `distractors`, half of the images (at random)
    also hold a second object of a random shape in blue or green, which says nothing
    about the label; the two positions are then uniform over the placements where the
    boxes neither overlap nor touch. Gaussian
    noise of standard deviation `noise` covers every pixel. So only the red object's
    pixels carry the label, and a faithful explanation should lie on them.

    `extras`: "masks_train" and "masks_test", bool `(n, image_size, image_size)`, the
    red object's pixels (the ground truth for `jaxplain.metrics.localisation`), and
    "class_names" (`OBJECT_SHAPES`). Everything is drawn, in vectorised blocks of 4,096
    images, from `numpy.random.default_rng(seed)`: same arguments, same data.

    Args:
      size: the number of images, train and test together (>= 8).
      image_size: height and width in pixels.
      object_size: the side of an object's box, >= 5 (default image_size // 4, at least 5).
      distractors: add a distractor to half the images.
      noise: the standard deviation of the pixel noise, >= 0.
      seed: the seed.
      test_fraction: the share of each class held out for the test split.

    Returns:
      A `jaxplain.data.Dataset` with 4 classes.

    Example:
      >>> data = synthetic_objects(64, image_size=16)
      >>> data.x_train.shape[1:], data.extras["masks_train"].shape[1:]
      ((16, 16, 3), (16, 16))
    """
    from jaxplain import _checks

    size = _checks.positive_int("size", size)
    if size < 8:
        raise ValueError(f"size must be >= 8 (two images of each of the 4 classes), got {size}")
    image_size = _checks.positive_int("image_size", image_size)
    object_size = (
        max(image_size // 4, 5) if object_size is None else _checks.positive_int("object_size", object_size)
    )
    distractors = _checks.flag("distractors", distractors)
    if object_size < 5 or object_size > image_size:
        # below 5 pixels the disc, the cross and the diamond cannot all be told apart
        raise ValueError(f"object_size must be in [5, image_size={image_size}], got {object_size}")
    if distractors and 2 * object_size + 1 > image_size:
        raise ValueError(
            f"image_size {image_size} is too small for an object and a distractor of size {object_size} "
            f"side by side: it must be >= {2 * object_size + 1} (or pass distractors=False)"
        )
    noise = _checks.number("noise", noise)
    rng = np.random.default_rng(_checks.seed(seed))
    test_fraction = _checks.number("test_fraction", test_fraction, low=0.0, above=True, high=1.0)

    templates = object_templates(object_size)
    images = np.empty((size, image_size, image_size, 3), np.float32)
    # Classes in turn, then shuffled: exactly balanced, so both splits hold every class.
    labels = rng.permutation(np.arange(size) % len(OBJECT_SHAPES)).astype(np.int32)
    masks = np.empty((size, image_size, image_size), bool)
    for start in range(0, size, _OBJECT_BLOCK):
        block = slice(start, min(start + _OBJECT_BLOCK, size))
        images[block], masks[block] = _draw_objects(
            rng, labels[block], image_size, object_size, distractors, np.float32(noise), templates
        )
    dataset = split_dataset(
        "synthetic_objects",
        images,
        labels,
        rng=rng,
        test_fraction=test_fraction,
        num_classes=len(OBJECT_SHAPES),
        extras={"class_names": OBJECT_SHAPES},
    )
    masks_by_split = {f"masks_{part}": masks[dataset.extras[f"{part}_indices"]] for part in ("train", "test")}
    return dataclasses.replace(dataset, extras={**dataset.extras, **masks_by_split})
