"""Metrics: known answers on additive and linear models, slow references, invariances, errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats
from conftest import linear_model, mlp_model

import jaxplain
from jaxplain import metrics
from jaxplain.blur import gaussian as _blur
from jaxplain.metrics import curves

KEY = jax.random.key(0)


def additive_model():
    """The true model of synthetic_additive as a 2-class model: logits (0, f(x))."""

    def logits(x):
        return jnp.stack([jnp.zeros(x.shape[0], x.dtype), jaxplain.data.additive_logit(x)], -1)

    return jaxplain.Model.from_callable(logits)


ADDITIVE = additive_model()
_DATA = jaxplain.data.load("synthetic_additive")
X = _DATA.x_test[:6]  # (6, 8)
BASELINE = _DATA.x_train[:6]
SHAPLEY = jaxplain.exact_shapley(ADDITIVE, X, target=1, baseline=BASELINE)
PHI = jaxplain.data.additive_shapley(X, BASELINE)  # g_i(x_i) - g_i(b_i)
GROUPS = np.array([0, 0, 1, 1, 2, 3, 3, 4])
MLP = mlp_model(features=8)
RANDOM = np.random.default_rng(5).normal(size=X.shape).astype(np.float32)


def f(model, x, target=1):
    return np.asarray(model(jnp.asarray(x)))[np.arange(len(x)), target]


# --- infidelity and correlations: exact answers on the additive model ---------------------


def test_exact_shapley_values_are_accurate_here():
    np.testing.assert_allclose(SHAPLEY.values, PHI, atol=1e-5)


@pytest.mark.parametrize("mask", [None, GROUPS], ids=["features", "groups"])
def test_exact_shapley_of_an_additive_model_has_zero_infidelity(mask):
    # Removing any subset S changes F by sum_{i in S} phi_i, and I' = I / (x - b) is
    # S's indicator: every term of the expectation is zero.
    value = metrics.infidelity(
        ADDITIVE, X, SHAPLEY, target=1, key=KEY, baseline=BASELINE, feature_mask=mask, samples=32
    )
    np.testing.assert_allclose(value, 0.0, atol=1e-9)


def test_normalize_removes_the_attribution_scale():
    doubled = 2.0 * PHI
    raw = metrics.infidelity(ADDITIVE, X, doubled, target=1, key=KEY, baseline=BASELINE, samples=32)
    scaled = metrics.infidelity(
        ADDITIVE, X, doubled, target=1, key=KEY, baseline=BASELINE, samples=32, normalize=True
    )
    assert float(raw.min()) > 1e-3
    np.testing.assert_allclose(scaled, 0.0, atol=1e-8)


@pytest.mark.parametrize("perturbation", ["subset", "noise"])
def test_gradient_of_a_linear_model_has_zero_infidelity(perturbation, rng):
    # F(x) - F(x - I) = w . I exactly, and the gradient is w.
    model = linear_model(rng.normal(size=(8, 3)).astype(np.float32))
    gradient = jaxplain.saliency(model, X, target=2)
    value = metrics.infidelity(
        model,
        X,
        gradient,
        target=2,
        key=KEY,
        perturbation=perturbation,
        sigma=0.5,
        baseline=BASELINE,
        multiply_by_inputs=False,
        samples=32,
    )
    np.testing.assert_allclose(value, 0.0, atol=1e-9)


@pytest.mark.parametrize("multiply_by_inputs", [False, True])
@pytest.mark.parametrize("normalize", [False, True])
def test_infidelity_with_explicit_perturbations_matches_a_numpy_loop(multiply_by_inputs, normalize, rng):
    perturbations = rng.normal(scale=0.3, size=(5,) + X.shape).astype(np.float32)
    baseline = 0.5
    value = metrics.infidelity(
        MLP,
        X,
        RANDOM,
        target=1,
        key=None,
        perturbations=perturbations,
        baseline=baseline,
        multiply_by_inputs=multiply_by_inputs,
        normalize=normalize,
    )
    scale = np.where(X != baseline, X - baseline, 1.0) if multiply_by_inputs else 1.0
    explained = np.stack([(p / scale * RANDOM).sum(axis=1) for p in perturbations], 1)
    actual = np.stack([f(MLP, X) - f(MLP, X - p) for p in perturbations], 1)
    if normalize:
        explained = explained * ((explained * actual).mean(1) / (explained**2).mean(1))[:, None]
    np.testing.assert_allclose(value, ((explained - actual) ** 2).mean(1), rtol=1e-4, atol=1e-7)


def test_faithfulness_correlation_and_sensitivity_n_of_exact_shapley_values_are_one():
    correlation = metrics.faithfulness_correlation(
        ADDITIVE, X, SHAPLEY, target=1, key=KEY, subset_size=3, baseline=BASELINE, samples=16
    )
    np.testing.assert_allclose(correlation, 1.0, atol=1e-5)
    curve = metrics.sensitivity_n(
        ADDITIVE, X, SHAPLEY, target=1, key=KEY, subset_sizes=(1, 3, 6), baseline=BASELINE, samples=16
    )
    assert curve.shape == (len(X), 3)
    np.testing.assert_allclose(curve, 1.0, atol=1e-5)
    shuffled = metrics.faithfulness_correlation(
        ADDITIVE, X, RANDOM, target=1, key=KEY, subset_size=3, baseline=BASELINE, samples=16
    )
    assert float(shuffled.mean()) < 0.9


# --- deletion, insertion, pixel flipping ------------------------------------------------


def test_deletion_of_the_true_ranking_is_its_closed_form_and_beats_a_random_one():
    # Deleting the features in the order of their contributions phi_i: after s steps
    # F = F(x) - (sum of the s largest phi_i), the lowest curve any order can give.
    top = np.concatenate([np.zeros((len(X), 1)), np.cumsum(-np.sort(-PHI, axis=1), axis=1)], axis=1)
    expected = f(ADDITIVE, X)[:, None] - top
    flipped = metrics.pixel_flipping(ADDITIVE, X, SHAPLEY, target=1, baseline=BASELINE)
    np.testing.assert_allclose(flipped.scores, expected, atol=1e-5)
    np.testing.assert_allclose(flipped.fractions, np.arange(9) / 8)
    np.testing.assert_allclose(flipped.auc, np.trapezoid(expected, dx=1 / 8, axis=1), atol=1e-5)
    coarse = metrics.deletion(ADDITIVE, X, SHAPLEY, target=1, baseline=BASELINE, steps=4)
    np.testing.assert_allclose(coarse.scores, expected[:, ::2], atol=1e-5)
    random = metrics.pixel_flipping(ADDITIVE, X, RANDOM, target=1, baseline=BASELINE)
    assert np.all(random.auc >= flipped.auc - 1e-5) and float(random.auc.mean()) > float(flipped.auc.mean())


def test_insertion_mirrors_deletion():
    top = np.concatenate([np.zeros((len(X), 1)), np.cumsum(-np.sort(-PHI, axis=1), axis=1)], axis=1)
    inserted = metrics.insertion(ADDITIVE, X, SHAPLEY, target=1, baseline=BASELINE, steps=8)
    np.testing.assert_allclose(inserted.scores, f(ADDITIVE, BASELINE)[:, None] + top, atol=1e-5)
    random = metrics.insertion(ADDITIVE, X, RANDOM, target=1, baseline=BASELINE, steps=8)
    assert np.all(random.auc <= inserted.auc + 1e-5) and float(random.auc.mean()) < float(inserted.auc.mean())


IMAGES = np.random.default_rng(3).uniform(size=(3, 4, 4, 2)).astype(np.float32)
IMAGE_MODEL = linear_model(np.random.default_rng(4).normal(size=(32, 3)).astype(np.float32))


def test_per_pixel_ranks_pixels_by_their_channel_sum_and_moves_them_whole():
    weights = np.asarray(IMAGE_MODEL.params["w"])[:, 0].reshape(4, 4, 2)
    contributions = IMAGES * weights  # exact, against a zero baseline
    pixels = contributions.sum(axis=-1).reshape(3, -1)
    expected = f(IMAGE_MODEL, IMAGES, 0)[:, None] - np.concatenate(
        [np.zeros((3, 1)), np.cumsum(-np.sort(-pixels, axis=1), axis=1)], axis=1
    )
    curve = metrics.deletion(IMAGE_MODEL, IMAGES, contributions, target=0, per_pixel=True)
    np.testing.assert_allclose(curve.scores, expected, rtol=1e-5, atol=1e-5)


def test_mean_and_blur_baselines():
    deleted = metrics.deletion(IMAGE_MODEL, IMAGES, IMAGES, target=0, baseline="mean", steps=2)
    means = np.broadcast_to(IMAGES.mean(axis=(1, 2, 3), keepdims=True), IMAGES.shape)
    np.testing.assert_allclose(deleted.scores[:, -1], f(IMAGE_MODEL, means, 0), rtol=1e-5, atol=1e-5)
    inserted = metrics.insertion(IMAGE_MODEL, IMAGES, IMAGES, target=0, blur_sigma=1.0, steps=2)
    blurred = _blur(jnp.asarray(IMAGES), 1.0, 1.0)
    np.testing.assert_allclose(inserted.scores[:, 0], f(IMAGE_MODEL, blurred, 0), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(inserted.scores[:, -1], f(IMAGE_MODEL, IMAGES, 0), rtol=1e-5, atol=1e-5)


# --- ROAD ------------------------------------------------------------------------------


def dense_imputation(image, removed, offsets):
    """ROAD's equations solved densely, one unknown per removed feature (numpy loops)."""
    shape = image.shape
    cells = list(np.ndindex(*shape))
    unknown = [c for c in cells if removed[c]]
    index = {c: i for i, c in enumerate(unknown)}
    system, right = np.zeros((len(unknown),) * 2), np.zeros(len(unknown))
    for c in unknown:
        for offset, weight in offsets:
            q = tuple(np.add(c, offset))
            if all(0 <= v < n for v, n in zip(q, shape)):
                system[index[c], index[c]] += weight
                if removed[q]:
                    system[index[c], index[q]] -= weight
                else:
                    right[index[c]] += weight * image[q]
    result = image.astype(np.float64).copy()
    for c, v in zip(unknown, np.linalg.solve(system, right)):
        result[c] = v
    return result


