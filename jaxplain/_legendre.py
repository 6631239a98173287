"""Gauss-Legendre nodes and weights in O(n) time and memory.

`gauss_legendre_unit(n)` returns the n-point Gauss-Legendre rule mapped to [0, 1]. The
textbook method (Golub-Welsch, `numpy.polynomial.legendre.leggauss`) solves an n x n
eigenvalue problem: O(n^3) time and O(n^2) memory, hopeless past a few thousand nodes.
Here each node is found on its own by Halley's method on P_n, with P_n evaluated in O(1)
per node, following the plan of

  N. Hale and A. Townsend, "Fast and accurate computation of Gauss-Legendre and
  Gauss-Jacobi quadrature nodes and weights", SIAM J. Sci. Comput. 35(2), A652-A674 (2013).

Everything is done in theta, t = cos(theta), and only for theta in (0, pi/2]: the rule is
symmetric. The weight of a node on [0, 1] is 1 / (dP_n/dtheta)^2, because the weight on
[-1, 1] is 2 / ((1 - t^2) P_n'(t)^2) and dP_n/dtheta = -sin(theta) P_n'(t). The node on
[0, 1] is sin^2(theta/2) (the lower half; the upper half is its mirror image 1 - alpha),
which keeps full relative precision next to 0, where (1 + cos(theta))/2 would not.

Evaluating P_n(cos theta) and dP_n/dtheta, with x = (n + 1/2) sin(theta):

* x >= 22, the interior: the asymptotic expansion of Stieltjes (G. Szego, "Orthogonal
  Polynomials", 4th ed. 1975, sec. 8.21; Hale & Townsend sec. 3),
      P_n(cos theta) = C_n sum_{m<M} h_{n,m} cos(alpha_{n,m}) / (2 sin theta)^(m+1/2),
      alpha_{n,m} = (n + m + 1/2) theta - (m + 1/2) pi/2,
      h_{n,m} = prod_{j=1..m} (j - 1/2)^2 / (j (n + j + 1/2)),
      C_n = (2/sqrt(pi)) Gamma(n+1) / Gamma(n+3/2),
  differentiated term by term. Its error is below the first omitted term, about
  m! / (2x)^m, smallest (~ exp(-2x)) near m = 2x. Each node gets the fewest terms whose
  first omitted one is below 1e-17 of the leading one: 20 at x = 24, 3 deep inside a
  large rule (n = 1e6: 3 terms for 88% of the nodes, 4 for 11%, at most 20). The terms
  are rotations of one another, so a node costs one cos and one sin whatever M is.
* x < 22, the 7 nodes nearest each end (every node for n <= 21): the series cannot reach
  double precision there, so Laplace's first integral (E. T. Whittaker and G. N. Watson,
  "A Course of Modern Analysis", sec. 15.23),
      P_n(cos theta) = (1/pi) integral_0^pi (cos theta + i sin theta cos phi)^n dphi,
  by the N-point midpoint rule, N = 256. The integrand is a trigonometric polynomial of
  degree n in phi and the midpoint rule is exact up to degree 2N - 1: exact for n < 512.
  For larger n the coefficient of cos(m phi) behaves like the Bessel function J_m(x), so
  the aliasing error, ~ J_512(22), is nil. The cost is 7 x 256 samples per end whatever
  n is. What limits the accuracy is the rounding of the samples' phases, up to x in
  size; more points than exactness needs average it down.

Initial guesses: for k <= 10, theta_k ~ psi + (psi cot psi - 1) / (8 psi nu^2),
psi = j_{0,k} / nu, nu = n + 1/2, with j_{0,k} the zeros of J_0 (the leading terms of the
Bessel-type asymptotics of P_n near theta = 0; F. W. J. Olver, "Asymptotics and Special
Functions", 1974, ch. 12); beyond, Tricomi's expansion with the n^-4 term of Lether and
Wenston,
      t_k ~ (1 - (n-1)/(8 n^3) - (39 - 28 / sin^2 phi_k) / (384 n^4)) cos phi_k,
      phi_k = (k - 1/4) pi / nu
(F. G. Tricomi 1950; F. G. Lether and P. R. Wenston, J. Comput. Appl. Math. 59 (1995)).
Measured, the interior guesses are within 2e-6 node spacings of the nodes (3e-8 for
n >= 100), so one step of Halley's method (cubically convergent: P'' and P''' come free
from Legendre's equation P'' + cot(theta) P' + n(n+1) P = 0) leaves only rounding: a rule
with n >= 100 costs one series evaluation per interior node. dP/dtheta at the corrected
node, for its weight, is Taylor-extrapolated from the last evaluation with the same P''
and P'''. A node is final after a step shorter than 1e-6 node spacings; the leading
nodes up to the last one that is not final iterate again.

C_n for n >= 32 comes from the asymptotic expansion of log Gamma(z + 1/4) -
log Gamma(z + 3/4), z = n + 3/4 (DLMF 5.11.8; its even terms cancel), with coefficients
-2 B_k(1/4) / (k (k-1)) computed exactly from Bernoulli numbers, and for smaller n from
the exact rational product prod_{j<=n} 2j / (2j+1). (exp(lgamma(n+1) - lgamma(n+3/2))
loses ~1e-9 to cancellation at n = 1e6.)
"""

