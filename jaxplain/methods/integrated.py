"""Integrated Gradients: the path integral of gradients from a baseline to the input."""

from __future__ import annotations

import jax.numpy as jnp

from jaxplain import _checks, engine, schedules
from jaxplain.attribution import Attribution
from jaxplain.methods.registry import register
from jaxplain.model import Model, Targets


@engine.program(static_argnames=("steps", "schedule", "chunk_size"))
def _integrated_gradients(model, x, baseline, targets: Targets, *, steps, schedule, chunk_size):
    batch = x.shape[0]
    baseline = jnp.broadcast_to(baseline, x.shape).astype(x.dtype)
    ends = engine.forward(model, jnp.concatenate([x, baseline]))
    chosen = targets.resolve(ends[:batch])
    difference = (
        jnp.take_along_axis(ends[:batch], chosen, axis=1)
        - jnp.take_along_axis(ends[batch:], chosen, axis=1)
    ).astype(jnp.promote_types(x.dtype, jnp.float32))

    alphas, weights = schedules.get(schedule, steps)
    # The path waits for the endpoint pass: see `engine.after`.
    tied_x = engine.after(x, difference[:, :1].reshape((batch,) + (1,) * (x.ndim - 1)))
    gradient_sum, _ = engine.path_gradients(
        model,
        tied_x,
        chosen,
        lambda alpha, x: baseline + alpha * (x - baseline),
        jnp.asarray(alphas, x.dtype),
        weights,
        chunk_size=chunk_size,
    )
    values = gradient_sum * (x - baseline)[:, None]
    delta = values.reshape(batch, chosen.shape[1], -1).sum(axis=-1) - difference
    return Attribution(
        values=targets.squeeze(values),
        target=targets.squeeze(chosen),
        delta=targets.squeeze(delta),
        extras={"output_difference": targets.squeeze(difference)},
    )


@register("path")
def integrated_gradients(
    model: Model,
    x,
    *,
    target,
    baseline=0.0,
    steps: int = 50,
    schedule: str = "gauss_legendre",
    chunk_size=None,
) -> Attribution:
    """Integrated Gradients, evaluated over the whole path in one compiled program.

    phi_i(x) = (x_i - b_i) * integral_0^1 dF_t(b + a (x - b)) / dx_i da,

    approximated by sum_k w_k dF_t(b + a_k (x - b)) / dx_i with the `schedule`'s
    nodes a_k and weights w_k. The gradients at all `steps` points are evaluated
    `chunk_size` points at a time, so memory is bounded by the chunk and not by
    `steps`; the answer does not depend on the chunk size.

    Completeness: sum_i phi_i = F_t(x) - F_t(b) for the exact integral. The returned
    `delta` is the signed gap sum_i phi_i - (F_t(x) - F_t(b)) per example, and
    `relative_delta` divides it by |F_t(x) - F_t(b)|: it tells how converged the
    answer is.

    Args:
      model: a `jaxplain.Model`.
      x: a batch of inputs, `(batch, ...)`.
      target: an int, an int array `(batch,)` or `(batch, k)`, `"predicted"`, or
        `jaxplain.top_k(k)`. Several targets per example share one pass over the path.
      baseline: a scalar, one example (shape `x.shape[1:]`), or one per example.
      steps: number of points on the path.
      schedule: "gauss_legendre" (default; exact for polynomial paths of degree
        <= 2 steps - 1), "riemann_middle", "riemann_left", "riemann_right" or
        "trapezoid". See `jaxplain.schedules`.
      chunk_size: points evaluated at once; by default the largest chunk whose saved
        activations fit the memory budget (see `jaxplain.engine.default_chunk_size`).

    Returns:
      An `Attribution` with `values` shaped like `x` (or `(batch, k, ...)`), `target`,
      `delta` and `extras["output_difference"]`.

    Example:
      >>> import jax.numpy as jnp
      >>> import jaxplain
      >>> w = jnp.array([[1.0, -1.0], [2.0, 0.5]])
      >>> model = jaxplain.Model(lambda w, x: x @ w, w)
      >>> a = jaxplain.integrated_gradients(model, jnp.ones((1, 2)), target=0)
      >>> a.values
      Array([[1., 2.]], dtype=float32)

    References:
      Sundararajan, Taly, Yan. Axiomatic Attribution for Deep Networks.
      arXiv:1703.01365, 2017.
    """
    x, targets = _checks.prepare(model, x, target)
    baseline = _checks.baseline(baseline, x)
    steps = _checks.positive_int("steps", steps)
    schedule = _checks.schedule(schedule)
    schedules.get(schedule, steps)  # raises for a schedule that cannot use this many steps
    chunk_size = _checks.chunk_size(chunk_size, model, x, steps)
    return _integrated_gradients(
        model, x, baseline, targets, steps=steps, schedule=schedule, chunk_size=chunk_size
    )
