"""`integrated_gradients(..., steps="auto")`: adaptive quadrature until IG has converged.

The path [0, 1] is cut into intervals, each integrated by the midpoint rule. Completeness
holds on every interval: the integral of the gradient along [a, b], dotted with
x - baseline, is F(b) - F(a), which a forward pass gives exactly. So each interval has a
*local gap*

    gap_j = (x - baseline) . Q_j - (F(b_j) - F(a_j)),   Q_j = (b_j - a_j) grad F(midpoint),

and sum_j gap_j is the usual `delta`. Starting from `INITIAL_INTERVALS` equal intervals,
every round cuts the `SPLITS` intervals with the largest |gap_j| of every example into
thirds, until

    sum_j |gap_j| <= tolerance * |F(x) - F(baseline)|

or the next round would pass `max_steps` gradient evaluations. This stopping test is
stricter than the tolerance the user states, |delta| <= tolerance * |F(x) - F(baseline)|
(`relative_delta <= tolerance`), which it implies: local gaps of opposite signs cannot
cancel, so an answer that is right only by cancellation goes on being refined. An example
has *converged* when `relative_delta <= tolerance`, whether the loop stopped early or at
the cap: `extras["converged"]` is exactly that comparison, and `extras["local_gaps"]`
holds sum_j |gap_j| / |F(x) - F(baseline)|, which is within the tolerance wherever the loop
stopped before the cap. The two can disagree at the cap: every gap_j carries the rounding
of the two outputs it subtracts, so in float32 the sum of thousands of them has a floor of
about (intervals) x (the outputs' rounding), which can exceed tolerance * |F(x) - F(b)|
where the output changes little from the baseline to x (normalised networks from a zero
baseline: docs/schedules.md) while the signed sum, `delta`, is far within it.

The point sets are nested: the middle third of an interval keeps its midpoint, so a cut
costs two new gradients (the outer thirds' midpoints) and two forward passes (the cut
points), and no evaluation is ever thrown away. For a ReLU network the gradient is
constant between the points where a unit switches, so an interval with no switch has a
gap of zero and is not refined.

The loop is a `lax.while_loop` inside the compiled program: all examples (and targets,
each pair with its own intervals) advance together, those whose local gaps are within
the bound are left unchanged, and the loop ends when every one is or has reached the cap.
`extras["steps"]` holds the gradient evaluations each example used,
`extras["forward_steps"]` its forward-only ones; the program's run time follows the
slowest example of the batch.

Memory and time. One round evaluates `2 * SPLITS` points per example at once and
updates only the intervals it cuts. Per interval the loop keeps a few numbers (its ends,
outputs and gap); the answer is one running input-sized sum per example. A cut removes
two thirds of the interval's gradient sum from the running sum, so that vector is needed
again: while the input-sized sums of all `max_steps` intervals fit the engine's chunk
budget (`jaxplain.engine.chunk_budget_bytes`) they are kept, and otherwise the cut
interval's midpoint gradient is evaluated again with its outer thirds (3 * SPLITS
gradients a round instead of 2 * SPLITS, counted in `extras["steps"]`), so memory never
grows with max_steps x features. Each round also ranks every interval's gap, so
`max_steps` is at most MAX_STEPS; a fixed schedule takes any number of steps.

The settings are those of benchmarks/iso_convergence.py's study (docs/schedules.md):
bisection with 2-point Gauss-Legendre panels, which throws the split interval's points
away, needed about twice the evaluations of uniform midpoints on the shipped ReLU models
for 1% L2 error; nested thirds match or beat them.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxplain import engine

INITIAL_INTERVALS = 8
SPLITS = 4
# Rounds rank all intervals' gaps (linear in the intervals), so the rounds' cost grows as
# the square of max_steps: 65536 steps take ~8k rounds.
MAX_STEPS = 1 << 16


def rounds(max_steps: int, per_round: int = 2 * SPLITS) -> int:
    """How many refinement rounds fit in `max_steps` gradient evaluations (>= 0)."""
    return max(0, (max_steps - INITIAL_INTERVALS) // per_round)


def keeps_sums(rows: int, features: int, max_steps: int, dtype) -> bool:
    """Whether every interval's input-sized gradient sum fits the chunk budget."""
    capacity = INITIAL_INTERVALS + 2 * SPLITS * rounds(max_steps)
    return rows * capacity * features * jnp.dtype(dtype).itemsize <= engine.chunk_budget_bytes()


