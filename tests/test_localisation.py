"""Localisation metrics: known answers on tiny inputs, batch equals loop, ties, errors."""

import doctest

import jax
import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from jaxplain.attribution import Attribution
from jaxplain.metrics.localisation import (
    attribution_localisation,
    auc,
    focus,
    mosaics,
    pointing_game,
    relevance_mass_accuracy,
    relevance_rank_accuracy,
    top_k_intersection,
)

# Two examples of 6 features; the mask marks features 0-1 and 3-5.
A = np.array([[3.0, 1.0, -2.0, 0.5, 0.0, 0.5], [1.0, 2.0, 2.0, -1.0, 0.0, 4.0]])
S = np.array([[1, 1, 0, 0, 0, 0], [0, 0, 0, 1, 1, 1]], bool)

KNOWN = [
    # argmax 0 is in the mask; argmax 5 is in the mask
    (pointing_game, {}, [1.0, 1.0]),
    # positive parts: (3 + 1) / 5; 4 / 9
    (attribution_localisation, {}, [4 / 5, 4 / 9]),
    # weighted: times N / |S| = 6/2, 6/3
    (attribution_localisation, {"weighted": True}, [12 / 5, 8 / 9]),
    # signed sums: 4 / 3; (-1 + 0 + 4) / 8
    (relevance_mass_accuracy, {}, [4 / 3, 3 / 8]),
    # |a|: 4 / 7; 5 / 10
    (relevance_mass_accuracy, {"abs": True}, [4 / 7, 5 / 10]),
    # K = 2: top {0, 1}, both in the mask; K = 3: top {5, 1, 2} holds 5
    (relevance_rank_accuracy, {}, [1.0, 1 / 3]),
    # |a|: top 2 {0, 2}; top 3 {5, 1, 2} (|-1| ties nothing at 2)
    (relevance_rank_accuracy, {"abs": True}, [1 / 2, 1 / 3]),
    # top 3 of example 0: {0, 1, then 3 or 5 tied at 0.5}: 2 / 3; example 1: {5, 1, 2}: 1 / 3
    (top_k_intersection, {"k": 3}, [2 / 3, 1 / 3]),
    (top_k_intersection, {"k": 3, "concept_influence": True}, [2 / 3 * 3, 1 / 3 * 2]),
]


@pytest.mark.parametrize("metric, options, expected", KNOWN, ids=lambda v: getattr(v, "__name__", None))
def test_known_answers(metric, options, expected):
    np.testing.assert_allclose(metric(A, S, **options), expected, rtol=1e-6)


def test_auc_known_answer_and_sklearn():
    # example 0: positives {3, 1} vs negatives {-2, .5, 0, .5}: every pair above -> 1
    # example 1: positives {-1, 0, 4} vs negatives {1, 2, 2}: 4 beats all 3 -> 3 / 9
    np.testing.assert_allclose(auc(A, S), [1.0, 3 / 9], rtol=1e-6)
    # many ties: sklearn's exact tie handling (a half for each tied pair)
    rng = np.random.default_rng(0)
    values = rng.integers(0, 4, size=(5, 40)).astype(np.float32)
    mask = rng.random((5, 40)) < 0.3
    mask[:, 0], mask[:, 1] = True, False
    expected = [roc_auc_score(m, v) for m, v in zip(mask, values)]
    np.testing.assert_allclose(auc(values, mask), expected, rtol=1e-6)


