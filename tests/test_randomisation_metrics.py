"""Randomisation metrics: random_logit, model_parameter_randomisation, smooth_mprt, efficient_mprt."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats

import jaxplain
from jaxplain.metrics.randomisation import (
    _discrete_entropy,
    _entropy,
    _layers,
    _randomised,
    _ssim,
    efficient_mprt,
    model_parameter_randomisation,
    random_logit,
    randomisation_check,
    smooth_mprt,
)

KEY = jax.random.key(0)
FEATURES = 8
# Class 1 weighs the features as 2 * class 0 + 1 (same order), class 2 in reverse.
COLUMN = np.arange(1.0, FEATURES + 1)
WEIGHTS = jnp.asarray(np.stack([COLUMN, 2 * COLUMN + 1, COLUMN[::-1]], axis=1), jnp.float32)
LINEAR = jaxplain.Model(jax.jit(lambda w, x: x @ w), WEIGHTS)
TWO_CLASSES = jaxplain.Model(jax.jit(lambda w, x: x @ w), WEIGHTS[:, :2])
X = jax.random.normal(jax.random.key(1), (5, FEATURES))

MLP_PARAMS = {
    "hidden": {"kernel": jax.random.normal(jax.random.key(2), (FEATURES, 6)), "bias": jnp.zeros(6)},
    "out": {"kernel": jax.random.normal(jax.random.key(3), (6, 3)), "bias": jnp.zeros(3)},
}


def _mlp(p, x):
    return jnp.tanh(x @ p["hidden"]["kernel"] + p["hidden"]["bias"]) @ p["out"]["kernel"] + p["out"]["bias"]


MLP = jaxplain.Model(jax.jit(_mlp), MLP_PARAMS)
# Two linear layers: the saliency A @ B[:, t] does not depend on x.
DEEP_LINEAR = jaxplain.Model(
    jax.jit(lambda p, x: x @ p["hidden"]["kernel"] @ p["out"]["kernel"]),
    {"hidden": {"kernel": MLP_PARAMS["hidden"]["kernel"]}, "out": {"kernel": MLP_PARAMS["out"]["kernel"]}},
)


def the_input(model, x, *, target):
    """An explanation that ignores the model."""
    return jaxplain.Attribution(values=x, target=target)


def close(a, b, **kwargs):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), **{"rtol": 1e-5, "atol": 1e-6, **kwargs})


# --- similarities and complexities, against their references ------------------------------


def test_ssim_is_scikit_images_structural_similarity_of_the_flattened_explanations():
    skimage_metrics = pytest.importorskip("skimage.metrics")
    a, b = np.asarray(jax.random.normal(jax.random.key(4), (2, 3, 20)), np.float64)
    ours = jax.jit(_ssim)(jnp.asarray(a, jnp.float32), jnp.asarray(b, jnp.float32))
    for row in range(3):
        span = max(a[row].max(), b[row].max()) - min(a[row].min(), b[row].min())
        reference = skimage_metrics.structural_similarity(a[row], b[row], data_range=span)
        close(ours[row], reference, rtol=1e-4)
    close(jax.jit(_ssim)(jnp.asarray(a, jnp.float32), jnp.asarray(a, jnp.float32)), np.ones(3))


def test_discrete_entropy_and_entropy_known_answers_and_numpy_histogram():
    hand = jnp.array([[0.0, 0.0, 1.0, 1.0], [0.0, 1.0, 2.0, 3.0], [2.0, 2.0, 2.0, 2.0]])
    close(jax.jit(_discrete_entropy, static_argnums=1)(hand, 2)[:2], [np.log(2), np.log(2)])
    close(jax.jit(_discrete_entropy, static_argnums=1)(hand, 4), [np.log(2), np.log(4), 0.0])
    close(jax.jit(_entropy)(jnp.array([[1.0, -1.0, 2.0]])), [1.5 * np.log(2)])
    values = np.asarray(jax.random.normal(jax.random.key(5), (3, 50)))
    reference = [scipy.stats.entropy(np.histogram(row, bins=10)[0]) for row in values]
    close(jax.jit(_discrete_entropy, static_argnums=1)(jnp.asarray(values), 10), reference, rtol=1e-4)


# --- random_logit -------------------------------------------------------------------------


@pytest.mark.parametrize("similarity", ["spearman", "pearson"])
def test_random_logit_of_a_linear_model_is_the_correlation_of_its_weight_columns(similarity):
    # saliency of class c is column c: class 1 is an increasing function of class 0's weights
    # (correlation 1), class 2 reverses them (-1)
    other = np.array([1, 2, 1, 2, 2])
    result = random_logit(
        jaxplain.saliency, LINEAR, X, target=0, key=None, other_target=other, similarity=similarity
    )
    close(result, np.where(other == 1, 1.0, -1.0), atol=1e-5)


def test_random_logit_draws_another_class_per_example_from_the_key():
    # class 1 reverses class 0's weights (correlation -1), class 2 rises and falls
    # symmetrically (correlation 0); class 0 with itself would give 1
    weights = np.stack([COLUMN, COLUMN[::-1], np.minimum(COLUMN, COLUMN[::-1])], axis=1)
    model = jaxplain.Model(jax.jit(lambda w, x: x @ w), jnp.asarray(weights, jnp.float32))
    x = jnp.tile(X, (4, 1))
    result = np.asarray(random_logit(jaxplain.saliency, model, x, target=0, key=KEY, similarity="pearson"))
    assert set(np.round(result, 4)) == {-1.0, 0.0}  # both other classes drawn, never class 0
    again = random_logit(jaxplain.saliency, model, x, target=0, key=KEY, similarity="pearson")
    close(again, result, rtol=0, atol=0)
    other_key = random_logit(
        jaxplain.saliency, model, x, target=0, key=jax.random.key(9), similarity="pearson"
    )
    assert not np.array_equal(np.asarray(other_key), result)
    # with two classes the other class is forced
    forced = random_logit(jaxplain.saliency, TWO_CLASSES, X, target=1, key=KEY, similarity="spearman")
    close(forced, np.ones(5), atol=1e-5)


def test_random_logit_ssim_normalises_per_example_by_default():
    # class 1's saliency is 2 * class 0's + 1, not a rescaling: SSIM < 1 either way, but the
    # explanation of a class with itself rescaled by 2 has SSIM 1 only after normalising
    doubled = jaxplain.Model(
        jax.jit(lambda w, x: x @ w), jnp.stack([WEIGHTS[:, 0], 2 * WEIGHTS[:, 0]], axis=1)
    )
    normalised = random_logit(jaxplain.saliency, doubled, X, target=0, key=KEY)
    raw = random_logit(jaxplain.saliency, doubled, X, target=0, key=KEY, normalise=False)
    close(normalised, np.ones(5), atol=1e-5)
    assert (np.asarray(raw) < 0.99).all()


def test_random_logit_batch_equals_loop():
    targets, other = np.array([0, 1, 2, 0, 1]), np.array([2, 0, 1, 1, 2])
    batch = random_logit(jaxplain.saliency, MLP, X, target=targets, key=None, other_target=other)
    for i in range(5):
        alone = random_logit(
            jaxplain.saliency,
            MLP,
            X[i : i + 1],
            target=int(targets[i]),
            key=None,
            other_target=other[i : i + 1],
        )
        close(batch[i], alone[0], atol=1e-5)


def test_random_logit_errors_name_the_argument():
    with pytest.raises(ValueError, match="other_target must differ"):
        random_logit(jaxplain.saliency, LINEAR, X, target=1, key=None, other_target=np.ones(5, int))
    with pytest.raises(ValueError, match="other_target must have shape"):
        random_logit(jaxplain.saliency, LINEAR, X, target=0, key=None, other_target=np.ones(4, int))
    with pytest.raises(ValueError, match="other_target must hold classes"):
        random_logit(jaxplain.saliency, LINEAR, X, target=0, key=None, other_target=np.full(5, 3))
    with pytest.raises(TypeError, match="other_target must hold int"):
        random_logit(jaxplain.saliency, LINEAR, X, target=0, key=None, other_target=np.ones(5))
    with pytest.raises(TypeError, match="key is required"):
        random_logit(jaxplain.saliency, LINEAR, X, target=0, key=None)
    with pytest.raises(ValueError, match="similarity must be one of"):
        random_logit(jaxplain.saliency, LINEAR, X, target=0, key=KEY, similarity="cosine")
    with pytest.raises(ValueError, match="similarity='ssim' needs at least 7"):
        random_logit(jaxplain.saliency, LINEAR.replace(params=WEIGHTS[:4]), X[:, :4], target=0, key=KEY)
    one_class = jaxplain.Model(lambda w, x: x @ w, WEIGHTS[:, :1])
    with pytest.raises(ValueError, match="at least two classes"):
        random_logit(jaxplain.saliency, one_class, X, target=0, key=KEY)


# --- model_parameter_randomisation and randomisation_check ---------------------------------


@pytest.mark.parametrize("layer_order", ["top_down", "bottom_up", "independent"])
def test_mprt_of_an_explanation_that_ignores_the_model_is_one_in_every_order(layer_order):
    result = model_parameter_randomisation(the_input, MLP, X, target=0, key=KEY, layer_order=layer_order)
    assert list(result) == (["out", "hidden"] if layer_order == "top_down" else ["hidden", "out"])
    for similarity in result.values():
        close(similarity, np.ones(5))


def test_mprt_orders_share_their_draws():
    """Each order redraws a layer with the same values: the fully randomised models of both
    cascades agree, and a cascade's first step is that layer randomised alone."""
    top_down = model_parameter_randomisation(jaxplain.saliency, MLP, X, target=0, key=KEY)
    bottom_up = model_parameter_randomisation(
        jaxplain.saliency, MLP, X, target=0, key=KEY, layer_order="bottom_up"
    )
    independent = model_parameter_randomisation(
        jaxplain.saliency, MLP, X, target=0, key=KEY, layer_order="independent"
    )
    close(top_down["hidden"], bottom_up["out"])  # both: every layer random
    close(top_down["out"], independent["out"])
    close(bottom_up["hidden"], independent["hidden"])
    assert not np.allclose(top_down["hidden"], independent["hidden"])