from __future__ import annotations

import functools
import math
import operator
from collections.abc import Callable
from fractions import Fraction

import numpy as np

# Nodes with (n + 1/2) sin(theta) below this use Laplace's integral, the others the series:
# 7 nodes per end for n >= 32 (j_{0,7} = 21.2, j_{0,8} = 24.4), every node for n <= 21.
# There the series' smallest term, ~ sqrt(4 pi x) exp(-2x), is 1e-18; Laplace's integral
# loses precision slowly as this grows (the rounding of its samples' phases grows).
LAPLACE_BELOW = 22.0
# Midpoint-rule points for Laplace's integral: exact for n < 2 LAPLACE_POINTS, and beyond,
# below LAPLACE_BELOW, the aliased coefficient is ~ J_512(22), nil. More points than
# exactness needs average the rounding of the samples' phases (n = 1e5, 7th node, weight
# error 1.7e-15 with 64 points, 1.4e-16 with 256). Even, so phi = pi/2 is never a point.
LAPLACE_POINTS = 256
# Largest first-omitted term, relative to the leading one, allowed in the interior series.
SERIES_TOLERANCE = 1e-17
MAX_SERIES_TERMS = 40
# A Halley step under this many node spacings (1/nu) leaves an error ~ (nu * step)^3 / 6
# spacings: the step after which a node is final.
FINAL_STEP = 1e-6
MAX_ITERATIONS = 10

# The first zeros of J_0 (Abramowitz & Stegun table 9.5); McMahon's expansion beyond.
_BESSEL_J0_ZEROS = np.array(
    [
        2.404825557695773,
        5.520078110286311,
        8.653727912911013,
        11.79153443901428,
        14.93091770848779,
        18.07106396791092,
        21.21163662987926,
        24.35247153074930,
        27.49347913204025,
        30.63460646843198,
    ]
)

Evaluator = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray, np.ndarray]]


def gauss_legendre_unit(n: int) -> tuple[np.ndarray, np.ndarray]:
    """The n-point Gauss-Legendre rule on [0, 1]: (alphas increasing, weights summing to 1)."""
    n = operator.index(n)
    if n < 1:
        raise ValueError(f"Gauss-Legendre needs n >= 1 nodes, got n={n}")
    theta, dp = _half_rule(n)
    half = n // 2
    lower = np.sin(theta[:half] / 2) ** 2
    weights_half = 1.0 / dp**2
    middle = [0.5] if n % 2 else []
    # The upper half mirrors the lower: 1 - alpha rounds once, as accurate as cos^2(theta/2)
    # would be, and the rule comes out exactly symmetric.
    alphas = np.concatenate([lower, middle, 1.0 - lower[::-1]])
    weights = np.concatenate([weights_half[:half], weights_half[half:], weights_half[:half][::-1]])
    return alphas, weights


