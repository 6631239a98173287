"""Flax NNX models: `Model.from_nnx` (call keywords, evaluation mode, the user's module
left as it was) and every layer method on NNX layers named by attribute path, checked
against a Linen twin holding the same weights and against hand computations."""

import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import jaxplain
from jaxplain.methods import layers

# nnx.List holds a list of submodules from flax 0.11; earlier releases took a plain list.
ModuleList = getattr(nnx, "List", list)


def assign(variable, value):
    """Sets an NNX variable's array (`set_value` from flax 0.12, `.value` before)."""
    if hasattr(variable, "set_value"):
        variable.set_value(jnp.asarray(value))
    else:
        variable.value = jnp.asarray(value)


def build(cls, seed=0, **kwargs):
    """`cls(rngs=..., **kwargs)` with random weights, biases and BatchNorm statistics,
    drawn in numpy for the shapes NNX would make, so that no term of the checks vanishes.

    Initialising an NNX module runs its initialisers op by op, which takes seconds per
    model on the test machine; this takes milliseconds. Kernels and embeddings are
    N(0, 1/fan_in), variances and scales U(0.5, 1.5), biases and means N(0, 0.1^2).
    """
    graphdef, abstract = nnx.split(nnx.eval_shape(lambda: cls(rngs=nnx.Rngs(0), **kwargs)))
    rng = np.random.default_rng(seed)

    def draw(path, leaf):
        name = re.findall(r"\['(\w+)'\]", jax.tree_util.keystr(path))[-1]
        if jnp.issubdtype(leaf.dtype, jax.dtypes.prng_key):
            return jax.random.key(seed)
        if not jnp.issubdtype(leaf.dtype, jnp.floating):
            return jnp.zeros(leaf.shape, leaf.dtype)
        if name in ("kernel", "embedding"):
            value = rng.normal(0.0, 1.0 / np.sqrt(np.prod(leaf.shape[:-1])), leaf.shape)
        elif name in ("var", "scale"):
            value = rng.uniform(0.5, 1.5, leaf.shape)
        else:
            value = rng.normal(0.0, 0.1, leaf.shape)
        return jnp.asarray(value, leaf.dtype)

    return nnx.merge(graphdef, jax.tree_util.tree_map_with_path(draw, abstract))


def jitted(function, *args):
    """`function(*args)` as one compiled program (op by op, NNX calls compile dozens)."""
    return jax.jit(function)(*args)


def outputs(model, x):
    return jitted(lambda model, x: model(x), model, x)


def array(variable):
    return jnp.asarray(variable[...])


# --- an image classifier in the style of the Flax NNX MNIST example ----------------------


class NnxCNN(nnx.Module):
    """Conv -> BatchNorm -> ReLU -> max-pool -> Dropout, Conv -> BatchNorm -> ReLU, mean, Linear."""

    def __init__(self, *, rngs: nnx.Rngs):
        self.conv1 = nnx.Conv(2, 4, kernel_size=(3, 3), rngs=rngs)
        self.bn1 = nnx.BatchNorm(4, rngs=rngs)
        self.dropout = nnx.Dropout(rate=0.5, rngs=rngs)
        self.conv2 = nnx.Conv(4, 5, kernel_size=(3, 3), rngs=rngs)
        self.bn2 = nnx.BatchNorm(5, rngs=rngs)
        self.linear = nnx.Linear(5, 3, rngs=rngs)

    def features(self, x, rngs=None):
        x = nnx.max_pool(nnx.relu(self.bn1(self.conv1(x))), (2, 2), strides=(2, 2))
        return self.conv2(self.dropout(x, rngs=rngs))

    def head(self, conv2_output):
        return self.linear(nnx.relu(self.bn2(conv2_output)).mean(axis=(1, 2)))

    def __call__(self, x, rngs: nnx.Rngs | None = None):
        return self.head(self.features(x, rngs=rngs))


class LinenCNN(nn.Module):
    """NnxCNN in Linen, its layers named as NnxCNN's attributes."""

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = nn.relu(
            nn.BatchNorm(use_running_average=not train, name="bn1")(nn.Conv(4, (3, 3), name="conv1")(x))
        )
        x = nn.Dropout(0.5, deterministic=not train)(nn.max_pool(x, (2, 2), strides=(2, 2)))
        x = nn.relu(
            nn.BatchNorm(use_running_average=not train, name="bn2")(nn.Conv(5, (3, 3), name="conv2")(x))
        )
        return nn.Dense(3, name="linear")(x.mean(axis=(1, 2)))