def test_mprt_of_a_two_layer_linear_model_matches_the_redrawn_weights():
    # saliency = A @ B[:, t]; with the hidden layer redrawn alone, A' @ B[:, t]
    leaves, treedef, names, _ = _layers(DEEP_LINEAR.params)
    redraw_key, _ = jax.random.split(KEY)
    (_, hidden_only), _ = _randomised(
        DEEP_LINEAR, redraw_key, leaves, treedef, names, ["hidden", "out"], cascading=False
    )
    original = DEEP_LINEAR.params["hidden"]["kernel"] @ DEEP_LINEAR.params["out"]["kernel"][:, 2]
    redrawn = hidden_only.params["hidden"]["kernel"] @ DEEP_LINEAR.params["out"]["kernel"][:, 2]
    expected = scipy.stats.spearmanr(np.abs(original), np.abs(redrawn))[0]
    result = model_parameter_randomisation(
        jaxplain.saliency, DEEP_LINEAR, X, target=2, key=KEY, layer_order="independent"
    )
    close(result["hidden"], np.full(5, expected), atol=1e-5)


def test_randomisation_check_is_the_signed_top_down_mprt():
    check = randomisation_check(jaxplain.saliency, MLP, X, target=1, key=KEY)
    mprt = model_parameter_randomisation(jaxplain.saliency, MLP, X, target=1, key=KEY, absolute=False)
    assert list(check) == list(mprt) == ["out", "hidden"]
    for layer in check:
        close(check[layer], mprt[layer], rtol=0, atol=0)
    absolute = model_parameter_randomisation(jaxplain.saliency, MLP, X, target=1, key=KEY)
    assert not np.allclose(absolute["out"], check["out"])