@pytest.mark.parametrize("shape", [(1, 5, 6, 1), (1, 9)], ids=["image", "tabular"])
def test_linear_imputation_solves_roads_equations(shape, rng):
    image = rng.normal(size=shape)
    removed = rng.uniform(size=shape) < 0.5
    removed.flat[0] = False
    spatial = 2 if len(shape) == 4 else 1
    ours = curves._impute(jnp.asarray(image, jnp.float32), jnp.asarray(removed), spatial)
    squeeze = (0, -1) if spatial == 2 else (0,)
    expected = dense_imputation(
        image.squeeze(squeeze), removed.squeeze(squeeze), curves._neighbour_offsets(spatial)
    )
    np.testing.assert_allclose(np.asarray(ours).squeeze(squeeze), expected, atol=1e-4)


def test_road_keeps_a_linear_image_when_interior_pixels_are_removed():
    # A linear function is its neighbours' weighted mean wherever all 8 neighbours
    # exist, so removing interior pixels (ranked first) and imputing without noise
    # gives back x: every score is F(x).
    rows, cols = np.meshgrid(np.arange(6), np.arange(6), indexing="ij")
    image = (0.3 * rows - 0.2 * cols + 1.0)[None, :, :, None].astype(np.float32)
    interior = np.zeros((1, 6, 6, 1), np.float32)
    interior[:, 1:-1, 1:-1] = 1.0 + np.random.default_rng(0).uniform(size=(1, 4, 4, 1))
    model = linear_model(np.random.default_rng(1).normal(size=(36, 2)).astype(np.float32))
    curve = metrics.road(
        model, image, interior, target=0, key=KEY, percentages=(10, 25, 44), imputation_noise=0.0
    )
    np.testing.assert_allclose(curve.scores, np.broadcast_to(f(model, image, 0)[:, None], (1, 3)), rtol=1e-4)
    np.testing.assert_allclose(curve.fractions, np.array([3, 9, 15]) / 36)