def _half_rule(n: int) -> tuple[np.ndarray, np.ndarray]:
    """theta_k, k = 1..ceil(n/2), increasing in (0, pi/2] (pi/2 exactly for odd n), and
    dP_n/dtheta there."""
    count = (n + 1) // 2
    theta = _initial_guesses(n, count)
    odd = n % 2 == 1
    # Laplace's integral where the series cannot reach double precision; the guesses are
    # increasing in (0, pi/2], so these are the leading ones.
    edge = int(np.searchsorted((n + 0.5) * np.sin(theta), LAPLACE_BELOW))
    theta_edge, dp_edge = _halley(
        n, theta[:edge], lambda th: _laplace(n, th, LAPLACE_POINTS), fix_last=odd and edge == count
    )
    if edge == count:
        return theta_edge, dp_edge
    c_n = _c_n(n)
    theta_inner, dp_inner = _halley(n, theta[edge:], lambda th: _series(n, th, c_n), fix_last=odd)
    return np.concatenate([theta_edge, theta_inner]), np.concatenate([dp_edge, dp_inner])


# ---------------------------------------------------------------------------------------
# Initial guesses


def _initial_guesses(n: int, count: int) -> np.ndarray:
    k = np.arange(1, count + 1)
    edge = min(len(_BESSEL_J0_ZEROS), count)
    theta = np.concatenate([_bessel_guess(n, k[:edge]), _tricomi_guess(n, k[edge:])])
    if n % 2:
        theta[-1] = np.pi / 2  # P_n is odd: t = 0 is a node, exactly
    return theta


def _bessel_j0_zeros(k: np.ndarray) -> np.ndarray:
    """j_{0,k}: tabulated, then McMahon's expansion (DLMF 10.21.19), error < 1e-10 there."""
    beta = (k - 0.25) * np.pi
    mcmahon = beta + 1 / (8 * beta) - 31 / (384 * beta**3) + 3779 / (15360 * beta**5)
    table = _BESSEL_J0_ZEROS[np.minimum(k, len(_BESSEL_J0_ZEROS)) - 1]
    return np.where(k <= len(_BESSEL_J0_ZEROS), table, mcmahon)


def _bessel_guess(n: int, k: np.ndarray) -> np.ndarray:
    """Nodes near theta = 0: error O(nu^-4) relative, ~1e-8 spacings at n = 64."""
    nu = n + 0.5
    psi = _bessel_j0_zeros(k) / nu
    return psi + (psi / np.tan(psi) - 1) / (8 * psi * nu**2)


def _tricomi_guess(n: int, k: np.ndarray) -> np.ndarray:
    """Tricomi's expansion with Lether and Wenston's n^-4 term: t_k = (1 - eps) cos(phi_k),
    returned as theta via atan2 so that theta keeps its relative precision near 0 (arccos
    of t ~ 1 would not)."""
    phi = (k - 0.25) * (np.pi / (n + 0.5))
    sin_phi, cos_phi = np.sin(phi), np.cos(phi)
    eps = (n - 1) / (8.0 * n**3) + (39 - 28 / sin_phi**2) / (384.0 * float(n) ** 4)
    # sin^2 theta = 1 - (1 - eps)^2 cos^2 phi = sin^2 phi + eps (2 - eps) cos^2 phi
    return np.arctan2(np.sqrt(sin_phi**2 + eps * (2 - eps) * cos_phi**2), (1 - eps) * cos_phi)


# ---------------------------------------------------------------------------------------
# Halley iteration


