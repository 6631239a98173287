"""The model zoo: standard parameter counts, shapes, eval-mode behaviour, masking, activations."""

import doctest
import functools

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxplain import models


def count_parameters(module, shape):
    variables = jax.eval_shape(module.init, jax.random.PRNGKey(0), jnp.zeros(shape))
    return sum(leaf.size for leaf in jax.tree_util.tree_leaves(variables["params"]))


def random_variables(module, shape, seed=0):
    """Variables shaped as `module.init` makes them, drawn with numpy.

    Compiling `init` of InceptionV3 or ResNet-50 takes 10-20 s on two CPU cores, and
    these tests need only well-scaled values. Random BatchNorm statistics (rather than
    0 and 1) make sure evaluation mode really uses them.
    """
    rng = np.random.default_rng(seed)
    shapes = jax.eval_shape(module.init, jax.random.PRNGKey(0), jnp.zeros(shape))

    def draw(path, leaf):
        name = path[-1].key
        if name == "kernel":
            value = rng.normal(size=leaf.shape) * np.sqrt(2.0 / np.prod(leaf.shape[:-1]))
        elif name == "var":
            value = rng.uniform(0.5, 1.5, size=leaf.shape)
        elif name == "scale":
            value = 1.0 + 0.1 * rng.normal(size=leaf.shape)
        else:
            value = 0.1 * rng.normal(size=leaf.shape)
        return jnp.asarray(value, leaf.dtype)

    return jax.tree_util.tree_map_with_path(draw, shapes)


# Compiling InceptionV3 or ResNet-50 takes half as long without XLA's backend
# optimisations, and these tests run each program once or twice.
jit = functools.partial(jax.jit, compiler_options={"xla_backend_optimization_level": 0})


def jit_apply(module):
    return jit(module.apply, static_argnames=("method", "train", "mutable"))


def images(shape, seed=1):
    return jax.random.normal(jax.random.PRNGKey(seed), shape)


@pytest.mark.parametrize(
    "name, size, expected",
    [("resnet50", 224, 25_557_032), ("resnet18", 224, 11_689_512), ("inception_v3", 299, 23_834_568)],
)
def test_parameter_counts_match_the_standard_figures(name, size, expected):
    assert count_parameters(models.build(name, num_classes=1000), (1, size, size, 3)) == expected


def test_inception_v3_spatial_sizes_follow_torchvision():
    module = models.InceptionV3()
    logits, state = jax.eval_shape(
        lambda x: module.init_with_output(jax.random.PRNGKey(0), x, capture_intermediates=True),
        jnp.zeros((2, 299, 299, 3)),
    )
    assert logits.shape == (2, 1000)
    outputs = {name: out["__call__"][0] for name, out in state["intermediates"].items() if name != "__call__"}
    sizes = {name: output.shape[1:3] for name, output in outputs.items()}
    expected = {
        "Conv2d_1a_3x3": 149,
        "Conv2d_2a_3x3": 147,
        "Conv2d_2b_3x3": 147,
        "Conv2d_3b_1x1": 73,
        "Conv2d_4a_3x3": 71,
        "Mixed_5d": 35,
        "Mixed_6e": 17,
        "Mixed_7c": 8,
    }
    for name, size in expected.items():
        assert sizes[name] == (size, size), name
    assert outputs["Mixed_7c"].shape[-1] == 2048


def test_inception_v3_rejects_images_below_75():
    with pytest.raises(ValueError, match="75x75"):
        jax.eval_shape(models.InceptionV3().init, jax.random.PRNGKey(0), jnp.zeros((1, 64, 64, 3)))


@pytest.fixture(scope="module")
def inception():
    module = models.InceptionV3(num_classes=7)
    return module, random_variables(module, (1, 75, 75, 3)), images((2, 75, 75, 3))


@pytest.fixture(scope="module")
def resnet50():
    module = models.ResNet50(num_classes=5)
    return module, random_variables(module, (1, 64, 64, 3)), images((2, 64, 64, 3))


@pytest.fixture(scope="module")
def resnet18_small():
    module = models.ResNet18(num_classes=10, stem="small", num_filters=8)
    return module, random_variables(module, (1, 32, 32, 3)), images((2, 32, 32, 3))


# The big models repeat, slowly, what resnet18_small and small_configs() check by default.
BIG = pytest.mark.slow


@pytest.mark.parametrize(
    "name", [pytest.param("inception", marks=BIG), pytest.param("resnet50", marks=BIG), "resnet18_small"]
)
def test_eval_mode_is_finite_deterministic_and_batch_independent(name, request):
    module, variables, x = request.getfixturevalue(name)
    apply = jit_apply(module)
    logits = apply(variables, x)
    assert logits.shape == (2, module.num_classes)
    assert np.all(np.isfinite(logits)) and np.std(logits) > 1e-3
    np.testing.assert_array_equal(apply(variables, x), logits)
    # Same batch shape (no recompilation), other second example.
    other = apply(variables, x.at[1].set(-2.0 * x[1]))
    np.testing.assert_allclose(other[0], logits[0], rtol=1e-5, atol=1e-6)
    assert not np.allclose(other[1], logits[1])


