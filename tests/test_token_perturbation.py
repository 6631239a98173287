"""Perturbation methods on integer inputs: token ids in, ids of a baseline token for removed ones.

Every check compares with what must hold: closed forms on a model additive over tokens,
the model's own outputs at ids edited by hand, an independent Shapley loop over orders,
and the same game played on a one-hot float encoding of the ids.
"""

import itertools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxplain
from jaxplain.methods import perturbation
from jaxplain.models.text import TextClassifier

KEY = jax.random.key(0)
VOCAB, LENGTH, PAD = 11, 6, 0
IDS = np.array([[3, 7, 1, 9, 2, 0], [5, 5, 10, 4, 0, 0]], np.int32)  # padded at the end
WORDS = np.array([0, 0, 1, 2, 2, 3])  # word pieces: positions grouped into 4 words
PERTURBATION = sorted(name for name, info in jaxplain.METHODS.items() if info.family == "perturbation")
# Small settings per method, on ids (B, 6) grouped into WORDS (4 groups).
SETTINGS = {
    "occlusion": {"window": (1,)},
    "feature_ablation": {"feature_mask": WORDS},
    "exact_shapley": {"feature_mask": WORDS},
    "shapley_sampling": {"feature_mask": WORDS, "samples": 8},
    "kernel_shap": {"feature_mask": WORDS, "samples": 8},
    "lime": {"feature_mask": WORDS, "samples": 8},
    "banzhaf": {"feature_mask": WORDS, "samples": 8},
}
EFFICIENT = ("exact_shapley", "shapley_sampling", "kernel_shap")


class BagOfEmbeddings(nn.Module):
    """Embed, mean over positions, Dense: additive over tokens."""

    @nn.compact
    def __call__(self, ids):
        return nn.Dense(3)(nn.Embed(VOCAB, 4)(ids).mean(axis=1))


class PaddedEncoder(nn.Module):
    """Embed, tanh, mean over the tokens that are not padding, MLP head (as an SST-2 model
    pools): not additive, and a token replaced by the padding id leaves the mean.

    `from_one_hot` is the same network on one-hot float inputs (B, T, V).
    """

    def setup(self):
        self.embed = nn.Embed(VOCAB, 8)
        self.hidden = nn.Dense(8)
        self.head = nn.Dense(3)

    def __call__(self, ids):
        return self.pool(self.embed(ids), ids != PAD)

    def from_one_hot(self, one_hot):
        return self.pool(one_hot @ self.embed.embedding, one_hot[..., PAD] == 0)

    def pool(self, embedded, valid):
        valid = valid[..., None].astype(embedded.dtype)
        pooled = (jnp.tanh(embedded) * valid).sum(axis=1) / jnp.maximum(valid.sum(axis=1), 1.0)
        return self.head(nn.relu(self.hidden(pooled)))


def _linen(module, seed=0):
    variables = jax.jit(module.init)(jax.random.PRNGKey(seed), jnp.zeros((1, LENGTH), jnp.int32))
    return jaxplain.Model.from_linen(module, variables), variables


BAG, BAG_VARIABLES = _linen(BagOfEmbeddings())
ENCODER, ENCODER_VARIABLES = _linen(PaddedEncoder(), seed=1)
ONE_HOT = jaxplain.Model.from_linen(PaddedEncoder(), ENCODER_VARIABLES, method="from_one_hot")


def explain(name, model, ids, **overrides):
    settings = {"target": 0, "baseline": PAD, **SETTINGS[name], **overrides}
    if jaxplain.METHODS[name].randomized:
        settings.setdefault("key", KEY)
    return getattr(perturbation, name)(model, ids, **settings)


def outputs(model, ids, target):
    """F_t at each row of ids, by the model itself."""
    return np.asarray(model(jnp.asarray(ids)))[np.arange(len(ids)), target]


def slow_shapley(model, ids, baseline, mask, target):
    """Shapley values of the groups of positions, averaging marginals over every order."""
    groups = mask.max() + 1
    phi = np.zeros((len(ids), groups))
    orders = list(itertools.permutations(range(groups)))
    for order in orders:
        present = np.zeros(groups, bool)
        before = outputs(model, np.where(present[mask], ids, baseline), target)
        for g in order:
            present[g] = True
            after = outputs(model, np.where(present[mask], ids, baseline), target)
            phi[:, g] += (after - before) / len(orders)
            before = after
    return phi


