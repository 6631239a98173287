"""Removal metrics: known answers on linear models, references by hand, batch = loop, errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.spatial.distance
import scipy.stats
from conftest import linear_model

import jaxplain
from jaxplain.methods.perturbation import patch_mask
from jaxplain.metrics import curves
from jaxplain.metrics._common import Curve
from jaxplain.metrics.removal import (
    faithfulness_estimate,
    irof,
    monotonicity,
    monotonicity_correlation,
    region_perturbation,
    selectivity,
    sufficiency,
)

KEY = jax.random.key(0)
W = np.array([1.0, 2.0, 4.0, 8.0], np.float32)
# class 1 is w . x, class 0 is constant 0
LINEAR = linear_model(np.stack([np.zeros(4, np.float32), W], 1))
ONES = linear_model(np.stack([np.zeros(4, np.float32), np.ones(4, np.float32)], 1))
X = np.array([[1.0, 2.0, 3.0, 4.0], [-1.0, 2.0, 3.0, 4.0], [-1.0, -2.0, 3.0, 4.0]], np.float32)
_A = np.random.default_rng(0).normal(size=(4, 5)).astype(np.float32)
_B = np.random.default_rng(1).normal(size=(5, 3)).astype(np.float32)
# a small nonlinear 3-class model (a closure: it compiles faster than a flax module)
MLP = jaxplain.Model.from_callable(lambda x: jnp.tanh(x @ _A) @ _B + 0.3 * (x @ _A) ** 2 @ _B)
RANDOM = np.random.default_rng(3).normal(size=X.shape).astype(np.float32)


_JITTED = {}


def f(model, x, target=1):
    """F_t(x) through a jitted forward pass (one per model)."""
    forward = _JITTED.setdefault(id(model), jax.jit(model))
    return np.asarray(forward(jnp.asarray(x)))[np.arange(len(x)), target]


def batch_equals_loop(metric, x, attribution, **per_example):
    """Each example run alone gives its row of the batch's result (a Curve's fractions whole);
    `per_example` arrays (e.g. segments) are sliced with it."""
    whole = metric(x, attribution, **per_example)
    for b in range(len(x)):
        alone = {name: value[b : b + 1] for name, value in per_example.items()}
        one = metric(x[b : b + 1], attribution[b : b + 1], **alone)
        if isinstance(whole, Curve):
            np.testing.assert_allclose(one.fractions, whole.fractions)
            one, want = (one.scores, one.auc), (whole.scores[b : b + 1], whole.auc[b : b + 1])
        else:
            want = whole[b : b + 1]
        for got, expected in zip(jax.tree_util.tree_leaves(one), jax.tree_util.tree_leaves(want)):
            np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


# --- monotonicity --------------------------------------------------------------------------


def test_monotonicity_of_exact_contributions_is_the_sign_of_the_second_lowest():
    # Added lowest first, the output steps by the sorted contributions after the first:
    # (1, 2, 3, 4) and (-1, 2, 3, 4) only rise; (-1, -2, 3, 4) gives -2 then -3.
    values = X * np.ones(4, np.float32)
    np.testing.assert_array_equal(monotonicity(ONES, X, values, target=1), [True, True, False])
    # ranked by the opposite sign they come highest first: 4, 7, 9, 10 rises, 4, 7, 9, 8 does not
    np.testing.assert_array_equal(monotonicity(ONES, X, -values, target=1), [True, False, False])


def test_monotonicity_starts_from_the_baseline():
    # contributions w (x - b): with b = x - 1 every contribution is w_i > 0
    baseline = X - 1.0
    assert monotonicity(LINEAR, X, W * (X - baseline), target=1, baseline=baseline).all()
    # from "mean" each example's own mean: (1, 2, 3, 4) - 2.5 gives w (-1.5, -0.5, 0.5, 1.5)
    values = W * (X[:1] - 2.5)  # (-1.5, -1, 2, 12): the second lowest is negative
    assert not monotonicity(LINEAR, X[:1], values, target=1, baseline="mean")[0]


def test_monotonicity_batch_equals_loop_and_chunks():
    run = lambda x, a, **o: monotonicity(LINEAR, x, a, target=1, **o)
    batch_equals_loop(run, X, W * X)  # True, True, False
    np.testing.assert_array_equal(run(X, W * X, chunk_size=2), [True, True, False])


# --- monotonicity correlation ----------------------------------------------------------------


def _expected_squares(model, x, key, samples, target=1):
    """e_i by hand with the metric's draws: point i (group i // samples) from fold_in(key, i)."""
    total = np.zeros(x.shape, np.float64)
    at_x = f(model, x, target)
    for i in range(x.shape[1] * samples):
        group = i // samples
        u = np.asarray(jax.random.uniform(jax.random.fold_in(key, i), x.shape, jnp.float32))
        moved = np.where(np.arange(x.shape[1]) == group, u, x)
        total[:, group] += (f(model, moved, target) - at_x) ** 2
    return total / samples


