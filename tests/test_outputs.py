"""`output=`: scores selected from tuples, dicts and structs, one-score models, sigmoid,
dense outputs over a region; and variables given as NumPy arrays."""

import flax.linen as nn
import flax.serialization
import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxplain
from jaxplain.model import OutputStructureError

X = np.random.default_rng(0).normal(size=(3, 4)).astype(np.float32)


@flax.struct.dataclass
class Heads:
    logits: jax.Array
    features: jax.Array


class _Several(nn.Module):
    """One classifier returning its logits in the shapes third-party models use."""

    style: str

    @nn.compact
    def __call__(self, x, train: bool = True):
        features = nn.tanh(nn.Dense(5, name="features")(x))
        logits = nn.Dense(3, name="head")(features)
        return {
            "tuple": (logits, features),
            "dict": {"logits": logits, "features": features},
            "struct": Heads(logits, features),
            "nested": {"heads": [features, logits]},
        }[self.style]


SELECTIONS = {
    "tuple": 0,
    "dict": jaxplain.select("logits"),
    "struct": jaxplain.select("logits"),
    "nested": jaxplain.select("heads", 1),
}


def _several(style):
    module = _Several(style)
    variables = module.init(jax.random.PRNGKey(0), X)
    by_hand = jaxplain.Model(
        lambda v, x: module.apply(v, x, train=False, method=_logits_of(style)), variables
    )
    return module, variables, by_hand


def _logits_of(style):
    def logits(module, x, train):
        returned = module(x, train)
        return {"tuple": lambda r: r[0], "nested": lambda r: r["heads"][1]}.get(style, _by_name)(returned)

    return logits


def _by_name(returned):
    return returned["logits"] if isinstance(returned, dict) else returned.logits


@pytest.mark.parametrize("style", list(SELECTIONS))
@pytest.mark.parametrize("how", ["selection", "function"])
def test_selected_scores_explain_as_the_hand_wrapped_model(style, how):
    module, variables, by_hand = _several(style)
    output = SELECTIONS[style] if how == "selection" else _FUNCTIONS[style]
    model = jaxplain.Model.from_linen(module, variables, output=output)
    np.testing.assert_allclose(model(X), by_hand(X), rtol=1e-6)
    np.testing.assert_allclose(
        jaxplain.saliency(model, X, target=2).values,
        jaxplain.saliency(by_hand, X, target=2).values,
        rtol=1e-5,
    )
    # The layers keep their names: a layer method sees the same module.
    layer = jaxplain.layer_gradient_x_activation(model, X, target=2, layer="features")
    hand_layer = jaxplain.layer_gradient_x_activation(
        jaxplain.Model.from_linen(module, variables, method=_logits_of(style)), X, target=2, layer="features"
    )
    np.testing.assert_allclose(layer.values, hand_layer.values, rtol=1e-5, atol=1e-7)


def test_integrated_gradients_of_selected_scores_is_complete():
    module, variables, by_hand = _several("struct")
    model = jaxplain.Model.from_linen(module, variables, output=jaxplain.select("logits"))
    ours = jaxplain.integrated_gradients(model, X, target=2, steps=32)
    np.testing.assert_allclose(
        ours.values,
        jaxplain.integrated_gradients(by_hand, X, target=2, steps=32).values,
        rtol=1e-5,
        atol=1e-7,
    )
    difference = by_hand(X)[:, 2] - by_hand(np.zeros_like(X))[:, 2]
    np.testing.assert_allclose(ours.values.sum(1), difference, rtol=1e-4, atol=1e-5)


_FUNCTIONS = {
    "tuple": lambda returned: returned[0],
    "dict": _by_name,
    "struct": _by_name,
    "nested": lambda returned: returned["heads"][1],
}


@pytest.mark.parametrize("transform", ["probs", "log_probs", "sigmoid"])
def test_selection_then_transform(transform):
    module, variables, by_hand = _several("tuple")
    function = {"probs": jax.nn.softmax, "log_probs": jax.nn.log_softmax, "sigmoid": jax.nn.sigmoid}[
        transform
    ]
    expected = jaxplain.Model(lambda v, x: function(by_hand.apply_fn(v, x)), variables)
    for model in (
        jaxplain.Model.from_linen(module, variables, output=jaxplain.select(0, transform=transform)),
        jaxplain.Model.from_linen(module, variables, output=0).with_output(transform),
    ):
        assert model.output == jaxplain.Output(select=(0,), transform=transform)
        np.testing.assert_allclose(
            jaxplain.saliency(model, X, target=1).values,
            jaxplain.saliency(expected, X, target=1).values,
            rtol=1e-5,
            atol=1e-7,
        )


