"""jaxplain._legendre: O(n) Gauss-Legendre nodes and weights on [0, 1]."""

import math
import time
from decimal import Decimal, localcontext
from fractions import Fraction

import numpy as np
import pytest
import scipy.special

from jaxplain import _legendre
from jaxplain._legendre import gauss_legendre_unit


def leggauss_unit(n):
    nodes, weights = np.polynomial.legendre.leggauss(n)
    return (nodes + 1.0) / 2.0, weights / 2.0


def legendre_moments(alphas, weights, degree):
    """sum_i w_i P_m(2 alpha_i - 1) for m = 0..degree, by the three-term recurrence."""
    x = 2.0 * alphas - 1.0
    moments = np.empty(degree + 1)
    previous, current = np.ones_like(x), x
    moments[0], moments[1] = weights.sum(), weights @ x
    for m in range(1, degree):
        previous, current = current, ((2 * m + 1) * x * current - m * previous) / (m + 1)
        moments[m + 1] = weights @ current
    return moments


def legendre_near_one(n, y):
    """P_n(1 - y), vectorised over y, by the three-term recurrence rewritten for
    D_m = P_m - P_{m-1}: no 1 - y is ever rounded, so nodes next to t = 1 keep their
    relative precision (y = 2 alpha for the lower half, by P_n(-t) = (-1)^n P_n(t))."""
    p, d = 1.0 - y, -y
    for m in range(1, n):
        d = (m * d - (2 * m + 1) * y * p) / (m + 1)
        p = p + d
    return p


def extended_precision_rule(n, alphas):
    """Newton on P_n in 40-digit decimals from each of `alphas`: (nodes, weights) on [0, 1]."""
    with localcontext() as context:
        context.prec = 40
        nodes, weights = [], []
        for alpha in alphas:
            t = 2 * Decimal(float(alpha)) - 1
            for _ in range(3):
                p, p_prime = _decimal_legendre(n, t)
                t -= p / p_prime
            p, p_prime = _decimal_legendre(n, t)
            nodes.append(float((1 + t) / 2))
            weights.append(float(1 / ((1 - t * t) * p_prime * p_prime)))
    return np.array(nodes), np.array(weights)


def _decimal_legendre(n, t):
    previous, current = Decimal(1), t
    for m in range(1, n):
        previous, current = current, ((2 * m + 1) * t * current - m * previous) / (m + 1)
    return current, n * (t * current - previous) / (t * t - 1)


# Small rules against numpy's eigenvalue method. The n cover both evaluation methods and
# where they meet: Laplace's integral alone (n <= 21), the split (22, 31, 32, ...), and
# Laplace's midpoint rule past exactness (513 > 2 * 256).
@pytest.mark.parametrize("n", [1, 2, 3, 5, 8, 20, 21, 22, 31, 32, 64, 300, 513])
def test_matches_leggauss(n):
    alphas, weights = gauss_legendre_unit(n)
    assert alphas.shape == weights.shape == (n,)
    assert alphas.dtype == weights.dtype == np.float64
    reference_alphas, reference_weights = leggauss_unit(n)
    np.testing.assert_allclose(alphas, reference_alphas, rtol=0, atol=1e-15)
    # leggauss's own weights are off by up to ~n * 3e-17 (1.3e-14 at n = 513).
    np.testing.assert_allclose(weights, reference_weights, rtol=0, atol=max(1e-14, 4e-17 * n))


@pytest.mark.parametrize("n", [7, 300])
def test_relative_precision_against_extended_precision(n):
    # leggauss's small weights near the ends are only accurate to ~1e-14 absolute (1e-10
    # relative at n = 300); here every node and weight of the lower half is checked to a
    # few ulps relative, against 40-digit Newton.
    alphas, weights = gauss_legendre_unit(n)
    half = (n + 1) // 2
    reference_alphas, reference_weights = extended_precision_rule(n, alphas[:half])
    np.testing.assert_allclose(alphas[:half], reference_alphas, rtol=2e-15, atol=0)
    np.testing.assert_allclose(weights[:half], reference_weights, rtol=5e-15, atol=0)


def test_relative_precision_of_a_large_rule_next_to_the_ends():
    # The 7 Laplace-integral nodes, the first series nodes after them, and one inside.
    n = 10_000
    alphas, weights = gauss_legendre_unit(n)
    sample = np.array([0, 1, 6, 7, 8, 2000])
    reference_alphas, reference_weights = extended_precision_rule(n, alphas[sample])
    np.testing.assert_allclose(alphas[sample], reference_alphas, rtol=2e-15, atol=0)
    np.testing.assert_allclose(weights[sample], reference_weights, rtol=5e-15, atol=0)


@pytest.mark.parametrize("n", [3, 64, 4096])
def test_exact_for_every_legendre_polynomial_below_degree_2n(n):
    alphas, weights = gauss_legendre_unit(n)
    moments = legendre_moments(alphas, weights, 2 * n)
    assert abs(moments[0] - 1.0) < 1e-15
    assert np.abs(moments[1 : 2 * n]).max() < 1e-14
    # Degree 2n is where exactness ends: the rule is not trivially exact.
    assert abs(moments[2 * n]) > 1e-3