def cnn_twins(seed=0):
    """(NnxCNN with random weights and statistics, the Linen twin's Model with the same)."""
    module = build(NnxCNN, seed)
    params = {
        name: {"kernel": array(getattr(module, name).kernel), "bias": array(getattr(module, name).bias)}
        for name in ("conv1", "conv2", "linear")
    }
    stats = {}
    for name in ("bn1", "bn2"):
        norm = getattr(module, name)
        params[name] = {"scale": array(norm.scale), "bias": array(norm.bias)}
        stats[name] = {"mean": array(norm.mean), "var": array(norm.var)}
    return module, jaxplain.Model.from_linen(LinenCNN(), {"params": params, "batch_stats": stats})


def images(batch=2, seed=0):
    return np.random.default_rng(seed).normal(size=(batch, 6, 6, 2)).astype(np.float32)


# --- a text classifier: embedding, a list of pre-norm attention blocks, a head -----------


class NnxBlock(nnx.Module):
    def __init__(self, dim: int, *, rngs: nnx.Rngs):
        self.norm1 = nnx.LayerNorm(dim, rngs=rngs)
        self.attn = nnx.MultiHeadAttention(num_heads=2, in_features=dim, decode=False, rngs=rngs)
        self.norm2 = nnx.LayerNorm(dim, rngs=rngs)
        self.mlp = nnx.Linear(dim, dim, rngs=rngs)
        self.dropout = nnx.Dropout(0.5, rngs=rngs)

    def __call__(self, x, deterministic: bool = False):
        x = x + self.dropout(self.attn(self.norm1(x)), deterministic=deterministic)
        return x + nnx.gelu(self.mlp(self.norm2(x)))


class NnxTextClassifier(nnx.Module):
    """`__call__(tokens, deterministic=False)`: a training-mode default, as many NNX models have."""

    pad_id = 1

    def __init__(self, vocabulary=11, dim=8, depth=2, *, rngs: nnx.Rngs):
        self.embed = nnx.Embed(vocabulary, dim, rngs=rngs)
        self.blocks = ModuleList([NnxBlock(dim, rngs=rngs) for _ in range(depth)])
        self.norm = nnx.LayerNorm(dim, rngs=rngs)
        self.head = nnx.Linear(dim, 3, rngs=rngs)

    def __call__(self, tokens, deterministic: bool = False):
        x = self.embed(tokens)
        for block in self.blocks:
            x = block(x, deterministic=deterministic)
        return self.head(self.norm(x).mean(axis=1))