def test_road_least_removes_the_bottom_of_the_ranking():
    most = metrics.road(ADDITIVE, X, SHAPLEY, target=1, key=KEY, percentages=(50,), imputation_noise=0.0)
    least = metrics.road(
        ADDITIVE,
        X,
        -SHAPLEY.values,
        target=1,
        key=KEY,
        percentages=(50,),
        order="least",
        imputation_noise=0.0,
    )
    np.testing.assert_allclose(most.scores, least.scores, atol=1e-6)


# --- sensitivity-max and randomisation ---------------------------------------------------


def test_saliency_of_a_linear_model_has_zero_sensitivity(rng):
    model = linear_model(rng.normal(size=(8, 3)).astype(np.float32))
    np.testing.assert_allclose(
        metrics.sensitivity_max(jaxplain.saliency, model, X, target=1, key=KEY), 0.0, atol=1e-7
    )


def test_sensitivity_max_is_the_largest_relative_change(rng):
    perturbations = rng.uniform(-0.02, 0.02, size=(4,) + X.shape).astype(np.float32)
    value = metrics.sensitivity_max(
        jaxplain.saliency, MLP, X, target=1, key=None, perturbations=perturbations, noise_chunk_size=3
    )
    clean = np.asarray(jaxplain.saliency(MLP, X, target=1).values)
    ratios = [
        np.linalg.norm(np.asarray(jaxplain.saliency(MLP, X + d, target=1).values) - clean, axis=1)
        for d in perturbations
    ]
    expected = np.max(ratios, axis=0) / np.linalg.norm(clean, axis=1)
    np.testing.assert_allclose(value, expected, rtol=1e-4)
    assert float(value.min()) > 0


