"""Interpolation schedules: where on the path [0, 1] a path method evaluates, and with what weight.

A schedule maps a number of steps `n` to `(alphas, weights)`, two float64 numpy arrays of
length `n`, so that sum_k weights[k] * g(alphas[k]) approximates the integral of g over
[0, 1]. They are computed in numpy at trace time: `n` is static, so the arrays become
constants of the compiled program.

Conventions (the same as Captum's, see docs/architecture.md):

  riemann_left    alphas k/n,        k = 0..n-1, weights 1/n
  riemann_right   alphas (k+1)/n,    weights 1/n
  riemann_middle  alphas (k+1/2)/n,  weights 1/n
  trapezoid       alphas k/(n-1),    weights 1/(n-1), halved at both ends (n >= 2).
                  The weights sum to 1, so constants integrate exactly.
  gauss_legendre  alphas (1+t)/2, weights w/2 for the n-point Gauss-Legendre nodes t and
                  weights w; exact for polynomials of degree <= 2n-1.

Pilot schedules (`PILOT_SCHEDULES`) place their points per example, from a forward-only
pilot pass: the target output F at `pilot_alphas(N)`, the N + 1 uniform alphas j / N and
geometric ones towards the baseline (h * 10^-k for h = 1 / N, down to 1e-6). The
geometric ones find an output that changes within a sliver of the path next to the
baseline, as a normalised network's does next to a zero baseline (GroupNorm or LayerNorm
after bias-free layers divides by about sqrt(eps) there: docs/schedules.md), which the
uniform pilot sees only as one interval of large change. Their alphas and
weights are traced arrays of shape (rows, n), computed inside the compiled program by
`pilot_points` one chunk of points at a time (from the point indices, by binary search in
the per-row cumulative masses or panel ends: nothing of size rows x n x N is formed); N
and n are static, so the shapes are too. Where F is linear next to the baseline (a ReLU
network's usual case) the geometric points change nothing but the pilot's cost.

  nonuniform      n points shared among the N uniform pilot intervals in proportion to
                  how much F changes along each (the sum of |F| differences over its
                  pilot points), at least one point each (largest remainders get the
                  points left over). Inside a uniform interval the points are the
                  midpoints of cells of equal mass under a density that is UNIFORM_SHARE
                  uniform and the rest in proportion to the change (the geometric
                  intervals towards the baseline differ; elsewhere the cells are equal
                  sub-intervals), each weighted by its cell's width. With a constant
                  pilot and N dividing n this is riemann_middle. (The pre-processing idea
                  of Bhat & Raychowdhury, arXiv:2302.11107, in the allocation rule of
                  Walker et al.'s Integrated Decision Gradients, arXiv:2305.20052.)
  pilot_gauss     ceil(n / PANEL_POINTS) panels with equal probability under a density
                  that is UNIFORM_SHARE uniform and the rest proportional to the pilot's
                  changes (piecewise constant on the pilot intervals, so its inverse CDF
                  is exact), each integrated by Gauss-Legendre with PANEL_POINTS (or one
                  fewer) points. Points go where F changes, no stretch of the path is
                  starved, and inside a panel the rule keeps Gauss-Legendre's accuracy on
                  smooth integrands. With a constant pilot: composite Gauss-Legendre on
                  equal panels.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from jaxplain import _legendre

Schedule = tuple[np.ndarray, np.ndarray]


# The uniform rules as formulas of the point index i (numpy or JAX arrays alike), so the
# engine can make a chunk's points without a table of all of them.
_FORMULAS: dict[str, Callable] = {
    "riemann_left": lambda i, n: (i / n, 0.0 * i + 1.0 / n),
    "riemann_right": lambda i, n: ((i + 1) / n, 0.0 * i + 1.0 / n),
    "riemann_middle": lambda i, n: ((i + 0.5) / n, 0.0 * i + 1.0 / n),
    # spacing 1/(n-1), the two end weights halved
    "trapezoid": lambda i, n: (i / (n - 1), (1.0 - 0.5 * ((i == 0) | (i == n - 1))) / (n - 1)),
}


def riemann_left(n: int) -> Schedule:
    return _FORMULAS["riemann_left"](np.arange(n), n)


def riemann_right(n: int) -> Schedule:
    return _FORMULAS["riemann_right"](np.arange(n), n)


def riemann_middle(n: int) -> Schedule:
    return _FORMULAS["riemann_middle"](np.arange(n), n)


def trapezoid(n: int) -> Schedule:
    check_steps("trapezoid", n)
    return _FORMULAS["trapezoid"](np.arange(n), n)


def gauss_legendre(n: int) -> Schedule:
    # O(n) time and memory (a million nodes in ~0.1 s), see `jaxplain._legendre`.
    return _legendre.gauss_legendre_unit(n)


SCHEDULES: dict[str, Callable[[int], Schedule]] = {
    "riemann_left": riemann_left,
    "riemann_right": riemann_right,
    "riemann_middle": riemann_middle,
    "trapezoid": trapezoid,
    "gauss_legendre": gauss_legendre,
}


# Schedules of up to this many steps are cached (at most 64 of them, 1 MiB each at most);
# longer ones are computed again, which costs less than the program they go into.
CACHED_STEPS = 1 << 16


@functools.lru_cache(maxsize=64)
def _cached(name: str, steps: int) -> Schedule:
    return _computed(name, steps)


def _computed(name: str, steps: int) -> Schedule:
    alphas, weights = SCHEDULES[name](steps)
    alphas.flags.writeable = weights.flags.writeable = False
    return alphas, weights


# The fewest steps a schedule can use (1 where not listed).
MIN_STEPS = {"trapezoid": 2}


def check_steps(name: str, steps: int) -> None:
    """Raises if schedule `name` cannot use `steps` points; computes nothing."""
    if steps < MIN_STEPS.get(name, 1):
        raise ValueError(f"schedule={name!r} needs steps >= {MIN_STEPS[name]}, got steps={steps}")


def get(name: str, steps: int) -> Schedule:
    """Returns `(alphas, weights)` of schedule `name` with `steps` points (read-only)."""
    return (_cached if steps <= CACHED_STEPS else _computed)(name, steps)


def points(name: str, steps: int) -> Callable:
    """`at(indices) -> (alphas, weights)` of schedule `name` for point indices (JAX arrays).

    What the engine's `Indexed` points take: a uniform rule computes a chunk's points
    from their indices, so no table of `steps` entries enters the program; Gauss-Legendre
    looks them up in its table.
    """
    if name in _FORMULAS:
        return lambda indices: _FORMULAS[name](indices, steps)
    table = jnp.asarray(np.stack(get(name, steps)))  # float64 where JAX has x64 enabled
    return lambda indices: (table[0, indices], table[1, indices])


def _allocate(changes, points: int):
    """Counts (rows, N) >= 1 summing to `points`, proportional to `changes` (rows, N).

    Every interval gets one point; the other points - N are shared in proportion to
    the changes (equally where a row's changes are all zero), by largest remainders.
    """
    intervals = changes.shape[-1]
    raw = _shares(changes, np.full(intervals, 1.0 / intervals)) * (points - intervals)
    base = jnp.floor(raw)
    left = (points - intervals) - base.sum(axis=-1, keepdims=True)
    # rank 0 = largest remainder; ties go to the earlier interval
    order = jnp.argsort(-(raw - base), axis=-1, stable=True)
    rank = jnp.argsort(order, axis=-1)
    return (1 + base + (rank < left)).astype(jnp.int32)


def _find(sorted_rows, values):
    """For each row r, how many of sorted_rows[r] are <= each of values[r]: (rows, n).

    A binary search per row, so no (rows, n, N) comparison is ever formed.
    """
    return jax.vmap(lambda row, v: jnp.searchsorted(row, v, side="right"))(sorted_rows, values)


# The pilot's points towards the baseline: alphas h * END_RATIO**k (h = 1 / N, the width
# of a uniform pilot interval, k = 1, 2, ...) down to END_FLOOR. A zero (black, padding)
# baseline is where a normalisation after bias-free layers (GroupNorm, LayerNorm) divides
# by about sqrt(eps): the output can change within alpha ~ 1e-4 there, inside the first
# uniform pilot interval, and these points find it. The input end would need them only
# for a constant input, so it goes without (each point is a forward pass).
END_RATIO = 0.1
END_FLOOR = 1e-6


def pilot_alphas(pilot_steps: int) -> np.ndarray:
    """The pilot's alphas for N = `pilot_steps` (sorted float64, 0 and 1 included).

    The N + 1 uniform alphas j / N, and inside the first uniform interval geometric ones
    towards the baseline: h * END_RATIO**k for h = 1 / N, k = 1, 2, ... while
    >= END_FLOOR (5 for N = 4, 4 for N = 32, 3 for N = 128). The pilot evaluates F at
    all but the two ends (`len(pilot_alphas(N)) - 2` forward passes).
    """
    h = 1.0 / pilot_steps
    count = int(np.floor(np.log(h / END_FLOOR) / -np.log(END_RATIO) + 1e-9))
    near = h * END_RATIO ** np.arange(1, count + 1)
    alphas = np.unique(np.concatenate([np.arange(pilot_steps + 1) / pilot_steps, near]))
    alphas.flags.writeable = False
    return alphas


def _grid(pilot, pilot_steps):
    """(alphas (M + 1,), uniform interval of each of the M pilot intervals (M,)), static."""
    if pilot_steps is None:
        intervals = pilot.shape[-1] - 1
        return np.arange(intervals + 1) / intervals, np.arange(intervals)
    alphas = pilot_alphas(pilot_steps)
    if pilot.shape[-1] != len(alphas):
        raise ValueError(
            f"pilot must hold F at the {len(alphas)} alphas of pilot_alphas({pilot_steps}), "
            f"got {pilot.shape[-1]} values per row"
        )
    uniform = np.minimum(np.floor(alphas[:-1] * pilot_steps + 1e-9), pilot_steps - 1).astype(np.int32)
    return alphas, uniform


def _inverse_cdf(alphas, mass, u):
    """Where the cumulative `mass` (rows, M), constant on each pilot interval, reaches u.

    alphas: the M + 1 pilot interval ends; u: (rows, k) in [0, mass.sum(-1)]. Returns
    the alphas and the pilot interval of each (rows, k). Intervals of zero mass are
    skipped, so the alphas of u = 0..total tile [0, 1].
    """
    dtype = mass.dtype
    cdf = jnp.concatenate([jnp.zeros_like(mass[:, :1]), jnp.cumsum(mass, axis=-1)], axis=-1)
    interval = jnp.clip(_find(cdf[:, 1:-1], u), 0, mass.shape[-1] - 1)
    low = jnp.take_along_axis(cdf, interval, axis=-1)
    share = jnp.take_along_axis(mass, interval, axis=-1)
    inside = jnp.clip((u - low) / jnp.where(share > 0, share, 1.0), 0.0, 1.0)
    start = jnp.asarray(alphas[:-1], dtype)[interval]
    return start + inside * jnp.asarray(np.diff(alphas), dtype)[interval], interval


def _shares(changes, widths):
    """Each row's changes as fractions of their sum; where all are zero, the intervals'
    `widths` (static, summing to 1) as fractions of the path."""
    total = changes.sum(axis=-1, keepdims=True)
    return jnp.where(
        total > 0, changes / jnp.where(total > 0, total, 1.0), jnp.asarray(widths, changes.dtype)
    )


# Gauss-Legendre points per panel of "pilot_gauss", and the share of the pilot schedules'
# densities that is uniform (so that no region of the path is starved of points).
PANEL_POINTS = 4
UNIFORM_SHARE = 0.5


def _nonuniform(pilot, points: int, pilot_steps):
    alphas, uniform = _grid(pilot, pilot_steps)
    intervals = int(uniform[-1]) + 1
    width = 1.0 / intervals
    changes = jnp.abs(jnp.diff(pilot, axis=-1))  # (rows, M)
    # (rows, N): the change along each uniform interval
    totals = jax.ops.segment_sum(changes.T, uniform, num_segments=intervals, indices_are_sorted=True).T
    counts = _allocate(totals, points)
    ends = jnp.cumsum(counts, axis=-1)
    # The first uniform interval holds the pilot intervals towards the baseline. Its
    # points are the midpoints of cells of equal mass under a density that is
    # UNIFORM_SHARE uniform and the rest in proportion to their changes: where the
    # output is flat the gradient need not be (a normalised network's falls like
    # 1 / alpha where its output has stopped changing), so no stretch is starved. Where
    # the changes are in proportion to width (a linear stretch) the cells are equal.
    first = int(np.sum(uniform == 0))
    edges = alphas[: first + 1]
    fractions = np.diff(edges) / width
    mass = UNIFORM_SHARE * jnp.asarray(fractions, pilot.dtype) + (1.0 - UNIFORM_SHARE) * _shares(
        changes[:, :first], fractions
    )  # (rows, first), sums to 1

    def at(indices):
        m = jnp.broadcast_to(indices, (pilot.shape[0],) + indices.shape)
        interval = _find(ends, m)  # (rows, n): the uniform interval holding point m
        count = jnp.take_along_axis(counts, interval, axis=-1).astype(pilot.dtype)
        within = (m - jnp.take_along_axis(ends - counts, interval, axis=-1)).astype(pilot.dtype)
        # equal sub-intervals of a uniform interval, as the paper places them
        alphas = (interval + (within + 0.5) / count) * width
        weights = width / count
        # in the first: cells of mass 1 / count; one inside a single pilot interval is
        # (its width / its mass) / count wide, one across its ends is measured
        low, low_at = _inverse_cdf(edges, mass, within / count)
        high, high_at = _inverse_cdf(edges, mass, (within + 1) / count)
        high = jnp.where(within + 1 == count, width, high)
        single = jnp.asarray(np.diff(edges), pilot.dtype)[low_at] / jnp.take_along_axis(mass, low_at, axis=-1)
        cell = jnp.where((low_at == high_at) & (within + 1 < count), single / count, high - low)
        head = interval == 0
        return jnp.where(head, (low + high) / 2, alphas), jnp.where(head, cell, weights)

    return at


def _panels(points: int, size: int):
    """Static layout of `points` into ceil(points / size) panels of size or size - 1.

    The first `points % panels` panels hold one point more than the others. Returns
    (panels, a function from point indices to (their panel, their node in [-1, 1],
    its weight on [-1, 1])), with no table as long as `points`.
    """
    panels = -(-points // size)
    small, larger = divmod(points, panels)  # `larger` panels of small + 1, then small ones
    split = larger * (small + 1)
    rules = [np.polynomial.legendre.leggauss(n) for n in (small, small + 1)]  # small >= 1
    table_nodes = jnp.asarray(np.concatenate([rules[1][0], rules[0][0]]))
    table_weights = jnp.asarray(np.concatenate([rules[1][1], rules[0][1]]))

    def layout(indices):
        big = indices < split
        panel = jnp.where(big, indices // (small + 1), larger + (indices - split) // small)
        within = jnp.where(big, indices % (small + 1), (indices - split) % small)
        entry = jnp.where(big, within, small + 1 + within)
        return panel, table_nodes[entry], table_weights[entry]

    return panels, layout


def _pilot_gauss(pilot, points: int, pilot_steps):
    alphas, _ = _grid(pilot, pilot_steps)
    widths = np.diff(alphas)
    share = _shares(jnp.abs(jnp.diff(pilot, axis=-1)), widths)
    mass = UNIFORM_SHARE * jnp.asarray(widths, pilot.dtype) + (1.0 - UNIFORM_SHARE) * share  # sums to 1
    panels, layout = _panels(points, PANEL_POINTS)
    # Panel edges at equal probability under the density (its CDF is linear inside each
    # pilot interval).
    u = jnp.broadcast_to(jnp.linspace(0.0, 1.0, panels + 1, dtype=pilot.dtype), (pilot.shape[0], panels + 1))
    edges = _inverse_cdf(alphas, mass, u)[0].at[:, [0, -1]].set([0.0, 1.0])

    def at(indices):
        panel, nodes, weights = layout(indices)
        start, width = edges[:, panel], edges[:, panel + 1] - edges[:, panel]
        return start + width * (1.0 + nodes.astype(pilot.dtype)) / 2.0, width * weights.astype(
            pilot.dtype
        ) / 2.0

    return at


PILOT_SCHEDULES: dict[str, Callable] = {"nonuniform": _nonuniform, "pilot_gauss": _pilot_gauss}


def default_pilot_steps(steps: int) -> int:
    """Pilot intervals N for `steps` main points when the caller does not choose."""
    return max(1, min(steps, steps // 4))


def pilot_points(name: str, pilot, points: int, pilot_steps: int | None = None) -> Callable:
    """The points of pilot schedule `name`, made on demand for any point indices.

    Args:
      name: a key of `PILOT_SCHEDULES`.
      pilot: (rows, len(pilot_alphas(N))) target outputs at `pilot_alphas(N)`; with
        pilot_steps=None, (rows, N + 1) outputs at the uniform alphas j / N only.
      points: the number of points n to place, n >= N.
      pilot_steps: N, the uniform pilot intervals (static).

    Returns:
      `at(indices) -> (alphas, weights)`, each (rows, len(indices)), for point indices
      in 0..n-1: the engine asks for one chunk at a time, so nothing of size
      rows x n is formed.
    """
    pilot = jnp.asarray(pilot, jnp.promote_types(pilot.dtype, jnp.float32))
    return PILOT_SCHEDULES[name](pilot, points, pilot_steps)


def pilot_schedule(name: str, pilot, points: int, pilot_steps: int | None = None):
    """`(alphas, weights)`, each (rows, points), of pilot schedule `name` (see `pilot_points`)."""
    return pilot_points(name, pilot, points, pilot_steps)(jnp.arange(points))
