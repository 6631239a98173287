"""Integrated Gradients: the path integral of gradients from a baseline to the input."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from jaxplain import _checks, _random, blur, engine, schedules
from jaxplain.attribution import Attribution
from jaxplain.methods import auto_steps
from jaxplain.methods.registry import register
from jaxplain.model import Model, Targets


@engine.program(static_argnames=("steps", "schedule", "chunk_size"))
def _integrated_gradients(model, x, baseline, targets: Targets, *, steps, schedule, chunk_size):
    baseline = jnp.broadcast_to(baseline, x.shape).astype(x.dtype)
    ends = engine.endpoints(model, x, targets, baseline)
    values = straight_path(
        model, ends.x, baseline, ends.targets, steps=steps, schedule=schedule, chunk_size=chunk_size
    )
    return _path_attribution(targets, values, ends)


def straight_path(model, x, baseline, chosen, *, steps, schedule, chunk_size, context=None):
    """(x - b) times the schedule's quadrature of the gradient on the segment from b to x:
    IG's values (B, k, ...) for the classes `chosen`; layer IG's at a layer's output."""
    gradient_sum, _ = engine.path_gradients(
        model,
        x,
        chosen,
        lambda point, x: baseline + point[0].astype(x.dtype) * (x - baseline),
        engine.Indexed(steps, schedules.points(schedule, steps)),
        lambda point: point[1],
        chunk_size=chunk_size,
        context=context,
        keep_outputs=False,
    )
    return gradient_sum * (x - baseline).astype(gradient_sum.dtype)[:, None]


def _path_attribution(targets: Targets, values, ends: engine.Endpoints, extras=None):
    """A path method's Attribution: delta = sum(values) - (F(x) - F(baseline))."""
    return engine.attribution(
        targets, values, ends.targets, difference=ends.at_x - ends.at_reference, delta="sum", extras=extras
    )


def _one_target_per_row(x, baseline, chosen):
    """(B * k) rows, one per example and target: each pair can follow its own path."""
    count = chosen.shape[1]
    return (jnp.repeat(x, count, axis=0), jnp.repeat(baseline, count, axis=0), chosen.reshape(-1, 1))


@engine.program(static_argnames=("steps", "schedule", "pilot_steps", "chunk_size"))
def _pilot_integrated_gradients(
    model, x, baseline, targets: Targets, *, steps, schedule, pilot_steps, chunk_size
):
    batch = x.shape[0]
    baseline = jnp.broadcast_to(baseline, x.shape).astype(x.dtype)
    ends = engine.endpoints(model, x, targets, baseline)
    rows_x, rows_baseline, row_targets = _one_target_per_row(ends.x, baseline, ends.targets)

    def point(alpha, x):
        alpha = jnp.broadcast_to(alpha, x.shape[:1]).reshape((-1,) + (1,) * (x.ndim - 1))
        return rows_baseline + alpha.astype(x.dtype) * (x - rows_baseline)

    # Forward-only pilot at the interior pilot alphas; the ends are already known.
    interior = jnp.asarray(schedules.pilot_alphas(pilot_steps)[1:-1], x.dtype)
    outputs = engine.path_outputs(model, rows_x, row_targets, point, interior, chunk_size=chunk_size)
    pilot = jnp.concatenate(
        [
            ends.at_reference.reshape(-1, 1),
            outputs[:, :, 0].astype(ends.at_x.dtype),
            ends.at_x.reshape(-1, 1),
        ],
        axis=1,
    )
    at = schedules.pilot_points(schedule, pilot, steps, pilot_steps)  # each chunk's alphas and weights

    def params_at(indices):  # (size, rows) alphas and weights
        return jax.tree_util.tree_map(jnp.transpose, at(indices))

    gradient_sum, _ = engine.path_gradients(
        model,
        engine.tie(rows_x, pilot),
        row_targets,
        lambda params, x: point(params[0], x),
        engine.Indexed(steps, params_at),
        lambda params: params[1],
        chunk_size=chunk_size,
        keep_outputs=False,
    )
    gradient_sum = gradient_sum.reshape((batch, targets.count) + x.shape[1:])
    return _path_attribution(targets, gradient_sum * (x - baseline)[:, None], ends)