def test_plain_transforms_stay_strings_and_equal_selections_share_a_program():
    assert jaxplain.Model.from_callable(jnp.tanh, output=jaxplain.Output(transform="probs")).output == "probs"
    first = jaxplain.Model.from_callable(jnp.tanh, output=jaxplain.select("a", 0))
    second = jaxplain.Model.from_callable(jnp.tanh, output=jaxplain.select("a", np.int64(0)))
    assert first.output == second.output and hash(first.output) == hash(second.output)
    treedef = jax.tree_util.tree_structure
    assert treedef(first) == treedef(second)


# --- one score per example: regression, one-logit binary --------------------------------

W = np.array([0.5, -2.0, 1.5, 3.0], np.float32)
B = np.array([0.25, 1.0, -1.0, 0.5], np.float32)


def test_linear_regression_integrated_gradients_is_exact():
    regressor = jaxplain.Model.from_callable(lambda x: x @ W + 0.7)  # (batch,)
    assert regressor(X).shape == (3, 1)
    for target in (None, 0):
        result = jaxplain.integrated_gradients(regressor, X, target=target, baseline=B, steps=4)
        assert result.values.shape == X.shape and result.target.shape == (3,)
        np.testing.assert_allclose(result.values, (X - B) * W, rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(result.delta, 0.0, atol=1e-5)
    np.testing.assert_allclose(
        jaxplain.saliency(regressor, X, target=None).values, np.broadcast_to(W, X.shape), rtol=1e-6
    )
    exact = jaxplain.exact_shapley(regressor, X, target=None, baseline=B)
    np.testing.assert_allclose(exact.values, (X - B) * W, rtol=1e-5, atol=1e-5)


def test_target_none_needs_one_class_and_class_zero_is_the_only_one():
    regressor = jaxplain.Model.from_callable(lambda x: x @ W)
    with pytest.raises(ValueError, match="outside the model's classes 0..0"):
        jaxplain.saliency(regressor, X, target=1)
    classifier = jaxplain.Model.from_callable(lambda x: x[:, :2])
    with pytest.raises(ValueError, match="target is required for a model of 2 classes"):
        jaxplain.saliency(classifier, X, target=None)


def test_sigmoid_of_one_logit_closed_form():
    binary = jaxplain.Model.from_callable(lambda x: x @ W - 0.3, output="sigmoid")
    p = jax.nn.sigmoid(X @ W - 0.3)
    np.testing.assert_allclose(binary(X)[:, 0], p, rtol=1e-6)
    np.testing.assert_allclose(
        jaxplain.saliency(binary, X, target=None).values, (p * (1 - p))[:, None] * W, rtol=1e-5, atol=1e-7
    )
    # IG of sigma(w.x + c) along the straight path is exact for its closed-form integral:
    # each feature's share is w_i (x_i - b_i) / (w.(x - b)) of sigma(x) - sigma(b).
    ig = jaxplain.integrated_gradients(binary, X, target=None, baseline=B, steps=64)
    share = W * (X - B) / ((X - B) @ W)[:, None]
    np.testing.assert_allclose(
        ig.values, share * (p - jax.nn.sigmoid(B @ W - 0.3))[:, None], rtol=1e-4, atol=1e-6
    )


def test_sigmoid_of_several_logits_is_elementwise():
    weights = np.arange(12, dtype=np.float32).reshape(4, 3) / 10 - 0.5
    multi = jaxplain.Model.from_callable(lambda x: x @ weights, output="sigmoid")
    p = jax.nn.sigmoid(X @ weights)
    np.testing.assert_allclose(multi(X), p, rtol=1e-6)
    np.testing.assert_allclose(
        jaxplain.saliency(multi, X, target=2).values,
        (p[:, 2] * (1 - p[:, 2]))[:, None] * weights[:, 2],
        rtol=1e-5,
    )


@pytest.mark.parametrize("transform", ["probs", "log_probs"])
def test_softmax_of_one_score_is_refused_and_sigmoid_suggested(transform):
    model = jaxplain.Model.from_callable(lambda x: x @ W, output=transform)
    with pytest.raises(TypeError, match="softmax is 1 everywhere.*output='sigmoid'"):
        jaxplain.saliency(model, X, target=None)


# --- dense outputs over a region ----------------------------------------------------------


class _Segmenter(nn.Module):
    classes: int = 3

    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Conv(4, (3, 3), padding="SAME")(x))
        return nn.Conv(self.classes, (1, 1))(x)  # (batch, height, width, classes)


IMAGES = np.random.default_rng(1).normal(size=(2, 5, 6, 2)).astype(np.float32)
MASK = np.zeros((5, 6), bool)
MASK[1:4, 2:5] = True


