"""Agreement between two explanations of the same batch: l2, Spearman, top-k overlap.

Each compares `attribution` with a `reference` (e.g. an amortized explainer's output
with its teacher's), example by example: all features of one example (every axis but
the first) form one vector. Both may be `Attribution`s or arrays of the same shape.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxplain import _checks, engine
from jaxplain.attribution import Attribution
from jaxplain.metrics import _common


def _pair(attribution, reference):
    values = []
    for name, value in (("attribution", attribution), ("reference", reference)):
        value = value.values if isinstance(value, Attribution) else value
        value = _checks.as_float_array(name, value)
        if value.ndim < 2 or value.shape[0] < 1 or value.size == 0:
            raise ValueError(f"{name} must have a batch axis and features, got shape {tuple(value.shape)}")
        values.append(value)
    if values[0].shape != values[1].shape:
        raise ValueError(
            f"attribution and reference must have the same shape, got {tuple(values[0].shape)} "
            f"and {tuple(values[1].shape)}"
        )
    return values


@engine.program
def _l2(attribution, reference):
    a, b = _common.flat_pair(attribution, reference)
    return jnp.linalg.norm(a - b, axis=-1), jnp.linalg.norm(b, axis=-1)


def l2_error(attribution, reference) -> jax.Array:
    """The l2 distance between two explanations, per example: ||a - r||_2.

    Args:
      attribution: an `Attribution` or array `(batch, ...)`.
      reference: the same shape.

    Returns:
      `(batch,)`, in float32 or wider.

    References:
      Jethani, Sudarshan, Covert, Lee, Ranganath. FastSHAP: Real-Time Shapley Value
      Estimation. ICLR 2022, arXiv:2107.07436 (l2 distance to a reference explainer).
    """
    return _l2(*_pair(attribution, reference))[0]


def relative_l2_error(attribution, reference) -> jax.Array:
    """The l2 distance relative to the reference's norm, per example: ||a - r|| / ||r||.

    Args:
      attribution: an `Attribution` or array `(batch, ...)`.
      reference: the same shape; the denominator (inf where it is all zeros and the
        two differ, NaN where both are all zeros).

    Returns:
      `(batch,)`, in float32 or wider.

    References:
      Schwarzenberg, Feldhus, Moeller. Efficient Explanations from Empirical
      Explainers. BlackboxNLP 2021, arXiv:2103.15429.
    """
    distance, norm = _l2(*_pair(attribution, reference))
    return distance / norm


def spearman(attribution, reference) -> jax.Array:
    """Spearman's rank correlation of two explanations, per example.

    The Pearson correlation of the features' ranks, rank(a) and rank(r), where tied
    values share their average rank (as `scipy.stats.spearmanr`):

        rho = cov(rank(a), rank(r)) / (std(rank(a)) std(rank(r))).

    Args:
      attribution: an `Attribution` or array `(batch, ...)`.
      reference: the same shape.

    Returns:
      `(batch,)` in [-1, 1]; NaN for an example whose values are all equal on one side.

    References:
      Spearman. The proof and measurement of association between two things. American
      Journal of Psychology 15, 1904; Adebayo et al. Sanity Checks for Saliency Maps.
      NeurIPS 2018, arXiv:1810.03292 (rank correlation between explanations).
    """
    return _common.spearman(*_pair(attribution, reference))


@engine.program(static_argnames=("k",))
def _top_k_overlap(attribution, reference, *, k):
    a, b = _common.flat_pair(attribution, reference)
    top_a, top_b = _common.ranks(a) < k, _common.ranks(b) < k
    return (top_a & top_b).sum(axis=-1) / k


def top_k_overlap(attribution, reference, k: int) -> jax.Array:
    """The share of the k highest-valued features that two explanations have in common.

        overlap = |top_k(a) ∩ top_k(r)| / k,

    features ranked by their signed values (pass `abs` of both to rank by magnitude);
    among tied values the lower feature index ranks first.

    Args:
      attribution: an `Attribution` or array `(batch, ...)`.
      reference: the same shape.
      k: how many top features, 1 <= k <= features per example.

    Returns:
      `(batch,)` in [0, 1].

    References:
      Chuang, Wang, Yang, Zhong, Chen, Hu. CoRTX: Contrastive Framework for Real-time
      Explanation. ICLR 2023, arXiv:2303.02794 (rank agreement with a reference
      explainer).
    """
    attribution, reference = _pair(attribution, reference)
    features = int(attribution.size // attribution.shape[0])
    k = _checks.count("k", k, high=features, what="the features per example")
    return _top_k_overlap(attribution, reference, k=k)