@engine.program(static_argnames=("max_steps", "keep_sums"))
def _auto_integrated_gradients(model, x, baseline, targets: Targets, tolerance, *, max_steps, keep_sums):
    batch = x.shape[0]
    baseline = jnp.broadcast_to(baseline, x.shape).astype(x.dtype)
    ends = engine.endpoints(model, x, targets, baseline)
    rows_x, rows_baseline, row_targets = _one_target_per_row(ends.x, baseline, ends.targets)
    gradient_sum, steps, forward_steps, local_gaps = auto_steps.integrate(
        model,
        rows_x,
        rows_baseline,
        row_targets,
        ends.at_reference.reshape(-1),
        ends.at_x.reshape(-1),
        tolerance=tolerance,
        max_steps=max_steps,
        keep_sums=keep_sums,
    )
    shape = (batch, targets.count)
    values = gradient_sum.reshape(shape + x.shape[1:]) * (x - baseline)[:, None]
    scale = jnp.abs(ends.at_x - ends.at_reference)
    local_gaps = local_gaps.reshape(shape) / jnp.maximum(scale, jnp.finfo(scale.dtype).tiny)
    extras = {
        "steps": steps.reshape(shape),
        "forward_steps": forward_steps.reshape(shape),
        "local_gaps": local_gaps,
    }
    attribution = _path_attribution(targets, values, ends, extras)
    # converged: the tolerance as the user reads it, on the very numbers they get back
    converged = attribution.relative_delta <= tolerance
    return dataclasses.replace(attribution, extras={**attribution.extras, "converged": converged})