def test_ties_are_shared_in_expectation():
    values = np.zeros((1, 4))
    mask = np.array([[1, 0, 0, 0]], bool)
    # all-zero: chance level everywhere (Quantus's pointing game would say 1)
    np.testing.assert_allclose(pointing_game(values, mask), [0.25])
    np.testing.assert_allclose(relevance_rank_accuracy(values, mask), [0.25])
    np.testing.assert_allclose(top_k_intersection(values, mask, k=2), [0.25])
    np.testing.assert_allclose(auc(values, mask), [0.5])
    # no relevance at all: documented 0, not NaN
    np.testing.assert_allclose(relevance_mass_accuracy(values, mask), [0.0])
    np.testing.assert_allclose(attribution_localisation(values, mask), [0.0])
    # a tie at the k-th value: [2, 1, 1, 0], mask {1}: top 2 = 0 then 1 or 2 -> 1/2 hit of 2
    tied = np.array([[2.0, 1.0, 1.0, 0.0]])
    np.testing.assert_allclose(top_k_intersection(tied, np.array([[0, 1, 0, 0]]), k=2), [0.25])


def test_pointing_game_tolerance_and_weighted():
    values = np.zeros((2, 7, 7))
    values[:, 3, 3] = 1.0
    mask = np.zeros((2, 7, 7), bool)
    mask[0, 3, 5] = True  # distance 2 from the maximum
    mask[1, 5, 5] = True  # distance sqrt(8) ~ 2.83
    np.testing.assert_allclose(pointing_game(values, mask), [0, 0])
    np.testing.assert_allclose(pointing_game(values, mask, tolerance=2), [1, 0])
    np.testing.assert_allclose(pointing_game(values, mask, tolerance=3), [1, 1])
    values[:, 3, 5] = 1.0  # both maxima, one of them on the object of example 0
    np.testing.assert_allclose(pointing_game(values, mask, weighted=True), [0.5 * (1 - 1 / 49), 0])


def test_images_per_pixel_sum_channels():
    rng = np.random.default_rng(1)
    values = rng.normal(size=(3, 4, 4, 2)).astype(np.float32)
    mask = rng.random((3, 4, 4)) < 0.4
    mask[:, 0, 0], mask[:, 0, 1] = True, False
    summed = values.sum(-1)
    for metric in (
        pointing_game,
        relevance_mass_accuracy,
        relevance_rank_accuracy,
        auc,
        attribution_localisation,
    ):
        np.testing.assert_allclose(metric(values, mask), metric(summed, mask), rtol=1e-5)
        np.testing.assert_allclose(metric(values, mask[..., None]), metric(summed, mask), rtol=1e-5)
    np.testing.assert_allclose(
        top_k_intersection(values, mask, k=5, abs=True), top_k_intersection(np.abs(summed), mask, k=5)
    )
    attribution = Attribution(values=values, target=np.zeros(3, np.int32))
    np.testing.assert_allclose(auc(attribution, mask), auc(summed, mask), rtol=1e-6)


METRICS = [
    (pointing_game, {}),
    (attribution_localisation, {"weighted": True}),
    (top_k_intersection, {"k": 7}),
    (relevance_mass_accuracy, {"abs": True}),
    (relevance_rank_accuracy, {}),
    (auc, {}),
]


@pytest.mark.parametrize("metric, options", METRICS, ids=lambda v: getattr(v, "__name__", None))
def test_batch_equals_loop(metric, options):
    rng = np.random.default_rng(2)
    values = np.round(rng.normal(size=(4, 5, 5)), 1).astype(np.float32)  # rounding makes ties
    mask = rng.random((4, 5, 5)) < 0.3
    mask[:, 0, 0], mask[:, 4, 4] = True, False
    batch = metric(values, mask, **options)
    assert batch.shape == (4,) and np.isfinite(batch).all()
    loop = [metric(values[i : i + 1], mask[i : i + 1], **options)[0] for i in range(4)]
    np.testing.assert_allclose(batch, loop, rtol=1e-6)


