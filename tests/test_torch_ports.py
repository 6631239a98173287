"""benchmarks/_torch_models.py: the torch twins of ResNet and Inception-v3 give Flax's logits
and input gradients, in float64, to rounding."""

import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")

# The benchmarks' torch twins, not jaxplain: checked with the slow tier, as the benchmarks are.
pytestmark = pytest.mark.slow

from jaxplain import io, models  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks"))
from _torch_models import from_checkpoint, inception_from_flax, resnet_from_flax  # noqa: E402

LOGITS_TOLERANCE = 1e-9
GRADIENT_TOLERANCE = 1e-8


@pytest.fixture
def x64():
    """Flax in float64 for the test, and the previous setting back afterwards."""
    previous = jax.config.read("jax_enable_x64")
    jax.config.update("jax_enable_x64", True)
    yield
    jax.config.update("jax_enable_x64", previous)


def random_variables(module, input_shape, seed=0):
    """float64 variables with the structure `module.init` gives, filled at random.

    `jax.eval_shape(module.init, ...)` gives the structure without running the initialisers
    (seconds of CPU for these networks). Every leaf is random, so no BatchNorm is trivial:
    scale and bias around 1 and 0 but not equal to them, running means off zero and
    running variances in [0.5, 2]. Kernels are He-scaled so the logits stay of order one.
    """
    shapes = jax.eval_shape(module.init, jax.random.PRNGKey(0), jnp.zeros((1, *input_shape)))
    rng = np.random.default_rng(seed)

    def fill(path, leaf):
        name, shape = path[-1].key, leaf.shape
        if name == "kernel":
            fan_in = int(np.prod(shape[:-1]))
            value = rng.normal(size=shape) * np.sqrt(2.0 / fan_in)
        elif name == "scale":
            value = rng.uniform(0.5, 1.5, shape)
        elif name == "var":
            value = rng.uniform(0.5, 2.0, shape)
        elif name in ("bias", "mean"):
            value = rng.normal(scale=0.2, size=shape)
        else:
            raise AssertionError(f"unexpected variable {jax.tree_util.keystr(path)}")
        return jnp.asarray(value, jnp.float64)

    variables = jax.tree_util.tree_map_with_path(fill, shapes)
    assert set(variables) == {"params", "batch_stats"}
    return variables


def max_rel_diff(ours, reference) -> float:
    ours, reference = np.asarray(ours, np.float64), np.asarray(reference, np.float64)
    assert ours.shape == reference.shape
    return float(np.abs(ours - reference).max() / np.abs(reference).max())


def flax_logits(module, variables, x_nhwc):
    apply = jax.jit(lambda v, x: module.apply(v, x, train=False))
    return np.asarray(apply(variables, jnp.asarray(x_nhwc, jnp.float64)))


def torch_logits(twin, x_nhwc):
    with torch.no_grad():
        return twin(torch.tensor(x_nhwc).permute(0, 3, 1, 2)).numpy()


def images(batch, size, seed=1):
    return np.random.default_rng(seed).normal(size=(batch, size, size, 3))


def check_logits(module, variables, twin, x):
    ours, reference = torch_logits(twin, x), flax_logits(module, variables, x)
    assert np.abs(reference).max() > 0.1 and np.all(np.isfinite(reference))  # not a degenerate net
    difference = max_rel_diff(ours, reference)
    print(f"{type(module).__name__} {x.shape[1]}x{x.shape[2]}: logits max rel diff {difference:.2e}")
    assert difference <= LOGITS_TOLERANCE
    return difference