class LinenBlock(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = x + nn.MultiHeadDotProductAttention(num_heads=2, name="attn")(nn.LayerNorm(name="norm1")(x))
        return x + nn.gelu(nn.Dense(x.shape[-1], name="mlp")(nn.LayerNorm(name="norm2")(x)))


class LinenTextClassifier(nn.Module):
    pad_id: int = 1
    depth: int = 2

    @nn.compact
    def __call__(self, tokens):
        x = nn.Embed(11, 8, name="embed")(tokens)
        for i in range(self.depth):
            x = LinenBlock(name=f"blocks_{i}")(x)
        return nn.Dense(3, name="head")(nn.LayerNorm(name="norm")(x).mean(axis=1))


def text_twins(seed=0, depth=2):
    module = build(NnxTextClassifier, seed, depth=depth)

    def dense(layer):
        return {"kernel": array(layer.kernel), "bias": array(layer.bias)}

    def norm(layer):
        return {"scale": array(layer.scale), "bias": array(layer.bias)}

    params = {"embed": {"embedding": array(module.embed.embedding)}, "norm": norm(module.norm)}
    params["head"] = dense(module.head)
    for i, block in enumerate(module.blocks):
        params[f"blocks_{i}"] = {
            "norm1": norm(block.norm1),
            "norm2": norm(block.norm2),
            "mlp": dense(block.mlp),
            "attn": {name: dense(getattr(block.attn, name)) for name in ("query", "key", "value", "out")},
        }
    return module, jaxplain.Model.from_linen(LinenTextClassifier(depth=depth), {"params": params})


def tokens():
    return np.array([[3, 7, 2, 9, 1], [5, 4, 10, 1, 1]], np.int32)


# --- Model.from_nnx ---------------------------------------------------------------------


def test_from_nnx_passes_call_keywords_and_evaluates_as_module_eval():
    """The MNIST example's `__call__(x, rngs)` with `rngs=None`; Dropout deterministic and
    BatchNorm on its running statistics, as after `module.eval()` on an equal module."""
    module, linen = cnn_twins()
    model = jaxplain.Model.from_nnx(module, rngs=None)
    evaluating = build(NnxCNN, 0)
    evaluating.eval()
    x = images(3)
    scores = outputs(model, x)
    np.testing.assert_allclose(scores, jitted(lambda x: evaluating(x, rngs=None), x), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(scores, outputs(linen, x), rtol=1e-5, atol=1e-6)
    assert dict(model.apply_fn.kwargs) == {"rngs": None}


def test_from_nnx_sets_the_evaluation_keywords_the_call_takes():
    """`__call__(tokens, deterministic=False)`: without the keyword, Dropout (rate 0.5)
    would drop; jaxplain passes deterministic=True unless told otherwise."""
    module, linen = text_twins()
    x = tokens()
    expected = jitted(lambda x: module(x, deterministic=True), x)
    model = jaxplain.Model.from_nnx(module)
    assert dict(model.apply_fn.kwargs) == {"deterministic": True}
    np.testing.assert_allclose(outputs(model, x), expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(outputs(linen, x), expected, rtol=1e-5, atol=1e-6)


def test_from_nnx_call_keywords_win_over_the_evaluation_defaults():
    class Tempered(nnx.Module):
        def __init__(self, rngs):
            self.linear = nnx.Linear(3, 2, rngs=rngs)

        def __call__(self, x, training: bool = True, temperature: float = 1.0):
            logits = self.linear(x)
            return (2.0 if training else 1.0 / temperature) * logits

    module, x = build(Tempered), np.ones((2, 3), np.float32)
    logits = module(x, training=False)
    np.testing.assert_allclose(jaxplain.Model.from_nnx(module)(x), logits, rtol=1e-6)
    np.testing.assert_allclose(jaxplain.Model.from_nnx(module, training=True)(x), 2 * logits, rtol=1e-6)
    np.testing.assert_allclose(jaxplain.Model.from_nnx(module, temperature=4.0)(x), logits / 4, rtol=1e-6)


def test_the_model_keeps_the_weights_it_was_made_with():
    """A later in-place update of the module (an optimizer step) does not reach the model."""
    module, x = build(NnxCNN, 0), images()
    model = jaxplain.Model.from_nnx(module, rngs=None)
    before = np.asarray(outputs(model, x))
    assign(module.linear.kernel, np.zeros((5, 3), np.float32))
    np.testing.assert_array_equal(outputs(model, x), before)


def test_from_nnx_method_by_name_or_function():
    module, _ = cnn_twins()
    x = images()
    full = outputs(jaxplain.Model.from_nnx(module), x)
    features = outputs(jaxplain.Model.from_nnx(module, method="features"), x)
    evaluating = build(NnxCNN, 0)
    evaluating.eval()
    np.testing.assert_allclose(features, jitted(evaluating.features, x), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(jitted(evaluating.head, features), full, rtol=1e-5, atol=1e-6)
    pair = jaxplain.Model.from_nnx(module, method=lambda m, x: (m(x), m.features(x))[0])
    np.testing.assert_allclose(outputs(pair, x), full, rtol=1e-6)


def snapshot(module):
    """Every module's class and every variable's class and array (a key's raw data)."""
    found = {}
    for path, node in nnx.iter_graph(module):
        if isinstance(node, nnx.Variable):
            value = node[...]
            if jnp.issubdtype(value.dtype, jax.dtypes.prng_key):
                value = jax.random.key_data(value)
            found[str(path)] = (type(node), np.array(value))
        elif isinstance(node, nnx.Module):
            found[str(path)] = (type(node), None)
    return found


def test_from_nnx_leaves_the_users_module_as_it_was():
    module = build(NnxCNN, 0)
    before = snapshot(module)
    model = jaxplain.Model.from_nnx(module, rngs=None)
    layers.grad_cam(model, images(), target=0, layer="conv2")
    layers.fullgrad(model, images(), target=1)
    assert module.dropout.deterministic is False and module.bn1.use_running_average is False
    after = snapshot(module)
    assert after.keys() == before.keys()
    for path, (kind, value) in before.items():
        assert after[path][0] is kind, path
        np.testing.assert_array_equal(after[path][1], value)


@pytest.mark.parametrize(
    "error, match, call",
    [
        (TypeError, "module must be a flax.nnx.Module", lambda m: jaxplain.Model.from_nnx(LinenCNN())),
        (
            ValueError,
            "method 'logits' is not a method of NnxCNN",
            lambda m: jaxplain.Model.from_nnx(m, method="logits"),
        ),
        (TypeError, "method must be a method name", lambda m: jaxplain.Model.from_nnx(m, method=3)),
        (
            TypeError,
            "keyword argument mask= must be a static",
            lambda m: jaxplain.Model.from_nnx(m, mask=np.ones(3)),
        ),
    ],
)
def test_from_nnx_bad_arguments_are_named(error, match, call):
    with pytest.raises(error, match=match):
        call(build(NnxCNN))


# --- layer names ------------------------------------------------------------------------


def test_layer_names_are_attribute_paths():
    model = jaxplain.Model.from_nnx(build(NnxCNN), rngs=None)
    assert layers.layer_names(model, images()) == {
        "conv1": (2, 6, 6, 4),
        "bn1": (2, 6, 6, 4),
        "dropout": (2, 3, 3, 4),
        "conv2": (2, 3, 3, 5),
        "bn2": (2, 3, 3, 5),
        "linear": (2, 3),
    }
    text = layers.layer_names(jaxplain.Model.from_nnx(build(NnxTextClassifier)), tokens())
    assert list(text)[:8] == [
        "embed",
        "blocks/0/norm1",
        "blocks/0/attn/query",
        "blocks/0/attn/key",
        "blocks/0/attn/value",
        "blocks/0/attn/out",
        "blocks/0/attn",
        "blocks/0/dropout",
    ]
    assert text["blocks/1"] == text["blocks/1/mlp"] == (2, 5, 8) and text["head"] == (2, 3)
    assert text["blocks/1/attn/query"] == (2, 5, 2, 4)


def test_sequential_and_dict_layers_are_named_by_index_and_key():
    class Heads(nnx.Module):
        def __init__(self, rngs):
            self.trunk = nnx.Sequential(nnx.Linear(4, 6, rngs=rngs), nnx.relu, nnx.Linear(6, 5, rngs=rngs))
            self.heads = nnx.Dict({"a": nnx.Linear(5, 2, rngs=rngs), "b": nnx.Linear(5, 1, rngs=rngs)})

        def __call__(self, x):
            h = self.trunk(x)
            return jnp.concatenate([self.heads["a"](h), self.heads["b"](h)], axis=-1)

    model = jaxplain.Model.from_nnx(build(Heads))
    names = layers.layer_names(model, np.ones((2, 4), np.float32))
    assert names == {
        "trunk/layers/0": (2, 6),
        "trunk/layers/2": (2, 5),
        "trunk": (2, 5),
        "heads/a": (2, 2),
        "heads/b": (2, 1),
    }


def test_a_wrong_layer_path_lists_the_available_ones():
    model = jaxplain.Model.from_nnx(build(NnxCNN), rngs=None)
    with pytest.raises(ValueError, match="layer 'conv3' is not a layer of this model") as info:
        layers.grad_cam(model, images(), target=0, layer="conv3")
    for name in ("conv1 (6, 6, 4)", "bn1", "conv2 (3, 3, 5)", "bn2", "linear (3,)"):
        assert name in str(info.value)


def test_an_nnx_layer_that_runs_twice_is_refused():
    class Shared(nnx.Module):
        def __init__(self, rngs):
            self.dense = nnx.Linear(5, 5, rngs=rngs)
            self.out = nnx.Linear(5, 2, rngs=rngs)

        def __call__(self, x):
            return self.out(self.dense(jnp.tanh(self.dense(x))))

    model = jaxplain.Model.from_nnx(build(Shared))
    x = np.ones((2, 5), np.float32)
    assert list(layers.layer_names(model, x)) == ["out"]
    with pytest.raises(ValueError, match="layer 'dense' runs 2 times"):
        layers.layer_gradient_x_activation(model, x, target=0, layer="dense")
    assert sorted(layers.fullgrad(model, x, target=0, post_process=False).extras["bias_gradients"]) == [
        "dense",
        "dense#1",
        "out",
    ]


# --- every layer method: the NNX model against its Linen twin ----------------------------

CNN_CASES = {
    "grad_cam": lambda model, x, layer: layers.grad_cam(model, x, target=1, layer=layer("conv2")),
    "signed_grad_cam": lambda model, x, layer: layers.grad_cam(
        model, x, target=np.array([[0, 2]]), layer=layer("bn1"), relu=False, upsample=False
    ),
    "layer_gradient_x_activation": lambda model, x, layer: layers.layer_gradient_x_activation(
        model, x, target=2, layer=layer("bn2")
    ),
    "layer_integrated_gradients": lambda model, x, layer: layers.layer_integrated_gradients(
        model, x, target=0, layer=layer("conv2"), steps=8
    ),
    "neuron_gradient": lambda model, x, layer: layers.neuron_gradient(
        model, x, layer=layer("conv1"), neuron=[(1, 2, 3), 7]
    ),
    "neuron_integrated_gradients": lambda model, x, layer: layers.neuron_integrated_gradients(
        model, x, layer=layer("bn2"), neuron=(0, 1, 4), steps=8
    ),
    "fullgrad": lambda model, x, layer: layers.fullgrad(model, x, target=1, post_process=False),
    "fullgrad_map": lambda model, x, layer: layers.fullgrad(model, x, target=1),
}


def assert_same(nnx_result, linen_result):
    np.testing.assert_allclose(nnx_result.values, linen_result.values, rtol=1e-4, atol=1e-5)
    if linen_result.delta is not None:
        np.testing.assert_allclose(nnx_result.delta, linen_result.delta, rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(nnx_result.target, linen_result.target)


@pytest.mark.parametrize("case", sorted(CNN_CASES))
def test_cnn_layer_methods_equal_the_linen_twin(case):
    """Same weights, same layer (NNX "conv2" is Linen "conv2"; same names here), same answer."""
    module, linen = cnn_twins()
    model, x = jaxplain.Model.from_nnx(module, rngs=None), images()
    ours, theirs = CNN_CASES[case](model, x, str), CNN_CASES[case](linen, x, str)
    assert_same(ours, theirs)
    if case == "fullgrad":
        # Linen names its biases "conv1", "bn1", ...: the same names as the NNX attributes.
        assert sorted(ours.extras["bias_gradients"]) == ["bn1", "bn2", "conv1", "conv2", "linear"]
        for name, part in theirs.extras["bias_gradients"].items():
            np.testing.assert_allclose(ours.extras["bias_gradients"][name], part, rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(ours.delta, 0.0, atol=1e-4)  # exact: piecewise linear


TEXT_CASES = {
    "token_attributions": lambda model, x, layer: layers.token_attributions(model, x, target=1, steps=4),
    "attention_layer_integrated_gradients": lambda model, x, layer: layers.layer_integrated_gradients(
        model, x, target=2, layer=layer("blocks/1/attn"), baseline=1, steps=4
    ),
    "mlp_gradient_x_activation": lambda model, x, layer: layers.layer_gradient_x_activation(
        model, x, target=np.array([[0, 1]]), layer=layer("blocks/0/mlp")
    ),
    "query_layer_integrated_gradients": lambda model, x, layer: layers.layer_integrated_gradients(
        model, x, target=0, layer=layer("blocks/0/attn/query"), steps=4
    ),
    "block_gradient_x_activation": lambda model, x, layer: layers.layer_gradient_x_activation(
        model, x, target=1, layer=layer("blocks/1")
    ),
}


# A layer IG through attention compiles for seconds (twice: NNX and Linen); the default
# tier keeps one case and checks token attributions by completeness below.
TEXT_DEFAULT_TIER = ("block_gradient_x_activation",)


@pytest.mark.parametrize(
    "case",
    [
        case if case in TEXT_DEFAULT_TIER else pytest.param(case, marks=pytest.mark.slow)
        for case in sorted(TEXT_CASES)
    ],
)
def test_text_layer_methods_equal_the_linen_twin(case):
    """NNX "blocks/1/attn" is Linen "blocks_1/attn"; the embedding is found in both."""
    module, linen = text_twins()
    model, x = jaxplain.Model.from_nnx(module), tokens()
    ours = TEXT_CASES[case](model, x, str)
    theirs = TEXT_CASES[case](linen, x, lambda name: name.replace("blocks/", "blocks_"))
    assert_same(ours, theirs)
    if case == "token_attributions":
        assert layers.embedding_layer(model, x) == "embed"
        # the baseline is the model's pad_id (1): padded positions score exactly 0
        assert np.all(np.asarray(ours.values)[x == 1] == 0.0)


# --- hand computations ------------------------------------------------------------------


def test_grad_cam_is_the_hand_gradient_of_the_layer():
    """alpha_c = mean_hw dF_t/dA, cam = relu(sum_c alpha_c A), A = conv2's output, the
    gradient taken by hand through the module's own `head` method."""
    module = build(NnxCNN, 2)
    model, x = jaxplain.Model.from_nnx(module, rngs=None), images(seed=1)
    module.eval()

    def by_hand(x):
        activation = module.features(x)
        grads = jax.grad(lambda a: module.head(a)[:, 1].sum())(activation)
        return jax.nn.relu(jnp.einsum("bc,bhwc->bhw", grads.mean(axis=(1, 2)), activation))

    expected = jitted(by_hand, x)
    cam = layers.grad_cam(model, x, target=1, layer="conv2", upsample=False)
    np.testing.assert_allclose(cam.values, expected, rtol=1e-4, atol=1e-6)


def test_layer_integrated_gradients_on_the_embeddings_is_complete():
    """Everything after the embedding reads only its output, so with enough steps the
    token scores sum to F(x) - F(baseline); the embedding is found, the baseline is the
    model's pad_id and padded positions score exactly 0."""
    module = build(NnxTextClassifier, 3, depth=1)
    model, x = jaxplain.Model.from_nnx(module), tokens()
    result = layers.token_attributions(model, x, target=0, steps=16)
    baseline = np.full_like(x, NnxTextClassifier.pad_id)
    difference = outputs(model, x)[:, 0] - outputs(model, baseline)[:, 0]
    np.testing.assert_allclose(result.values.sum(axis=1), difference, rtol=1e-3, atol=1e-5)
    assert np.all(np.asarray(result.values)[x == 1] == 0.0)
    assert layers.embedding_layer(model, x) == "embed"


def test_new_weights_of_the_same_architecture_reuse_the_program():
    x = images()
    first = jaxplain.Model.from_nnx(build(NnxCNN, 0), rngs=None)
    second = jaxplain.Model.from_nnx(build(NnxCNN, 1), rngs=None)
    layers.grad_cam(first, x, target=0, layer="conv2")
    traced = layers._grad_cam.traces
    a = layers.grad_cam(second, x, target=0, layer="conv2")
    assert layers._grad_cam.traces == traced
    assert not np.allclose(a.values, layers.grad_cam(first, x, target=0, layer="conv2").values)


def test_layer_methods_pass_per_example_model_kwargs_to_nnx_models():
    """F = b(a(x) * scale): gradient x activation of layer a is a(x) * scale * w_b[:, t]
    per unit, and FullGrad's decomposition stays exact (both layers affine)."""

    class Scaled(nnx.Module):
        def __init__(self, rngs):
            self.a = nnx.Linear(3, 4, rngs=rngs)
            self.b = nnx.Linear(4, 2, rngs=rngs)

        def __call__(self, x, scale):
            return self.b(self.a(x) * scale[:, None])

    module = build(Scaled)
    model, x = (
        jaxplain.Model.from_nnx(module),
        np.random.default_rng(0).normal(size=(2, 3)).astype(np.float32),
    )
    scale = np.array([1.0, 2.0], np.float32)
    result = layers.layer_gradient_x_activation(model, x, target=0, layer="a", model_kwargs={"scale": scale})
    activation = x @ array(module.a.kernel) + array(module.a.bias)
    expected = activation * scale[:, None] * array(module.b.kernel)[:, 0]
    np.testing.assert_allclose(result.values, expected, rtol=1e-5, atol=1e-6)
    full = layers.fullgrad(model, x, target=1, post_process=False, model_kwargs={"scale": scale})
    np.testing.assert_allclose(full.delta, 0.0, atol=1e-5)