def test_errors_name_the_argument():
    with pytest.raises(ValueError, match="mask is empty .* examples 1"):
        pointing_game(A, np.array([[1, 0, 0, 0, 0, 0], [0] * 6]))
    with pytest.raises(ValueError, match="mask marks every feature .* examples 0"):
        auc(A, np.array([[1] * 6, [1, 0, 0, 0, 0, 0]]))
    with pytest.raises(ValueError, match="mask must be shaped like the attribution"):
        relevance_mass_accuracy(A, S[:, :5])
    with pytest.raises(ValueError, match="mask must hold only 0 and 1"):
        relevance_mass_accuracy(A, S * 2)
    with pytest.raises(TypeError, match="mask must be a bool or 0/1 array"):
        relevance_mass_accuracy(A, S.astype(complex))
    with pytest.raises(ValueError, match="attribution must be a batch"):
        relevance_mass_accuracy(A[0], S[0])
    with pytest.raises(ValueError, match="attribution contains NaN"):
        relevance_mass_accuracy(np.where(S, np.nan, A), S)
    with pytest.raises(ValueError, match="k must be <= 6"):
        top_k_intersection(A, S, k=7)
    with pytest.raises(TypeError, match="k must be an int"):
        top_k_intersection(A, S, k=2.0)
    with pytest.raises(ValueError, match="tolerance > 0 needs per-pixel"):
        pointing_game(A, S, tolerance=1)
    with pytest.raises(TypeError, match="tolerance must be a whole number"):
        pointing_game(A[:, None], S[:, None], tolerance=1.5)
    with pytest.raises(TypeError, match="weighted must be True or False"):
        pointing_game(A, S, weighted="yes")
    with pytest.raises(TypeError, match="abs must be True or False"):
        auc(A, S, abs=1)


# --- focus and mosaics -------------------------------------------------------------------


def test_focus_known_answer():
    values = np.zeros((2, 4, 4))
    values[0, :2, :2] = 1.0  # top-left: 4
    values[0, 2:, 2:] = 0.5  # bottom-right: 2
    values[0, 0, 3] = -5.0  # negative relevance is dropped
    values[1] = 1.0
    quadrants = np.array([[1, 0, 0, 1], [1, 1, 0, 0]], bool)
    np.testing.assert_allclose(focus(values, quadrants), [1.0, 0.5])
    np.testing.assert_allclose(focus(values, np.array([[0, 1, 1, 0], [0, 0, 0, 1]])), [0.0, 0.25])
    # |a|: example 0's -5 lies in the top-right tile
    np.testing.assert_allclose(focus(values, quadrants, abs=True)[0], 6 / 11)
    # NHWC: channels summed before the clip; no positive relevance: 0
    channels = np.stack([values, -values], axis=-1)
    np.testing.assert_allclose(focus(channels, quadrants), [0.0, 0.0])
    batch = focus(values, quadrants)
    loop = [focus(values[i : i + 1], quadrants[i : i + 1])[0] for i in range(2)]
    np.testing.assert_allclose(batch, loop)


def test_mosaics():
    x = np.arange(8 * 2 * 2 * 1, dtype=np.float32).reshape(8, 2, 2, 1)
    labels = np.array([0, 0, 0, 1, 1, 2, 2, 2])
    built = mosaics(x, labels, key=jax.random.key(3), count=20)
    assert built.images.shape == (20, 4, 4, 1)
    sources = np.asarray(built.sources)
    targets = np.asarray(built.targets)
    quadrants = np.asarray(built.quadrants)
    assert (quadrants.sum(1) == 2).all()
    np.testing.assert_array_equal(labels[sources] == targets[:, None], quadrants)
    assert all(len(set(row)) == 4 for row in sources)
    # tile order: top-left, top-right, bottom-left, bottom-right
    images = np.asarray(built.images)
    for quadrant, (rows, cols) in enumerate([(0, 0), (0, 2), (2, 0), (2, 2)]):
        np.testing.assert_array_equal(images[:, rows : rows + 2, cols : cols + 2], x[sources[:, quadrant]])
    # same key, same mosaics; mosaic i does not depend on how many are asked for
    again = mosaics(x, labels, key=jax.random.key(3), count=5)
    np.testing.assert_array_equal(np.asarray(again.sources), sources[:5])
    other = mosaics(x, labels, key=jax.random.key(4), count=20)
    assert not np.array_equal(np.asarray(other.sources), sources)
    # focus of an attribution equal to the target-class indicator: 1
    indicator = np.repeat(np.repeat(quadrants.reshape(20, 2, 2), 2, 1), 2, 2).astype(np.float32)
    np.testing.assert_allclose(focus(indicator, built.quadrants), np.ones(20))