# --- closed forms and hand-edited ids ----------------------------------------------------


def test_exact_shapley_of_a_bag_of_embeddings_is_each_tokens_own_term():
    # F_c(ids) = b_c + (1 / T) sum_t (E[ids_t] W)_c: additive over positions, so position
    # t's Shapley value is (1 / T) ((E[ids_t] - E[baseline_t]) W)_c.
    params = BAG_VARIABLES["params"]
    embedding = np.asarray(params["Embed_0"]["embedding"], np.float64)
    kernel = np.asarray(params["Dense_0"]["kernel"], np.float64)
    baseline = np.array([PAD, PAD, 1, PAD, 4, PAD])  # one id per position
    target = np.array([2, 1])
    a = perturbation.exact_shapley(BAG, IDS, target=target, baseline=baseline)
    terms = (embedding[IDS] - embedding[baseline]) @ kernel / LENGTH  # (B, T, classes)
    np.testing.assert_allclose(a.values, terms[np.arange(2), :, target], atol=1e-6)
    np.testing.assert_allclose(a.delta, 0.0, atol=1e-6)


def test_occlusion_of_one_position_is_the_drop_when_its_id_is_replaced():
    a = perturbation.occlusion(ENCODER, IDS, target=1, window=(1,), baseline=PAD)
    at_x = outputs(ENCODER, IDS, 1)
    for t in range(LENGTH):
        edited = IDS.copy()
        edited[:, t] = PAD
        np.testing.assert_allclose(a.values[:, t], at_x - outputs(ENCODER, edited, 1), atol=1e-6)
    assert np.all(np.asarray(a.values)[IDS == PAD] == 0.0)  # padding replaced by padding


def test_occlusion_windows_over_positions_average_their_drops():
    mask_id = 10  # a [MASK] token rather than the padding
    a = perturbation.occlusion(ENCODER, IDS, target=0, window=(3,), stride=1, baseline=mask_id)
    at_x = outputs(ENCODER, IDS, 0)
    drops = []
    for start in range(LENGTH - 2):
        edited = IDS.copy()
        edited[:, start : start + 3] = mask_id
        drops.append(at_x - outputs(ENCODER, edited, 0))
    covering = [[s for s in range(LENGTH - 2) if s <= t < s + 3] for t in range(LENGTH)]
    expected = np.stack([np.mean([drops[s] for s in cover], axis=0) for cover in covering], axis=1)
    np.testing.assert_allclose(a.values, expected, atol=1e-6)


def test_feature_mask_groups_positions():
    # Word pieces: the 4 words' Shapley values match a loop over all 4! orders, and every
    # piece of a word gets its word's value.
    a = perturbation.exact_shapley(ENCODER, IDS, target=2, baseline=PAD, feature_mask=WORDS)
    phi = slow_shapley(ENCODER, IDS, PAD, WORDS, 2)
    np.testing.assert_allclose(a.values, phi[:, WORDS], atol=1e-6)
    ablated = perturbation.feature_ablation(ENCODER, IDS, target=2, baseline=PAD, feature_mask=WORDS)
    for word in range(WORDS.max() + 1):
        edited = np.where(WORDS == word, PAD, IDS)
        drop = outputs(ENCODER, IDS, 2) - outputs(ENCODER, edited, 2)
        pieces = np.asarray(ablated.values)[:, WORDS == word]
        np.testing.assert_allclose(pieces, np.broadcast_to(drop[:, None], pieces.shape), atol=1e-6)


@pytest.mark.parametrize("name", EFFICIENT)
def test_shapley_values_of_ids_sum_to_the_output_change(name):
    a = explain(name, ENCODER, IDS, target=1)
    difference = outputs(ENCODER, IDS, 1) - outputs(ENCODER, np.full_like(IDS, PAD), 1)
    np.testing.assert_allclose(a.output_difference, difference, atol=1e-6)
    group_sums = np.asarray(a.values)[:, np.unique(WORDS, return_index=True)[1]].sum(axis=1)
    np.testing.assert_allclose(group_sums, difference, atol=1e-5)


