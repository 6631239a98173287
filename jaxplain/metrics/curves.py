"""Perturbation curves: change the features in the order an attribution ranks them.

Every curve ranks the feature groups of each example by the sum of its attribution over
the group's features (highest first; ties go to the lower group id), changes more and
more of the top groups, and records the model's target output after each change (the
target resolved at the clean input; the output is whatever the Model is set to, e.g.
`model.with_output("probs")` for RISE's probabilities). All points of a curve go
through `engine.path_outputs`, chunked, in one compiled program.

* `deletion` moves the top groups from x to a baseline, `insertion` from a baseline
  to x (Petsiuk et al. 2018); `pixel_flipping` is deletion one group at a time (Bach
  et al. 2015).
* `road` removes the top (or bottom) groups by noisy linear imputation instead of a
  fixed baseline (Rong et al. 2022).
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxplain import _checks, blur, engine
from jaxplain.metrics import _common
from jaxplain.metrics._common import Curve
from jaxplain.model import Model, Targets

BASELINES = ("zeros", "mean", "blur")
ORDERS = ("most", "least")


def _fill(x, baseline, kind: str, blur_sigma: float):
    """The baseline as an array like x: "zeros", "mean" (per example), "blur" or given."""
    if kind == "zeros":
        return jnp.zeros_like(x)
    if kind == "mean":
        return jnp.broadcast_to(x.mean(axis=tuple(range(1, x.ndim)), keepdims=True), x.shape)
    if kind == "blur":
        return blur.gaussian(x, blur_sigma, blur_sigma)
    return jnp.broadcast_to(baseline, x.shape).astype(x.dtype)


def _curve(model, x, values, mask, targets: Targets, counts, groups: int, chunk_size: int, moved):
    """Scores after moving the top counts[k] groups: `moved(k, changed, x)` gives the point.

    `changed` (B, *features) marks the features of the top counts[k] groups, ranked by
    `values` summed over each group. Returns the Curve over counts / groups.
    """
    chosen, _, tied_x = _common.clean_outputs(model, x, targets)
    feature_ranks = _common.present(_common.ranks(_common.group_sums(values, mask, groups)), mask)
    counts = np.asarray(counts)

    def point(k, x):
        return moved(k, feature_ranks < jnp.asarray(counts)[k], x)

    scores = _common.outputs_at(model, tied_x, chosen, point, jnp.arange(len(counts)), chunk_size)
    fractions = jnp.asarray(counts / groups, scores.dtype)
    return Curve(fractions, scores, _common.trapezoid(scores, fractions))


@engine.program(static_argnames=("kind", "insert", "blur_sigma", "counts", "groups", "chunk_size"))
def _replacement_curve(
    model,
    x,
    values,
    baseline,
    mask,
    targets: Targets,
    *,
    kind,
    insert,
    blur_sigma,
    counts,
    groups,
    chunk_size,
):
    fill = _fill(x, baseline, kind, blur_sigma)
    if insert:  # reveal the top groups of x on the baseline
        moved = lambda k, changed, x: jnp.where(changed, x, fill)
    else:  # replace the top groups of x by the baseline
        moved = lambda k, changed, x: jnp.where(changed, fill, x)
    return _curve(model, x, values, mask, targets, counts, groups, chunk_size, moved)


def _replacement(
    model, x, attribution, target, baseline, steps, feature_mask, per_pixel, blur_sigma, chunk_size, *, insert
):
    x, targets = _common.prepare(model, x, target)
    values = _common.attribution_values(attribution, x)
    mask, groups = _common.groups(feature_mask, x, per_pixel)
    if isinstance(baseline, str):
        kind, baseline = _checks.choice("baseline", baseline, BASELINES), 0.0
        if kind == "blur" and x.ndim < 3:
            raise ValueError(
                f"baseline='blur' needs spatial axes: x of shape (batch, H, W, C) or similar, got "
                f"{tuple(x.shape)}; pass 'zeros', 'mean' or an array"
            )
    else:
        kind, baseline = "given", _checks.baseline(baseline, x)
    blur_sigma = _checks.number("blur_sigma", blur_sigma, low=1e-6)
    steps = (
        min(groups, 100)
        if steps is None
        else _checks.count("steps", steps, high=groups, what="the number of feature groups")
    )
    counts = tuple(int(c) for c in np.arange(steps + 1) * groups // steps)
    chunk_size = _checks.chunk_size(chunk_size)
    return _replacement_curve(
        model,
        x,
        values,
        baseline,
        mask,
        targets,
        kind=kind,
        insert=insert,
        blur_sigma=blur_sigma,
        counts=counts,
        groups=groups,
        chunk_size=chunk_size,
    )


_CURVE_ARGS = """
    Args:
      model: a `jaxplain.Model` (its output, e.g. `model.with_output("probs")`, is the
        score).
      x: a batch of inputs, `(batch, ...)`.
      attribution: an `Attribution` or array shaped like x (one target per example);
        higher values rank first.
      target: the class scored: an int, `(batch,)` ints or "predicted" (resolved at x).
      baseline: "zeros", "mean" (each example's mean over all its features), "blur"
        (x blurred with a Gaussian of `blur_sigma` pixels over the spatial axes of
        NHWC-like inputs, truncated at 3 sigma and reflecting at the borders, as
        `jaxplain.blur_ig`), or an array: a scalar, one example, or one per example.
      steps: points after the start: after step s the top floor(s G / steps) groups
        have moved (1 <= steps <= G); by default min(G, 100).
      feature_mask: int group ids broadcastable to one example; None makes every
        feature its own group.
      per_pixel: for images (batch, H, W, C): rank pixels by their attribution summed
        over the channels and move all channels of a pixel together.
      blur_sigma: the blur of baseline="blur", in pixels (RISE: 5).
      chunk_size: points evaluated at once. The answer does not depend on it.

    Returns:
      A `Curve`: `fractions` (steps + 1,) from 0 to 1 (the share of groups moved),
      `scores` (batch, steps + 1) and `auc` (batch,), the trapezoid area on [0, 1].
"""


def deletion(
    model: Model,
    x,
    attribution,
    *,
    target,
    baseline="zeros",
    steps=None,
    feature_mask=None,
    per_pixel: bool = False,
    blur_sigma: float = 5.0,
    chunk_size=None,
) -> Curve:
    """Deletion: the target output as the top-ranked features are replaced by a baseline.

    With the groups ranked by attribution and c_s = floor(s G / steps),

        score_s = F_t(x with its top c_s groups at the baseline),   s = 0..steps,

    from F_t(x) at s = 0 to F_t(baseline) at s = steps; AUC = trapezoid area over the
    fraction c_s / G. Lower is better: a faithful ranking removes the evidence first.
    On an additive model the ranking by exact contributions gives the lowest curve of
    all orders at every step.
    {args}
    References:
      Petsiuk, Das, Saenko. RISE: Randomized Input Sampling for Explanation of
      Black-box Models. BMVC 2018, arXiv:1806.07421.
    """
    return _replacement(
        model,
        x,
        attribution,
        target,
        baseline,
        steps,
        feature_mask,
        per_pixel,
        blur_sigma,
        chunk_size,
        insert=False,
    )


def insertion(
    model: Model,
    x,
    attribution,
    *,
    target,
    baseline="blur",
    steps=None,
    feature_mask=None,
    per_pixel: bool = False,
    blur_sigma: float = 5.0,
    chunk_size=None,
) -> Curve:
    """Insertion: the target output as the top-ranked features of x are revealed on a baseline.

        score_s = F_t(baseline with its top c_s groups taken from x),   s = 0..steps,

    from F_t(baseline) to F_t(x), c_s = floor(s G / steps); AUC over c_s / G. Higher is
    better. RISE starts from a blurred image (the default; pass another baseline for
    inputs without spatial axes).
    {args}
    References:
      Petsiuk, Das, Saenko. RISE: Randomized Input Sampling for Explanation of
      Black-box Models. BMVC 2018, arXiv:1806.07421.
    """
    return _replacement(
        model,
        x,
        attribution,
        target,
        baseline,
        steps,
        feature_mask,
        per_pixel,
        blur_sigma,
        chunk_size,
        insert=True,
    )


def pixel_flipping(
    model: Model,
    x,
    attribution,
    *,
    target,
    baseline="zeros",
    feature_mask=None,
    per_pixel: bool = False,
    blur_sigma: float = 5.0,
    chunk_size=None,
) -> Curve:
    """Pixel flipping: `deletion` one feature group at a time, in the attribution's order.

        score_s = F_t(x with its s top-ranked groups at the baseline),   s = 0..G.

    Bach et al. flip pixels one by one from the most relevant; this is `deletion` with
    `steps` = G, so it costs G + 1 model evaluations per example (group the features
    with `feature_mask` or `per_pixel` for images).

    Args: as `deletion`, without `steps`.

    Returns:
      A `Curve` with G + 1 points.

    References:
      Bach, Binder, Montavon, Klauschen, Mueller, Samek. On Pixel-Wise Explanations for
      Non-Linear Classifier Decisions by Layer-Wise Relevance Propagation. PLOS ONE
      2015; Samek, Binder, Montavon, Lapuschkin, Mueller. Evaluating the visualization
      of what a Deep Neural Network has learned. arXiv:1509.06321, 2015.
    """
    x, _ = _checks.check_x(model, x)
    _, groups = _common.groups(feature_mask, x, per_pixel)
    return deletion(
        model,
        x,
        attribution,
        target=target,
        baseline=baseline,
        steps=groups,
        feature_mask=feature_mask,
        per_pixel=per_pixel,
        blur_sigma=blur_sigma,
        chunk_size=chunk_size,
    )


for _function in (deletion, insertion):
    _function.__doc__ = _function.__doc__.replace("{args}", _CURVE_ARGS)


# --- ROAD ------------------------------------------------------------------------------


def _neighbour_offsets(spatial: int):
    """ROAD's neighbours and weights: 1/6 for the 4 direct, 1/12 for the 4 diagonal
    neighbours of a pixel; 1/2 for the 2 neighbours in index order of a 1-D input."""
    if spatial == 1:
        return [((-1,), 0.5), ((1,), 0.5)]
    return [
        ((dy, dx), 1 / 6 if dy == 0 or dx == 0 else 1 / 12)
        for dy in (-1, 0, 1)
        for dx in (-1, 0, 1)
        if (dy, dx) != (0, 0)
    ]


def _neighbour_sum(v, offsets):
    """sum_o w_o v[p + o] over the neighbours p + o inside the grid (axes 1..len(o))."""
    total = jnp.zeros_like(v)
    for offset, weight in offsets:
        shifted = v
        for axis, step in enumerate(offset, start=1):
            if step:
                padding = [(0, 0)] * v.ndim
                padding[axis] = (0, step) if step > 0 else (-step, 0)
                start = max(step, 0)
                shifted = jax.lax.slice_in_dim(
                    jnp.pad(shifted, padding), start, start + v.shape[axis], axis=axis
                )
        total = total + weight * shifted
    return total


def _impute(x, removed, spatial: int):
    """Noiseless linear imputation: every removed feature the weighted mean of its
    neighbours (removed or not) in the same channel, all solved at once.

    For removed p: d_p v_p - sum_{q removed} w_pq v_q = sum_{q kept} w_pq x_q, with
    d_p the weight of p's neighbours inside the grid; kept features keep x. The system
    is symmetric positive definite when every removed region touches a kept feature
    (it is solved by conjugate gradients; with every feature removed it gives 0).
    """
    offsets = _neighbour_offsets(spatial)
    keep = (~removed).astype(x.dtype)
    gone = removed.astype(x.dtype)
    degree = _neighbour_sum(jnp.ones_like(x), offsets)

    def system(v):
        return gone * (degree * v - _neighbour_sum(gone * v, offsets)) + keep * v

    right = gone * _neighbour_sum(keep * x, offsets) + keep * x
    solution, _ = jax.scipy.sparse.linalg.cg(
        system, right, x0=keep * x, tol=1e-6, maxiter=max(100, int(np.prod(x.shape[1:])))
    )
    return solution


@engine.program(static_argnames=("counts", "groups", "spatial", "chunk_size"))
def _road(model, x, values, mask, targets: Targets, key, noise, *, counts, groups, spatial, chunk_size):
    def moved(k, removed, x):
        jitter = noise * jax.random.normal(jax.random.fold_in(key, k), x.shape, x.dtype)
        return jnp.where(removed, _impute(x, removed, spatial) + jitter, x)

    return _curve(model, x, values, mask, targets, counts, groups, chunk_size, moved)


def road(
    model: Model,
    x,
    attribution,
    *,
    target,
    key,
    percentages: Sequence[float] = tuple(range(10, 100, 10)),
    order: str = "most",
    feature_mask=None,
    per_pixel: bool = False,
    imputation_noise: float = 0.01,
    chunk_size=None,
) -> Curve:
    """ROAD: the target output after removing ranked features by noisy linear imputation.

    At each percentage p, the floor(G p / 100) top-ranked groups (`order="most"`, MoRF)
    or bottom-ranked groups (`order="least"`, LeRF) are removed, and every removed
    feature is replaced by the weighted mean of its neighbours in the same channel,
    removed neighbours included, so that all removed values are solved together from
    one sparse linear system (solved here by conjugate gradients, matrix-free):

        v_p = sum_q w_pq v_q / sum_q w_pq   over the neighbours q of p inside the grid,
        v_q = x_q for kept q,

    then N(0, imputation_noise^2) noise is added to the removed values (ROAD: 0.01).
    Neighbours are ROAD's: on images (batch, H, W, C), the 4 direct (weight 1/6) and 4
    diagonal (1/12) neighbouring pixels; on 1-D inputs (batch, features) or
    (batch, length, C), the previous and next feature in index order (1/2 each).
    Unlike the ROAD code, ties in the ranking go to the lower group id (ROAD adds
    1e-4 noise to the attribution), and the score is the model's target output for
    each example rather than the accuracy over a data set. MoRF: lower is better;
    LeRF: higher is better.

    Args:
      model: a `jaxplain.Model`.
      x: a batch of inputs, `(batch, features)`, `(batch, length, C)` or
        `(batch, H, W, C)`.
      attribution: an `Attribution` or array shaped like x (one target per example).
      target: the class scored: an int, `(batch,)` ints or "predicted" (resolved at x).
      key: a `jax.random.key` for the imputation noise; same key, same result.
      percentages: the percentages of groups removed, each in [0, 100] (ROAD: 10..90).
      order: "most" removes the highest-ranked groups first, "least" the lowest.
      feature_mask: int group ids broadcastable to one example; None makes every
        feature its own group.
      per_pixel: for images, rank pixels by attribution summed over channels and
        remove all channels of a pixel together (as ROAD does).
      imputation_noise: the standard deviation of the noise on imputed values.
      chunk_size: points evaluated at once. The answer does not depend on it.

    Returns:
      A `Curve`: `fractions`, the share of groups removed at each percentage,
      floor(G p / 100) / G; `scores` (batch, len(percentages)); and `auc`, the
      trapezoid area over those fractions.

    References:
      Rong, Leemann, Borisov, Kasneci, Kasneci. A Consistent and Efficient Evaluation
      Strategy for Attribution Methods. ICML 2022, arXiv:2202.00449.
    """
    x, targets = _common.prepare(model, x, target)
    values = _common.attribution_values(attribution, x)
    key = _checks.key(key)
    order = _checks.choice("order", order, ORDERS)
    mask, groups = _common.groups(feature_mask, x, per_pixel)
    spatial = 1 if x.ndim <= 3 else x.ndim - 2
    if spatial > 2:
        raise ValueError(f"road imputes 1-D or 2-D inputs (plus channels), got x of shape {tuple(x.shape)}")
    if (
        isinstance(percentages, (str, int, float))
        or not hasattr(percentages, "__len__")
        or not len(percentages)
    ):
        raise TypeError(f"percentages must be a non-empty sequence of numbers, got {percentages!r}")
    percentages = [_checks.number("percentages", p, high=100.0) for p in percentages]
    counts = tuple(int(groups * p // 100) for p in percentages)
    noise = _checks.number("imputation_noise", imputation_noise)
    chunk_size = _checks.chunk_size(chunk_size)
    return _road(
        model,
        x,
        values if order == "most" else -values,
        mask,
        targets,
        key,
        noise,
        counts=counts,
        groups=groups,
        spatial=spatial,
        chunk_size=chunk_size,
    )
