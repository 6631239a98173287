"""Localisation: does an explanation lie on the object a ground-truth mask marks?

Every metric here judges a given attribution against a ground-truth mask and needs no
model: `metric(attribution, mask, ...)`, batched over examples and compiled as one
program (sorting, not per-example loops). `focus` takes the quadrants of a mosaic
(`mosaics` builds them) in place of a mask.

The mask is bool (or 0/1) and shaped like the attribution, `(batch, *features)`, or, for
NHWC images `(batch, H, W, C)`, one per pixel, `(batch, H, W)` (or `(batch, H, W, 1)`):
then the attribution is first summed over its channels, as Quantus's explanation
functions reduce it (`reduce_axes` over the channel axis), and every metric is computed
per pixel. `abs=True` takes the magnitude after that sum. Quantus also divides each
attribution by its largest magnitude first (`normalise=True`); all scores here are
invariant to that scaling, so jaxplain does not.

A mask with no feature in it has no object to find: it is refused (a ValueError naming
the examples), where Quantus returns NaN.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxplain import _checks, engine
from jaxplain.attribution import Attribution
from jaxplain.metrics import _common

# --- checks at the public boundary -----------------------------------------------------


def _attribution(attribution, name: str = "attribution"):
    values = attribution.values if isinstance(attribution, Attribution) else attribution
    values = _checks.as_float_array(name, values)
    if values.ndim < 2 or values.shape[0] < 1:
        raise ValueError(
            f"{name} must be a batch of attributions (batch, *features) with at least one feature "
            f"axis, got shape {tuple(values.shape)}"
        )
    return values


def _bool_array(name: str, value):
    if not isinstance(value, (jax.Array, np.ndarray)) and not _checks.is_traced(value):
        try:
            value = np.asarray(value)
        except Exception as error:
            raise TypeError(f"{name} must be a bool or 0/1 array, got {type(value).__name__}") from error
    dtype = value.dtype
    boolean = dtype == np.bool_
    if not (boolean or jnp.issubdtype(dtype, jnp.integer) or jnp.issubdtype(dtype, jnp.floating)):
        raise TypeError(f"{name} must be a bool or 0/1 array, got dtype {dtype}")
    if not boolean and not _checks.is_traced(value):
        ones = np.asarray(value)
        if not np.isin(ones, (0, 1)).all():
            raise ValueError(f"{name} must hold only 0 and 1 (or True and False)")
    return value if boolean else value.astype(bool)


def _prepare(attribution, mask, *, abs_, full: bool = False):
    """`(values, mask, per_pixel)`: checked arrays; `per_pixel` when the channels of NHWC
    attributions are summed to meet a `(batch, H, W)` mask. `full` also refuses masks
    that hold every feature (nothing outside to compare against)."""
    values = _attribution(attribution)
    _checks.flag("abs", abs_)
    mask = _bool_array("mask", mask)
    shape, given = tuple(values.shape), tuple(mask.shape)
    per_pixel = False
    if given != shape:
        if values.ndim == 4 and given in (shape[:3], shape[:3] + (1,)):
            per_pixel = True
            mask = mask.reshape(shape[:3])
        else:
            pixel = f" or, per pixel, {shape[:3]}" if values.ndim == 4 else ""
            raise ValueError(f"mask must be shaped like the attribution, {shape}{pixel}; got {given}")
    if not _checks.is_traced(mask):
        sizes = np.asarray(mask).reshape(shape[0], -1).sum(axis=1)
        empty = np.flatnonzero(sizes == 0)
        if empty.size:
            raise ValueError(
                f"mask is empty (no feature marked) for the examples {_listed(empty)}: there is no "
                "object to localise; drop those examples"
            )
        if full:
            whole = np.flatnonzero(sizes == np.asarray(mask)[0].size)
            if whole.size:
                raise ValueError(
                    f"mask marks every feature for the examples {_listed(whole)}: the ROC curve needs "
                    "features outside the mask too; drop those examples"
                )
    return values, mask, per_pixel


def _listed(indices) -> str:
    return ", ".join(map(str, indices[:8])) + (", ..." if indices.size > 8 else "")


# --- inside the compiled programs -------------------------------------------------------


def _flat(values, mask, per_pixel: bool, abs_: bool):
    """(B, N) values in the accumulation dtype and (B, N) bool mask."""
    if per_pixel:
        values = values.sum(axis=-1)
    values = values.reshape(values.shape[0], -1).astype(engine.accumulation_dtype(values))
    return (jnp.abs(values) if abs_ else values), mask.reshape(mask.shape[0], -1)


def _ratio(inside, total):
    """inside / total, 0 where total is 0."""
    safe = jnp.where(total == 0, 1, total)
    return jnp.where(total == 0, 0, inside / safe)


def _expected_top_hits(values, mask, k):
    """E[|top-k(values) ∩ mask|] per example, (B,), for k (B,) ints, with ties at the k-th
    largest value broken uniformly at random (in expectation: exact, not sampled)."""
    ordered = -jnp.sort(-values, axis=-1)
    threshold = jnp.take_along_axis(ordered, (k - 1)[:, None], axis=-1)
    above = values > threshold
    tied = values == threshold
    above_in = (above & mask).sum(-1)
    tied_in = (tied & mask).sum(-1)
    # at least one value ties with the threshold (the threshold itself)
    return above_in + (k - above.sum(-1)) * tied_in / tied.sum(-1)


def _dilate(mask, radius: int):
    """(B, H, W) bool: pixels within Euclidean distance `radius` of the mask."""
    offsets = np.arange(-radius, radius + 1)
    disc = (offsets[:, None] ** 2 + offsets[None, :] ** 2 <= radius**2).astype(np.float32)
    spread = jax.lax.conv_general_dilated(
        mask[..., None].astype(jnp.float32),
        jnp.asarray(disc)[:, :, None, None],
        window_strides=(1, 1),
        padding="SAME",
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
    )
    return spread[..., 0] > 0.5


@engine.program(static_argnames=("per_pixel", "abs_", "tolerance", "weighted"))
def _pointing_game(values, mask, *, per_pixel, abs_, tolerance, weighted):
    if per_pixel:
        values = values.sum(axis=-1)
    if abs_:
        values = jnp.abs(values)
    target = _dilate(mask, tolerance) if tolerance else mask
    flat, target = values.reshape(values.shape[0], -1), target.reshape(mask.shape[0], -1)
    maxima = flat == flat.max(axis=-1, keepdims=True)
    dtype = engine.accumulation_dtype(flat)
    hit = (maxima & target).sum(-1).astype(dtype) / maxima.sum(-1)
    if weighted:
        inside = mask.reshape(mask.shape[0], -1)
        hit = hit * (1 - inside.sum(-1) / inside.shape[-1])
    return hit


def pointing_game(attribution, mask, *, tolerance: int = 0, weighted: bool = False, abs: bool = False):
    """Pointing game: does the attribution's maximum lie on the object?

        PG(a, S) = 1[argmax_i a_i in S]

    with S the ground-truth mask. Zhang et al. count a hit when the maximum lies
    within `tolerance` pixels of the object (they use 15 pixels on ImageNet-sized
    images): with `tolerance=r > 0` the mask is first widened by a disc of radius r
    (Euclidean, over the H and W axes). Several features tied at the maximum count as
    a uniformly random choice among them, in expectation: the score is the fraction
    of the tied maxima that hit (so an all-zero attribution scores the fraction of
    features in the mask, chance level; Quantus counts a hit if any tied maximum does,
    so it scores 1). `weighted` multiplies by 1 - |S| / N, rewarding hits on small
    objects (Quantus's option).

    Args:
      attribution: an `Attribution` or an array `(batch, *features)`.
      mask: bool or 0/1 ground truth shaped like the attribution, or `(batch, H, W)`
        for NHWC attributions (then summed over channels). Every example must mark
        at least one feature.
      tolerance: r >= 0, in pixels; r > 0 needs per-pixel data: `(batch, H, W)`
        attributions, or NHWC ones with a `(batch, H, W)` mask.
      weighted: multiply by 1 - |S| / N.
      abs: take the attribution's magnitude first (after the channel sum).

    Returns:
      `(batch,)` scores in [0, 1] (higher is better): 1 for a hit.

    Example:
      >>> import numpy as np
      >>> mask = np.array([[True, True, False, False]])
      >>> pointing_game(np.array([[0.1, 0.9, 0.3, 0.2]]), mask).tolist()
      [1.0]
      >>> pointing_game(np.zeros((1, 4)), mask).tolist()  # ties: the share of maxima that hit
      [0.5]

    References:
      Zhang, Bargal, Lin, Brandt, Shen, Sclaroff. Top-Down Neural Attention by
      Excitation Backprop. International Journal of Computer Vision 126, 2018,
      arXiv:1608.00507.
    """
    values, mask, per_pixel = _prepare(attribution, mask, abs_=abs)
    tolerance = _checks.number("tolerance", tolerance)
    if tolerance != int(tolerance):
        raise TypeError(f"tolerance must be a whole number of pixels, got {tolerance}")
    tolerance = int(tolerance)
    weighted = _checks.flag("weighted", weighted)
    if tolerance and (values.ndim - per_pixel) != 3:
        raise ValueError(
            "tolerance > 0 needs per-pixel attributions: (batch, H, W), or NHWC attributions with "
            f"a (batch, H, W) mask; got attribution {tuple(values.shape)} and mask {tuple(mask.shape)}"
        )
    return _pointing_game(values, mask, per_pixel=per_pixel, abs_=abs, tolerance=tolerance, weighted=weighted)


@engine.program(static_argnames=("per_pixel", "abs_", "weighted"))
def _attribution_localisation(values, mask, *, per_pixel, abs_, weighted):
    flat, inside = _flat(values, mask, per_pixel, abs_)
    positive = jnp.maximum(flat, 0)
    mu = _ratio((positive * inside).sum(-1), positive.sum(-1))
    if weighted:
        mu = mu * inside.shape[-1] / inside.sum(-1)
    return mu


def attribution_localisation(attribution, mask, *, weighted: bool = False, abs: bool = False):
    """Attribution localisation: the share of positive relevance that falls on the object.

        mu = sum_{i in S} max(a_i, 0) / sum_i max(a_i, 0),
        mu_w = mu * N / |S|   (weighted),

    with S the ground-truth mask and N the number of features, as Kohlbrenner et al.
    define it (positive relevance only; the weighted form scores 1 for a uniform
    attribution, and > 1 for one that concentrates on the object). An attribution
    with no positive relevance scores 0.

    Quantus 0.6.0 differs: by default it takes |a| (abs=True) instead of the positive
    part, and its weighted form multiplies by |S| / N, the inverse of the paper's factor.

    Args:
      attribution: an `Attribution` or an array `(batch, *features)`.
      mask: bool or 0/1 ground truth shaped like the attribution, or `(batch, H, W)`
        for NHWC attributions (then summed over channels).
      weighted: return mu_w.
      abs: take the magnitude first (so all relevance counts).

    Returns:
      `(batch,)` scores in [0, 1] ([0, N/|S|] weighted) (higher is better).

    References:
      Kohlbrenner, Bauer, Nakajima, Binder, Samek, Lapuschkin. Towards Best Practice in
      Explaining Neural Network Decisions with LRP. IJCNN 2020, arXiv:1910.09840.
    """
    values, mask, per_pixel = _prepare(attribution, mask, abs_=abs)
    weighted = _checks.flag("weighted", weighted)
    return _attribution_localisation(values, mask, per_pixel=per_pixel, abs_=abs, weighted=weighted)


@engine.program(static_argnames=("per_pixel", "abs_", "k", "concept_influence"))
def _top_k_intersection(values, mask, *, per_pixel, abs_, k, concept_influence):
    flat, inside = _flat(values, mask, per_pixel, abs_)
    hits = _expected_top_hits(flat, inside, jnp.full(flat.shape[0], k)) / k
    if concept_influence:
        hits = hits * inside.shape[-1] / inside.sum(-1)
    return hits


def top_k_intersection(
    attribution, mask, *, k: int = 1000, concept_influence: bool = False, abs: bool = False
):
    """Top-k intersection: the share of the k highest-attributed features on the object.

        TKI = |top_k(a) ∩ S| / k,

    with S the ground-truth mask; values tied at the k-th largest are shared out in
    expectation (a uniformly random tie-break, computed exactly), where Quantus keeps
    the order of `np.argsort`. `concept_influence` multiplies by N / |S|, the ratio to
    a random attribution's expected score (Quantus's option).

    Args:
      attribution: an `Attribution` or an array `(batch, *features)`.
      mask: bool or 0/1 ground truth shaped like the attribution, or `(batch, H, W)`
        for NHWC attributions (then summed over channels).
      k: how many features, 1 <= k <= N (per pixel: pixels). Quantus: 1000.
      concept_influence: multiply by N / |S|.
      abs: take the magnitude first.

    Returns:
      `(batch,)` scores in [0, 1] (higher is better).

    References:
      Theiner, Müller-Budack, Ewerth. Interpretable Semantic Photo Geolocation. WACV
      2022, arXiv:2104.14995.
    """
    values, mask, per_pixel = _prepare(attribution, mask, abs_=abs)
    features = int(np.prod(values.shape[1:3] if per_pixel else values.shape[1:]))
    k = _checks.count(
        "k", k, high=features, what="the number of features" + (" (pixels)" if per_pixel else "")
    )
    concept_influence = _checks.flag("concept_influence", concept_influence)
    return _top_k_intersection(
        values, mask, per_pixel=per_pixel, abs_=abs, k=k, concept_influence=concept_influence
    )


@engine.program(static_argnames=("per_pixel", "abs_"))
def _relevance_mass_accuracy(values, mask, *, per_pixel, abs_):
    flat, inside = _flat(values, mask, per_pixel, abs_)
    return _ratio((flat * inside).sum(-1), flat.sum(-1))


def relevance_mass_accuracy(attribution, mask, *, abs: bool = False):
    """Relevance mass accuracy: the share of the total relevance that lies on the object.

        RMA = R_within / R_total = sum_{i in S} a_i / sum_i a_i,

    with S the ground-truth mask. As in Quantus the sums are signed; with mixed signs
    the ratio can leave [0, 1] (pass `abs=True`, or a positive attribution, to keep
    it there). An attribution whose total is 0 scores 0.

    Args:
      attribution: an `Attribution` or an array `(batch, *features)`.
      mask: bool or 0/1 ground truth shaped like the attribution, or `(batch, H, W)`
        for NHWC attributions (then summed over channels).
      abs: take the magnitude first.

    Returns:
      `(batch,)` scores, in [0, 1] for non-negative attributions (higher is better).

    References:
      Arras, Osman, Samek. CLEVR-XAI: A benchmark dataset for the ground truth
      evaluation of neural network explanations. Information Fusion 81, 2022,
      arXiv:2003.07258.
    """
    values, mask, per_pixel = _prepare(attribution, mask, abs_=abs)
    return _relevance_mass_accuracy(values, mask, per_pixel=per_pixel, abs_=abs)


@engine.program(static_argnames=("per_pixel", "abs_"))
def _relevance_rank_accuracy(values, mask, *, per_pixel, abs_):
    flat, inside = _flat(values, mask, per_pixel, abs_)
    size = inside.sum(-1)
    return _expected_top_hits(flat, inside, size) / size


def relevance_rank_accuracy(attribution, mask, *, abs: bool = False):
    """Relevance rank accuracy: the share of the object among the |S| top-ranked features.

        RRA = |top_K(a) ∩ S| / K,   K = |S|,

    with S the ground-truth mask; values tied at the K-th largest are shared out in
    expectation (a uniformly random tie-break, computed exactly), where Quantus keeps
    the order of `np.argsort`.

    Args:
      attribution: an `Attribution` or an array `(batch, *features)`.
      mask: bool or 0/1 ground truth shaped like the attribution, or `(batch, H, W)`
        for NHWC attributions (then summed over channels).
      abs: take the magnitude first.

    Returns:
      `(batch,)` scores in [0, 1] (higher is better; a random attribution expects |S| / N).

    References:
      Arras, Osman, Samek. CLEVR-XAI: A benchmark dataset for the ground truth
      evaluation of neural network explanations. Information Fusion 81, 2022,
      arXiv:2003.07258.
    """
    values, mask, per_pixel = _prepare(attribution, mask, abs_=abs)
    return _relevance_rank_accuracy(values, mask, per_pixel=per_pixel, abs_=abs)


@engine.program(static_argnames=("per_pixel", "abs_"))
def _auc(values, mask, *, per_pixel, abs_):
    flat, inside = _flat(values, mask, per_pixel, abs_)
    ranks = _common.average_ranks(flat)
    positives = inside.sum(-1).astype(ranks.dtype)
    negatives = inside.shape[-1] - positives
    above = (ranks * inside).sum(-1) - positives * (positives + 1) / 2
    return above / (positives * negatives)


def auc(attribution, mask, *, abs: bool = False):
    """ROC AUC of the attribution as a score for "this feature is on the object".

        AUC = P(a_i > a_j) + P(a_i = a_j) / 2,   i ~ S, j ~ not S,

    the area under the ROC curve of the mask against the attribution (Fawcett 2006),
    computed exactly from average ranks (the Mann-Whitney U statistic): ties count
    one half, as in scikit-learn's `roc_auc_score` and Quantus (which integrates
    sklearn's `roc_curve`). Every example's mask must mark some features and leave
    some out.

    Args:
      attribution: an `Attribution` or an array `(batch, *features)`.
      mask: bool or 0/1 ground truth shaped like the attribution, or `(batch, H, W)`
        for NHWC attributions (then summed over channels).
      abs: take the magnitude first.

    Returns:
      `(batch,)` scores in [0, 1] (higher is better; 0.5 is chance).

    Example:
      >>> import numpy as np
      >>> auc(np.array([[3.0, 1.0, 1.0, 0.0]]), np.array([[1, 1, 0, 0]])).tolist()
      [0.875]

    References:
      Fawcett. An introduction to ROC analysis. Pattern Recognition Letters 27(8),
      2006, doi:10.1016/j.patrec.2005.10.010.
    """
    values, mask, per_pixel = _prepare(attribution, mask, abs_=abs, full=True)
    return _auc(values, mask, per_pixel=per_pixel, abs_=abs)


# --- focus: mosaics of four images ------------------------------------------------------


class Mosaics(NamedTuple):
    """Mosaics of four images for `focus`.

    Attributes:
      images: `(count, 2H, 2W, ...)`: four images in a 2 x 2 grid.
      targets: `(count,)` int32: the class to explain, that of two of the four tiles.
      quadrants: `(count, 4)` bool: which tiles hold the target class, in the order
        top-left, top-right, bottom-left, bottom-right.
      sources: `(count, 4)` int32: the row of x that each tile came from, same order.
    """

    images: jax.Array
    targets: jax.Array
    quadrants: jax.Array
    sources: jax.Array


@engine.program(static_argnames=("count", "num_classes"))
def _mosaics(x, labels, key, *, count, num_classes):
    members = jax.nn.one_hot(labels, num_classes, dtype=jnp.float32)  # (B, C)
    sizes = members.sum(0)
    eligible = (sizes >= 2) & (labels.shape[0] - sizes >= 2)

    def one(index):
        keys = jax.random.split(jax.random.fold_in(key, index), 4)
        target = jax.random.choice(keys[0], num_classes, p=eligible / eligible.sum())
        same = labels == target
        rows = jnp.arange(labels.shape[0])
        ours = jax.random.choice(keys[1], rows, (2,), replace=False, p=same / same.sum())
        others = jax.random.choice(keys[2], rows, (2,), replace=False, p=~same / (~same).sum())
        order = jax.random.permutation(keys[3], 4)
        tiles = jnp.concatenate([ours, others])[order]
        image = x[tiles]
        image = jnp.concatenate(
            [jnp.concatenate([image[0], image[1]], axis=1), jnp.concatenate([image[2], image[3]], axis=1)],
            axis=0,
        )
        return image, target.astype(jnp.int32), order < 2, tiles.astype(jnp.int32)

    return jax.vmap(one)(jnp.arange(count, dtype=jnp.int32))


def mosaics(x, labels, *, key, count: int | None = None) -> Mosaics:
    """Builds mosaics of four images, two of a target class and two of other classes.

    Mosaic i (drawn from `fold_in(key, i)`): a target class, uniformly among the
    classes with at least two examples in the batch and at least two examples of
    other classes; two distinct examples of it and two distinct examples of other
    classes, placed on a 2 x 2 grid in a uniformly random order (Arias-Duart et al.).
    Explain each mosaic for its `targets` and score it with `focus(attribution,
    quadrants)`.

    Args:
      x: images `(batch, H, W, ...)` (NHWC, or `(batch, H, W)`).
      labels: `(batch,)` ints, the class of each image.
      key: a `jax.random.key`; same key, same mosaics.
      count: how many mosaics (default: batch).

    Returns:
      A `Mosaics` (images, targets, quadrants, sources).

    References:
      Arias-Duart, Parés, Garcia-Gasulla, Giménez-Ábalos. Focus! Rating XAI Methods
      and Finding Biases. FUZZ-IEEE 2022, arXiv:2109.15035.
    """
    x = _checks.as_float_array("x", x)
    if x.ndim < 3:
        raise ValueError(f"x must be a batch of images (batch, H, W, ...), got shape {tuple(x.shape)}")
    if _checks.is_traced(labels):
        raise TypeError("labels must be a concrete array: the classes present fix the draws")
    labels = np.asarray(labels)
    if labels.shape != (x.shape[0],) or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(
            f"labels must be ints, one per image, shape ({x.shape[0]},), got {labels.dtype}{labels.shape}"
        )
    if labels.min() < 0:
        raise ValueError(f"labels must be >= 0, got {labels.min()}")
    key = _checks.key(key)
    count = x.shape[0] if count is None else _checks.positive_int("count", count)
    num_classes = int(labels.max()) + 1
    sizes = np.bincount(labels, minlength=num_classes)
    if not ((sizes >= 2) & (labels.size - sizes >= 2)).any():
        raise ValueError(
            "labels must have a class with at least two images and at least two images of other "
            f"classes to build a mosaic; got class sizes {sizes.tolist()}"
        )
    return Mosaics(*_mosaics(x, jnp.asarray(labels, jnp.int32), key, count=count, num_classes=num_classes))


@engine.program(static_argnames=("per_pixel", "abs_"))
def _focus(values, quadrants, *, per_pixel, abs_):
    if per_pixel:
        values = values.sum(axis=-1)
    values = values.astype(engine.accumulation_dtype(values))
    if abs_:
        values = jnp.abs(values)
    positive = jnp.maximum(values, 0)
    batch, height, width = positive.shape[:3]
    tiles = positive.reshape(batch, 2, height // 2, 2, width // 2, -1).sum(axis=(2, 4, 5)).reshape(batch, 4)
    return _ratio((tiles * quadrants).sum(-1), tiles.sum(-1))


def focus(attribution, quadrants, *, abs: bool = False):
    """Focus: the share of positive relevance on the mosaic's tiles of the target class.

        Focus = sum_{i in T} max(a_i, 0) / sum_i max(a_i, 0),

    with T the pixels of the tiles (quadrants) whose image is of the explained class,
    for a mosaic of four images (`mosaics`). NHWC attributions are summed over their
    channels first (Quantus's explanation functions do), then clipped at 0. An
    attribution with no positive relevance scores 0.

    Args:
      attribution: an `Attribution` or an array of mosaic attributions,
        `(batch, 2H, 2W)` or NHWC `(batch, 2H, 2W, C)`; height and width even.
      quadrants: `(batch, 4)` bool or 0/1: which tiles hold the target class, in the
        order top-left, top-right, bottom-left, bottom-right (`Mosaics.quadrants`).
      abs: take the magnitude first (after the channel sum).

    Returns:
      `(batch,)` scores in [0, 1] (higher is better; a uniform attribution scores the
      share of target tiles, 0.5 for `mosaics`).

    References:
      Arias-Duart, Parés, Garcia-Gasulla, Giménez-Ábalos. Focus! Rating XAI Methods
      and Finding Biases. FUZZ-IEEE 2022, arXiv:2109.15035.
    """
    values = _attribution(attribution)
    _checks.flag("abs", abs)
    if values.ndim not in (3, 4) or values.shape[1] % 2 or values.shape[2] % 2:
        raise ValueError(
            "attribution must be mosaics (batch, 2H, 2W) or (batch, 2H, 2W, C) with even height and "
            f"width, got shape {tuple(values.shape)}"
        )
    quadrants = _bool_array("quadrants", quadrants)
    if tuple(quadrants.shape) != (values.shape[0], 4):
        raise ValueError(f"quadrants must have shape ({values.shape[0]}, 4), got {tuple(quadrants.shape)}")
    return _focus(values, quadrants, per_pixel=values.ndim == 4, abs_=abs)