@pytest.mark.parametrize("reduce", ["sum", "mean"])
@pytest.mark.parametrize("inner", ["logits", "probs"])
def test_region_explains_as_the_hand_reduced_model(reduce, inner):
    module = _Segmenter()
    variables = module.init(jax.random.PRNGKey(0), IMAGES)

    def reduced(v, x):
        scores = module.apply(v, x)
        scores = jax.nn.softmax(scores, axis=-1) if inner == "probs" else scores
        picked = jnp.where(MASK[None, :, :, None], scores, 0.0).sum((1, 2))
        return picked / MASK.sum() if reduce == "mean" else picked

    by_hand = jaxplain.Model(reduced, variables)
    model = jaxplain.Model.from_linen(module, variables, output=jaxplain.region(MASK, reduce, output=inner))
    np.testing.assert_allclose(model(IMAGES), by_hand(IMAGES), rtol=1e-5, atol=1e-6)
    # target="predicted" picks the class with the largest region score.
    ours = jaxplain.saliency(model, IMAGES, target="predicted")
    theirs = jaxplain.saliency(by_hand, IMAGES, target="predicted")
    np.testing.assert_array_equal(ours.target, np.argmax(by_hand(IMAGES), 1))
    np.testing.assert_array_equal(ours.target, theirs.target)
    np.testing.assert_allclose(ours.values, theirs.values, rtol=1e-5, atol=1e-6)
    assert ours.values.shape == IMAGES.shape


def test_region_of_a_one_channel_map_with_soft_weights():
    """A binary segmenter's (batch, height, width) logits: one score per example."""
    module = _Segmenter(classes=1)
    variables = module.init(jax.random.PRNGKey(0), IMAGES)
    weights = np.linspace(0.0, 1.0, 30, dtype=np.float32).reshape(5, 6)
    squeezed = jaxplain.Model.from_linen(
        module, variables, output=jaxplain.region(weights, output=lambda out: out[..., 0])
    )
    expected = (module.apply(variables, IMAGES)[..., 0] * weights).sum((1, 2))
    np.testing.assert_allclose(squeezed(IMAGES)[:, 0], expected, rtol=1e-5)
    ig = jaxplain.integrated_gradients(squeezed, IMAGES, target=None, steps=32)
    difference = expected - (module.apply(variables, np.zeros_like(IMAGES))[..., 0] * weights).sum((1, 2))
    np.testing.assert_allclose(ig.values.sum((1, 2, 3)), difference, rtol=2e-3, atol=1e-4)


def test_equal_masks_are_equal_outputs_and_other_masks_are_not():
    assert jaxplain.region(MASK) == jaxplain.region(MASK.astype(np.float32))
    assert hash(jaxplain.region(MASK)) == hash(jaxplain.region(MASK.copy()))
    other = MASK.copy()
    other[0, 0] = True
    assert jaxplain.region(other) != jaxplain.region(MASK)
    assert jaxplain.region(MASK, "mean") != jaxplain.region(MASK)
    assert "sha256:" in repr(jaxplain.region(MASK))


def test_dense_output_without_a_region_suggests_one():
    module = _Segmenter()
    model = jaxplain.Model.from_linen(module, module.init(jax.random.PRNGKey(0), IMAGES))
    with pytest.raises(ValueError, match=r"output=jaxplain.region\(mask"):
        jaxplain.saliency(model, IMAGES, target=0)


@pytest.mark.parametrize(
    "make, error, match",
    [
        (lambda: jaxplain.region(np.zeros((5, 6))), ValueError, "not all zero"),
        (lambda: jaxplain.region(-np.ones((5, 6))), ValueError, "non-negative"),
        (lambda: jaxplain.region(MASK, "max"), ValueError, r"reduce=\): must be one of \('sum', 'mean'\)"),
        (lambda: jaxplain.region(np.array(["a"])), TypeError, "bools or numbers"),
        (lambda: jaxplain.region(True), ValueError, "got a scalar"),
        (lambda: jaxplain.region(MASK, output=jaxplain.region(MASK)), ValueError, "already has a region"),
        (lambda: jaxplain.Model.from_callable(jnp.tanh, output="scores"), ValueError, r"select\('scores'\)"),
        (lambda: jaxplain.Model.from_callable(jnp.tanh, output=True), TypeError, "output must be"),
        (lambda: jaxplain.Model.from_callable(jnp.tanh, output=1.5), TypeError, "got float"),
        (lambda: jaxplain.select(0, transform="softmax"), ValueError, "transform must be one of"),
        (lambda: jaxplain.select(0.5), TypeError, "each step is a dict key"),
    ],
)
def test_bad_outputs_are_named(make, error, match):
    with pytest.raises(error, match=match):
        make()