def test_resnet18_small_stem_keeps_32x32_resolution_through_the_first_stage():
    module = models.ResNet18(num_classes=10, stem="small")
    logits, state = jax.eval_shape(
        lambda x: module.init_with_output(jax.random.PRNGKey(0), x, capture_intermediates=True),
        jnp.zeros((2, 32, 32, 3)),
    )
    assert logits.shape == (2, 10)
    inner = state["intermediates"]
    assert inner["stage1_block2"]["__call__"][0].shape == (2, 32, 32, 64)
    assert inner["stage4_block2"]["__call__"][0].shape == (2, 4, 4, 512)


def test_batch_norm_train_mode_needs_mutable_batch_stats_and_updates_them(resnet18_small):
    module, variables, x = resnet18_small
    apply = jit_apply(module)
    with pytest.raises(flax.errors.ModifyScopeVariableError):
        apply(variables, x, train=True)
    logits, updates = apply(variables, x, train=True, mutable=("batch_stats",))
    assert logits.shape == (2, 10)
    old, new = variables["batch_stats"], updates["batch_stats"]
    assert jax.tree_util.tree_structure(old) == jax.tree_util.tree_structure(new)
    changed = jax.tree_util.tree_map(lambda a, b: not np.allclose(a, b), old, new)
    assert all(jax.tree_util.tree_leaves(changed))
    # Train mode normalises with the batch's own statistics, so examples interact.
    other, _ = apply(variables, x.at[1].set(-2.0 * x[1]), train=True, mutable=("batch_stats",))
    assert not np.allclose(other[0], logits[0])


def test_resnet_rejects_unknown_options():
    x = jnp.zeros((1, 8, 8, 3))
    with pytest.raises(ValueError, match="stem"):
        jax.eval_shape(models.ResNet(3, (1,), stem="tiny").init, jax.random.PRNGKey(0), x)
    with pytest.raises(ValueError, match="block"):
        jax.eval_shape(models.ResNet(3, (1,), block="wide").init, jax.random.PRNGKey(0), x)


@pytest.mark.parametrize(
    "shape, flat", [((4, 8, 8, 1), 2 * 2 * 64), ((4, 28, 28, 1), 7 * 7 * 64), ((4, 32, 32, 3), 8 * 8 * 64)]
)
def test_small_cnn_pools_while_the_map_stays_at_least_2x2(shape, flat):
    module = models.SmallCNN(num_classes=10)
    logits, variables = jax.eval_shape(module.init_with_output, jax.random.PRNGKey(0), jnp.zeros(shape))
    assert logits.shape == (4, 10)
    assert variables["params"]["Dense_0"]["kernel"].shape == (flat, 128)


def test_small_cnn_never_pools_below_2x2():
    module = models.SmallCNN(num_classes=3, channels=(4, 4, 4, 4))
    variables = jax.eval_shape(module.init, jax.random.PRNGKey(0), jnp.zeros((1, 8, 8, 1)))
    assert variables["params"]["Dense_0"]["kernel"].shape == (2 * 2 * 4, 128)


@pytest.mark.parametrize("shape", [(3, 5), (3, 8, 8, 1)])
def test_mlp_flattens_its_input(shape):
    module = models.MLP(num_classes=4, features=(16, 8))
    logits, variables = jit(module.init_with_output)(jax.random.PRNGKey(0), jnp.ones(shape))
    assert logits.shape == (3, 4)
    assert variables["params"]["Dense_0"]["kernel"].shape == (np.prod(shape[1:]), 16)


@pytest.fixture(scope="module")
def text():
    module = models.TextClassifier(vocab_size=50, num_classes=3, max_length=12, num_layers=2)
    variables = jit(module.init)(jax.random.PRNGKey(0), jnp.ones((1, 12), jnp.int32))
    tokens = jax.random.randint(jax.random.PRNGKey(1), (4, 12), 1, 50)
    tokens = tokens.at[:, 7:].set(module.pad_id)  # five padding tokens at the end
    return module, variables, tokens


def test_text_classifier_shapes_and_split_forward_pass(text):
    module, variables, tokens = text
    apply = jit_apply(module)
    embeddings = apply(variables, tokens, method="embed")
    assert embeddings.shape == (4, 12, 64)
    logits = apply(variables, tokens)
    assert logits.shape == (4, 3)
    split = apply(variables, embeddings, tokens != module.pad_id, method="logits_from_embeddings")
    np.testing.assert_allclose(logits, split, rtol=1e-5, atol=1e-6)


