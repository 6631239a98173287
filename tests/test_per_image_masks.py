"""Per-example feature masks: every example plays the game of its own groups, in one program."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import linear_model

import jaxplain
from jaxplain import _checks
from jaxplain.methods import perturbation as P

KEY = jax.random.key(0)
WEIGHTS = np.array([1.0, -2.0, 0.5, 3.0, 1.5, -1.0], np.float32)
# Output 0: linear plus two products, 2 x0 x3 - x1 x4; output 1: linear only.
PAIRS = ((0, 3, 2.0), (1, 4, -1.0))
X = np.random.default_rng(1).normal(size=(2, 6)).astype(np.float32)
# Example 0 has 3 groups (each product split across two), example 1 has 2 (each product
# inside one group); the batch has G = 3 and example 1's group 2 is empty.
MASKS = np.array([[0, 0, 1, 1, 2, 2], [0, 1, 1, 0, 1, 0]])


def pairwise(w, x):
    linear = x @ w
    products = sum(c * x[:, a] * x[:, b] for a, b, c in PAIRS)
    return jnp.stack([linear + products, 0.5 * linear], axis=-1)


MODEL = jaxplain.Model(pairwise, jnp.asarray(WEIGHTS))


def group_values(x, mask, *, target, ablation=False):
    """Closed forms with the baseline 0, per group: the linear terms of the group's
    features, and each product c x_a x_b whole when both factors are in the group,
    halved (Shapley) or whole (ablation: removing either factor removes it) when one is."""
    scale = 1.0 if target == 0 else 0.5
    values = np.zeros(mask.max() + 1)
    np.add.at(values, mask, scale * WEIGHTS * x)
    for a, b, c in PAIRS if target == 0 else ():
        share = 1.0 if ablation or mask[a] == mask[b] else 0.5
        values[mask[a]] += share * c * x[a] * x[b]
        if mask[a] != mask[b]:
            values[mask[b]] += share * c * x[a] * x[b]
    return values


def expected(name, target):
    ablation = name == "feature_ablation"
    return np.stack([group_values(x, m, target=target, ablation=ablation)[m] for x, m in zip(X, MASKS)])


def run(name, x, mask, **options):
    if name != "feature_ablation" and name != "exact_shapley":
        options.setdefault("key", KEY)
    return getattr(P, name)(MODEL, x, feature_mask=mask, **options)


# Antithetic orders and paired coalitions are exact on games with interactions of at most
# two groups (each product is credited to its later factor in one order and to the other
# in its reverse; paired Kernel SHAP fits a quadratic game exactly), so these known answers
# hold for any draw.
EXACT = {
    "feature_ablation": {},
    "exact_shapley": {},
    "shapley_sampling": {"samples": 2},
    "kernel_shap": {"samples": 32},
}


@pytest.mark.parametrize("name", list(EXACT))
def test_batch_of_masks_gives_known_answers_and_equals_each_example_alone(name):
    a = run(name, X, MASKS, target=0, **EXACT[name])
    np.testing.assert_allclose(a.values, expected(name, 0), atol=2e-5)
    for b in range(len(X)):
        alone = run(name, X[b : b + 1], MASKS[b], target=0, **EXACT[name])
        np.testing.assert_allclose(a.values[b], alone.values[0], atol=2e-5)
        if a.delta is not None:  # efficiency, with the empty group counted in the batch
            np.testing.assert_allclose(a.delta[b], alone.delta[0], atol=2e-5)
            assert abs(a.delta[b]) < 2e-5


def test_lime_batch_of_masks_is_exact_on_an_additive_model_and_equals_each_example_alone():
    # LIME's unpenalised fit with an intercept is exact when v(z) is linear in z.
    a = run("lime", X, MASKS, target=1, samples=64)
    np.testing.assert_allclose(a.values, expected("lime", 1), atol=2e-5)
    for b in range(len(X)):
        alone = run("lime", X[b : b + 1], MASKS[b], target=1, samples=64)
        np.testing.assert_allclose(a.values[b], alone.values[0], atol=2e-5)
        np.testing.assert_allclose(a.extras["intercept"][b], alone.extras["intercept"][0], atol=2e-5)
        np.testing.assert_allclose(a.delta[b], alone.delta[0], atol=2e-5)


def test_banzhaf_batch_of_masks_estimates_each_examples_groups():
    # On an additive model the Banzhaf value of a group is its linear term; the
    # estimate's noise comes from the other groups (standard error about 0.05 here).
    a = run("banzhaf", X, MASKS, target=1, samples=4096)
    np.testing.assert_allclose(a.values, expected("banzhaf", 1), atol=0.2)
    alone = run("banzhaf", X[1:], MASKS[1], target=1, samples=4096)
    np.testing.assert_allclose(a.values[1], alone.values[0], atol=0.2)


@pytest.mark.parametrize("name", ["shapley_sampling", "kernel_shap"])
def test_one_mask_per_example_equal_to_a_shared_mask_gives_the_same_draws(name):
    # The same game everywhere: no group is empty, so the draws are the shared mask's.
    options = EXACT[name]  # the programs of the known-answer test, compiled once
    shared = run(name, X, MASKS[0], target=0, **options)
    per_example = run(name, X, np.stack([MASKS[0]] * len(X)), target=0, **options)
    np.testing.assert_array_equal(per_example.values, shared.values)


def test_empty_groups_get_zero():
    # Example 1 has 2 groups in a batch of G = 3: its group 2 has no features. Plain
    # orders (not antithetic) leave the interacting groups with a spread.
    masks = np.array([[0, 0, 1, 1, 2, 2], [0, 0, 0, 1, 1, 1]])
    sampled = run("shapley_sampling", X, masks, target=0, samples=4, antithetic=False)
    error = sampled.extras["standard_error"]
    assert error.shape == (2, 3)
    assert np.all(error[0] > 0) and np.all(error[1, :2] > 0) and error[1, 2] == 0.0
    np.testing.assert_allclose(sampled.delta, 0.0, atol=2e-5)
    # One group: Kernel SHAP gives it F(x) - F(baseline) (efficiency, with nothing to fit).
    single = np.array([[0, 1, 2, 0, 1, 2], [0, 0, 0, 0, 0, 0]])
    fitted = run("kernel_shap", X, single, target=0, **EXACT["kernel_shap"])
    np.testing.assert_allclose(fitted.values[1], fitted.output_difference[1], rtol=1e-5)
    np.testing.assert_allclose(fitted.delta, 0.0, atol=2e-5)


def test_per_example_masks_do_not_depend_on_the_chunk_size():
    whole = run("kernel_shap", X, MASKS, target=0, **EXACT["kernel_shap"])
    chunked = run("kernel_shap", X, MASKS, target=0, chunk_size=5, **EXACT["kernel_shap"])
    np.testing.assert_allclose(chunked.values, whole.values, atol=1e-5)


def test_image_masks_broadcast_over_the_channels():
    # (B, H, W) masks, as jaxplain.superpixels returns, for (B, H, W, C) images.
    rng = np.random.default_rng(3)
    x = rng.normal(size=(2, 3, 3, 2)).astype(np.float32)
    weights = rng.normal(size=(18, 2)).astype(np.float32)
    masks = np.array([np.arange(9).reshape(3, 3) // 3, np.arange(9).reshape(3, 3) % 2])
    a = P.feature_ablation(linear_model(weights), x, target=1, feature_mask=masks)
    terms = (weights[:, 1].reshape(3, 3, 2) * x).sum(axis=-1)  # per pixel, (2, 3, 3)
    for b in range(2):
        per_group = np.bincount(masks[b].ravel(), terms[b].ravel())
        np.testing.assert_allclose(a.values[b], np.repeat(per_group[masks[b]][..., None], 2, -1), atol=1e-5)


# --- reading and checking the masks ----------------------------------------------------


def test_feature_masks_reads_every_form():
    x = np.zeros((2, 3, 3, 2), np.float32)
    masks, groups = _checks.feature_masks(None, x)
    assert masks.shape == (2, 3, 3, 2) and groups == 18
    np.testing.assert_array_equal(masks[1].ravel(), np.arange(18))
    image = np.array([[[0, 0, 1], [0, 2, 1], [2, 2, 1]], [[0, 1, 0], [1, 0, 1], [0, 1, 0]]])
    masks, groups = _checks.feature_masks(image, x)  # (B, H, W): over the channels
    assert masks.dtype == np.int32 and groups == 3
    np.testing.assert_array_equal(masks, np.repeat(image[..., None], 2, -1))
    masks, groups = _checks.feature_masks(image[..., None], x)  # (B, H, W, 1)
    np.testing.assert_array_equal(masks, np.repeat(image[..., None], 2, -1))
    masks, groups = _checks.feature_masks(image[0][..., None], x)  # one example's (H, W, 1)
    np.testing.assert_array_equal(masks, np.broadcast_to(image[0][..., None], (2, 3, 3, 2)))
    masks, groups = _checks.feature_masks(image[:1, ..., None], x)  # leading 1: shared
    assert groups == 3 and masks.shape == (2, 3, 3, 2)
    # Token groups of (B, T) ids: rank 2 is x's rank, so one mask per example.
    masks, groups = _checks.feature_masks(np.array([[0, 1, 1], [0, 0, 0]]), np.zeros((2, 3), np.int32))
    assert groups == 2 and masks[1].max() == 0


@pytest.mark.parametrize(
    "mask, x_shape, error, message",
    [
        (np.array([[0, 1, 1], [0, 2, 2]]), (2, 3), ValueError, "example 1 has the ids 0, 2"),
        (np.array([[0, 1, 1], [-1, 0, 0]]), (2, 3), ValueError, "example 1 has the ids -1, 0"),
        (np.zeros((2, 3)), (2, 3), TypeError, "feature_mask must hold integer group ids"),
        (np.zeros((3, 3), int), (2, 3), ValueError, "its leading axis is the batch"),
        (np.zeros((2, 3, 1), int), (2, 3), ValueError, "more axes than x"),
        (np.zeros(4, int), (2, 3), ValueError, "cannot be broadcast to one example"),
        (np.arange(27).reshape(3, 3, 3) % 2, (3, 3, 3, 3), ValueError, "ambiguous.*mask\\[..., None\\]"),
    ],
)
def test_feature_masks_errors_name_the_argument(mask, x_shape, error, message):
    with pytest.raises(error, match=message):
        _checks.feature_masks(mask, np.zeros(x_shape, np.float32))


def test_per_example_mask_errors_reach_the_methods():
    with pytest.raises(ValueError, match="feature_mask must number each example's groups"):
        P.kernel_shap(MODEL, X, target=0, feature_mask=np.array([[0, 1] * 3, [1] * 6]), key=KEY)
    with pytest.raises(TypeError, match="feature_mask must be a concrete array"):
        jax.jit(lambda m: P.feature_ablation(MODEL, X, target=0, feature_mask=m))(MASKS)
    with pytest.raises(ValueError, match="at most 16 groups, but feature_mask has 17 groups"):
        masks = np.stack([np.arange(17), np.zeros(17, int)])
        P.exact_shapley(linear_model(np.ones((17, 1))), np.zeros((2, 17)), target=0, feature_mask=masks)


@pytest.mark.slow
def test_lime_batch_of_masks_converges_to_each_examples_weighted_fit():
    # With interactions LIME is not exact: at many samples it approaches the weighted
    # least-squares fit over all 2^G_b coalitions of each example's own groups (each
    # drawn with probability 2^-G_b), computed here in float64.
    masks = np.array([[0, 0, 1, 1, 2, 2], [0, 0, 0, 1, 1, 1]])
    a = run("lime", X, masks, target=0, samples=20000, kernel_width=0.3)
    for b, mask in enumerate(masks):
        groups = mask.max() + 1
        z = np.array(list(itertools.product([0, 1], repeat=groups)), float)
        v = np.asarray(MODEL(jnp.asarray(np.where(z[:, mask] == 1, X[b], 0.0), jnp.float32)))[:, 0]
        weight = np.exp(-((1 - np.sqrt(z.mean(axis=1))) ** 2) / (2 * 0.3**2))
        design = np.concatenate([np.ones((len(z), 1)), z], axis=1)
        fit = np.linalg.solve(design.T @ (weight[:, None] * design), design.T @ (weight * v))
        np.testing.assert_allclose(a.values[b], fit[1:][mask], atol=0.01)
