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
"""

from __future__ import annotations

import functools
from typing import Callable, Dict, Tuple

import numpy as np

Schedule = Tuple[np.ndarray, np.ndarray]


def riemann_left(n: int) -> Schedule:
    return np.arange(n) / n, np.full(n, 1.0 / n)


def riemann_right(n: int) -> Schedule:
    return np.arange(1, n + 1) / n, np.full(n, 1.0 / n)


def riemann_middle(n: int) -> Schedule:
    return (np.arange(n) + 0.5) / n, np.full(n, 1.0 / n)


def trapezoid(n: int) -> Schedule:
    if n < 2:
        raise ValueError(f"schedule='trapezoid' needs steps >= 2, got steps={n}")
    weights = np.full(n, 1.0 / (n - 1))
    weights[[0, -1]] /= 2
    return np.linspace(0.0, 1.0, n), weights


def gauss_legendre(n: int) -> Schedule:
    nodes, weights = np.polynomial.legendre.leggauss(n)
    return (nodes + 1.0) / 2.0, weights / 2.0


SCHEDULES: Dict[str, Callable[[int], Schedule]] = {
    "riemann_left": riemann_left,
    "riemann_right": riemann_right,
    "riemann_middle": riemann_middle,
    "trapezoid": trapezoid,
    "gauss_legendre": gauss_legendre,
}


@functools.lru_cache(maxsize=256)
def get(name: str, steps: int) -> Schedule:
    """Returns `(alphas, weights)` of schedule `name` with `steps` points (read-only, cached)."""
    alphas, weights = SCHEDULES[name](steps)
    alphas.flags.writeable = weights.flags.writeable = False
    return alphas, weights