def test_text_classifier_ignores_padding(text):
    module, variables, tokens = text
    apply = jit_apply(module)
    logits = apply(variables, tokens)
    # The same sequences without their padding.
    np.testing.assert_allclose(apply(variables, tokens[:, :7]), logits, rtol=1e-5, atol=1e-6)
    # Other content at the masked positions.
    mask = tokens != module.pad_id
    noise = jax.random.randint(jax.random.PRNGKey(2), tokens.shape, 1, 50)
    embeddings = apply(variables, jnp.where(mask, tokens, noise), method="embed")
    masked = apply(variables, embeddings, mask, method="logits_from_embeddings")
    np.testing.assert_allclose(masked, logits, rtol=1e-5, atol=1e-6)
    # Without the mask the same content does change the logits.
    unmasked = apply(variables, embeddings, method="logits_from_embeddings")
    assert not np.allclose(unmasked, logits, atol=1e-4)


def test_text_classifier_rejects_sequences_longer_than_max_length(text):
    module, variables, _ = text
    with pytest.raises(ValueError, match="max_length"):
        jax.eval_shape(module.apply, variables, jnp.ones((1, 13), jnp.int32))


@pytest.mark.parametrize(
    "module, x",
    [
        (models.MLP(num_classes=3, dropout_rate=0.5), jnp.ones((4, 6))),
        (models.SmallCNN(num_classes=3, dropout_rate=0.5), jnp.ones((4, 8, 8, 1))),
        (models.TextClassifier(20, 3, max_length=6, dropout_rate=0.5), jnp.ones((4, 6), int)),
    ],
    ids=["mlp", "small_cnn", "text_classifier"],
)
def test_dropout_only_in_train_mode_and_only_from_the_dropout_rng(module, x):
    x = x * jnp.arange(1, 5).reshape((4,) + (1,) * (x.ndim - 1))
    variables = jit(module.init)(jax.random.PRNGKey(0), x)
    apply = jit_apply(module)
    logits = apply(variables, x)
    np.testing.assert_array_equal(apply(variables, x), logits)
    np.testing.assert_allclose(apply(variables, x[:1]), logits[:1], rtol=1e-5, atol=1e-6)

    def train(seed):
        return apply(variables, x, train=True, rngs={"dropout": jax.random.PRNGKey(seed)})

    np.testing.assert_array_equal(train(0), train(0))
    assert not np.allclose(train(0), train(1))
    assert not np.allclose(train(0), logits)


def small_configs():
    return {
        "mlp": (models.MLP(num_classes=3), (2, 8, 8, 1)),
        "small_cnn": (models.SmallCNN(num_classes=3, channels=(4, 8), dense=16), (2, 8, 8, 1)),
        "resnet_basic": (models.ResNet(3, (1, 1), block="basic", num_filters=4, stem="small"), (2, 8, 8, 3)),
        "resnet_bottleneck": (
            models.ResNet(3, (1, 1), block="bottleneck", num_filters=4, stem="small"),
            (2, 8, 8, 3),
        ),
    }


@pytest.mark.parametrize("name", list(small_configs()))
def test_swapping_the_activation_changes_small_models(name):
    module, shape = small_configs()[name]
    x = images(shape)
    variables = random_variables(module, shape)
    swapped = module.clone(activation=nn.tanh)
    assert not np.allclose(jit(module.apply)(variables, x), jit(swapped.apply)(variables, x))


def test_swapping_the_activation_changes_the_text_classifier(text):
    module, variables, tokens = text
    swapped = module.clone(activation=nn.relu)
    assert not np.allclose(jit(module.apply)(variables, tokens), jit(swapped.apply)(variables, tokens))


@BIG
@pytest.mark.parametrize("name", ["inception", "resnet50"])
def test_swapping_the_activation_changes_large_models(name, request):
    module, variables, x = request.getfixturevalue(name)
    swapped = module.clone(activation=nn.tanh)
    assert not np.allclose(jit(module.apply)(variables, x), jit(swapped.apply)(variables, x))


@pytest.mark.parametrize("name", ["mlp", "resnet_basic", "resnet_bottleneck"])
def test_every_nonlinearity_goes_through_the_activation(name):
    # With the identity as activation, a model with no max-pool is affine in eval mode,
    # so any nonlinearity that bypassed the field would show up here.
    module, shape = small_configs()[name]
    module = module.clone(activation=lambda x: x)
    variables = random_variables(module, shape)
    apply = jit(module.apply)
    a, b = images(shape, seed=1), images(shape, seed=2)
    mixed = 0.3 * apply(variables, a) + 0.7 * apply(variables, b)
    np.testing.assert_allclose(apply(variables, 0.3 * a + 0.7 * b), mixed, rtol=1e-4, atol=1e-4)


def test_build_by_name():
    module = models.build("resnet18", num_classes=10)
    assert isinstance(module, models.ResNet)
    assert (module.num_classes, tuple(module.stage_sizes), module.block) == (10, (2, 2, 2, 2), "basic")
    assert set(models.ARCHITECTURES) == {
        "mlp",
        "small_cnn",
        "resnet",
        "resnet18",
        "resnet50",
        "inception_v3",
        "text_classifier",
        "vit",
        "causal_lm",
    }


def test_build_rejects_unknown_names():
    with pytest.raises(ValueError, match="'nope'.*resnet18"):
        models.build("nope")


def test_docstring_examples():
    result = doctest.testmod(models, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0