def _halley(
    n: int, theta: np.ndarray, evaluate: Evaluator, fix_last: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Refine increasing guesses `theta` of zeros of P_n(cos theta); return them with
    dP_n/dtheta there. `evaluate(theta) -> (P, dP/dtheta, cot theta)`.

    Each round evaluates only the leading nodes up to the last one that is not final yet
    (the interior guesses are worst next to the boundary, so later rounds are short)."""
    theta = theta.astype(np.float64, copy=True)
    dp_final = np.empty_like(theta)
    nn1 = n * (n + 1.0)
    nu = n + 0.5
    active = len(theta)
    for _ in range(MAX_ITERATIONS):
        if active == 0:
            return theta, dp_final
        p, dp, cot = evaluate(theta[:active])
        ratio = p / dp
        d2 = -cot - nn1 * ratio  # P''/P' from Legendre's equation
        step = -ratio / (1 - 0.5 * ratio * d2)  # Halley
        if fix_last and active == len(theta):
            step[-1] = 0.0  # theta = pi/2 is the exact middle node
        unfinished = np.flatnonzero(np.abs(step) * nu >= FINAL_STEP)
        done = unfinished[-1] + 1 if len(unfinished) else 0
        # P''' / P' from differentiating Legendre's equation; csc^2 = 1 + cot^2.
        d3 = -cot * d2 + 1 + cot**2 - nn1
        h = step[done:]
        dp_final[done:active] = dp[done:] * (1 + d2[done:] * h + 0.5 * d3[done:] * h * h)
        theta[:active] += step
        active = done
    raise RuntimeError(f"Gauss-Legendre nodes did not converge for n={n}")


# ---------------------------------------------------------------------------------------
# Evaluating P_n(cos theta) and dP_n/dtheta


def _laplace(n: int, theta: np.ndarray, points: int):
    """Laplace's first integral by the midpoint rule on [0, pi], vectorised nodes x points.

    z = cos theta + i sin theta cos phi is taken in polar form: |z|^2 = 1 - sin^2 theta
    sin^2 phi (log1p keeps it exact for small theta) and arg z = atan2(sin theta cos phi,
    cos theta), so that z^(n-1) never over- or underflows and keeps its relative precision."""
    phi = (np.arange(points) + 0.5) * (np.pi / points)
    cos_phi, sin_phi = np.cos(phi), np.sin(phi)
    s = np.sin(theta)[:, None]
    c = np.cos(theta)[:, None]
    radius = np.exp(0.5 * (n - 1) * np.log1p(-((s * sin_phi) ** 2)))
    angle = (n - 1) * np.arctan2(s * cos_phi, c)
    re, im = radius * np.cos(angle), radius * np.sin(angle)  # z^(n-1)
    # Re z^n = Re(z^(n-1) z); d(z^n)/dtheta = n z^(n-1) (-sin theta + i cos theta cos phi)
    p = np.mean(c * re - s * cos_phi * im, axis=1)
    dp = -n * np.mean(s * re + c * cos_phi * im, axis=1)
    return p, dp, c[:, 0] / s[:, 0]


@functools.lru_cache(maxsize=64)
def _series_coefficients(n: int) -> np.ndarray:
    """h_{n,m}, m = 0..MAX_SERIES_TERMS."""
    m = np.arange(1, MAX_SERIES_TERMS + 1)
    factors = (m - 0.5) ** 2 / (m * (n + m + 0.5))
    return np.concatenate([[1.0], np.cumprod(factors)])


def _term_counts(n: int, sin_theta: np.ndarray) -> np.ndarray:
    """ends[m]: how many of the (increasing) nodes need series term m."""
    h = _series_coefficients(n)
    m = np.arange(1, MAX_SERIES_TERMS + 1)
    # M terms suffice where h_M / (2 sin theta)^M <= tolerance; the bound on sin theta
    # can rise again past the series' smallest term, so take the best M up to here.
    enough = np.minimum.accumulate(0.5 * (h[1:] / SERIES_TOLERANCE) ** (1.0 / m))
    ends = np.searchsorted(sin_theta, enough, side="left")
    if ends[-1]:
        raise RuntimeError(f"interior series cannot reach its tolerance for n={n}")
    return np.concatenate([[len(sin_theta)], ends])


def _series(n: int, theta: np.ndarray, c_n: float):
    """Szego's expansion and its theta-derivative.

    With u = 1/(2 sin theta), c_m = u^m cos(alpha_{n,m}) and s_m = u^m sin(alpha_{n,m}),
    alpha_{n,m+1} = alpha_{n,m} + theta - pi/2 gives c_{m+1} = c_m/2 + q s_m and
    s_{m+1} = s_m/2 - q c_m with q = cot(theta)/2: a rotation, no further cos or sin.
    Term m is only computed for the leading nodes that need it."""
    sin_t, cos_t = np.sin(theta), np.cos(theta)
    cot = cos_t / sin_t
    q = 0.5 * cot
    nu = n + 0.5
    alpha = nu * theta - np.pi / 4
    c, s = np.cos(alpha), np.sin(alpha)
    h = _series_coefficients(n)
    ends = _term_counts(n, sin_t)
    total_c = c.copy()  # sum h_m c_m
    total_s = nu * s  # sum h_m (n + m + 1/2) s_m
    total_c2 = 0.5 * c  # sum h_m (m + 1/2) c_m
    for m in range(1, len(ends)):
        e = ends[m]
        if e == 0:
            break
        c, s = c[:e], s[:e]
        c, s = 0.5 * c + q[:e] * s, 0.5 * s - q[:e] * c
        total_c[:e] += h[m] * c
        total_s[:e] += (h[m] * (nu + m)) * s
        total_c2[:e] += (h[m] * (m + 0.5)) * c
    scale = c_n * np.sqrt(0.5 / sin_t)
    # d/dtheta [cos(alpha_m) (2 sin theta)^-(m+1/2)]
    #   = -[(n+m+1/2) sin(alpha_m) + (m+1/2) cot(theta) cos(alpha_m)] (2 sin theta)^-(m+1/2)
    return scale * total_c, -scale * (total_s + cot * total_c2), cot


# ---------------------------------------------------------------------------------------
# C_n = (2/sqrt(pi)) Gamma(n+1) / Gamma(n+3/2)

_C_N_SERIES_FROM = 32
_C_N_SERIES_ORDER = 15  # last (odd) k; the k = 17 term is < 1e-23 for n >= 32


def _c_n(n: int) -> float:
    if n < _C_N_SERIES_FROM:
        exact = Fraction(1)
        for j in range(1, n + 1):
            exact *= Fraction(2 * j, 2 * j + 1)
        return float(exact) * (4 / math.pi)
    z = n + 0.75
    w = 1.0 / (z * z)
    total = 0.0
    for a in reversed(_gamma_ratio_coefficients()):
        total = a + w * total
    # Gamma(z + 1/4) / Gamma(z + 3/4) = z^(-1/2) exp(w * total)
    return 2.0 / math.sqrt(math.pi * z) * math.exp(w * total)


@functools.lru_cache(maxsize=1)
def _gamma_ratio_coefficients() -> tuple[float, ...]:
    """-2 B_k(1/4) / (k (k-1)) for odd k = 3.._C_N_SERIES_ORDER, the coefficients of
    z^-(k-1) in log Gamma(z + 1/4) - log Gamma(z + 3/4) + (1/2) log z (DLMF 5.11.8, with
    B_k(3/4) = -B_k(1/4) for odd k and = B_k(1/4) for even k)."""
    order = _C_N_SERIES_ORDER
    bernoulli = [Fraction(1)]
    for m in range(1, order + 1):
        bernoulli.append(-sum(math.comb(m + 1, j) * bernoulli[j] for j in range(m)) / (m + 1))
    quarter = Fraction(1, 4)
    coefficients = []
    for k in range(3, order + 1, 2):
        b_k = sum(math.comb(k, j) * bernoulli[j] * quarter ** (k - j) for j in range(k + 1))
        coefficients.append(float(-2 * b_k / (k * (k - 1))))
    return tuple(coefficients)