@pytest.mark.parametrize(
    "config, size",
    [
        (dict(), 64),  # the "imagenet" stem: strided 7x7, BatchNorm, 3x3 stride-2 max-pool
        # odd sizes through every strided layer, and tanh: negative values meet the stem
        # max-pool's padding, which must be -inf in both (zeros would change the result)
        (dict(num_filters=8, activation=jax.nn.tanh), 33),
    ],
    ids=["imagenet_stem_64", "tanh_33"],
)
def test_resnet18_logits_and_input_gradients(x64, config, size):
    module = models.ResNet18(num_classes=10, **config)
    variables = random_variables(module, (size, size, 3))
    twin = resnet_from_flax(module, variables, dtype=torch.float64)
    assert not twin.training
    x = images(2, size)
    target = 3

    def logit(x):  # one logit of each example (they are independent in eval mode)
        logits = module.apply(variables, x, train=False)
        return logits[:, target].sum(), logits

    # one compilation for both the logits and the gradient
    (_, reference), theirs = jax.jit(jax.value_and_grad(logit, has_aux=True))(jnp.asarray(x))
    inputs = torch.tensor(x).permute(0, 3, 1, 2).requires_grad_(True)
    logits = twin(inputs)
    logits[:, target].sum().backward()
    ours = inputs.grad.permute(0, 2, 3, 1).numpy()

    assert np.abs(reference).max() > 0.1 and np.all(np.isfinite(reference))
    differences = max_rel_diff(logits.detach().numpy(), reference), max_rel_diff(ours, theirs)
    print(
        f"ResNet18 {size}x{size}: logits max rel diff {differences[0]:.2e}, input gradient {differences[1]:.2e}"
    )
    assert differences[0] <= LOGITS_TOLERANCE
    assert differences[1] <= GRADIENT_TOLERANCE


def test_resnet50_logits(x64):
    module = models.ResNet50(num_classes=10)
    variables = random_variables(module, (64, 64, 3))
    twin = resnet_from_flax(module, variables, dtype=torch.float64)
    check_logits(module, variables, twin, images(2, 64))


def test_inception_v3_logits_at_its_smallest_size(x64):
    # 75x75 is the smallest input the Flax model takes: 75 -> 37 -> 35 -> 17 -> 15 -> 7
    # (Mixed_5*), 3 (Mixed_6*), 1 (Mixed_7*); every stride-2 layer is "VALID" there.
    module = models.InceptionV3(num_classes=10)
    variables = random_variables(module, (75, 75, 3))
    twin = inception_from_flax(module, variables, dtype=torch.float64)
    assert not twin.training
    check_logits(module, variables, twin, images(2, 75))
    with pytest.raises(ValueError, match="75x75"):
        twin(torch.zeros(1, 3, 74, 80, dtype=torch.float64))


def test_channels_last_dtype_and_from_checkpoint(x64, tmp_path):
    # also the "small" stem: a 3x3 stride-1 convolution, BatchNorm, activation, no pool
    module = models.ResNet18(num_classes=4, stem="small", num_filters=8)
    variables = random_variables(module, (16, 16, 3))
    x = images(2, 16)
    reference = flax_logits(module, variables, x)

    # the twin built through a saved checkpoint, taking NHWC input
    stored = jax.tree_util.tree_map(lambda leaf: np.asarray(leaf, np.float32), variables)
    path = io.save_checkpoint(
        str(tmp_path / "resnet"),
        architecture="resnet18",
        config=dict(num_classes=4, stem="small", num_filters=8),
        variables=stored,
        input_shape=(16, 16, 3),
    )
    checkpoint = io.load_checkpoint(path)
    twin = from_checkpoint(checkpoint, variables, dtype=torch.float64, channels_last=True)
    with torch.no_grad():
        assert max_rel_diff(twin(torch.tensor(x)).numpy(), reference) <= LOGITS_TOLERANCE

    # float32 by default, from the checkpoint's own float32 variables
    twin32 = from_checkpoint(checkpoint)
    assert next(twin32.parameters()).dtype == torch.float32
    assert twin32.stages[0][0].layers[0].bn.eps == 1e-5
    with torch.no_grad():
        logits32 = twin32(torch.tensor(x, dtype=torch.float32).permute(0, 3, 1, 2)).numpy()
    assert max_rel_diff(logits32, reference) <= 1e-4