def test_mprt_batch_equals_loop_and_same_key_same_result():
    targets = np.array([0, 1, 2, 0, 1])
    batch = model_parameter_randomisation(
        jaxplain.saliency, MLP, X, target=targets, key=KEY, similarity="pearson"
    )
    for i in range(5):
        alone = model_parameter_randomisation(
            jaxplain.saliency, MLP, X[i : i + 1], target=int(targets[i]), key=KEY, similarity="pearson"
        )
        for layer in batch:
            close(batch[layer][i], alone[layer][0], atol=1e-5)
    again = model_parameter_randomisation(
        jaxplain.saliency, MLP, X, target=targets, key=KEY, similarity="pearson"
    )
    other = model_parameter_randomisation(
        jaxplain.saliency, MLP, X, target=targets, key=jax.random.key(7), similarity="pearson"
    )
    close(again["hidden"], batch["hidden"], rtol=0, atol=0)
    assert not np.allclose(other["hidden"], batch["hidden"])


def test_mprt_errors_name_the_argument():
    with pytest.raises(ValueError, match="layer_order must be one of"):
        model_parameter_randomisation(jaxplain.saliency, MLP, X, target=0, key=KEY, layer_order="sideways")
    with pytest.raises(ValueError, match="layers must name distinct layers"):
        model_parameter_randomisation(jaxplain.saliency, MLP, X, target=0, key=KEY, layers=["conv"])
    with pytest.raises(TypeError, match="layers must be a non-empty sequence"):
        model_parameter_randomisation(jaxplain.saliency, MLP, X, target=0, key=KEY, layers="out")
    with pytest.raises(TypeError, match="absolute must be True or False"):
        model_parameter_randomisation(jaxplain.saliency, MLP, X, target=0, key=KEY, absolute=1)
    with pytest.raises(TypeError, match="key is required"):
        model_parameter_randomisation(jaxplain.saliency, MLP, X, target=0, key=None)


# --- smooth_mprt ---------------------------------------------------------------------------


