"""Does an attribution predict what the model does when features are removed?

`completeness` reads an attribution's own convergence gap; `infidelity`,
`faithfulness_correlation` and `sensitivity_n` compare the attribution with the model's
output changes under random perturbations, all evaluated through `engine.path_outputs`
(chunked, one compiled program per call). Perturbations are drawn from `key`, separately
for every example, before any model evaluation: the answer does not depend on
`chunk_size`, but an example's draws depend on its position in the batch.
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp

from jaxplain import _checks, engine
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
            "attribution has no completeness gap (its delta or extras['output_difference'] is "
            "missing): the method that made it promises no completeness; use a path method, "
            "DeepLIFT or a Shapley method"
        )
    return relative


# --- infidelity ------------------------------------------------------------------------


@engine.program(static_argnames=("perturbation", "samples", "groups", "multiply_by_inputs", "normalize", "chunk_size"))
def _infidelity(model, x, values, baseline, mask, targets: Targets, key, sigma, given, *,
                perturbation, samples, groups, multiply_by_inputs, normalize, chunk_size):
    baseline = jnp.broadcast_to(baseline, x.shape).astype(x.dtype)
    chosen, at_x, tied_x = _common.clean_outputs(model, x, targets)
    if given is not None:
        params, change = given, lambda perturbation, x: perturbation
    elif perturbation == "subset":
        params = _common.random_subsets(key, samples, x.shape[0], groups)
        change = lambda removed, x: jnp.where(_common.present(removed, mask), x - baseline, 0.0)
    else:
        params = jax.random.split(key, samples)
        change = lambda k, x: sigma * jax.random.normal(k, x.shape, x.dtype)
    outputs = _common.outputs_at(
        model, tied_x, chosen, lambda p, x: x - change(p, x), params, chunk_size
    )  # (B, K): F_t(x - I)
    # I / (x - baseline) with Captum's safe division: where x = baseline, divide by 1.
    difference = x - baseline
    scale = jnp.where(difference != 0, difference, 1) if multiply_by_inputs else jnp.ones_like(x)
    acc = _common.accumulation_dtype(x)

    def projected(p):  # I . phi per example, (B,)
        weighted = (change(p, x) / scale).astype(acc) * values.astype(acc)
        return weighted.reshape(x.shape[0], -1).sum(axis=-1)

    explained = jax.lax.map(projected, params, batch_size=chunk_size).T  # (B, K)
    actual = at_x[:, None] - outputs
    if normalize:
        denominator = (explained * explained).mean(axis=1, keepdims=True)
        beta = (explained * actual).mean(axis=1, keepdims=True) / jnp.where(denominator != 0, denominator, 1)
        explained = beta * explained
    return ((explained - actual) ** 2).mean(axis=1)


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
    perturbation = _common.choice("perturbation", perturbation, PERTURBATIONS)
    samples = _checks.positive_int("samples", samples) if given is None else given.shape[0]
    baseline = _checks.baseline(baseline, x)
    mask, groups = _common.groups(feature_mask, x, False)
    sigma = _common.number("sigma", sigma)
    for name, flag in (("multiply_by_inputs", multiply_by_inputs), ("normalize", normalize)):
        if not isinstance(flag, bool):
            raise TypeError(f"{name} must be a bool, got {type(flag).__name__}")
    chunk_size = _checks.chunk_size(chunk_size, model, x, samples)
    return _infidelity(
        model, x, values, baseline, mask, targets, key, sigma, given,
        perturbation=perturbation, samples=samples, groups=groups,
        multiply_by_inputs=multiply_by_inputs, normalize=normalize, chunk_size=chunk_size,
    )


# --- correlation with removal effects ---------------------------------------------------


@engine.program(static_argnames=("sizes", "samples", "groups", "chunk_size"))
def _subset_correlation(model, x, values, baseline, mask, targets: Targets, key, *,
                        sizes, samples, groups, chunk_size):
    batch = x.shape[0]
    baseline = jnp.broadcast_to(baseline, x.shape).astype(x.dtype)
    chosen, at_x, tied_x = _common.clean_outputs(model, x, targets)
    size = jnp.repeat(jnp.asarray(sizes), samples)[:, None, None]  # (K, 1, 1)
    removed = _common.random_subsets(key, len(sizes) * samples, batch, groups, size)
    outputs = _common.outputs_at(
        model, tied_x, chosen,
        lambda subset, x: jnp.where(_common.present(subset, mask), baseline, x),
        removed, chunk_size,
    )
    drops = (at_x[:, None] - outputs).reshape(batch, len(sizes), samples)
    totals = jnp.einsum("kbg,bg->bk", removed.astype(drops.dtype),
                        _common.group_sums(values.astype(drops.dtype), mask, groups),
                        precision=jax.lax.Precision.HIGHEST)
    return _common.pearson(totals.reshape(batch, len(sizes), samples), drops)  # (B, len(sizes))


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
    return _common.count(name, value, high=groups, what="the number of feature groups")


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
    chunk_size = _checks.chunk_size(chunk_size, model, x, samples)
    return _subset_correlation(
        model, x, values, baseline, mask, targets, key,
        sizes=(size,), samples=samples, groups=groups, chunk_size=chunk_size,
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
    chunk_size = _checks.chunk_size(chunk_size, model, x, len(sizes) * samples)
    return _subset_correlation(
        model, x, values, baseline, mask, targets, key,
        sizes=sizes, samples=samples, groups=groups, chunk_size=chunk_size,
    )