def integrate(
    model,
    rows_x,
    rows_baseline,
    row_targets,
    at_baseline,
    at_x,
    *,
    tolerance,
    max_steps: int,
    keep_sums: bool,
):
    """Adaptive IG gradient sums for R rows with one target each.

    Args:
      model: the model.
      rows_x, rows_baseline: (R, ...) inputs and baselines.
      row_targets: (R, 1) int targets.
      at_baseline, at_x: (R,) target outputs at the baseline and at x.
      tolerance: the relative bound on sum_j |gap_j| (traced).
      max_steps: the cap on gradient evaluations per row (static).
      keep_sums: keep every interval's gradient sum (`keeps_sums`, static) rather than
        evaluate a cut interval's midpoint again.

    Returns:
      `(gradient_sum, steps, forward_steps, local_gaps)`: (R, ...) integral of the
      gradient over [0, 1] (to be multiplied by x - baseline), the evaluations each row
      used, and sum_j |gap_j| (R,), within tolerance * |at_x - at_baseline| unless the
      row stopped at the cap.
    """
    count = rows_x.shape[0]
    feature_shape = rows_x.shape[1:]
    acc = engine.accumulation_dtype(rows_x)
    span = (rows_x - rows_baseline).astype(acc).reshape(count, -1)
    keep = keep_sums
    # a round's gradients: the outer thirds' midpoints, and without kept sums the cut
    # intervals' midpoints again
    per_round = (2 if keep else 3) * SPLITS

    def points(alphas):  # (R, n) -> (R * n, ...) points on each row's path
        alpha = alphas.reshape(alphas.shape + (1,) * len(feature_shape)).astype(rows_x.dtype)
        return (rows_baseline[:, None] + alpha * (rows_x - rows_baseline)[:, None]).reshape(
            (-1,) + feature_shape
        )

    def repeated_targets(n):
        return jnp.repeat(row_targets, n, axis=0)

    def outputs_at(alphas):
        """F_t at alphas (R, n), forward only."""
        outputs = engine.forward(model, points(alphas))
        chosen = jnp.take_along_axis(outputs, repeated_targets(alphas.shape[1]), axis=1)
        return chosen.reshape(alphas.shape).astype(acc)

    def gradients_at(alphas):
        """Gradients of F_t at alphas (R, n), (R, n, D)."""
        _, _, grads = engine.gradients(model, points(alphas), lambda _: repeated_targets(alphas.shape[1]))
        return grads[:, 0].astype(acc).reshape(alphas.shape + (-1,))

    def along(sums):  # span . Q_j for gradient sums (R, n, D)
        return jnp.einsum("rnd,rd->rn", sums, span, precision=jax.lax.Precision.HIGHEST)

    total_rounds = rounds(max_steps, per_round)
    capacity = INITIAL_INTERVALS + 2 * SPLITS * total_rounds
    edges = jnp.broadcast_to(
        jnp.linspace(0.0, 1.0, INITIAL_INTERVALS + 1, dtype=acc), (count, INITIAL_INTERVALS + 1)
    )
    inner = outputs_at(edges[:, 1:-1]) if INITIAL_INTERVALS > 1 else jnp.zeros((count, 0), acc)
    f_edges = jnp.concatenate([at_baseline[:, None], inner, at_x[:, None]], axis=1)
    starts, widths = edges[:, :-1], edges[:, 1:] - edges[:, :-1]
    sums = gradients_at(starts + widths / 2) * widths[:, :, None]

    def padded(value):
        pad = [(0, 0), (0, capacity - INITIAL_INTERVALS)] + [(0, 0)] * (value.ndim - 2)
        return jnp.pad(value, pad)

    state = {
        "start": padded(starts),
        "width": padded(widths),
        "f_left": padded(f_edges[:, :-1]),
        "f_right": padded(f_edges[:, 1:]),
        "along": padded(along(sums)),
        "total": sums.sum(axis=1),
        "used": jnp.full((count,), INITIAL_INTERVALS, jnp.int32),
        "steps": jnp.full((count,), INITIAL_INTERVALS, jnp.int32),
        "forward_steps": jnp.full((count,), INITIAL_INTERVALS - 1, jnp.int32),
        "round": jnp.zeros((), jnp.int32),
    }
    if keep:
        state["sum"] = padded(sums)
    state["gap"] = jnp.abs(state["along"] - (state["f_right"] - state["f_left"]))
    bound = tolerance * jnp.abs(at_x - at_baseline)

    def open_rows(state):
        return state["gap"].sum(axis=1) > bound

    def keep_going(state):
        return (state["round"] < total_rounds) & open_rows(state).any()

    def refine(state):
        active = open_rows(state)
        rows = jnp.arange(count)[:, None]
        in_use = jnp.arange(capacity) < state["used"][:, None]
        _, chosen = jax.lax.top_k(
            jnp.where(in_use, state["gap"], -1.0), SPLITS
        )  # (R, s): the intervals to cut
        start, width = state["start"][rows, chosen], state["width"][rows, chosen]
        f_left, f_right = state["f_left"][rows, chosen], state["f_right"][rows, chosen]
        third = width / 3
        # Thirds of each interval: the middle third keeps the interval's midpoint (and
        # its gradient); the outer thirds get new midpoints, the cut points forward passes.
        f_cuts = outputs_at(jnp.concatenate([start + third, start + 2 * third], 1))
        f_one, f_two = f_cuts[:, :SPLITS], f_cuts[:, SPLITS:]
        alphas = [start + third / 2, start + 2.5 * third] + ([] if keep else [start + 1.5 * third])
        grads = gradients_at(jnp.concatenate(alphas, 1))
        outer = grads[:, : 2 * SPLITS] * jnp.concatenate([third, third], 1)[..., None]
        cut = state["sum"][rows, chosen] if keep else grads[:, 2 * SPLITS :] * width[..., None]
        # The running sum loses two thirds of each cut interval and gains the outer thirds.
        change = outer.sum(axis=1) - (2.0 / 3.0) * cut.sum(axis=1)
        lower = jnp.concatenate([f_one, f_left, f_two], 1)
        upper = jnp.concatenate([f_two, f_one, f_right], 1)
        middle = state["along"][rows, chosen] / 3
        new_along = jnp.concatenate([middle, along(outer)], 1)
        values = {
            "start": jnp.concatenate([start + third, start, start + 2 * third], 1),
            "width": jnp.concatenate([third, third, third], 1),
            "f_left": lower,
            "f_right": upper,
            "along": new_along,
            "gap": jnp.abs(new_along - (upper - lower)),
        }
        if keep:
            values["sum"] = jnp.concatenate([cut / 3, outer], 1)
        # The middle thirds take the cut intervals' slots, the outer thirds new ones; only
        # those slots are written (in place), and only for rows still refining.
        slots = jnp.concatenate([chosen, state["used"][:, None] + jnp.arange(2 * SPLITS)], 1)
        updated = dict(state)
        for name, value in values.items():
            old = state[name][rows, slots]
            mask = active.reshape((count,) + (1,) * (old.ndim - 1))
            updated[name] = state[name].at[rows, slots].set(jnp.where(mask, value, old))
        step = active.astype(jnp.int32)
        updated["total"] = state["total"] + jnp.where(active[:, None], change, 0.0)
        updated["used"] = state["used"] + 2 * SPLITS * step
        updated["steps"] = state["steps"] + per_round * step
        updated["forward_steps"] = state["forward_steps"] + 2 * SPLITS * step
        updated["round"] = state["round"] + 1
        return updated

    state = jax.lax.while_loop(keep_going, refine, state)
    gradient_sum = state["total"].reshape((count,) + feature_shape)
    return gradient_sum, state["steps"], state["forward_steps"], state["gap"].sum(axis=1)