CNN = jaxplain.load_model("checkpoints/digits_cnn")
DIGITS = jaxplain.data.load("digits").x_test[:8]


def test_randomising_a_trained_cnn_changes_its_saliency():
    similarity = metrics.randomisation_check(jaxplain.saliency, CNN, DIGITS, target="predicted", key=KEY)
    assert list(similarity) == ["Dense_1", "Dense_0", "Conv_1", "Conv_0"]  # from the output layer down
    means = [float(v.mean()) for v in similarity.values()]
    assert all(m < 0.5 for m in means), means
    gradients = metrics.randomisation_check(
        jaxplain.integrated_gradients,
        CNN,
        DIGITS,
        target="predicted",
        key=KEY,
        layers=["Dense_1", "Dense_0"],
        steps=4,
    )
    assert list(gradients) == ["Dense_1", "Dense_0"] and float(gradients["Dense_0"].mean()) < 0.5


def test_randomisation_catches_an_explanation_that_ignores_the_model():
    def the_input(model, x, *, target):
        return jaxplain.Attribution(values=x, target=target)

    similarity = metrics.randomisation_check(the_input, CNN, DIGITS, target="predicted", key=KEY)
    for values in similarity.values():
        np.testing.assert_allclose(values, 1.0, atol=1e-6)


# --- agreement ---------------------------------------------------------------------------