def test_mosaics_errors():
    x = np.zeros((4, 2, 2, 1), np.float32)
    with pytest.raises(ValueError, match="labels must have a class with at least two"):
        mosaics(x, np.array([0, 1, 2, 3]), key=jax.random.key(0))
    with pytest.raises(ValueError, match=r"labels must be ints, one per image, shape \(4,\)"):
        mosaics(x, np.array([0, 1]), key=jax.random.key(0))
    with pytest.raises(TypeError, match="key is required"):
        mosaics(x, np.array([0, 0, 1, 1]), key=None)
    with pytest.raises(ValueError, match="x must be a batch of images"):
        mosaics(np.zeros((4, 3)), np.array([0, 0, 1, 1]), key=jax.random.key(0))
    with pytest.raises(ValueError, match="even height and width"):
        focus(np.zeros((1, 3, 4)), np.ones((1, 4)))
    with pytest.raises(ValueError, match=r"quadrants must have shape \(1, 4\)"):
        focus(np.zeros((1, 4, 4)), np.ones((1, 3)))


@pytest.mark.parametrize("module", ["localisation", "sparsity"])
def test_docstring_examples(module):
    import importlib

    result = doctest.testmod(importlib.import_module(f"jaxplain.metrics.{module}"))
    assert result.attempted > 0 and result.failed == 0


@pytest.mark.slow
def test_agrees_with_quantus_without_ties():
    quantus = pytest.importorskip("quantus")
    from jaxplain.metrics import sparsity

    rng = np.random.default_rng(0)
    x = rng.normal(size=(6, 1, 8, 8)).astype(np.float32)
    a = rng.normal(size=(6, 1, 8, 8)).astype(np.float32)
    s = (rng.random((6, 1, 8, 8)) < 0.3).astype(np.float32)

    def run(metric):
        scores = metric(model=None, x_batch=x, y_batch=np.zeros(6, int), a_batch=a.copy(), s_batch=s)
        return np.asarray(scores, float)

    ours, mask = a[:, 0], s[:, 0].astype(bool)
    pairs = [
        (quantus.PointingGame(disable_warnings=True), pointing_game(ours, mask), 0),
        (
            quantus.AttributionLocalisation(abs=False, positive_attributions=True, disable_warnings=True),
            attribution_localisation(ours, mask),
            1e-6,
        ),
        (quantus.TopKIntersection(k=10, disable_warnings=True), top_k_intersection(ours, mask, k=10), 1e-6),
        # signed float32 sums whose totals come near 0
        (quantus.RelevanceMassAccuracy(disable_warnings=True), relevance_mass_accuracy(ours, mask), 1e-3),
        (quantus.RelevanceRankAccuracy(disable_warnings=True), relevance_rank_accuracy(ours, mask), 1e-6),
        (quantus.AUC(disable_warnings=True), auc(ours, mask), 1e-6),
        (quantus.Sparseness(disable_warnings=True), sparsity.sparseness(ours), 1e-6),
        (quantus.Complexity(disable_warnings=True), sparsity.complexity(ours), 1e-5),
        (quantus.EffectiveComplexity(disable_warnings=True), sparsity.effective_complexity(ours), 0),
    ]
    for metric, expected, tolerance in pairs:
        np.testing.assert_allclose(run(metric), expected, atol=tolerance, err_msg=type(metric).__name__)
    quadrants = rng.random((6, 4)) < 0.5
    theirs = quantus.Focus(disable_warnings=True).evaluate_batch(
        a_batch=a.copy(), c_batch=quadrants.astype(int)
    )
    np.testing.assert_allclose(theirs, focus(ours, quadrants), atol=1e-6)
