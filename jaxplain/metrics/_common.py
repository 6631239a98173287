"""The pieces every metric shares: boundary checks, ranking, correlations.

Checks run before tracing and name the argument at fault; everything below "inside the
compiled programs" runs under `engine.program`.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxplain import _checks, engine
from jaxplain.attribution import Attribution
from jaxplain.methods import registry
from jaxplain.methods.perturbation import patch_mask
from jaxplain.model import Model, Targets


class Curve(NamedTuple):
    """A perturbation curve: the target output as more and more features are changed.

    Attributes:
      fractions: `(K,)` the fraction of feature groups changed at each point.
      scores: `(batch, K)` the model's target output at each point.
      auc: `(batch,)` the area under `scores` over `fractions`, by the trapezoid rule.
    """

    fractions: jax.Array
    scores: jax.Array
    auc: jax.Array


# --- checks at the public boundary -----------------------------------------------------


def prepare(model: Model, x, target):
    """Checks model, x and target (one class per example); returns `(x, targets)`."""
    x, targets = _checks.prepare(model, x, target)
    if not targets.single:
        raise ValueError(
            "target must name one class per example (an int, an int array (batch,) or "
            f"'predicted'); the metrics judge one explanation per example, got {targets.count} "
            "classes per example"
        )
    return x, targets


def attribution_values(attribution, x, name: str = "attribution"):
    """The values of an `Attribution` or an array, checked to be shaped like x."""
    values = attribution.values if isinstance(attribution, Attribution) else attribution
    values = _checks.as_float_array(name, values)
    if tuple(values.shape) != tuple(x.shape):
        several = values.ndim == x.ndim + 1 and values.shape[0] == x.shape[0]
        raise ValueError(
            f"{name} must be shaped like x, {tuple(x.shape)}, got {tuple(values.shape)}"
            + ("; it holds several targets per example: explain one target per example" if several else "")
        )
    return values


def groups(feature_mask, x, per_pixel: bool):
    """`(mask, G)`: the feature groups; `per_pixel` groups the channels of each pixel."""
    if not isinstance(per_pixel, (bool, np.bool_)):
        raise TypeError(f"per_pixel must be a bool, got {type(per_pixel).__name__}")
    if per_pixel:
        if feature_mask is not None:
            raise ValueError("pass feature_mask or per_pixel=True, not both")
        if x.ndim < 3:
            raise ValueError(
                f"per_pixel=True needs images (batch, H, W, C) with a channel axis last, got x "
                f"of shape {tuple(x.shape)}"
            )
        feature_mask = patch_mask(x.shape[1:], (1,) * (x.ndim - 2) + (x.shape[-1],))
    return _checks.feature_mask(feature_mask, x)


def perturbations(value, x, name: str = "perturbations"):
    """Explicit perturbations `(samples, *x.shape)`, or None."""
    if value is None:
        return None
    value = _checks.as_float_array(name, value)
    if value.ndim != x.ndim + 1 or tuple(value.shape[1:]) != tuple(x.shape) or value.shape[0] < 1:
        raise ValueError(
            f"{name} must have shape (samples, *x.shape) = (samples, {', '.join(map(str, x.shape))}), "
            f"got {tuple(value.shape)}"
        )
    return value


def key_or_perturbations(key, given, *, needed: bool = False) -> object:
    """The key: required unless explicit perturbations are given and nothing else needs
    one (`needed`, e.g. a randomized method); otherwise it must be None."""
    if given is None or needed:
        return _checks.key(key)
    if key is not None:
        raise TypeError("pass key=None with explicit perturbations: nothing is drawn at random")
    return None


def bind(method, options: dict):
    """`(function, arrays, static, takes_key)` of a method (or its name) run inside a
    metric (see `jaxplain.methods.registry.bind`)."""
    return registry.bind(method, options, caller="metric")


# --- inside the compiled programs -------------------------------------------------------


def clean_outputs(model: Model, x, targets: Targets):
    """One pass at x (`engine.endpoints`): `(chosen (B, 1), F_t(x) (B,), x tied to the pass)`."""
    ends = engine.endpoints(model, x, targets)
    return ends.targets, ends.at_x[:, 0], ends.x


def outputs_at(model: Model, x, chosen, point, params, chunk_size):
    """F_t(point(param_k, x)) for K points per example, (B, K), through the engine."""
    outputs = engine.path_outputs(model, x, chosen, point, params, chunk_size=chunk_size)
    return outputs[..., 0].astype(engine.accumulation_dtype(x))


def explain(method, model: Model, x, chosen, key, arrays: dict, static: tuple, takes_key: bool):
    """The method's values at x for the classes `chosen` (B, 1)."""
    options = {**dict(static), **arrays, **({"key": key} if takes_key else {})}
    result = method(model, x, target=chosen[:, 0], **options)
    # Checked while tracing (types and shapes only): a user's own method could
    # otherwise fail deep inside the metric's program.
    if not isinstance(result, Attribution):
        got = (
            f"an array of shape {tuple(result.shape)}" if hasattr(result, "shape") else type(result).__name__
        )
        raise TypeError(f"method must return a jaxplain.Attribution, got {got}")
    if result.values.ndim < 1 or result.values.shape[0] != x.shape[0]:
        raise ValueError(
            f"method returned values of shape {tuple(result.values.shape)} for x of shape "
            f"{tuple(x.shape)}; expected one attribution per example, (batch, ...)"
        )
    return result.values