@pytest.fixture(scope="module")
def exact():
    return np.asarray(perturbation.exact_shapley(ENCODER, IDS, target=0, baseline=PAD).values)


@pytest.mark.parametrize("name, samples", [("shapley_sampling", 4096), ("kernel_shap", 8192)])
def test_sampling_estimators_on_ids_converge_to_exact_shapley(name, samples, exact):
    # At 8 samples both are 35% to 95% off (relative error of the example's vector).
    estimate = getattr(perturbation, name)(ENCODER, IDS, target=0, baseline=PAD, samples=samples, key=KEY)
    error = np.linalg.norm(np.asarray(estimate.values) - exact, axis=1)
    assert np.all(error < 0.04 * np.linalg.norm(exact, axis=1))


# --- baselines -----------------------------------------------------------------------------


def test_an_int_baseline_is_one_id_everywhere():
    # An int, an id per position and an id per example are the same baseline when they
    # hold the same ids; per example, each row is its own game.
    scalar = perturbation.exact_shapley(ENCODER, IDS, target=0, baseline=PAD).values
    row = perturbation.exact_shapley(ENCODER, IDS, target=0, baseline=np.full(LENGTH, PAD)).values
    np.testing.assert_array_equal(scalar, row)
    per_example = np.array([[PAD] * LENGTH, [10] * LENGTH])
    both = perturbation.exact_shapley(ENCODER, IDS, target=0, baseline=per_example).values
    masked = perturbation.exact_shapley(ENCODER, IDS[1:], target=0, baseline=10).values
    np.testing.assert_allclose(both[:1], scalar[:1], atol=1e-7)
    np.testing.assert_allclose(both[1:], masked, atol=1e-7)
    assert not np.allclose(masked, scalar[1:])  # [MASK] stays in the mean, padding leaves it


@pytest.mark.parametrize("dtype", [np.int64, np.uint8, np.int16])
def test_ids_of_any_integer_dtype_give_the_same_values(dtype):
    expected = perturbation.feature_ablation(ENCODER, IDS, target=0, baseline=PAD).values
    a = perturbation.feature_ablation(ENCODER, IDS.astype(dtype), target=0, baseline=np.array(PAD, dtype))
    np.testing.assert_array_equal(a.values, expected)


def test_bool_inputs_switch_features_off():
    # Which words a document contains, as bools: on a linear model a present word's
    # Shapley value against "absent" is its weight, an absent word's is 0.
    weights = np.array([[1.5], [-2.0], [0.5], [3.0]], np.float32)
    model = jaxplain.Model(lambda w, x: x.astype(jnp.float32) @ w, weights)
    present = np.array([[True, True, False, True], [False, True, True, False]])
    a = perturbation.exact_shapley(model, present, target=0, baseline=False)
    np.testing.assert_allclose(a.values, np.where(present, weights[:, 0], 0.0), atol=1e-6)
    with pytest.raises(
        ValueError, match="baseline holds the ids 2..2, not all in the range of x's dtype bool"
    ):
        perturbation.exact_shapley(model, present, target=0, baseline=2)


def test_ids_and_baseline_may_be_traced():
    def values(ids, baseline):
        return perturbation.exact_shapley(ENCODER, ids, target=0, baseline=baseline).values

    expected = values(IDS, PAD)
    np.testing.assert_allclose(jax.jit(values)(IDS, jnp.int32(PAD)), expected, atol=1e-7)


@pytest.mark.parametrize(
    "baseline, error, match",
    [
        (0.0, TypeError, "baseline must be an int id .* integer x \\(dtype int32\\).*got 0.0"),
        (np.zeros(LENGTH), TypeError, "baseline must be an int id .*got dtype float64"),
        (np.full(LENGTH, 1.5, np.float32), TypeError, "baseline must be an int id"),
        (np.zeros(LENGTH + 1, np.int32), ValueError, "baseline of shape \\(7,\\) cannot be broadcast"),
        (2**40, ValueError, "baseline holds the ids 1099511627776..1099511627776, not all in the range"),
    ],
)
@pytest.mark.parametrize("name", ["occlusion", "exact_shapley", "lime"])
def test_bad_baselines_for_ids_are_named(name, baseline, error, match):
    with pytest.raises(error, match=match):
        explain(name, ENCODER, IDS, baseline=baseline)


