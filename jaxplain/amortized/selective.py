"""Selective explanations: trust the explainer where a cheap check passes, recompute elsewhere.

The check is the completeness gap of the explainer's raw output (before the efficiency
correction), |sum_g phi_g - (F_t(x) - F_t(reference))|, which costs one forward pass of
the model. Examples whose gap exceeds `tolerance` (for any of their targets) are
explained again with the exact method, the explainer's teacher by default, in the same
call; the others keep the explainer's values.
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import numpy as np

from jaxplain import _checks
from jaxplain.amortized.explainer import Explainer
from jaxplain.amortized.labels import method_name, method_settings
from jaxplain.attribution import Attribution
from jaxplain.methods.registry import METHODS
from jaxplain.model import Model


def _bucket(count: int, batch: int) -> int:
    """Rows to recompute, rounded up to a power of two (fewer distinct compiled shapes)."""
    return min(batch, 1 << max(0, count - 1).bit_length())


def selective(
    explainer: Explainer,
    model: Model,
    x,
    *,
    target,
    tolerance: float,
    method=None,
    **settings,
) -> Attribution:
    """The explainer's attributions, with the examples that fail the check recomputed exactly.

    Args:
      explainer: a trained `Explainer` whose values should sum to F(x) - F(reference)
        (a Shapley or path-method teacher).
      model: the model it explains.
      x: a batch of inputs.
      target: as for the explainer.
      tolerance: the largest completeness gap, in the model's output units, that is
        accepted (>= 0).
      method: the exact method (a registered jaxplain method or its name); by default
        the explainer's teacher with its recorded settings (a FastSHAP explainer has
        none: pass one).
      **settings: the method's settings; by default the teacher's.

    Returns:
      An `Attribution` like the explainer's, with `extras["recomputed"]`, `(batch,)`
      bool, the examples recomputed, and `extras["recomputed_fraction"]`, their share.
      Recomputed rows carry the exact method's values and `delta`.
    """
    if not isinstance(explainer, Explainer):
        raise TypeError(f"explainer must be a jaxplain.amortized.Explainer, got {type(explainer).__name__}")
    if not explainer.metadata["completeness"]:
        raise ValueError("selective needs an explainer whose values sum to F(x) - F(reference)")
    tolerance = _checks.number("tolerance", tolerance)
    function, recorded = _exact_method(explainer, method)
    settings = {**recorded, **settings} if method is None else settings
    fast = explainer(model, x, target=target)
    gap = np.abs(np.asarray(fast.extras["raw_delta"]))
    flagged = gap.reshape(gap.shape[0], -1).max(axis=1) > tolerance
    rows = np.flatnonzero(flagged)
    values, delta = np.array(fast.values), np.array(fast.delta)
    if rows.size:
        padded = np.resize(rows, _bucket(rows.size, len(flagged)))  # repeats rows to fill
        chosen = np.asarray(fast.target)[padded]
        exact = function(model, np.asarray(x)[padded], target=chosen, **settings)
        values[rows] = np.asarray(exact.values)[: rows.size]
        if exact.delta is not None:
            delta[rows] = np.asarray(exact.delta)[: rows.size]
    extras = {
        **fast.extras,
        "recomputed": jnp.asarray(flagged),
        "recomputed_fraction": jnp.asarray(flagged.mean()),
    }
    return dataclasses.replace(fast, values=jnp.asarray(values), delta=jnp.asarray(delta), extras=extras)


def _exact_method(explainer: Explainer, method: object | None):
    if method is not None:
        return METHODS[method_name(method)].function, {}
    teacher = explainer.metadata["teacher"]
    if teacher is None:
        raise ValueError(
            f"this {explainer.metadata['recipe']} explainer has no teacher; pass method= (and its settings)"
        )
    return method_settings(teacher)