def group_sums(values, mask, groups: int):
    """(B, G): the sum of `values` (B, *features) over each group's features."""
    flat = values.reshape(values.shape[0], -1)
    return jnp.zeros((values.shape[0], groups), flat.dtype).at[:, jnp.asarray(mask).ravel()].add(flat)


def ranks(scores):
    """(B, G) ranks, 0 for the highest score; ties go to the lower index first."""
    order = jnp.argsort(-scores, axis=-1, stable=True)
    return jnp.argsort(order, axis=-1, stable=True)


def present(coalitions, mask):
    """(..., *features) bool from (..., G) group coalitions."""
    return jnp.take(coalitions, jnp.asarray(mask), axis=-1)


def average_ranks(values):
    """1-based ranks along the last axis, tied values sharing their average rank (scipy's)."""
    ordered = jnp.sort(values, axis=-1)

    def one(row, ordered_row):
        low = jnp.searchsorted(ordered_row, row, side="left")
        high = jnp.searchsorted(ordered_row, row, side="right")
        return (low + high + 1) / 2.0

    flat, flat_ordered = values.reshape(-1, values.shape[-1]), ordered.reshape(-1, values.shape[-1])
    return jax.vmap(one)(flat, flat_ordered).reshape(values.shape).astype(engine.accumulation_dtype(values))


def pearson(a, b):
    """Pearson correlation along the last axis; NaN where either side is constant."""
    a = a - a.mean(axis=-1, keepdims=True)
    b = b - b.mean(axis=-1, keepdims=True)
    return (a * b).sum(axis=-1) / jnp.sqrt((a * a).sum(axis=-1) * (b * b).sum(axis=-1))


@engine.program
def spearman(a, b):
    """Spearman's rank correlation of two (B, ...) arrays per example: the Pearson
    correlation of their average ranks (see `jaxplain.metrics.spearman`)."""
    a, b = flat_pair(a, b)
    return pearson(average_ranks(a), average_ranks(b))


def flat_pair(a, b):
    """Both as (B, features) in a common floating dtype of at least float32."""
    dtype = engine.accumulation_dtype(jnp.promote_types(a.dtype, b.dtype))
    return a.reshape(a.shape[0], -1).astype(dtype), b.reshape(b.shape[0], -1).astype(dtype)


def trapezoid(scores, fractions):
    """The trapezoid-rule area under scores (B, K) over fractions (K,)."""
    widths = jnp.diff(jnp.asarray(fractions, scores.dtype))
    return ((scores[:, 1:] + scores[:, :-1]) * widths / 2).sum(axis=-1)
