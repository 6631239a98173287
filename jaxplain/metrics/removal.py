"""Faithfulness by removal: what happens to the output as ranked features are removed?

Every metric here ranks the feature groups of each example by their attribution and
changes the input group by group (or one group at a time), all points of an example's
curve going through `engine.path_outputs` or `engine.fold_outputs`, chunked, in one
compiled program; the answer does not depend on `chunk_size`.

* `monotonicity` (Arya et al. 2019) and `monotonicity_correlation` (Nguyen and Martinez
  2020): does the output respond more to features with larger attributions?
* `faithfulness_estimate` (Alvarez-Melis and Jaakkola 2018): the correlation between a
  group's attribution and the output drop when that group alone is removed.
* `irof` (Rieger and Hansen 2020), `selectivity` (Montavon et al. 2018) and
  `region_perturbation` (Samek et al. 2017): curves over superpixels or patches
  removed in the attribution's order.
* `sufficiency` (Dasgupta et al. 2022): do examples with similar explanations get the
  same prediction? A property of the batch, not of each example alone.

Ranks are taken over the sum (`irof`: the mean) of the attribution over each group,
highest first, ties to the lower group id, as in `jaxplain.metrics.curves`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxplain import _checks, engine
from jaxplain.methods.perturbation import patch_mask
from jaxplain.metrics import _common, curves
from jaxplain.metrics._common import Curve
from jaxplain.model import Model, Targets

FILLS = ("zeros", "mean", "uniform")


# --- checks at the public boundary -----------------------------------------------------


def _fill_kind(baseline, x, key, *, kinds=FILLS):
    """`(kind, baseline, key)`: a named fill ("zeros", "mean", "uniform") or an array
    broadcastable to x; "uniform" needs a key, the others take key=None."""
    if isinstance(baseline, str):
        kind, baseline = _checks.choice("baseline", baseline, kinds), 0.0
    else:
        kind, baseline = "given", _checks.baseline(baseline, x)
    if kind == "uniform":
        key = _checks.key(key)
    elif key is not None:
        raise TypeError(
            f"pass key=None with baseline={'an array' if kind == 'given' else repr(kind)}: nothing is drawn"
        )
    return kind, baseline, key


def _patches(patch_size, x):
    """A feature mask of patches: an int p makes p x p boxes of all channels on images
    (batch, H, W, C), p x C boxes on (batch, length, C) and runs of p on (batch, features);
    a tuple gives one size per non-batch axis. Boxes at the far borders are smaller."""
    if x.ndim < 2:
        raise ValueError(f"x must have a non-batch axis to cut into patches, got shape {tuple(x.shape)}")
    if isinstance(patch_size, (int, np.integer)) and not isinstance(patch_size, bool):
        size = _checks.positive_int("patch_size", patch_size)
        patch = (size,) if x.ndim == 2 else (size,) * (x.ndim - 2) + (x.shape[-1],)
    else:
        patch = _checks.axis_sizes("patch_size", patch_size, x)
    patch = tuple(min(p, n) for p, n in zip(patch, x.shape[1:]))
    mask = patch_mask(tuple(x.shape[1:]), patch)
    return mask, int(mask.max()) + 1


def _segments(value, x):
    """`(masks (B, *features) int32, G)`: per-example segment ids, example b's 0..G_b-1
    (`_checks.feature_masks`, its errors naming `segments`)."""
    try:
        return _checks.feature_masks(value, x)
    except (TypeError, ValueError) as error:
        raise type(error)(str(error).replace("feature_mask", "segments")) from None


def _regions(name, value, groups):
    return _checks.count(name, value, high=groups, what="the number of feature groups")


# --- inside the compiled programs -------------------------------------------------------


def _fill(x, baseline, kind: str, key):
    """The replacement values as an array like x; "uniform" draws U[min x, max x] per example."""
    if kind != "uniform":
        return curves._fill(x, baseline, kind, 1.0)
    axes = tuple(range(1, x.ndim))
    low, high = x.min(axis=axes, keepdims=True), x.max(axis=axes, keepdims=True)
    return low + (high - low) * jax.random.uniform(key, x.shape, x.dtype)


def _feature_ranks(values, masks, groups: int, by_mean: bool):
    """`(ranks (B, *features), sizes (B, G))`: the rank of each feature's group (0 first)
    by the sum (or mean) of `values` over the group; empty groups rank last."""
    batch = values.shape[0]
    acc = engine.accumulation_dtype(values)
    ids = jnp.asarray(masks).reshape(batch, -1)
    rows = jnp.arange(batch)[:, None]
    sums = jnp.zeros((batch, groups), acc).at[rows, ids].add(values.reshape(batch, -1).astype(acc))
    sizes = jnp.zeros((batch, groups), acc).at[rows, ids].add(1.0)
    scores = sums / jnp.maximum(sizes, 1.0) if by_mean else sums
    ranks = _common.ranks(jnp.where(sizes > 0, scores, -jnp.inf))
    return jnp.take_along_axis(ranks, ids, axis=1).reshape(values.shape), sizes


@engine.program(static_argnames=("kind", "counts", "groups", "by_mean", "insert", "chunk_size"))
def _removal_scores(
    model,
    x,
    values,
    baseline,
    masks,
    targets: Targets,
    key,
    *,
    kind,
    counts,
    groups,
    by_mean,
    insert,
    chunk_size,
):
    """F_t after moving the top counts[k] groups of each example, (B, K), and the number of
    non-empty groups per example, (B,). Moving is replacing by the fill (`insert`: revealing
    x on the fill)."""
    chosen, _, tied_x = _common.clean_outputs(model, x, targets)
    fill = _fill(x, baseline, kind, key)
    ranks, sizes = _feature_ranks(values, jnp.broadcast_to(masks, x.shape), groups, by_mean)
    counts = jnp.asarray(counts)

    def point(k, x):
        changed = ranks < counts[k]
        return jnp.where(changed, x, fill) if insert else jnp.where(changed, fill, x)

    scores = _common.outputs_at(model, tied_x, chosen, point, jnp.arange(len(counts)), chunk_size)
    return scores, (sizes > 0).sum(axis=-1)


def _scores(model, x, values, baseline, mask, targets, key, kind, counts, groups, chunk_size, **flags):
    return _removal_scores(
        model,
        x,
        values,
        baseline,
        mask,
        targets,
        key,
        kind=kind,
        counts=tuple(int(c) for c in counts),
        groups=groups,
        chunk_size=chunk_size,
        **flags,
    )


# --- monotonicity ----------------------------------------------------------------------


def monotonicity(
    model: Model,
    x,
    attribution,
    *,
    target,
    baseline=0.0,
    feature_mask=None,
    per_pixel: bool = False,
    key=None,
    chunk_size=None,
) -> jax.Array:
    """Monotonicity: does adding features in increasing order of attribution only raise the output?

    Starting from the baseline, the feature groups of x are revealed one at a time in
    increasing order of their attribution (the lowest first; ties to the lower group
    id), and with x^(k) the baseline with the k lowest-ranked groups taken from x,

        monotonic = F_t(x^(1)) <= F_t(x^(2)) <= ... <= F_t(x^(G))

    (AIX360's `monotonicity_metric`: the score after each added group, the baseline
    itself not included). For an additive model and exact contributions phi, this holds
    exactly when every contribution but the lowest is >= 0.

    Args:
      model: a `jaxplain.Model` (AIX360 uses the class probability:
        `model.with_output("probs")`).
      x: a batch of inputs, `(batch, ...)`.
      attribution: an `Attribution` or array shaped like x (one target per example).
      target: the class scored: an int, `(batch,)` ints or "predicted" (resolved at x).
      baseline: where the features start: a scalar, one example, one per example,
        "zeros", "mean" (each example's mean) or "uniform" (U[min x, max x] per
        example, drawn from `key`).
      feature_mask: int group ids broadcastable to one example; None makes every
        feature its own group.
      per_pixel: for images (batch, H, W, C): rank pixels by their attribution summed
        over the channels and reveal all channels of a pixel together.
      key: a `jax.random.key` for baseline="uniform"; None otherwise.
      chunk_size: points evaluated at once. The answer does not depend on it.

    Returns:
      `(batch,)` bool: True where the outputs never decrease (higher, True, is better).
      It costs G model evaluations per example: group features for large inputs.

    References:
      Arya, Bellamy, Chen, Dhurandhar, Hind, Hoffman, et al. One Explanation Does Not
      Fit All: A Toolkit and Taxonomy of AI Explainability Techniques.
      arXiv:1909.03012, 2019; Luss, Chen, Dhurandhar, Sattigeri, Zhang, Shanmugam, Tu.
      Generating Contrastive Explanations with Monotonic Attribute Functions.
      arXiv:1905.12698, 2019.
    """
    x, targets = _common.prepare(model, x, target)
    values = _common.attribution_values(attribution, x)
    kind, baseline, key = _fill_kind(baseline, x, key)
    mask, groups = _common.groups(feature_mask, x, per_pixel)
    chunk_size = _checks.chunk_size(chunk_size)
    scores, _ = _scores(
        model,
        x,
        -values,
        baseline,
        mask,
        targets,
        key,
        kind,
        range(1, groups + 1),
        groups,
        chunk_size,
        by_mean=False,
        insert=True,
    )
    return _monotone(scores)


@jax.jit
def _monotone(scores):
    return jnp.all(jnp.diff(scores, axis=1) >= 0, axis=1)


# --- monotonicity correlation ------------------------------------------------------------


@engine.program(static_argnames=("samples", "groups", "chunk_size"))
def _monotonicity_correlation(
    model, x, values, mask, targets: Targets, key, low, high, *, samples, groups, chunk_size
):
    batch = x.shape[0]
    acc = engine.accumulation_dtype(x)
    chosen, at_x, tied_x = _common.clean_outputs(model, x, targets)
    low = jnp.broadcast_to(low, x.shape).astype(x.dtype)
    high = jnp.broadcast_to(high, x.shape).astype(x.dtype)

    def draw(indices):  # point i: group i // samples, its features drawn from fold_in(key, i)
        return indices // samples, jax.vmap(lambda i: jax.random.fold_in(key, i))(indices)

    def point(params, x):
        group, k = params
        uniform = low + (high - low) * jax.random.uniform(k, x.shape, x.dtype)
        return jnp.where(jnp.asarray(mask) == group, uniform, x)

    def fold(state, params, outputs):  # the squared output changes, summed per group
        group = params[0]
        squares = (outputs[..., 0] - at_x[:, None]) ** 2
        return state.at[:, group].add(squares)

    total = engine.fold_outputs(
        model,
        tied_x,
        chosen,
        point,
        engine.Indexed(groups * samples, draw),
        fold,
        jnp.zeros((batch, groups), acc),
        chunk_size=chunk_size,
    )
    magnitude = _common.group_sums(jnp.abs(values).astype(acc), mask, groups)
    return _common.pearson(_common.average_ranks(magnitude), _common.average_ranks(total / samples))


def monotonicity_correlation(
    model: Model,
    x,
    attribution,
    *,
    target,
    key,
    samples: int = 100,
    low=0.0,
    high=1.0,
    feature_mask=None,
    per_pixel: bool = False,
    chunk_size=None,
) -> jax.Array:
    """Monotonicity correlation: do features with larger |attribution| move the output more?

    For each feature group i, the expected squared change of the output when the group
    is replaced by random values u ~ U[low, high] (every feature drawn independently),

        e_i = E_u[(F_t(x with group i set to u) - F_t(x))^2],

    estimated from `samples` draws, and the Spearman rank correlation over the groups

        rho_S(|phi|, e),   |phi|_i = sum_{j in group i} |phi_j|.

    For a linear model F = w . x with U[0, 1] replacements, e_i = w_i^2 ((x_i - 1/2)^2
    + 1/12), so any attribution that orders the groups as e does scores 1.

    Args:
      model: a `jaxplain.Model`.
      x: a batch of inputs, `(batch, ...)`.
      attribution: an `Attribution` or array shaped like x (one target per example).
      target: the class scored: an int, `(batch,)` ints or "predicted" (resolved at x).
      key: a `jax.random.key`: draw i (group i // samples) from fold_in(key, i); same
        key, same result.
      samples: draws per group (Quantus' `nr_samples`).
      low, high: the bounds of the uniform replacement values: scalars, one example or
        one per example (Quantus' U[0, 1]).
      feature_mask: int group ids broadcastable to one example; None makes every
        feature its own group.
      per_pixel: for images (batch, H, W, C): group the channels of each pixel.
      chunk_size: perturbed inputs evaluated at once. The answer does not depend on it.

    Returns:
      `(batch,)` correlations in [-1, 1] (higher is better); NaN where either side is
      constant over the groups. Costs G * samples model evaluations per example; memory
      does not grow with `samples`.

    References:
      Nguyen, Rodriguez Martinez. On Quantitative Aspects of Model Interpretability.
      arXiv:2007.07584, 2020.
    """
    x, targets = _common.prepare(model, x, target)
    values = _common.attribution_values(attribution, x)
    key = _checks.key(key)
    samples = _checks.positive_int("samples", samples)
    low = _checks.broadcastable("low", _checks.as_float_array("low", low), x)
    high = _checks.broadcastable("high", _checks.as_float_array("high", high), x)
    if (
        not _checks.is_traced(low)
        and not _checks.is_traced(high)
        and np.any(np.asarray(high) < np.asarray(low))
    ):
        raise ValueError("high must be >= low everywhere")
    mask, groups = _common.groups(feature_mask, x, per_pixel)
    if groups < 2:
        raise ValueError("monotonicity_correlation needs at least 2 feature groups to correlate over")
    chunk_size = _checks.chunk_size(chunk_size)
    return _monotonicity_correlation(
        model, x, values, mask, targets, key, low, high, samples=samples, groups=groups, chunk_size=chunk_size
    )


# --- faithfulness estimate ---------------------------------------------------------------


@engine.program(static_argnames=("kind", "groups", "chunk_size"))
def _faithfulness_estimate(model, x, values, baseline, mask, targets: Targets, *, kind, groups, chunk_size):
    acc = engine.accumulation_dtype(x)
    chosen, at_x, tied_x = _common.clean_outputs(model, x, targets)
    fill = _fill(x, baseline, kind, None)
    removed = lambda group, x: jnp.where(jnp.asarray(mask) == group, fill, x)
    outputs = _common.outputs_at(model, tied_x, chosen, removed, jnp.arange(groups), chunk_size)
    drops = at_x.astype(acc)[:, None] - outputs
    return _common.pearson(_common.group_sums(values.astype(acc), mask, groups), drops)


def faithfulness_estimate(
    model: Model,
    x,
    attribution,
    *,
    target,
    baseline=0.0,
    feature_mask=None,
    per_pixel: bool = False,
    chunk_size=None,
) -> jax.Array:
    """Faithfulness estimate: the correlation of each group's attribution with its removal's effect.

    Each feature group i is removed alone (set to the baseline), and over the groups

        rho(phi, delta),   phi_i = sum_{j in group i} phi_j,
                           delta_i = F_t(x) - F_t(x with group i at the baseline),

    Pearson's correlation. 1 for the exact contributions of a model additive in the
    groups (e.g. w * (x - baseline) for a linear model).

    Args:
      model: a `jaxplain.Model`.
      x: a batch of inputs, `(batch, ...)`.
      attribution: an `Attribution` or array shaped like x (one target per example).
      target: the class scored: an int, `(batch,)` ints or "predicted" (resolved at x).
      baseline: the value a removed group takes: a scalar, one example, one per
        example, "zeros" or "mean" (each example's mean).
      feature_mask: int group ids broadcastable to one example; None makes every
        feature its own group.
      per_pixel: for images (batch, H, W, C): group the channels of each pixel.
      chunk_size: points evaluated at once. The answer does not depend on it.

    Returns:
      `(batch,)` correlations in [-1, 1] (higher is better); NaN where either side is
      constant over the groups. Costs G model evaluations per example.

    References:
      Alvarez-Melis, Jaakkola. Towards Robust Interpretability with Self-Explaining
      Neural Networks. NeurIPS 2018, arXiv:1806.07538.
    """
    x, targets = _common.prepare(model, x, target)
    values = _common.attribution_values(attribution, x)
    kind, baseline, _ = _fill_kind(baseline, x, None, kinds=("zeros", "mean"))
    mask, groups = _common.groups(feature_mask, x, per_pixel)
    if groups < 2:
        raise ValueError("faithfulness_estimate needs at least 2 feature groups to correlate over")
    chunk_size = _checks.chunk_size(chunk_size)
    return _faithfulness_estimate(
        model, x, values, baseline, mask, targets, kind=kind, groups=groups, chunk_size=chunk_size
    )


# --- IROF --------------------------------------------------------------------------------


@jax.jit
def _area_over(scores, present):
    """1 - the trapezoid area of scores / scores[:, 0] (B, G + 1) over min(k, G_b) / G_b."""
    relative = scores / scores[:, :1]
    steps = jnp.arange(scores.shape[1])
    fractions = jnp.minimum(steps[None, :], present[:, None]) / present[:, None]
    widths = jnp.diff(fractions, axis=1)
    return 1.0 - ((relative[:, 1:] + relative[:, :-1]) * widths / 2).sum(axis=1)


def irof(
    model: Model,
    x,
    attribution,
    *,
    target,
    segments=None,
    baseline="mean",
    key=None,
    chunk_size=None,
) -> jax.Array:
    """IROF: iterative removal of features, the area over the relative output curve.

    The segments of each example (superpixels) are ranked by their mean attribution,
    highest first, and removed one after another (set to the baseline). With x^(k) the
    input with its k top segments removed and G_b the example's number of segments,

        IROF = 1 - integral_0^1 F_t(x^(k)) / F_t(x) d(k / G_b),

    the trapezoid area between 1 and the relative output curve over the share of
    segments removed, k = 0..G_b. Rieger and Hansen average it over a data set; this
    returns it per example. Use class probabilities (`model.with_output("probs")`) as
    the paper does: F_t(x) = 0 gives NaN.

    Args:
      model: a `jaxplain.Model`.
      x: a batch of inputs, `(batch, ...)`; images `(batch, H, W, C)` for the default
        segments.
      attribution: an `Attribution` or array shaped like x (one target per example).
      target: the class scored: an int, `(batch,)` ints or "predicted" (resolved at x).
      segments: per-example segment ids, `(batch, *x.shape[1:])` or `(batch, H, W)`
        for images, example b's numbered 0..G_b-1; None computes SLIC superpixels with
        `jaxplain.superpixels(x, "slic")`.
      baseline: what removed segments become: "mean" (each example's mean over all its
        features, Quantus' default), "zeros", "uniform" (U[min x, max x] per example,
        from `key`), or an array: a scalar, one example or one per example.
      key: a `jax.random.key` for baseline="uniform"; None otherwise.
      chunk_size: points evaluated at once. The answer does not depend on it.

    Returns:
      `(batch,)` areas over the curve (higher is better: removing the top segments
      first destroys the output fastest). Costs max_b G_b + 1 model evaluations per
      example.

    References:
      Rieger, Hansen. IROF: a low resource evaluation metric for explanation methods.
      ICLR 2020 Workshop AI for Affordable Healthcare, arXiv:2003.08747.
    """
    x, targets = _common.prepare(model, x, target)
    values = _common.attribution_values(attribution, x)
    kind, baseline, key = _fill_kind(baseline, x, key)
    if segments is None:
        if x.ndim != 4:
            raise ValueError(
                f"irof's default SLIC segments need images (batch, H, W, C), got x of shape "
                f"{tuple(x.shape)}; pass segments"
            )
        from jaxplain.superpixels import superpixels

        segments = superpixels(np.asarray(x), "slic")
    masks, groups = _segments(segments, x)
    chunk_size = _checks.chunk_size(chunk_size)
    scores, present = _scores(
        model,
        x,
        values,
        baseline,
        masks,
        targets,
        key,
        kind,
        range(groups + 1),
        groups,
        chunk_size,
        by_mean=True,
        insert=False,
    )
    return _area_over(scores, present)


# --- selectivity and region perturbation -------------------------------------------------


def selectivity(
    model: Model,
    x,
    attribution,
    *,
    target,
    patch_size=8,
    baseline="zeros",
    chunk_size=None,
) -> Curve:
    """Selectivity: the output as patches are removed one by one, the most relevant first.

    The input is cut into patches (`patch_size`), ranked by their summed attribution,
    and with x^(k) the input with its k top patches at the baseline,

        score_k = F_t(x^(k)),   k = 0..G,   AUC = integral over k / G (trapezoid).

    A steep fall (a small AUC) means the attribution found the evidence; this is
    `jaxplain.metrics.curves.deletion` over patches with one step per patch.

    Args:
      model: a `jaxplain.Model`.
      x: a batch of inputs: images `(batch, H, W, C)`, sequences `(batch, length, C)`
        or `(batch, features)`.
      attribution: an `Attribution` or array shaped like x (one target per example).
      target: the class scored: an int, `(batch,)` ints or "predicted" (resolved at x).
      patch_size: an int p (p x p boxes of all channels on images, p steps of all
        channels on sequences, p features on vectors; border boxes are smaller), or a
        tuple with one size per non-batch axis.
      baseline: "zeros", "mean", "blur" or an array, as `deletion`'s.
      chunk_size: points evaluated at once. The answer does not depend on it.

    Returns:
      A `Curve`: `fractions` (G + 1,), `scores` (batch, G + 1) and `auc` (batch,)
      (lower is better).

    References:
      Montavon, Samek, Mueller. Methods for Interpreting and Understanding Deep
      Neural Networks. Digital Signal Processing 73, 2018, arXiv:1706.07979.
    """
    x, _ = _checks.check_x(model, x)
    mask, groups = _patches(patch_size, x)
    return curves.deletion(
        model,
        x,
        attribution,
        target=target,
        baseline=baseline,
        steps=groups,
        feature_mask=mask,
        chunk_size=chunk_size,
    )


def region_perturbation(
    model: Model,
    x,
    attribution,
    *,
    target,
    key=None,
    patch_size=9,
    order: str = "most",
    regions=None,
    baseline="uniform",
    chunk_size=None,
) -> Curve:
    """Region perturbation: the output drop as ranked patches are perturbed, cumulatively.

    The input is cut into patches, ranked by their summed attribution (`order="most"`:
    MoRF, highest first; "least": LeRF, lowest first), and with x^(k) the input with
    its first k patches replaced (by uniform noise in Samek et al.),

        score_k = F_t(x) - F_t(x^(k)),   k = 0..L,

    and Samek et al.'s area over the perturbation curve is the mean of the scores,
    AOPC = `curve.scores.mean(axis=1)` (averaged over a data set in the paper). MoRF:
    higher is better; LeRF: lower is better.

    Args:
      model: a `jaxplain.Model`.
      x: a batch of inputs: images `(batch, H, W, C)`, sequences `(batch, length, C)`
        or `(batch, features)`.
      attribution: an `Attribution` or array shaped like x (one target per example).
      target: the class scored: an int, `(batch,)` ints or "predicted" (resolved at x).
      key: a `jax.random.key` for baseline="uniform": one draw of the batch's shape
        (an example's noise depends on its position in the batch), kept as further
        patches are perturbed; None otherwise.
      patch_size: an int p (p x p boxes of all channels on images, Samek et al.: 9),
        or a tuple with one size per non-batch axis, as `selectivity`'s.
      order: "most" (MoRF) or "least" (LeRF).
      regions: L, the patches perturbed, 1..G; by default min(G, 100).
      baseline: "uniform" (U[min x, max x] per example and feature), "zeros", "mean",
        or an array: a scalar, one example or one per example.
      chunk_size: points evaluated at once. The answer does not depend on it.

    Returns:
      A `Curve`: `fractions` k / G (L + 1,), `scores` the drops (batch, L + 1), from 0
      at k = 0, and `auc` their trapezoid area over the fractions.

    References:
      Samek, Binder, Montavon, Lapuschkin, Mueller. Evaluating the Visualization of
      What a Deep Neural Network Has Learned. IEEE TNNLS 28(11), 2017,
      arXiv:1509.06321.
    """
    x, targets = _common.prepare(model, x, target)
    values = _common.attribution_values(attribution, x)
    kind, baseline, key = _fill_kind(baseline, x, key)
    order = _checks.choice("order", order, curves.ORDERS)
    mask, groups = _patches(patch_size, x)
    regions = min(groups, 100) if regions is None else _regions("regions", regions, groups)
    chunk_size = _checks.chunk_size(chunk_size)
    scores, _ = _scores(
        model,
        x,
        values if order == "most" else -values,
        baseline,
        mask,
        targets,
        key,
        kind,
        range(regions + 1),
        groups,
        chunk_size,
        by_mean=False,
        insert=False,
    )
    return _drops(scores, groups)


@jax.jit
def _drops(scores, groups):
    drops = scores[:, :1] - scores
    fractions = jnp.arange(scores.shape[1], dtype=drops.dtype) / groups
    return Curve(fractions, drops, _common.trapezoid(drops, fractions))


# --- sufficiency -------------------------------------------------------------------------


@engine.program(static_argnames=("absolute", "standardize"))
def _sufficiency(model, x, values, targets: Targets, threshold, *, absolute, standardize):
    batch = x.shape[0]
    acc = engine.accumulation_dtype(values)
    chosen, _, _ = _common.clean_outputs(model, x, targets)
    labels = chosen[:, 0]
    flat = values.reshape(batch, -1).astype(acc)
    if absolute:
        flat = jnp.abs(flat)
    if standardize:  # scipy's seuclidean: each feature over its variance across the batch
        variance = flat.var(axis=0, ddof=1) if batch > 1 else jnp.zeros(flat.shape[1], acc)
        flat = jnp.where(variance > 0, flat / jnp.sqrt(jnp.where(variance > 0, variance, 1.0)), 0.0)
    gaps = flat[:, None, :] - flat[None, :, :]
    distances = jnp.sqrt((gaps * gaps).sum(axis=-1))
    farthest = distances.max()
    distances = distances / jnp.where(farthest > 0, farthest, 1.0)
    similar = (distances <= threshold) & ~jnp.eye(batch, dtype=bool)
    same = labels[:, None] == labels[None, :]
    count = similar.sum(axis=1)
    return jnp.where(count > 0, (similar & same).sum(axis=1) / jnp.maximum(count, 1), 0.0).astype(acc)


def sufficiency(
    model: Model,
    x,
    attribution,
    *,
    target="predicted",
    threshold: float = 0.6,
    absolute: bool = True,
    standardize: bool = True,
) -> jax.Array:
    """Sufficiency: do the other examples whose explanation is close get the same label?

    A property of the batch, not of each example alone: example b's score depends on
    the others. The distances d_bc between the attributions (|phi| with `absolute`)
    are taken (Euclidean, or standardized Euclidean with `standardize`: each feature
    divided by its standard deviation over the batch, features that do not vary left
    out) and divided by the largest over the batch, so that a common scale of the
    attributions changes nothing; then with C_b = {c != b : d_bc <= threshold},

        sufficiency_b = |{c in C_b : y_c = y_b}| / |C_b|   (0 where C_b is empty),

    the local sufficiency of b's explanation; Dasgupta et al.'s global sufficiency is
    its mean over the batch. Rerunning on another batch gives other values.

    Args:
      model: a `jaxplain.Model`.
      x: a batch of inputs, `(batch, ...)`.
      attribution: an `Attribution` or array shaped like x (one target per example).
      target: the labels compared: "predicted" (the model's classes, as the paper) or
        `(batch,)` ints (e.g. the true labels).
      threshold: the normalized distance within which an explanation applies to
        another example, in [0, 1].
      absolute: compare |attribution|.
      standardize: scale each feature by its spread over the batch (scipy's
        "seuclidean", Quantus' default).

    Returns:
      `(batch,)` scores in [0, 1] (higher is better).

    References:
      Dasgupta, Frost, Moshkovitz. Framework for Evaluating Faithfulness of Local
      Explanations. ICML 2022, arXiv:2202.00734.
    """
    x, targets = _common.prepare(model, x, target)
    values = _common.attribution_values(attribution, x)
    threshold = _checks.fraction("threshold", threshold)
    absolute = _checks.flag("absolute", absolute)
    standardize = _checks.flag("standardize", standardize)
    return _sufficiency(model, x, values, targets, threshold, absolute=absolute, standardize=standardize)