def test_agreement_metrics_match_numpy_and_scipy(rng):
    a = rng.integers(0, 4, size=(5, 3, 4)).astype(np.float32)  # many ties
    b = rng.normal(size=(5, 3, 4)).astype(np.float32)
    b[:, 0, :2] = 1.0  # ties on the other side too
    flat_a, flat_b = a.reshape(5, -1), b.reshape(5, -1)
    expected = [scipy.stats.spearmanr(u, v).statistic for u, v in zip(flat_a, flat_b)]
    np.testing.assert_allclose(metrics.spearman(a, b), expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(metrics.spearman(jaxplain.Attribution(a, np.zeros(5)), a), 1.0, rtol=1e-6)
    np.testing.assert_allclose(metrics.l2_error(a, b), np.linalg.norm(flat_a - flat_b, axis=1), rtol=1e-6)
    np.testing.assert_allclose(
        metrics.relative_l2_error(a, b),
        np.linalg.norm(flat_a - flat_b, axis=1) / np.linalg.norm(flat_b, axis=1),
        rtol=1e-6,
    )
    c = rng.normal(size=(5, 3, 4)).astype(np.float32)  # distinct values: top-k sets are unique
    overlap = [
        len(set(np.argsort(-u)[:4]) & set(np.argsort(-v)[:4])) / 4 for u, v in zip(c.reshape(5, -1), flat_b)
    ]
    np.testing.assert_allclose(metrics.top_k_overlap(c, b, 4), overlap)


def test_completeness_reads_the_relative_delta():
    a = jaxplain.integrated_gradients(MLP, X, target=1, steps=4)
    np.testing.assert_allclose(metrics.completeness(a), a.relative_delta)
    np.testing.assert_allclose(metrics.completeness(SHAPLEY), 0.0, atol=1e-5)
    with pytest.raises(ValueError, match="completeness"):
        metrics.completeness(jaxplain.saliency(MLP, X, target=1))


# --- keys, chunks, errors ----------------------------------------------------------------

RANDOMIZED = {
    "infidelity": lambda key: metrics.infidelity(MLP, X, RANDOM, target=1, key=key, samples=8),
    "infidelity_noise": lambda key: metrics.infidelity(
        MLP, X, RANDOM, target=1, key=key, samples=8, perturbation="noise"
    ),
    "faithfulness_correlation": lambda key: metrics.faithfulness_correlation(
        MLP, X, RANDOM, target=1, key=key, samples=8
    ),
    "sensitivity_n": lambda key: metrics.sensitivity_n(
        MLP, X, RANDOM, target=1, key=key, subset_sizes=(2, 4), samples=8
    ),
    "road": lambda key: metrics.road(MLP, X, RANDOM, target=1, key=key, percentages=(20, 60)).scores,
    "sensitivity_max": lambda key: metrics.sensitivity_max(
        jaxplain.saliency, MLP, X, target=1, key=key, samples=4
    ),
    "randomisation_check": lambda key: metrics.randomisation_check(
        jaxplain.saliency, MLP, X, target=1, key=key
    )["Dense_2"],
}


@pytest.mark.parametrize("name", sorted(RANDOMIZED))
def test_same_key_same_result_other_key_other_result(name):
    first = np.asarray(RANDOMIZED[name](jax.random.key(1)))
    np.testing.assert_array_equal(first, np.asarray(RANDOMIZED[name](jax.random.key(1))))
    assert not np.allclose(first, np.asarray(RANDOMIZED[name](jax.random.key(2))))


CHUNKED = {
    "infidelity": lambda c: metrics.infidelity(MLP, X, RANDOM, target=1, key=KEY, samples=8, chunk_size=c),
    "faithfulness_correlation": lambda c: metrics.faithfulness_correlation(
        MLP, X, RANDOM, target=1, key=KEY, samples=8, chunk_size=c
    ),
    "deletion": lambda c: metrics.deletion(MLP, X, RANDOM, target=1, chunk_size=c).scores,
    "road": lambda c: (
        metrics.road(MLP, X, RANDOM, target=1, key=KEY, percentages=(20, 40, 60), chunk_size=c).scores
    ),
    "sensitivity_max": lambda c: metrics.sensitivity_max(
        jaxplain.saliency, MLP, X, target=1, key=KEY, samples=4, noise_chunk_size=c
    ),
}


@pytest.mark.parametrize("name", sorted(CHUNKED))
def test_chunk_size_does_not_change_the_answer(name):
    np.testing.assert_allclose(CHUNKED[name](1), CHUNKED[name](None), rtol=1e-5, atol=1e-6)


ERRORS = [
    (
        lambda: metrics.infidelity(MLP, X, RANDOM[:, :4], target=1, key=KEY),
        ValueError,
        "attribution must be shaped",
    ),
    (lambda: metrics.infidelity(MLP, X, RANDOM, target=jaxplain.top_k(2), key=KEY), ValueError, "target"),
    (lambda: metrics.infidelity(MLP, X, RANDOM, target=1, key=None), TypeError, "key"),
    (
        lambda: metrics.infidelity(MLP, X, RANDOM, target=1, key=KEY, perturbation="blur"),
        ValueError,
        "perturbation",
    ),
    (lambda: metrics.infidelity(MLP, X, RANDOM, target=1, key=KEY, samples=0), ValueError, "samples"),
    (
        lambda: metrics.infidelity(MLP, X, RANDOM, target=1, key=KEY, perturbations=np.zeros((2, 6, 7))),
        ValueError,
        "perturbations",
    ),
    (
        lambda: metrics.infidelity(MLP, X, RANDOM, target=1, key=KEY, perturbations=np.zeros((2,) + X.shape)),
        TypeError,
        "key=None",
    ),
    (
        lambda: metrics.faithfulness_correlation(MLP, X, RANDOM, target=1, key=KEY, subset_size=9),
        ValueError,
        "subset_size",
    ),
    (
        lambda: metrics.sensitivity_n(MLP, X, RANDOM, target=1, key=KEY, subset_sizes=3),
        TypeError,
        "subset_sizes",
    ),
    (lambda: metrics.deletion(MLP, X, RANDOM, target=1, steps=9), ValueError, "steps"),
    (lambda: metrics.deletion(MLP, X, RANDOM, target=1, baseline="noise"), ValueError, "baseline"),
    (lambda: metrics.insertion(MLP, X, RANDOM, target=1), ValueError, "blur"),
    (lambda: metrics.deletion(MLP, X, RANDOM, target=1, per_pixel=True), ValueError, "per_pixel"),
    (
        lambda: metrics.road(MLP, X, RANDOM, target=1, key=KEY, percentages=(50, 120)),
        ValueError,
        "percentages",
    ),
    (lambda: metrics.road(MLP, X, RANDOM, target=1, key=KEY, order="top"), ValueError, "order"),
    (
        lambda: metrics.sensitivity_max(jaxplain.saliency, MLP, X, target=1, key=KEY, radius=-1.0),
        ValueError,
        "radius",
    ),
    (lambda: metrics.sensitivity_max(3, MLP, X, target=1, key=KEY), TypeError, "method"),
    (
        lambda: metrics.randomisation_check(jaxplain.saliency, MLP, X, target=1, key=KEY, layers=["conv"]),
        ValueError,
        "layers",
    ),
    (lambda: metrics.top_k_overlap(X, X, 9), ValueError, "k must be"),
    (lambda: metrics.spearman(X, X[:, :3]), ValueError, "same shape"),
]


@pytest.mark.parametrize("call, error, match", ERRORS, ids=[e[2] for e in ERRORS])
def test_bad_input_raises_naming_the_argument(call, error, match):
    with pytest.raises(error, match=match):
        call()