def test_monotonicity_correlation_matches_a_loop_over_the_same_draws():
    # 8 features of equal weight at equal values: every e_i has the same expectation, so
    # the ranking of the estimates, and the correlation, is decided by the draws
    model = jaxplain.Model.from_callable(lambda x: jnp.stack([jnp.tanh(2 * x).sum(1), (x * x).sum(1)], 1))
    x = np.full((2, 8), 0.5, np.float32)
    values = np.random.default_rng(7).normal(size=x.shape).astype(np.float32)
    e = _expected_squares(model, x, KEY, 3, target=0)
    want = [scipy.stats.spearmanr(np.abs(a), v)[0] for a, v in zip(values, e)]
    got = monotonicity_correlation(model, x, values, target=0, key=KEY, samples=3)
    np.testing.assert_allclose(got, want, atol=1e-5)
    np.testing.assert_allclose(
        monotonicity_correlation(model, x, values, target=0, key=KEY, samples=3, chunk_size=5),
        want,
        atol=1e-5,
    )


def test_monotonicity_correlation_of_a_linear_model():
    # x = 1/2: e_i = w_i^2 / 12 in expectation, 4x apart from one feature to the next, far
    # beyond the spread of 16 draws; |w * x| orders the features as e does, whatever its sign.
    x = np.full((3, 4), 0.5, np.float32)
    run = lambda x, a: monotonicity_correlation(LINEAR, x, a, target=1, key=KEY, samples=16)
    values = W * x * np.array([[1.0], [-1.0], [2.0]], np.float32)
    np.testing.assert_allclose(run(x, values), 1.0)
    np.testing.assert_allclose(run(x, np.broadcast_to(W[::-1], x.shape)), -1.0)
    batch_equals_loop(run, x, values)


# --- faithfulness estimate -------------------------------------------------------------------


def test_faithfulness_estimate_of_exact_contributions_is_one():
    np.testing.assert_allclose(faithfulness_estimate(LINEAR, X, W * X, target=1), 1.0, atol=1e-6)
    baseline = np.array([0.5, -1.0, 2.0, 0.0], np.float32)
    value = faithfulness_estimate(LINEAR, X, W * (X - baseline), target=1, baseline=baseline)
    np.testing.assert_allclose(value, 1.0, atol=1e-6)


def test_faithfulness_estimate_by_hand():
    # drops are w_i x_i = (1, 4, 12, 32) for x = (1, 2, 3, 4); the attribution (1, 0, 0, 0)
    drops = np.array([1.0, 4.0, 12.0, 32.0])
    attribution = np.array([[1.0, 0.0, 0.0, 0.0]], np.float32)
    want = np.corrcoef(attribution[0], drops)[0, 1]
    np.testing.assert_allclose(faithfulness_estimate(LINEAR, X[:1], attribution, target=1), [want], rtol=1e-5)
    # groups {0, 1}, {2, 3}: two points, attribution sums (1, 0), drops (5, 44): -1
    value = faithfulness_estimate(LINEAR, X[:1], attribution, target=1, feature_mask=np.array([0, 0, 1, 1]))
    np.testing.assert_allclose(value, [-1.0], atol=1e-6)


def test_faithfulness_estimate_matches_a_loop_and_chunks():
    at_x = f(MLP, X, 2)
    drops = np.stack([at_x - f(MLP, np.where(np.arange(4) == i, 0.0, X), 2) for i in range(4)], 1)
    want = [np.corrcoef(a, d)[0, 1] for a, d in zip(RANDOM, drops)]
    got = faithfulness_estimate(MLP, X, RANDOM, target=2)
    np.testing.assert_allclose(got, want, atol=1e-5)
    batch_equals_loop(lambda x, a: faithfulness_estimate(MLP, x, a, target=2), X, RANDOM)


# --- IROF ------------------------------------------------------------------------------------


