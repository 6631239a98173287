import numpy as np
import pytest

from jaxplain import schedules


@pytest.mark.parametrize("name", sorted(schedules.SCHEDULES))
@pytest.mark.parametrize("n", [2, 3, 10, 64])
def test_weights_sum_to_one_and_alphas_in_unit_interval(name, n):
    alphas, weights = schedules.get(name, n)
    assert alphas.shape == weights.shape == (n,)
    assert np.isclose(weights.sum(), 1.0, atol=1e-12)
    assert alphas.min() >= 0.0 and alphas.max() <= 1.0


def test_riemann_conventions():
    np.testing.assert_allclose(schedules.riemann_left(4)[0], [0, 0.25, 0.5, 0.75])
    np.testing.assert_allclose(schedules.riemann_right(4)[0], [0.25, 0.5, 0.75, 1.0])
    np.testing.assert_allclose(schedules.riemann_middle(4)[0], [0.125, 0.375, 0.625, 0.875])
    alphas, weights = schedules.trapezoid(5)
    np.testing.assert_allclose(alphas, [0, 0.25, 0.5, 0.75, 1.0])
    np.testing.assert_allclose(weights, [0.125, 0.25, 0.25, 0.25, 0.125])


def test_trapezoid_needs_two_steps():
    with pytest.raises(ValueError, match="steps >= 2"):
        schedules.trapezoid(1)


@pytest.mark.parametrize("n", [1, 2, 3, 5, 8])
def test_gauss_legendre_exact_up_to_degree_2n_minus_1(n):
    alphas, weights = schedules.gauss_legendre(n)
    for degree in range(2 * n):
        assert np.isclose(weights @ alphas**degree, 1.0 / (degree + 1), rtol=1e-12, atol=1e-14)
    assert not np.isclose(weights @ alphas ** (2 * n), 1.0 / (2 * n + 1), rtol=1e-9, atol=1e-12)


def test_trapezoid_integrates_linear_functions_exactly():
    alphas, weights = schedules.trapezoid(7)
    assert np.isclose(weights @ (3 * alphas + 2), 3.5, rtol=1e-12)
