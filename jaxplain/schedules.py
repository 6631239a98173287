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
pilot pass: the target output F at the N + 1 uniform alphas j / N, j = 0..N. Their
alphas and weights are traced arrays of shape (rows, n), computed inside the compiled
program by `pilot_points` one chunk of points at a time (from the point indices, by binary
search in the per-row interval or panel ends: nothing of size rows x n x N is formed);
N and n are static, so the shapes are too.

  nonuniform      n points shared among the N pilot intervals in proportion to how much
                  F changes in each, |F(j+1/N) - F(j/N)|, at least one point each
                  (largest remainders get the points left over), placed at the
                  midpoints of equal sub-intervals of their interval, each weighted by
                  its sub-interval's width. With a constant pilot and N dividing n this
                  is riemann_middle. (The pre-processing idea of Bhat & Raychowdhury,
                  arXiv:2302.11107, in the allocation rule of Walker et al.'s
                  Integrated Decision Gradients, arXiv:2305.20052.)
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
    total = changes.sum(axis=-1, keepdims=True)
    share = jnp.where(total > 0, changes / jnp.where(total > 0, total, 1.0), 1.0 / intervals)
    raw = share * (points - intervals)
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


def _nonuniform(pilot, points: int):
    intervals = pilot.shape[-1] - 1
    changes = jnp.abs(jnp.diff(pilot, axis=-1))
    counts = _allocate(changes, points)  # (rows, N)
    ends = jnp.cumsum(counts, axis=-1)
    width = 1.0 / intervals

    def at(indices):
        m = jnp.broadcast_to(indices, (pilot.shape[0],) + indices.shape)
        interval = _find(ends, m)  # (rows, n): the interval holding point m
        count = jnp.take_along_axis(counts, interval, axis=-1).astype(pilot.dtype)
        within = m - jnp.take_along_axis(ends - counts, interval, axis=-1)
        alphas = (interval + (within + 0.5) / count) * width
        return alphas, width / count

    return at


# Gauss-Legendre points per panel of "pilot_gauss", and the share of its density that is
# uniform (so that no region of the path is starved of points).
PANEL_POINTS = 4
UNIFORM_SHARE = 0.5


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


def _pilot_gauss(pilot, points: int):
    intervals = pilot.shape[-1] - 1
    changes = jnp.abs(jnp.diff(pilot, axis=-1))
    total = changes.sum(axis=-1, keepdims=True)
    share = jnp.where(total > 0, changes / jnp.where(total > 0, total, 1.0), 1.0 / intervals)
    mass = UNIFORM_SHARE / intervals + (1.0 - UNIFORM_SHARE) * share  # (rows, N), sums to 1
    cdf = jnp.concatenate([jnp.zeros_like(mass[:, :1]), jnp.cumsum(mass, axis=-1)], axis=-1)
    panels, layout = _panels(points, PANEL_POINTS)
    # Panel edges at equal probability under the density: the inverse of the CDF,
    # which is linear inside each pilot interval.
    u = jnp.broadcast_to(jnp.linspace(0.0, 1.0, panels + 1, dtype=pilot.dtype), (pilot.shape[0], panels + 1))
    interval = jnp.clip(_find(cdf[:, 1:-1], u), 0, intervals - 1)
    low = jnp.take_along_axis(cdf, interval, axis=-1)
    inside = (u - low) / jnp.take_along_axis(mass, interval, axis=-1)
    edges = ((interval + jnp.clip(inside, 0.0, 1.0)) / intervals).at[:, [0, -1]].set([0.0, 1.0])

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


def pilot_points(name: str, pilot, points: int) -> Callable:
    """The points of pilot schedule `name`, made on demand for any point indices.

    Args:
      name: a key of `PILOT_SCHEDULES`.
      pilot: (rows, N + 1) target outputs at the alphas j / N, j = 0..N.
      points: the number of points n to place, n >= N.

    Returns:
      `at(indices) -> (alphas, weights)`, each (rows, len(indices)), for point indices
      in 0..n-1: the engine asks for one chunk at a time, so nothing of size
      rows x n is formed.
    """
    return PILOT_SCHEDULES[name](jnp.asarray(pilot, jnp.promote_types(pilot.dtype, jnp.float32)), points)


def pilot_schedule(name: str, pilot, points: int):
    """`(alphas, weights)`, each (rows, points), of pilot schedule `name` (see `pilot_points`)."""
    return pilot_points(name, pilot, points)(jnp.arange(points))