def test_irof_by_hand():
    # F = sum x, x = (1, 2, 3, 4), removed segments at the example's mean 2.5 (F(x) = 10).
    # Segments (0, 1, 2, 2): means of x (1, 2, 3.5): removing 2, 1, 0 gives F = 8, 8.5, 10:
    #   1 - [(1 + .8) + (.8 + .85) + (.85 + 1)] / 6 = 1 - 5.3 / 6.
    # Segments (0, 0, 0, 1) (G_b = 2 < G = 3): removing 1, 0 gives F = 8.5, 10:
    #   1 - [(1 + .85) + (.85 + 1)] / 4 = 0.075; its third point changes nothing.
    x = np.array([[1.0, 2.0, 3.0, 4.0]] * 2, np.float32)
    segments = np.array([[0, 1, 2, 2], [0, 0, 0, 1]])
    got = irof(ONES, x, x, target=1, segments=segments)
    np.testing.assert_allclose(got, [1 - 5.3 / 6, 0.075], rtol=1e-5)
    # zeros: removing segment 2 then 1 then 0 leaves 3, 1, 0 of 10: 1 - (13 + 4 + 1) / 60
    got = irof(ONES, x[:1], x[:1], target=1, segments=segments[:1], baseline="zeros")
    np.testing.assert_allclose(got, [1 - 18 / 60], rtol=1e-5)


def _irof_reference(model, x, values, segments, target):
    """IROF by hand: per example, segments removed by mean attribution to the example's mean."""
    out = []
    for xb, vb, sb in zip(x, values, segments):
        sb = np.broadcast_to(sb[..., None], xb.shape)
        count = sb.max() + 1
        means = np.array([vb[sb == s].mean() for s in range(count)])
        moved, ratios = xb.copy(), [1.0]
        at_x = f(model, xb[None], target)[0]
        for s in np.argsort(-means, kind="stable"):
            moved = np.where(sb == s, xb.mean(), moved)
            ratios.append(f(model, moved[None], target)[0] / at_x)
        out.append(1 - np.trapezoid(ratios, np.linspace(0, 1, count + 1)))
    return np.array(out)


def test_irof_on_images_with_per_example_segments():
    rng = np.random.default_rng(1)
    x = rng.uniform(0.5, 1.0, size=(2, 4, 4, 2)).astype(np.float32)
    values = rng.normal(size=x.shape).astype(np.float32)
    segments = np.stack([patch_mask((4, 4), (2, 2)), (np.arange(16).reshape(4, 4) % 3)]).astype(np.int32)
    model = linear_model(rng.uniform(0.1, 1.0, size=(32, 3)).astype(np.float32))
    got = irof(model, x, values, target=1, segments=segments)
    np.testing.assert_allclose(got, _irof_reference(model, x, values, segments, 1), rtol=1e-4, atol=1e-5)
    batch_equals_loop(
        lambda x, a, segments: irof(model, x, a, target=1, segments=segments), x, values, segments=segments
    )
    np.testing.assert_allclose(
        irof(model, x, values, target=1, segments=segments, chunk_size=2), got, atol=1e-6
    )


@pytest.mark.slow
def test_irof_default_segments_are_slic():
    from jaxplain.superpixels import superpixels

    rng = np.random.default_rng(2)
    x = rng.uniform(0.2, 1.0, size=(1, 8, 8, 3)).astype(np.float32)
    values = rng.normal(size=x.shape).astype(np.float32)
    model = linear_model(rng.uniform(0.1, 1.0, size=(192, 2)).astype(np.float32))
    want = irof(model, x, values, target=0, segments=superpixels(x, "slic"))
    np.testing.assert_allclose(irof(model, x, values, target=0), want)


# --- selectivity and region perturbation --------------------------------------------------------


def test_selectivity_by_hand():
    # patches {0, 1}, {2, 3} of x = (1, 2, 3, 4), F = sum x: 10, then 3, then 0
    curve = selectivity(ONES, X[:1], X[:1], target=1, patch_size=2)
    np.testing.assert_allclose(curve.fractions, [0.0, 0.5, 1.0])
    np.testing.assert_allclose(curve.scores, [[10.0, 3.0, 0.0]])
    np.testing.assert_allclose(curve.auc, [(10 + 3) / 4 + 3 / 4])
    batch_equals_loop(lambda x, a: selectivity(ONES, x, a, target=1, patch_size=2), X, W * X)


