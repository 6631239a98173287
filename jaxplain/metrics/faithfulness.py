"""Does an attribution predict what the model does when features are removed?

`completeness` reads an attribution's own convergence gap; `infidelity`,
`faithfulness_correlation` and `sensitivity_n` compare the attribution with the model's
output changes under random perturbations, all evaluated through `engine.fold_outputs`
(chunked, one compiled program per call). Perturbation i is drawn from
`fold_in(key, i)`, separately for every example, a chunk at a time, and only running
statistics are kept (co-moments for the correlations, the fit's residuals for
infidelity), so memory does not grow with `samples`; the answer does not depend on
`chunk_size`, but an example's draws depend on its position in the batch.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp

from jaxplain import _checks, _random, engine
from jaxplain.attribution import Attribution
from jaxplain.metrics import _common
from jaxplain.model import Model, Targets

PERTURBATIONS = ("subset", "noise")


def completeness(attribution: Attribution) -> jax.Array:
    """The relative completeness gap of an attribution, per example.

        |delta| / |F(x) - F(baseline)|,   delta = sum_i phi_i - (F(x) - F(baseline)),

    zero for attributions that add up exactly to the output change (exact Shapley
    values, DeepLIFT, IG in the limit of many steps); see `Attribution.relative_delta`.

    Args:
      attribution: an `Attribution` from a method that reports a `delta` (path methods,
        DeepLIFT, the Shapley methods).

    Returns:
      `(batch,)` (or `(batch, k)` for k targets per example).

    References:
      Sundararajan, Taly, Yan. Axiomatic Attribution for Deep Networks. ICML 2017,
      arXiv:1703.01365 (completeness).
    """
    if not isinstance(attribution, Attribution):
        raise TypeError(f"attribution must be a jaxplain.Attribution, got {type(attribution).__name__}")
    relative = attribution.relative_delta
    if relative is None:
        raise ValueError(
            "attribution has no completeness gap (its delta or output_difference is "
            "missing): the method that made it promises no completeness; use a path method, "
            "DeepLIFT or a Shapley method"
        )
    return relative


# --- infidelity ------------------------------------------------------------------------


def _through_origin(state, explained, actual):
    """Merges a chunk into the running least-squares fit of `actual` on `explained` through
    the origin, per example: (sqrt(sum e^2), sum e a / sqrt(sum e^2), residual sum of
    squares). The chunk's residuals are computed directly and merged by Lagrange's
    identity, every term >= 0, so a near-perfect fit is not lost to cancellation."""
    norm_a, along_a, residual_a = state
    energy = (explained * explained).sum(axis=1)
    beta = (explained * actual).sum(axis=1) / jnp.where(energy != 0, energy, 1)
    residual_b = ((beta[:, None] * explained - actual) ** 2).sum(axis=1)
    norm_b = jnp.sqrt(energy)
    along_b = beta * norm_b
    norm = jnp.sqrt(norm_a**2 + energy)
    safe = jnp.where(norm != 0, norm, 1)
    mixed = (norm_b * along_a - norm_a * along_b) / safe
    return norm, (norm_a * along_a + norm_b * along_b) / safe, residual_a + residual_b + mixed**2


@engine.program(
    static_argnames=("perturbation", "samples", "groups", "multiply_by_inputs", "normalize", "chunk_size")
)
def _infidelity(
    model,
    x,
    values,
    baseline,
    mask,
    targets: Targets,
    key,
    sigma,
    given,
    *,
    perturbation,
    samples,
    groups,
    multiply_by_inputs,
    normalize,
    chunk_size,
):
    batch = x.shape[0]
    baseline = jnp.broadcast_to(baseline, x.shape).astype(x.dtype)
    chosen, at_x, tied_x = _common.clean_outputs(model, x, targets)
    # Perturbations are made a chunk at a time: point i's from fold_in(key, i).
    if given is not None:
        params, change = given, lambda perturbation, x: perturbation
    elif perturbation == "subset":
        params = engine.Indexed(samples, lambda i: _random.subsets(key, i, batch, groups))
        change = lambda removed, x: jnp.where(_common.present(removed, mask), x - baseline, 0.0)
    else:
        params = engine.Indexed(samples, lambda i: _random.point_keys(key, i))
        change = lambda k, x: sigma * jax.random.normal(k, x.shape, x.dtype)
    # I / (x - baseline) with Captum's safe division: where x = baseline, divide by 1.
    difference = x - baseline
    scale = jnp.where(difference != 0, difference, 1) if multiply_by_inputs else jnp.ones_like(x)
    acc = engine.accumulation_dtype(x)

    def fold(state, params, outputs):  # outputs (B, size, 1): F_t(x - I)
        def projected(p):  # I . phi per example, (B,)
            weighted = (change(p, x) / scale).astype(acc) * values.astype(acc)
            return weighted.reshape(batch, -1).sum(axis=-1)

        explained = jax.vmap(projected, out_axes=1)(params)  # (B, size)
        actual = at_x[:, None] - outputs[..., 0]
        if normalize:
            return _through_origin(state, explained, actual)
        return engine.compensated_add(state, ((explained - actual) ** 2).sum(axis=1))

    zeros = jnp.zeros((batch,), acc)
    state = engine.fold_outputs(
        model,
        tied_x,
        chosen,
        lambda p, x: x - change(p, x),
        params,
        fold,
        (zeros, zeros, zeros) if normalize else (zeros, zeros),
        chunk_size=chunk_size,
    )
    # the residual of the fit with phi scaled by beta, or of phi itself
    return (state[2] if normalize else state[0]) / samples


def infidelity(
    model: Model,
    x,
    attribution,
    *,
    target,
    key,
    perturbation: str = "subset",
    samples: int = 100,
    baseline=0.0,
    feature_mask=None,
    sigma: float = 0.1,
    multiply_by_inputs: bool = True,
    normalize: bool = False,
    perturbations=None,
    chunk_size=None,
) -> jax.Array:
    """Infidelity: how badly the attribution predicts the output change under perturbations.

    For random perturbations I of the input (Yeh et al. 2019; Captum's definition),

        INFD(phi, F, x) = E_I[(I' . phi - (F_t(x) - F_t(x - I)))^2],

    estimated from `samples` draws per example, where I' = I / (x - baseline) (Captum's
    `multiply_by_inputs=True`, for attributions that already include the input change,
    such as IG, DeepLIFT, Shapley values; entries where x = baseline are divided by 1)
    or I' = I (`multiply_by_inputs=False`, for gradient-like attributions such as
    saliency). The perturbations:

    * `"subset"`: a random subset of the feature groups (each independently with
      probability 1/2) is set to the baseline, I = (x - baseline) * m for the subset's
      indicator m; then I' = m where x != baseline. Exact Shapley values of an
      additive model, or the gradient of a linear model with `multiply_by_inputs=False`,
      have infidelity 0.
    * `"noise"`: I ~ N(0, sigma^2) on every feature.

    With `normalize=True`, phi is first scaled by the optimal beta =
    E[I'.phi (F(x) - F(x - I))] / E[(I'.phi)^2] (1 where the denominator is 0), as
    Captum's `normalize=True`: the metric then ignores the attribution's scale.

    Args:
      model: a `jaxplain.Model`.
      x: a batch of inputs, `(batch, ...)`.
      attribution: an `Attribution` or array shaped like x (one target per example).
      target: the class the attribution explains: an int, `(batch,)` ints or
        "predicted".
      key: a `jax.random.key` (same key, same perturbations); None with `perturbations`.
      perturbation: "subset" or "noise".
      samples: perturbations per example.
      baseline: what "subset" sets removed features to, and the reference of
        `multiply_by_inputs`: a scalar, one example, or one per example.
      feature_mask: int group ids broadcastable to one example ("subset" removes whole
        groups); None makes every feature its own group.
      sigma: the standard deviation of "noise".
      multiply_by_inputs: use I / (x - baseline) instead of I in the product with phi.
      normalize: scale phi by the optimal beta first.
      perturbations: explicit perturbations I, `(samples, *x.shape)`, instead of random
        ones (then `key`, `perturbation`, `samples`, `sigma` and `feature_mask` are
        not used); e.g. to compare with another library on the same draws.
      chunk_size: perturbed inputs evaluated at once (`engine.default_chunk_size` by
        default). The answer does not depend on it.

    Returns:
      `(batch,)` infidelity per example (>= 0; 0 is perfect).

    References:
      Yeh, Hsieh, Suggala, Inouye, Ravikumar. On the (In)fidelity and Sensitivity of
      Explanations. NeurIPS 2019, arXiv:1901.09392.
    """
    x, targets = _common.prepare(model, x, target)
    values = _common.attribution_values(attribution, x)
    given = _common.perturbations(perturbations, x)
    key = _common.key_or_perturbations(key, given)
    perturbation = _checks.choice("perturbation", perturbation, PERTURBATIONS)
    samples = _checks.positive_int("samples", samples) if given is None else given.shape[0]
    baseline = _checks.baseline(baseline, x)
    mask, groups = _common.groups(feature_mask, x, False)
    sigma = _checks.number("sigma", sigma)
    for name, flag in (("multiply_by_inputs", multiply_by_inputs), ("normalize", normalize)):
        if not isinstance(flag, bool):
            raise TypeError(f"{name} must be a bool, got {type(flag).__name__}")
    chunk_size = _checks.chunk_size(chunk_size)
    return _infidelity(
        model,
        x,
        values,
        baseline,
        mask,
        targets,
        key,
        sigma,
        given,
        perturbation=perturbation,
        samples=samples,
        groups=groups,
        multiply_by_inputs=multiply_by_inputs,
        normalize=normalize,
        chunk_size=chunk_size,
    )


# --- correlation with removal effects ---------------------------------------------------


@engine.program(static_argnames=("sizes", "samples", "groups", "chunk_size"))
def _subset_correlation(
    model, x, values, baseline, mask, targets: Targets, key, *, sizes, samples, groups, chunk_size
):
    batch = x.shape[0]
    baseline = jnp.broadcast_to(baseline, x.shape).astype(x.dtype)
    chosen, at_x, tied_x = _common.clean_outputs(model, x, targets)
    acc = engine.accumulation_dtype(x)
    sums = _common.group_sums(values.astype(acc), mask, groups)  # (B, G)

    def draw(indices):  # points are laid out size by size: (subsets (n, B, G), size index (n,))
        which = indices // samples
        size = jnp.asarray(sizes)[which][:, None, None]
        return _random.subsets(key, indices, batch, groups, size), which

    def fold(state, params, outputs):
        removed, which = params
        # per example: (attribution total over the subset, output drop), (B, n, 2)
        totals = jnp.einsum("nbg,bg->bn", removed.astype(acc), sums, precision=jax.lax.Precision.HIGHEST)
        pairs = jnp.stack([totals, at_x[:, None] - outputs[..., 0]], axis=-1)
        # each size's own running co-moments: (B, S, n, 2) with weight 1 on its points
        weights = (which[None, :] == jnp.arange(len(sizes))[:, None]).astype(acc)
        shape = (batch, len(sizes))
        return engine.merge_comoments(
            state,
            jnp.broadcast_to(pairs[:, None], shape + pairs.shape[1:]),
            jnp.broadcast_to(weights, shape + weights.shape[1:]),
        )

    shape = (batch, len(sizes))
    init = (jnp.zeros(shape, acc), jnp.zeros(shape + (2,), acc), jnp.zeros(shape + (2, 2), acc))
    _, _, co = engine.fold_outputs(
        model,
        tied_x,
        chosen,
        lambda params, x: jnp.where(_common.present(params[0], mask), baseline, x),
        engine.Indexed(len(sizes) * samples, draw),
        fold,
        init,
        chunk_size=chunk_size,
    )
    # Pearson's correlation from the co-moments; NaN where a side does not vary
    return co[..., 0, 1] / jnp.sqrt(co[..., 0, 0] * co[..., 1, 1])  # (B, len(sizes))


def _correlation_inputs(model, x, attribution, target, key, samples, baseline, feature_mask):
    x, targets = _common.prepare(model, x, target)
    values = _common.attribution_values(attribution, x)
    key = _checks.key(key)
    samples = _checks.positive_int("samples", samples)
    if samples < 2:
        raise ValueError(f"samples must be >= 2: a correlation over {samples} subset is always NaN")
    baseline = _checks.baseline(baseline, x)
    mask, groups = _common.groups(feature_mask, x, False)
    return x, targets, values, key, samples, baseline, mask, groups


def _subset_size(name, value, groups):
    return _checks.count(name, value, high=groups, what="the number of feature groups")


def faithfulness_correlation(
    model: Model,
    x,
    attribution,
    *,
    target,
    key,
    subset_size=None,
    samples: int = 100,
    baseline=0.0,
    feature_mask=None,
    chunk_size=None,
) -> jax.Array:
    """Faithfulness correlation: do attributions of removed features predict the output drop?

    For `samples` random subsets S of exactly `subset_size` feature groups per example,
    the Pearson correlation over S between

        sum_{i in S} phi_i   and   F_t(x) - F_t(x with the features of S at the baseline)

    (Bhatt et al. 2020; Quantus' FaithfulnessCorrelation). 1 when the attribution
    predicts every removal's effect up to an affine map, e.g. exact Shapley values of
    an additive model. The attribution is summed over every feature of a removed
    group (per-feature attributions; a group-level attribution broadcast onto its
    features counts once per feature).

    Args:
      model: a `jaxplain.Model`.
      x: a batch of inputs, `(batch, ...)`.
      attribution: an `Attribution` or array shaped like x (one target per example).
      target: the class explained: an int, `(batch,)` ints or "predicted".
      key: a `jax.random.key`; same key, same subsets.
      subset_size: groups removed per draw, 1..G; by default a quarter of the groups
        (at least 1). Quantus removes 224 of 224x224 pixels.
      samples: random subsets per example (Quantus' `nr_runs`).
      baseline: the value removed features take: a scalar, one example, or one per
        example.
      feature_mask: int group ids broadcastable to one example; None makes every
        feature its own group.
      chunk_size: perturbed inputs evaluated at once. The answer does not depend on it.

    Returns:
      `(batch,)` correlations in [-1, 1]; NaN where the attribution sums or the output
      drops do not vary over the subsets.

    References:
      Bhatt, Weller, Moura. Evaluating and Aggregating Feature-based Model
      Explanations. IJCAI 2020, arXiv:2005.00631.
    """
    x, targets, values, key, samples, baseline, mask, groups = _correlation_inputs(
        model, x, attribution, target, key, samples, baseline, feature_mask
    )
    size = _subset_size("subset_size", max(1, groups // 4) if subset_size is None else subset_size, groups)
    chunk_size = _checks.chunk_size(chunk_size)
    return _subset_correlation(
        model,
        x,
        values,
        baseline,
        mask,
        targets,
        key,
        sizes=(size,),
        samples=samples,
        groups=groups,
        chunk_size=chunk_size,
    )[:, 0]


def sensitivity_n(
    model: Model,
    x,
    attribution,
    *,
    target,
    key,
    subset_sizes: Sequence[int],
    samples: int = 100,
    baseline=0.0,
    feature_mask=None,
    chunk_size=None,
) -> jax.Array:
    """Sensitivity-n: the faithfulness correlation at several subset sizes n.

    For each n in `subset_sizes`, the Pearson correlation over `samples` random
    subsets S of n feature groups between sum_{i in S} phi_i and
    F_t(x) - F_t(x with S at the baseline). An attribution is sensitivity-n for all n
    exactly when the model is additive in the groups and phi is its exact
    decomposition (Ancona et al. 2018); the curve over n shows where it breaks down.

    Args:
      model: a `jaxplain.Model`.
      x: a batch of inputs, `(batch, ...)`.
      attribution: an `Attribution` or array shaped like x (one target per example).
      target: the class explained: an int, `(batch,)` ints or "predicted".
      key: a `jax.random.key`; same key, same subsets.
      subset_sizes: the sizes n, each in 1..G (G = number of groups).
      samples: random subsets per example and size.
      baseline: the value removed features take: a scalar, one example, or one per
        example.
      feature_mask: int group ids broadcastable to one example; None makes every
        feature its own group.
      chunk_size: perturbed inputs evaluated at once. The answer does not depend on it.

    Returns:
      `(batch, len(subset_sizes))` correlations; NaN where a side does not vary (e.g.
      n = G, where every subset is the same).

    References:
      Ancona, Ceolini, Oztireli, Gross. Towards better understanding of gradient-based
      attribution methods for Deep Neural Networks. ICLR 2018, arXiv:1711.06104.
    """
    x, targets, values, key, samples, baseline, mask, groups = _correlation_inputs(
        model, x, attribution, target, key, samples, baseline, feature_mask
    )
    if isinstance(subset_sizes, (int, str)) or not hasattr(subset_sizes, "__len__") or not len(subset_sizes):
        raise TypeError(f"subset_sizes must be a non-empty sequence of ints, got {subset_sizes!r}")
    sizes = tuple(_subset_size("subset_sizes", n, groups) for n in subset_sizes)
    chunk_size = _checks.chunk_size(chunk_size)
    return _subset_correlation(
        model,
        x,
        values,
        baseline,
        mask,
        targets,
        key,
        sizes=sizes,
        samples=samples,
        groups=groups,
        chunk_size=chunk_size,
    )
