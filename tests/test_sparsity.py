"""Complexity metrics: known answers, batch equals loop, all-zero attributions, errors."""

import math

import numpy as np
import pytest

from jaxplain.attribution import Attribution
from jaxplain.metrics.sparsity import complexity, effective_complexity, sparseness

# one-hot, uniform, all-zero, 1..4 (with signs: magnitudes count)
A = np.array([[0.0, 0.0, 0.0, 2.0], [1.0, -1.0, 1.0, -1.0], [0.0, 0.0, 0.0, 0.0], [1.0, -2.0, 3.0, -4.0]])


def test_sparseness_known_answers():
    # Gini: one-hot (N - 1) / N; uniform 0; all-zero 0 (documented);
    # [1, 2, 3, 4]: sum (2k - 5) a_(k) / (4 * 10) = (-3 - 2 + 3 + 12) / 40
    np.testing.assert_allclose(sparseness(A), [3 / 4, 0.0, 0.0, 10 / 40], atol=1e-7)


def test_complexity_known_answers():
    # entropy: one-hot 0; uniform ln 4; all-zero taken as uniform, ln 4;
    # [1, 2, 3, 4] / 10
    shares = np.arange(1, 5) / 10
    expected = [0.0, math.log(4), math.log(4), -(shares * np.log(shares)).sum()]
    np.testing.assert_allclose(complexity(A), expected, rtol=1e-6, atol=1e-7)
    assert not np.signbit(np.asarray(complexity(A))[0])


def test_effective_complexity_known_answers():
    np.testing.assert_array_equal(effective_complexity(A), [1, 4, 0, 4])
    # relative: |a| / max |a| > eps; [1, 2, 3, 4] / 4 > 0.5: 3 and 4
    np.testing.assert_array_equal(effective_complexity(A, eps=0.5), [1, 4, 0, 2])
    # absolute: |a| > 1.5
    np.testing.assert_array_equal(effective_complexity(A, eps=1.5, relative=False), [1, 0, 0, 3])
    assert effective_complexity(A).dtype == np.int32


@pytest.mark.parametrize("metric", [sparseness, complexity, effective_complexity])
def test_batch_equals_loop_and_shapes(metric):
    rng = np.random.default_rng(0)
    values = rng.normal(size=(3, 4, 4, 2)).astype(np.float32)
    values[1, :2] = 0.0
    batch = metric(values)
    assert batch.shape == (3,)
    loop = [metric(values[i : i + 1])[0] for i in range(3)]
    np.testing.assert_allclose(batch, loop, rtol=1e-6)
    # an Attribution and its values agree; the feature axes are flattened
    np.testing.assert_allclose(metric(Attribution(values=values, target=np.zeros(3))), batch)
    np.testing.assert_allclose(metric(values.reshape(3, -1)), batch, rtol=1e-6)


def test_scale_invariance_and_order():
    rng = np.random.default_rng(1)
    values = rng.normal(size=(2, 30)).astype(np.float32)
    for metric in (sparseness, complexity, effective_complexity):
        np.testing.assert_allclose(metric(values), metric(7.0 * values), rtol=1e-5)
    # concentrating the same magnitude raises sparseness and lowers complexity
    spread, peaked = np.ones((1, 10)), np.eye(1, 10) * 10.0
    assert sparseness(peaked)[0] > sparseness(spread)[0]
    assert complexity(peaked)[0] < complexity(spread)[0]


def test_errors_name_the_argument():
    with pytest.raises(ValueError, match="attribution must be a batch"):
        sparseness(np.ones(4))
    with pytest.raises(ValueError, match="attribution contains NaN"):
        complexity(np.array([[1.0, np.nan]]))
    with pytest.raises(TypeError, match="attribution must hold real numbers"):
        complexity(np.array([["a", "b"]]))
    with pytest.raises(ValueError, match="eps must be a finite number >= 0"):
        effective_complexity(A, eps=-1.0)
    with pytest.raises(TypeError, match="relative must be True or False"):
        effective_complexity(A, relative=1)