@pytest.mark.slow
def test_selectivity_is_deletion_over_patches():
    rng = np.random.default_rng(4)
    x = rng.normal(size=(2, 5, 5, 2)).astype(np.float32)
    values = rng.normal(size=x.shape).astype(np.float32)
    model = linear_model(rng.normal(size=(50, 2)).astype(np.float32))
    got = selectivity(model, x, values, target=0, patch_size=2)
    mask = patch_mask((5, 5, 2), (2, 2, 2))  # 3 x 3 boxes, the last row and column smaller
    want = curves.deletion(model, x, values, target=0, feature_mask=mask, steps=9)
    for a, b in zip(got, want):
        np.testing.assert_allclose(a, b, atol=1e-6)
    batch_equals_loop(lambda x, a: selectivity(model, x, a, target=0, patch_size=2), x, values)


def test_region_perturbation_by_hand():
    # w x = (1, 4, 12, 32) for x = (1, 2, 3, 4), one feature per patch, zeros
    morf = region_perturbation(LINEAR, X[:1], W * X[:1], target=1, patch_size=1, baseline=0.0)
    np.testing.assert_allclose(morf.scores, [[0.0, 32.0, 44.0, 48.0, 49.0]])
    np.testing.assert_allclose(morf.fractions, [0.0, 0.25, 0.5, 0.75, 1.0])
    np.testing.assert_allclose(morf.auc, [(32 / 2 + (32 + 44) / 2 + (44 + 48) / 2 + (48 + 49) / 2) / 4])
    lerf = region_perturbation(LINEAR, X[:1], W * X[:1], target=1, patch_size=1, baseline=0.0, order="least")
    np.testing.assert_allclose(lerf.scores, [[0.0, 1.0, 5.0, 17.0, 49.0]])
    short = region_perturbation(LINEAR, X[:1], W * X[:1], target=1, patch_size=1, baseline=0.0, regions=2)
    np.testing.assert_allclose(short.scores, [[0.0, 32.0, 44.0]])
    np.testing.assert_allclose(short.fractions, [0.0, 0.25, 0.5])


def test_region_perturbation_uniform_noise_by_hand():
    # the fill is one draw per run, U[min x, max x] per example, kept as patches are added
    key = jax.random.key(3)
    curve = region_perturbation(LINEAR, X, W * X, target=1, key=key, patch_size=1)
    low, high = X.min(1, keepdims=True), X.max(1, keepdims=True)
    fill = low + (high - low) * np.asarray(jax.random.uniform(key, X.shape, jnp.float32))
    order = np.argsort(-(W * X), axis=1, kind="stable")
    want = np.zeros((3, 5))
    for b in range(3):
        removed = np.zeros(4, bool)
        for k in range(1, 5):
            removed[order[b, k - 1]] = True
            want[b, k] = (W * (X[b] - fill[b]))[removed].sum()
    np.testing.assert_allclose(curve.scores, want, rtol=1e-5, atol=1e-5)
    again = region_perturbation(LINEAR, X, W * X, target=1, key=key, patch_size=1, chunk_size=2)
    np.testing.assert_allclose(again.scores, curve.scores, rtol=1e-5, atol=1e-6)


def test_region_perturbation_batch_equals_loop_on_images():
    rng = np.random.default_rng(5)
    x = rng.normal(size=(3, 4, 4, 1)).astype(np.float32)
    values = rng.normal(size=x.shape).astype(np.float32)
    model = linear_model(rng.normal(size=(16, 2)).astype(np.float32))
    run = lambda x, a: region_perturbation(
        model, x, a, target=1, patch_size=2, baseline="mean", order="least"
    )
    batch_equals_loop(run, x, values)


# --- sufficiency -------------------------------------------------------------------------------


def test_sufficiency_by_hand():
    # explanations (1, 0), (1, 0), (0, 1), (0, 1): distances 0 within a pair, sqrt 2 = the
    # largest across; with the labels (0, 0, 0, 1) the first pair agrees, the second does not
    x = np.zeros((4, 2), np.float32)
    values = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]], np.float32)
    model = linear_model(np.eye(2, dtype=np.float32))
    got = sufficiency(model, x, values, target=np.array([0, 0, 0, 1]), standardize=False)
    np.testing.assert_allclose(got, [1.0, 1.0, 0.0, 0.0])
    # threshold 1 makes every other example similar: 2 of 3, 2 of 3, 2 of 3, 0 of 3
    got = sufficiency(model, x, values, target=np.array([0, 0, 0, 1]), standardize=False, threshold=1.0)
    np.testing.assert_allclose(got, [2 / 3, 2 / 3, 2 / 3, 0.0])
    # alone, no example has another to agree with
    np.testing.assert_allclose(sufficiency(model, x[:1], values[:1], target=0), [0.0])