@pytest.fixture(scope="module")
def million():
    n = 10**6
    gauss_legendre_unit(1000)  # warm the caches (imports, coefficient tables)
    start = time.perf_counter()
    alphas, weights = gauss_legendre_unit(n)
    seconds = time.perf_counter() - start
    print(f"gauss_legendre_unit({n}): {seconds:.3f} s")
    return n, alphas, weights, seconds


def test_a_million_nodes_is_fast(million):
    n, alphas, weights, seconds = million
    assert alphas.shape == weights.shape == (n,)
    assert seconds < 5.0  # ~0.1-0.2 s; generous for a busy machine


def test_a_million_nodes_are_ordered_and_symmetric(million):
    n, alphas, weights, _ = million
    assert 0.0 < alphas[0] and alphas[-1] < 1.0
    assert np.all(np.diff(alphas) > 0)
    assert np.abs(alphas + alphas[::-1] - 1.0).max() <= 2**-52
    assert np.array_equal(weights, weights[::-1])
    assert np.all(weights > 0)


def test_a_million_nodes_integrate_low_and_top_degree_monomials(million):
    n, alphas, weights, _ = million
    for m in range(8):
        assert weights @ alphas**m == pytest.approx(1.0 / (m + 1), rel=1e-14)
    # Degrees 2n-1 and 2n-2: only the nodes and weights nearest each end contribute.
    for m in (2 * n - 1, 2 * n - 2):
        assert weights @ alphas**m == pytest.approx(1.0 / (m + 1), rel=1e-12)
        assert weights @ (1.0 - alphas) ** m == pytest.approx(1.0 / (m + 1), rel=1e-12)
        # (1 - alpha)^m with log1p: no rounding of 1 - alpha, so the full precision of
        # the small alphas shows.
        moment = weights @ np.exp(m * np.log1p(-alphas))
        assert moment == pytest.approx(1.0 / (m + 1), rel=1e-14)


def test_nodes_of_a_large_rule_are_zeros_of_p_n():
    n = 100_000
    alphas, weights = gauss_legendre_unit(n)
    half = n // 2
    sample = np.unique(np.concatenate([np.arange(12), np.geomspace(12, half - 1, 38).astype(int)]))
    p = legendre_near_one(n, 2.0 * alphas[sample])
    # |P_n| / |dP_n/dtheta| is how far the node is from the zero in theta, and
    # |dP_n/dtheta| = 1 / sqrt(weight); relative to theta. The recurrence's own rounding
    # gives ~1e-15 here.
    theta = 2.0 * np.arcsin(np.sqrt(alphas[sample]))
    assert np.max(np.abs(p) * np.sqrt(weights[sample]) / theta) < 1e-14
    assert weights.sum() == pytest.approx(1.0, abs=1e-14)


@pytest.mark.parametrize("n", [1, 5, 31, 32, 33, 100, 1000, 3000])
def test_c_n_against_the_exact_product(n):
    # C_n = (4/pi) prod_{j<=n} 2j/(2j+1) = (4/pi) (2^n n!)^2 / (2n+1)!
    exact = Fraction(4**n * math.factorial(n) ** 2, math.factorial(2 * n + 1))
    reference = float(exact) * (4 / math.pi)
    assert _legendre._c_n(n) == pytest.approx(reference, rel=4e-16)


@pytest.mark.parametrize("n", [10**4, 10**6, 10**9])
def test_c_n_for_large_n(n):
    # C_n / C_{n-1} = n / (n + 1/2) exactly; and scipy's Pochhammer symbol
    # (n+1)_{1/2} = Gamma(n+3/2) / Gamma(n+1), which needs no cancellation.
    assert _legendre._c_n(n) / _legendre._c_n(n - 1) == pytest.approx(n / (n + 0.5), rel=5e-16)
    pochhammer = scipy.special.poch(n + 1, 0.5)
    assert _legendre._c_n(n) == pytest.approx(2 / math.sqrt(math.pi) / pochhammer, rel=1e-14)


def test_bessel_zeros():
    # Tabulated for k <= 10, McMahon's expansion (a guess only) beyond.
    k = np.arange(1, 21)
    zeros, reference = _legendre._bessel_j0_zeros(k), scipy.special.jn_zeros(0, 20)
    np.testing.assert_allclose(zeros[:10], reference[:10], rtol=1e-15)
    np.testing.assert_allclose(zeros[10:], reference[10:], rtol=0, atol=1e-10)


@pytest.mark.parametrize("n", [0, -3])
def test_needs_a_positive_number_of_nodes(n):
    with pytest.raises(ValueError, match="n >= 1"):
        gauss_legendre_unit(n)


def test_takes_integers_only():
    with pytest.raises(TypeError):
        gauss_legendre_unit(8.0)
    alphas, _ = gauss_legendre_unit(np.int64(8))
    assert alphas.shape == (8,)