def test_smooth_mprt_of_an_input_free_saliency_is_mprt_and_batch_equals_loop():
    # a two-layer linear model's saliency does not depend on x: smoothing leaves it as it is
    targets = np.array([0, 1, 2, 0, 1])
    smooth = smooth_mprt(
        jaxplain.saliency, DEEP_LINEAR, X, target=targets, key=KEY, samples=6, noise_scale=0.3
    )
    plain = model_parameter_randomisation(
        jaxplain.saliency, DEEP_LINEAR, X, target=targets, key=KEY, layer_order="bottom_up"
    )
    for layer in plain:
        close(smooth[layer], plain[layer], atol=1e-5)
    for i in range(5):
        alone = smooth_mprt(
            jaxplain.saliency,
            DEEP_LINEAR,
            X[i : i + 1],
            target=int(targets[i]),
            key=KEY,
            samples=6,
            noise_scale=0.3,
        )
        for layer in smooth:
            close(smooth[layer][i], alone[layer][0], atol=1e-5)


def test_smooth_mprt_without_noise_is_mprt_noise_matters_and_its_chunk_does_not():
    plain = smooth_mprt(jaxplain.saliency, MLP, X, target=1, key=KEY, samples=1, noise_scale=0.0)
    mprt = model_parameter_randomisation(
        jaxplain.saliency, MLP, X, target=1, key=KEY, layer_order="bottom_up"
    )
    assert list(plain) == ["hidden", "out"]
    for layer in mprt:
        close(plain[layer], mprt[layer], atol=1e-5)
    chunked = [
        smooth_mprt(jaxplain.saliency, MLP, X, target=1, key=KEY, samples=4, noise_chunk_size=size)
        for size in (1, 4)
    ]
    for layer in chunked[0]:
        close(chunked[0][layer], chunked[1][layer], atol=1e-5)
    assert not np.allclose(chunked[0]["hidden"], plain["hidden"])
    for similarity in smooth_mprt(the_input, MLP, X, target=0, key=KEY, samples=4).values():
        close(similarity, np.ones(5))


def test_smooth_mprt_errors_name_the_argument():
    with pytest.raises(ValueError, match="samples must be >= 1"):
        smooth_mprt(jaxplain.saliency, MLP, X, target=0, key=KEY, samples=0)
    with pytest.raises(ValueError, match="noise_scale must be"):
        smooth_mprt(jaxplain.saliency, MLP, X, target=0, key=KEY, noise_scale=-1.0)


# --- efficient_mprt ------------------------------------------------------------------------


def test_efficient_mprt_of_a_model_free_explanation_is_zero():
    close(efficient_mprt(the_input, MLP, X, target=0, key=KEY), np.zeros(5))
    close(efficient_mprt(the_input, MLP, X, target=0, key=KEY, complexity="entropy"), np.zeros(5))


@pytest.mark.parametrize("complexity", ["discrete_entropy", pytest.param("entropy", marks=pytest.mark.slow)])
def test_efficient_mprt_is_the_relative_rise_in_entropy_after_full_randomisation(complexity):
    leaves, treedef, names, stored = _layers(MLP.params)
    redraw_key, _ = jax.random.split(KEY)
    *_, (_, randomised) = _randomised(MLP, redraw_key, leaves, treedef, names, stored, cascading=True)
    targets = np.array([0, 1, 2, 0, 1])

    def entropy(values):
        if complexity == "entropy":
            return scipy.stats.entropy(np.abs(values))
        return scipy.stats.entropy(np.histogram(values, bins=5)[0])

    before = np.asarray(jaxplain.saliency(MLP, X, target=targets).values)
    after = np.asarray(jaxplain.saliency(randomised, X, target=targets).values)
    expected = [(entropy(b) - entropy(a)) / entropy(a) for a, b in zip(before, after)]
    result = efficient_mprt(jaxplain.saliency, MLP, X, target=targets, key=KEY, bins=5, complexity=complexity)
    close(result, expected, rtol=1e-4, atol=1e-5)
    for i in range(5):  # batch equals loop
        alone = efficient_mprt(
            jaxplain.saliency,
            MLP,
            X[i : i + 1],
            target=int(targets[i]),
            key=KEY,
            bins=5,
            complexity=complexity,
        )
        close(result[i], alone[0], atol=1e-5)


def test_efficient_mprt_errors_name_the_argument():
    with pytest.raises(ValueError, match="complexity must be one of"):
        efficient_mprt(jaxplain.saliency, MLP, X, target=0, key=KEY, complexity="gini")
    with pytest.raises(ValueError, match="bins must be >= 1"):
        efficient_mprt(jaxplain.saliency, MLP, X, target=0, key=KEY, bins=0)
    with pytest.raises(ValueError, match="layers must name"):
        efficient_mprt(jaxplain.saliency, MLP, X, target=0, key=KEY, layers=["nope"])