def test_sufficiency_matches_scipy_seuclidean_and_predicted_labels():
    rng = np.random.default_rng(6)
    x = rng.normal(size=(8, 4)).astype(np.float32)
    values = rng.normal(size=x.shape).astype(np.float32)
    flat = np.abs(values)
    distances = scipy.spatial.distance.cdist(flat, flat, "seuclidean")
    similar = (distances / distances.max() <= 0.6) & ~np.eye(8, dtype=bool)
    labels = np.asarray(jax.jit(MLP)(jnp.asarray(x))).argmax(1)
    same = labels[:, None] == labels[None, :]
    want = np.where(similar.sum(1) > 0, (similar & same).sum(1) / np.maximum(similar.sum(1), 1), 0.0)
    got = sufficiency(MLP, x, values)
    np.testing.assert_allclose(got, want, atol=1e-6)
    # a common scale of the attributions changes nothing
    np.testing.assert_allclose(sufficiency(MLP, x, 3.0 * values), got, atol=1e-6)
    # a batch property: permuting the batch permutes the scores
    order = rng.permutation(8)
    np.testing.assert_allclose(sufficiency(MLP, x[order], values[order]), got[order], atol=1e-6)


# --- errors ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "call, error, match",
    [
        (lambda: monotonicity(LINEAR, X, X[:, :3], target=1), ValueError, "attribution must be shaped"),
        (lambda: monotonicity(LINEAR, X, X, target=1, baseline="black"), ValueError, "baseline must be"),
        (lambda: monotonicity(LINEAR, X, X, target=1, key=KEY), TypeError, "key=None"),
        (lambda: monotonicity(LINEAR, X, X, target=1, baseline="uniform"), TypeError, "key is required"),
        (lambda: monotonicity_correlation(LINEAR, X, X, target=1, key=None), TypeError, "key"),
        (lambda: monotonicity_correlation(LINEAR, X, X, target=1, key=KEY, samples=0), ValueError, "samples"),
        (
            lambda: monotonicity_correlation(LINEAR, X, X, target=1, key=KEY, low=1, high=0),
            ValueError,
            "high",
        ),
        (
            lambda: monotonicity_correlation(LINEAR, X, X, target=1, key=KEY, low=np.zeros(3)),
            ValueError,
            "low",
        ),
        (
            lambda: faithfulness_estimate(LINEAR, X, X, target=1, feature_mask=np.zeros(4, int)),
            ValueError,
            "at least 2",
        ),
        (lambda: faithfulness_estimate(LINEAR, X, X, target=1, baseline="uniform"), ValueError, "baseline"),
        (lambda: irof(LINEAR, X, X, target=1), ValueError, "pass segments"),
        (lambda: irof(LINEAR, X, X, target=1, segments=np.array([[0, 2, 2, 2]] * 3)), ValueError, "segments"),
        (lambda: irof(LINEAR, X, X, target=1, segments=np.ones((3, 4)) * 0.5), TypeError, "segments"),
        (lambda: selectivity(LINEAR, X, X, target=1, patch_size=0), ValueError, "patch_size"),
        (lambda: selectivity(LINEAR, X, X, target=1, patch_size=(2, 2)), ValueError, "patch_size"),
        (lambda: region_perturbation(LINEAR, X, X, target=1), TypeError, "key is required"),
        (lambda: region_perturbation(LINEAR, X, X, target=1, key=KEY, order="morf"), ValueError, "order"),
        (lambda: region_perturbation(LINEAR, X, X, target=1, key=KEY, regions=9), ValueError, "regions"),
        (lambda: sufficiency(LINEAR, X, X, threshold=1.5), ValueError, "threshold"),
        (lambda: sufficiency(LINEAR, X, X, absolute=1), TypeError, "absolute"),
        (lambda: sufficiency(LINEAR, X, X[None]), ValueError, "attribution"),
    ],
)
def test_errors_name_the_argument(call, error, match):
    with pytest.raises(error, match=match):
        call()