def test_the_default_baseline_is_refused_for_ids():
    # 0.0 is a float: ids are not interpolated, so the user names the replacing id.
    with pytest.raises(TypeError, match="the default 0.0 is for floating x"):
        perturbation.feature_ablation(ENCODER, IDS, target=0)


def test_ids_outside_the_vocabulary_are_the_models_business():
    # Not checked: nn.Embed looks an id past its table up as NaN, and the attribution
    # says what the model says.
    outside = np.full_like(IDS, VOCAB + 5)
    a = perturbation.feature_ablation(BAG, IDS, target=0, baseline=VOCAB + 5)
    np.testing.assert_array_equal(a.output_difference, outputs(BAG, IDS, 0) - outputs(BAG, outside, 0))
    assert np.isnan(a.output_difference).all()


# --- every perturbation method, driven by the registry --------------------------------------


def test_every_perturbation_method_is_covered():
    assert set(SETTINGS) == set(PERTURBATION)


@pytest.mark.parametrize("name", PERTURBATION)
def test_ids_give_what_their_one_hot_encoding_gives(name):
    # The same game on floats: position t of the one-hot input (B, T, V) is one feature
    # group of V channels, the baseline is the padding's one-hot, and the same key draws
    # the same coalitions; every channel of a position gets the position's value.
    one_hot = jax.nn.one_hot(IDS, VOCAB)
    float_settings = {"baseline": np.eye(VOCAB, dtype=np.float32)[PAD]}
    if name == "occlusion":
        float_settings["window"] = (1, VOCAB)
    else:
        float_settings["feature_mask"] = WORDS[:, None]
    ids = explain(name, ENCODER, IDS, target=[[0, 2]])
    floats = explain(name, ONE_HOT, one_hot, target=[[0, 2]], **float_settings)
    assert ids.values.shape == (2, 2, LENGTH)
    expected = np.broadcast_to(np.asarray(ids.values)[..., None], floats.values.shape)
    np.testing.assert_allclose(floats.values, expected, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(ids.output_difference, floats.output_difference, atol=1e-6)


@pytest.fixture(scope="module")
def text_classifier():
    module = TextClassifier(
        vocab_size=VOCAB, num_classes=2, max_length=LENGTH, embed_dim=8, num_heads=2, mlp_dim=8, pad_id=PAD
    )
    variables = jax.jit(module.init)(jax.random.PRNGKey(2), jnp.asarray(IDS))
    return jaxplain.Model.from_linen(module, variables)


# The zoo's text classifier (attention, LayerNorm) is a bigger model for the same property
# test_ids_give_what_their_one_hot_encoding_gives checks on a small one: one method in the default tier.
@pytest.mark.parametrize(
    "name",
    [
        name if name == "exact_shapley" else pytest.param(name, marks=pytest.mark.slow)
        for name in PERTURBATION
    ],
)
def test_every_perturbation_method_explains_the_text_classifier(name, text_classifier):
    a = explain(name, text_classifier, IDS, target=1)
    assert a.values.shape == IDS.shape and np.isfinite(a.values).all()
    difference = outputs(text_classifier, IDS, 1) - outputs(text_classifier, np.full_like(IDS, PAD), 1)
    np.testing.assert_allclose(a.output_difference, difference, atol=1e-5)
    if name in EFFICIENT:
        np.testing.assert_allclose(a.delta, 0.0, atol=1e-5)
    if name in ("occlusion", "feature_ablation", "exact_shapley", "shapley_sampling"):
        # Padding replaced by padding changes nothing: the last word (position 5,
        # padding in both examples) is a dummy player.
        np.testing.assert_allclose(a.values[:, 5], 0.0, atol=1e-6)