def test_region_of_the_wrong_shape_and_missing_keys_say_what_the_model_returned():
    module = _Segmenter()
    variables = module.init(jax.random.PRNGKey(0), IMAGES)
    wrong = jaxplain.Model.from_linen(module, variables, output=jaxplain.region(np.ones((6, 5))))
    with pytest.raises(OutputStructureError, match=r"mask has shape \(6, 5\).*\(2, 5, 6, 3\)"):
        jaxplain.saliency(wrong, IMAGES, target=0)
    several, variables, _ = _several("dict")
    missing = jaxplain.Model.from_linen(several, variables, output=jaxplain.select("scores"))
    with pytest.raises(
        OutputStructureError, match=r"without key or attribute 'scores'.*\['logits'\] float32\[3, 3\]"
    ):
        jaxplain.saliency(missing, X, target=0)


@pytest.mark.parametrize(
    "style, advice",
    [("tuple", "output=0"), ("dict", "output=jaxplain.select('logits')"), ("nested", "select('heads', 0)")],
)
def test_the_structure_error_suggests_an_output_that_works(style, advice):
    module, variables, by_hand = _several(style)
    with pytest.raises(OutputStructureError, match=r"with output=") as info:
        jaxplain.saliency(jaxplain.Model.from_linen(module, variables), X, target=0)
    assert advice in str(info.value)
    # Within an output that selects too little, the advice extends the path (the first
    # (batch, n) leaf when none is named like logits).
    if style == "nested":
        short = jaxplain.Model.from_linen(module, variables, output=jaxplain.select("heads"))
        with pytest.raises(OutputStructureError, match=r"select\('heads', 0\)"):
            jaxplain.saliency(short, X, target=0)


# --- variables as NumPy arrays --------------------------------------------------------------


class _Embedder(nn.Module):
    """A lookup in a parameter indexed by the input, as the Flax SST-2 example's."""

    vocab: int
    features: int

    def setup(self):
        self.embedding = self.param("embedding", nn.initializers.normal(1.0), (self.vocab, self.features))

    def __call__(self, ids):
        return self.embedding[ids]


class _TextClassifier(nn.Module):
    @nn.compact
    def __call__(self, ids):
        embedded = _Embedder(11, 4, name="embedder")(ids)
        return nn.Dense(2, name="head")(embedded.mean(1))


def _numpy_round_trip(variables):
    restored = flax.serialization.from_bytes(variables, flax.serialization.to_bytes(variables))
    assert all(isinstance(leaf, np.ndarray) for leaf in jax.tree_util.tree_leaves(restored))
    return restored


def test_numpy_variables_of_a_model_that_indexes_a_parameter_with_x():
    ids = np.array([[1, 4, 7, 2], [3, 3, 9, 10]], np.int32)
    module = _TextClassifier()
    variables = module.init(jax.random.PRNGKey(0), ids)
    restored = _numpy_round_trip(variables)
    model = jaxplain.Model.from_linen(module, restored)
    reference = jaxplain.Model.from_linen(module, variables)
    ours = jaxplain.token_attributions(model, ids, target=1, layer="embedder", baseline=0, steps=4)
    assert all(isinstance(leaf, jax.Array) for leaf in jax.tree_util.tree_leaves(model.params))
    theirs = jaxplain.token_attributions(reference, ids, target=1, layer="embedder", baseline=0, steps=4)
    np.testing.assert_allclose(ours.values, theirs.values, rtol=1e-6, atol=1e-7)
    # The same lookup in a plain function of (params, ids), wrapped with Model directly.
    direct = jaxplain.Model(lambda v, i: module.apply(v, i), restored)
    np.testing.assert_allclose(direct(ids), reference(ids), rtol=1e-6)


def test_numpy_variables_of_a_float_model_and_pytree_round_trips():
    module, variables, _ = _several("tuple")
    restored = _numpy_round_trip(variables)
    model = jaxplain.Model.from_linen(module, restored, output=0)
    reference = jaxplain.Model.from_linen(module, variables, output=0)
    np.testing.assert_allclose(
        jaxplain.saliency(model, X, target=1).values,
        jaxplain.saliency(reference, X, target=1).values,
        rtol=1e-6,
    )
    # Pytree reconstruction with placeholders (as jax's own transformations do) leaves them be.
    leaves, treedef = jax.tree_util.tree_flatten(model)
    rebuilt = jax.tree_util.tree_unflatten(treedef, [object()] * len(leaves))
    assert all(type(leaf) is object for leaf in jax.tree_util.tree_leaves(rebuilt.params))
    none = jaxplain.Model(lambda p, x: x, {"a": None, "b": np.float32(2.0)})
    assert none.params["a"] is None and isinstance(none.params["b"], jax.Array)