@register("path")
def integrated_gradients(
    model: Model,
    x,
    *,
    target,
    baseline=0.0,
    steps: int = 50,
    schedule: str = "gauss_legendre",
    pilot_steps=None,
    tolerance: float = 0.01,
    max_steps: int = 1024,
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

    Schedules (see `jaxplain.schedules` and docs/schedules.md for which to use when):
    the fixed rules "gauss_legendre", "riemann_middle", "riemann_left",
    "riemann_right" and "trapezoid" place the same points for every example. The pilot
    schedules first evaluate F_t, forward only, at `pilot_steps` + 1 uniform alphas and
    at geometric ones towards the baseline (10^-k / N down to 1e-6, which find a change
    within alpha < 1e-3, as a normalised network's from a zero baseline; see
    `jaxplain.schedules.pilot_alphas`; the two ends come from the pass that computes
    `delta`), then place the `steps` gradient points of each example (and target) where
    its output changes: "nonuniform" shares them among the uniform pilot intervals in
    proportion to the change (the pre-processing idea of arXiv:2302.11107),
    "pilot_gauss" cuts the path into panels of equal probability under a density that is
    half uniform and half the pilot's changes, with a 4-point Gauss-Legendre rule in
    each. `steps="auto"` refines each example's path until its completeness gap is
    within `tolerance` (see `jaxplain.methods.auto_steps`).

    Args:
      model: a `jaxplain.Model`.
      x: a batch of inputs, `(batch, ...)`.
      target: an int, an int array `(batch,)` or `(batch, k)`, `"predicted"`, or
        `jaxplain.top_k(k)`. Several targets per example share one pass over the path
        (the pilot schedules and "auto" give each target its own points).
      baseline: a scalar, one example (shape `x.shape[1:]`), or one per example.
      steps: number of gradient points on the path, or "auto".
      schedule: "gauss_legendre" (default; exact for polynomial paths of degree
        <= 2 steps - 1), "riemann_middle", "riemann_left", "riemann_right",
        "trapezoid", "nonuniform" or "pilot_gauss".
      pilot_steps: uniform pilot intervals N of the pilot schedules (N <= steps;
        `len(jaxplain.schedules.pilot_alphas(N)) - 2` forward-only evaluations, N - 1
        uniform and about log10(1e6 / N) towards the baseline); by default steps // 4.
      tolerance: with steps="auto", the bound on `relative_delta` that
        `extras["converged"]` reports. The path is refined until the sum of its
        intervals' |completeness gaps| is within tolerance * |F_t(x) - F_t(b)| (which
        implies it, and which gaps of opposite signs cannot meet by cancelling) or
        `max_steps` is reached. Values below about 1e-4 can be out of float32's reach,
        and then end at the cap.
      max_steps: with steps="auto", the cap on gradient evaluations per example (at
        most `jaxplain.methods.auto_steps.MAX_STEPS`, 65536).
      chunk_size: points evaluated at once; by default the largest chunk whose saved
        activations fit the memory budget (see `jaxplain.engine.default_chunk_size`).
        With steps="auto" each refinement round evaluates 8 points per example at once.

    Returns:
      An `Attribution` with `values` shaped like `x` (or `(batch, k, ...)`), `target`,
      `delta` and `output_difference`; with steps="auto" also
      `extras["steps"]` (gradient evaluations used), `extras["forward_steps"]`,
      `extras["converged"]` (exactly `relative_delta <= tolerance`) and
      `extras["local_gaps"]` (the sum of the intervals' |gaps| / |F_t(x) - F_t(b)|,
      within tolerance unless the example stopped at `max_steps`) per example.

    Example:
      >>> import jax.numpy as jnp
      >>> import jaxplain
      >>> w = jnp.array([[1.0, -1.0], [2.0, 0.5]])
      >>> model = jaxplain.Model(lambda w, x: x @ w, w)
      >>> a = jaxplain.integrated_gradients(model, jnp.ones((1, 2)), target=0)
      >>> a.values
      Array([[1., 2.]], dtype=float32)
      >>> auto = jaxplain.integrated_gradients(model, jnp.ones((1, 2)), target=0, steps="auto")
      >>> auto.extras["steps"], auto.extras["converged"]  # a linear path converges at once
      (Array([8], dtype=int32), Array([ True], dtype=bool))

    References:
      Sundararajan, Taly, Yan. Axiomatic Attribution for Deep Networks.
      arXiv:1703.01365, 2017.
      Bhat, Raychowdhury. Non-Uniform Interpolation in Integrated Gradients for
      Low-Latency Explainable-AI. arXiv:2302.11107, 2023.
      Walker, Jha, Chen, Ewetz. Integrated Decision Gradients: Compute Your
      Attributions Where the Model Makes Its Decision. arXiv:2305.20052, 2024.
    """
    x, targets = _checks.prepare(model, x, target)
    baseline = _checks.baseline(baseline, x)
    if isinstance(steps, str) and steps == "auto":
        if schedule != "gauss_legendre" or pilot_steps is not None or chunk_size is not None:
            raise ValueError(
                "steps='auto' chooses its own points (nested midpoint intervals, see "
                "jaxplain.methods.auto_steps): leave schedule, pilot_steps and chunk_size unset"
            )
        tolerance = _checks.fraction("tolerance", tolerance)
        max_steps = _checks.positive_int("max_steps", max_steps)
        if max_steps > auto_steps.MAX_STEPS:
            raise ValueError(
                f"max_steps must be <= {auto_steps.MAX_STEPS} with steps='auto' (each round of "
                f"{2 * auto_steps.SPLITS} points ranks all intervals), got {max_steps}; for more "
                f"points use a fixed schedule, e.g. steps={max_steps}"
            )
        rows = x.shape[0] * targets.count
        features = int(np.prod(x.shape[1:], dtype=np.int64))
        keep_sums = auto_steps.keeps_sums(rows, features, max_steps, engine.accumulation_dtype(x))
        return _auto_integrated_gradients(
            model,
            x,
            baseline,
            targets,
            jnp.asarray(tolerance, jnp.float32),
            max_steps=max_steps,
            keep_sums=keep_sums,
        )
    if isinstance(steps, str):
        raise ValueError(f"steps must be a positive int or 'auto', got {steps!r}")
    steps = _checks.positive_int("steps", steps)
    schedule = _checks.schedule(schedule, pilot=True)
    if schedule in schedules.PILOT_SCHEDULES:
        pilot_steps = schedules.default_pilot_steps(steps) if pilot_steps is None else pilot_steps
        pilot_steps = _checks.positive_int("pilot_steps", pilot_steps)
        if pilot_steps > steps:
            raise ValueError(
                f"pilot_steps must be <= steps (every pilot interval gets a point), got "
                f"pilot_steps={pilot_steps} and steps={steps}"
            )
        chunk_size = _checks.chunk_size(chunk_size)
        return _pilot_integrated_gradients(
            model,
            x,
            baseline,
            targets,
            steps=steps,
            schedule=schedule,
            pilot_steps=pilot_steps,
            chunk_size=chunk_size,
        )
    if pilot_steps is not None:
        raise ValueError(
            f"pilot_steps is used by the pilot schedules {sorted(schedules.PILOT_SCHEDULES)} only, not by schedule={schedule!r}"
        )
    schedules.check_steps(schedule, steps)
    chunk_size = _checks.chunk_size(chunk_size)
    return _integrated_gradients(
        model, x, baseline, targets, steps=steps, schedule=schedule, chunk_size=chunk_size
    )


@engine.program(static_argnames=("samples", "chunk_size"))
def _expected_gradients(model, x, background, targets: Targets, key, *, samples, chunk_size):
    batch = x.shape[0]
    chunk_size = engine.points_per_chunk(chunk_size, model, x, samples)
    ends = engine.endpoints(model, x, targets)
    chosen = ends.targets
    # F at every reference, a chunk of references at a time (the set is the user's).
    at_background = engine.forward_rows(model, background.astype(x.dtype))

    def draws(indices):
        """Draw i of every example (a reference and an alpha) from `fold_in(key, i)`, so
        no draw for all samples is held and the chunk does not change them: (size, B) each."""

        def one(point_key):
            index_key, alpha_key = jax.random.split(point_key)
            return (
                jax.random.randint(index_key, (batch,), 0, background.shape[0]),
                jax.random.uniform(alpha_key, (batch,), x.dtype),
            )

        return jax.vmap(one)(_random.point_keys(key, indices))

    def point(draw, x):
        index, alpha = draw
        start = background[index].astype(x.dtype)
        return start + alpha[(slice(None),) + (None,) * (x.ndim - 1)] * (x - start)

    def contribution(draws, x, grads):  # each gradient times its own (x - b_k)
        steps = (x[None] - background[draws[0]].astype(x.dtype)).swapaxes(0, 1)
        return grads * steps[:, :, None]

    gradient_sum, _ = engine.path_gradients(
        model,
        ends.x,
        chosen,
        point,
        engine.Indexed(samples, draws),
        lambda draws: jnp.full(draws[1].shape[:1], 1.0 / samples),
        chunk_size=chunk_size,
        contribution_fn=contribution,
        keep_outputs=False,
    )

    # E[F(b)] over the drawn references of each example: the same draws again, folded
    # into a sum (no model evaluation).
    def drawn(total, start, size, _):
        index, _ = draws(start + jnp.arange(size, dtype=jnp.int32))  # (size, B)
        outputs = jnp.take_along_axis(at_background[index.T], chosen[:, None, :], axis=2)
        return total + outputs.sum(axis=1).astype(total.dtype), None

    total, _ = engine.fold_chunks(
        drawn,
        samples,
        chunk_size,
        x,
        jnp.zeros_like(ends.at_x),
        dependency=lambda total: total[:, :1].reshape((batch,) + (1,) * (x.ndim - 1)),
        unroll=False,
    )
    return _path_attribution(targets, gradient_sum, ends._replace(at_reference=total / samples))


@register("path", randomized=True)
def expected_gradients(
    model: Model, x, *, target, background, key, samples: int = 50, chunk_size=None
) -> Attribution:
    """Expected Gradients (GradientSHAP): IG averaged over references drawn from data.

    phi_i(x) = E_{b ~ background, a ~ U(0, 1)} [(x_i - b_i) dF_t(b + a (x - b)) / dx_i],

    estimated with `samples` draws (b_k, a_k) per example. Its completeness is in
    expectation: sum_i phi_i = F(x) - E_b[F(b)], and `delta` measures the gap against
    the mean of F over the references drawn for each example.

    Args:
      model: a `jaxplain.Model`.
      x: a batch of inputs, `(batch, ...)`.
      target: as for `integrated_gradients`.
      background: reference examples `(M, *x.shape[1:])`, e.g. a few hundred training
        inputs; each draw picks one uniformly.
      key: a `jax.random.key`; same key, same draws.
      samples: draws per example.
      chunk_size: draws evaluated at once (default: as for integrated_gradients).

    Returns:
      An `Attribution` shaped like `x` (or `(batch, k, ...)`), with `delta`.

    References:
      Erion, Janizek, Sturmfels, Lundberg, Lee. Improving performance of deep learning
      models with axiomatic attribution priors and expected gradients.
      arXiv:1906.10670, 2019. Lundberg, Lee. A Unified Approach to Interpreting Model
      Predictions (GradientExplainer). arXiv:1705.07874, 2017.
    """
    x, targets = _checks.prepare(model, x, target)
    background = _checks.as_float_array("background", background)
    if (
        background.ndim != x.ndim
        or tuple(background.shape[1:]) != tuple(x.shape[1:])
        or background.shape[0] < 1
    ):
        raise ValueError(
            f"background must hold M >= 1 reference examples of shape {tuple(x.shape[1:])}, "
            f"i.e. ({'M'}, {', '.join(map(str, x.shape[1:]))}); got {tuple(background.shape)}"
        )
    key = _checks.key(key)
    samples = _checks.positive_int("samples", samples)
    chunk_size = _checks.chunk_size(chunk_size)
    return _expected_gradients(model, x, background, targets, key, samples=samples, chunk_size=chunk_size)


@engine.program(static_argnames=("max_sigma", "steps", "chunk_size"))
def _blur_ig(model, x, targets: Targets, *, max_sigma, steps, chunk_size):
    sigmas = jnp.linspace(max_sigma, 0.0, steps + 1, dtype=x.dtype)
    start = blur.gaussian(x, sigmas[0], max_sigma)
    ends = engine.endpoints(model, x, targets, start)
    segments = (sigmas[:-1], sigmas[1:])  # each step goes from blur sigma_k to sigma_{k+1}

    def point(segment, x):
        return blur.gaussian(x, 0.5 * (segment[0] + segment[1]), max_sigma)

    def contribution(segments, x, grads):
        def step(high, low):
            return blur.gaussian(x, low, max_sigma) - blur.gaussian(x, high, max_sigma)

        change = jax.vmap(step, out_axes=1)(*segments)  # (B, size, ...)
        return grads * change[:, :, None]

    gradient_sum, _ = engine.path_gradients(
        model,
        ends.x,
        ends.targets,
        point,
        segments,
        jnp.ones(steps),
        chunk_size=chunk_size,
        contribution_fn=contribution,
        keep_outputs=False,
    )
    return _path_attribution(targets, gradient_sum, ends)


@register("path")
def blur_ig(
    model: Model, x, *, target, max_sigma: float = 50.0, steps: int = 100, chunk_size=None
) -> Attribution:
    """Blur IG: integrate gradients along a path of decreasing Gaussian blur.

    The path runs from x blurred with `max_sigma` (the baseline: no spatial
    information) to x itself. With blur levels sigma_0 = max_sigma > ... > sigma_n = 0,

        phi(x) = sum_k grad F_t(x * G(s_k)) (x * G(sigma_{k+1}) - x * G(sigma_k)),

    gradients taken at the mid-level s_k = (sigma_k + sigma_{k+1}) / 2 and multiplied by
    the exact change of the blurred image over the step, so the changes add up to
    x - x * G(max_sigma) and `delta` measures only the quadrature error. The blur acts
    on the spatial axes (all but the first and last of NHWC-like inputs), reflecting at
    the borders.

    Args:
      model: a `jaxplain.Model`.
      x: images `(batch, H, W, C)` (any rank >= 3; axes 1..ndim-2 are blurred).
      target: as for `integrated_gradients`.
      max_sigma: the blur of the starting point, in pixels.
      steps: blur levels on the path.
      chunk_size: levels evaluated at once (default: as for integrated_gradients).

    Returns:
      An `Attribution` shaped like `x` (or `(batch, k, ...)`), with `delta` against
      F(x) - F(blurred x).

    References:
      Xu, Venugopalan, Sundararajan. Attribution in Scale and Space. CVPR 2020,
      arXiv:2004.03383.
    """
    x, targets = _checks.prepare(model, x, target)
    if x.ndim < 3:
        raise ValueError(
            f"blur_ig needs spatial axes: x of shape (batch, H, W, C) or similar, got {tuple(x.shape)}"
        )
    # finite and > 0: inf passed a range check and overflowed in the blur's radius
    max_sigma = _checks.number("max_sigma", max_sigma, low=0.0, above=True)
    steps = _checks.positive_int("steps", steps)
    chunk_size = _checks.chunk_size(chunk_size)
    return _blur_ig(model, x, targets, max_sigma=max_sigma, steps=steps, chunk_size=chunk_size)


@engine.program(static_argnames=("steps", "chunk_size"))
def _idgi(model, x, baseline, targets: Targets, *, steps, chunk_size):
    baseline = jnp.broadcast_to(baseline, x.shape).astype(x.dtype)
    ends = engine.endpoints(model, x, targets, baseline)
    alphas = jnp.linspace(0.0, 1.0, steps + 1, dtype=x.dtype)

    def point(alpha, x):
        return baseline + alpha * (x - baseline)

    outputs = engine.path_outputs(model, ends.x, ends.targets, point, alphas, chunk_size=chunk_size)
    changes = jnp.diff(outputs.astype(engine.accumulation_dtype(x)), axis=1).swapaxes(0, 1)  # (steps, B, k)

    def contribution(params, x, grads):
        change = params[1].swapaxes(0, 1)  # (B, size, k)
        squares = grads**2
        norms = squares.reshape(squares.shape[:3] + (-1,)).sum(axis=-1)
        share = squares / jnp.where(norms > 0, norms, 1.0).reshape(norms.shape + (1,) * (x.ndim - 1))
        return share * change.reshape(change.shape + (1,) * (x.ndim - 1))

    gradient_sum, _ = engine.path_gradients(
        model,
        engine.tie(x, outputs[:, -1]),
        ends.targets,
        lambda params, x: point(params[0], x),
        (alphas[:-1], changes),
        jnp.ones(steps),
        chunk_size=chunk_size,
        contribution_fn=contribution,
        keep_outputs=False,
    )
    return _path_attribution(targets, gradient_sum, ends)


@register("path")
def idgi(model: Model, x, *, target, baseline=0.0, steps: int = 50, chunk_size=None) -> Attribution:
    """Important Direction Gradient Integration on the straight IG path.

    IG credits each step's output change along the path direction, which includes
    gradient directions the output does not care about. IDGI credits the change
    F(p_{k+1}) - F(p_k) of step k to the features in proportion to their squared
    gradient at p_k:

        phi_i(x) = sum_k  g_i(p_k)^2 / ||g(p_k)||^2  (F(p_{k+1}) - F(p_k)),

    on the points p_k = b + (k / steps)(x - b), k = 0..steps. The output changes
    telescope, so sum_i phi_i = F(x) - F(b) exactly (up to rounding) at any `steps`.
    One forward pass over the steps + 1 points, then one gradient pass.

    Args:
      model: a `jaxplain.Model`.
      x: a batch of inputs, `(batch, ...)`.
      target: as for `integrated_gradients`.
      baseline: a scalar, one example, or one per example.
      steps: path steps.
      chunk_size: points evaluated at once (default: as for integrated_gradients).

    Returns:
      An `Attribution` shaped like `x` (or `(batch, k, ...)`), with `delta`.

    References:
      Yang, Wang, Bilgic. IDGI: A Framework to Eliminate Explanation Noise from
      Integrated Gradients. CVPR 2023, arXiv:2303.14242.
    """
    x, targets = _checks.prepare(model, x, target)
    baseline = _checks.baseline(baseline, x)
    steps = _checks.positive_int("steps", steps)
    chunk_size = _checks.chunk_size(chunk_size)
    return _idgi(model, x, baseline, targets, steps=steps, chunk_size=chunk_size)


def _guided_step(current, gradient, inputs, baseline, step_fraction, *, fraction, max_dist, max_moves):
    """Moves one row (flattened features) along the Guided IG path for one step.

    Returns the new point and the attribution gained: gradient * change of each feature.
    """
    span = inputs - baseline
    total_l1 = jnp.abs(span).sum()
    alpha_low = jnp.maximum(step_fraction - max_dist, 0.0)
    alpha_high = jnp.minimum(step_fraction + max_dist, 1.0)
    low_point = baseline + alpha_low * span
    high_point = baseline + alpha_high * span
    target_l1 = total_l1 * (1.0 - step_fraction)
    magnitude = jnp.abs(gradient)

    def move(state):
        point, blocked, gained, _, moves = state
        start = point
        progress = jnp.where(span != 0, (point - baseline) / jnp.where(span != 0, span, 1.0), alpha_high)
        point = jnp.where(progress < alpha_low, low_point, point)  # nobody lags behind
        l1 = jnp.abs(point - inputs).sum()
        reached = jnp.isclose(l1, target_l1, rtol=1e-5, atol=1e-7 * (1.0 + total_l1))
        blocked = blocked | (point == high_point)
        free = jnp.where(blocked, jnp.inf, magnitude)
        threshold = jnp.quantile(free, fraction, method="lower")
        chosen = (free <= threshold) & ~blocked
        available = (jnp.abs(point - high_point) * chosen).sum()
        gamma = jnp.where(available > 0, (l1 - target_l1) / jnp.where(available > 0, available, 1.0), jnp.inf)
        moved = jnp.where(gamma > 1, high_point, point + gamma * (high_point - point))
        point = jnp.where(reached, point, jnp.where(chosen, moved, point))
        done = reached | (gamma <= 1)
        return point, blocked, gained + (point - start) * gradient, done, moves + 1

    state = (current, jnp.zeros(current.shape, bool), jnp.zeros_like(current), False, 0)
    point, _, gained, _, _ = jax.lax.while_loop(lambda s: ~s[3] & (s[4] < max_moves), move, state)
    return point, gained


@engine.program(static_argnames=("steps", "fraction", "max_dist"))
def _guided_ig(model, x, baseline, targets: Targets, *, steps, fraction, max_dist):
    batch = x.shape[0]
    baseline = jnp.broadcast_to(baseline, x.shape).astype(x.dtype)
    ends = engine.endpoints(model, x, targets, baseline)
    count = targets.count
    # Each (example, target) pair follows its own path: one row each.
    rows_x = jnp.repeat(ends.x, count, axis=0).reshape(batch * count, -1)
    rows_base = jnp.repeat(baseline, count, axis=0).reshape(batch * count, -1)
    row_targets = ends.targets.reshape(-1, 1)
    acc = engine.accumulation_dtype(x)
    step = jax.vmap(
        lambda c, g, i, b, f: _guided_step(
            c, g, i, b, f, fraction=fraction, max_dist=max_dist, max_moves=int(np.ceil(1 / fraction)) + 8
        ),
        in_axes=(0, 0, 0, 0, None),
    )

    def body(t, state):
        current, attribution = state
        _, _, grads = engine.gradients(model, current.reshape((-1,) + x.shape[1:]), lambda _: row_targets)
        gradient = grads[:, 0].reshape(current.shape).astype(acc)
        current, gained = step(current, gradient, rows_x, rows_base, (t + 1.0) / steps)
        return current, attribution + gained

    _, attribution = jax.lax.fori_loop(0, steps, body, (rows_base, jnp.zeros(rows_x.shape, acc)))
    values = attribution.reshape((batch, count) + x.shape[1:])
    return _path_attribution(targets, values, ends)


@register("path")
def guided_ig(
    model: Model,
    x,
    *,
    target,
    baseline=0.0,
    steps: int = 200,
    fraction: float = 0.25,
    max_dist: float = 0.02,
) -> Attribution:
    """Guided Integrated Gradients: an adaptive path that moves low-gradient features first.

    Starting at the baseline, each of the `steps` steps must shrink the L1 distance to
    x to (1 - (t + 1) / steps) of the total. It does so by moving, among the features
    not yet at their upper bound for the step, the `fraction` with the smallest
    |gradient| towards x (all the way to the bound, or the part needed), repeating
    until the distance is reached; features may get ahead of or fall behind the
    straight path by at most `max_dist` (as a fraction of the path). Each step's
    gradient times each feature's change is credited to it. Sequential by nature: a
    `lax.fori_loop` over steps inside one compiled program, all examples (and all
    targets, each with its own path) advancing together.

    Args:
      model: a `jaxplain.Model`.
      x: a batch of inputs, `(batch, ...)`.
      target: as for `integrated_gradients`; each target gets its own path.
      baseline: a scalar, one example, or one per example.
      steps: path steps (gradient evaluations).
      fraction: the share of the remaining features moved at a time.
      max_dist: how far a feature may stray from the straight path (0..1).

    Returns:
      An `Attribution` shaped like `x` (or `(batch, k, ...)`), with `delta`.

    References:
      Kapishnikov, Venugopalan, Avci, Wedin, Terry, Bolukbasi. Guided Integrated
      Gradients: An Adaptive Path Method for Removing Noise. CVPR 2021,
      arXiv:2106.09788.
    """
    x, targets = _checks.prepare(model, x, target)
    baseline = _checks.baseline(baseline, x)
    steps = _checks.positive_int("steps", steps)
    fraction = _checks.fraction("fraction", fraction, low=1e-6)
    max_dist = _checks.fraction("max_dist", max_dist)
    return _guided_ig(model, x, baseline, targets, steps=steps, fraction=fraction, max_dist=max_dist)
