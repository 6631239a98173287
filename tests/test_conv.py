"""jaxplain.models.Conv: nn.Conv's parameters and answers on each of its CPU paths; max_pool;
conv_general_dilated."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxplain.models import Conv

# Inputs and parameters are drawn with NumPy: jax.random and Flax's initializers compile a
# program for every new shape, which took most of this file's time.


def _variables(module, x, rng):
    """Variables shaped as `module.init` makes them; kernels ~ N(0, 1/fan_in) + 0.1 and
    biases ~ N(0.1, 1), so that no bias is zero."""
    shapes = jax.eval_shape(module.init, jax.random.key(1), x)

    def draw(leaf):
        fan_in = np.prod(leaf.shape[:-1]) if len(leaf.shape) > 1 else 1
        return (rng.normal(size=leaf.shape) / np.sqrt(fan_in) + 0.1).astype(leaf.dtype)

    return jax.tree_util.tree_map(draw, shapes)


CASES = [  # (input side, channels, kernel, stride, padding, the path taken on the CPU)
    (2, 5, 3, 1, "SAME", "matmuls"),  # a ResNet-18's last stage at 64x64
    (2, 5, 3, 2, ((2, 0), (0, 1)), "matmuls"),
    (4, 5, 3, 2, ((1, 1), (1, 1)), "matmuls"),
    (1, 5, 3, 1, "SAME", "matmuls"),
    (3, 5, 3, 2, ((2, 0), (1, 1)), "matmuls"),
    (5, 5, 3, 2, ((2, 0), (1, 1)), "conv"),
    (4, 5, 3, 1, ((1, 1), (1, 1)), "conv"),
    (6, 5, 1, 1, "VALID", "matmuls"),  # 1x1
    (7, 5, 1, 2, "SAME", "matmuls"),  # 1x1, stride 2 (a ResNet's projection)
    (16, 3, 7, 2, ((3, 3), (3, 3)), "space_to_depth"),  # a ResNet stem
    (15, 3, 7, 2, ((3, 3), (3, 3)), "space_to_depth"),  # odd side
    (13, 1, 5, 3, "SAME", "space_to_depth"),  # stride 3, SAME
    (13, 2, 5, 3, "SAME", "conv"),  # 2 * 3 * 3 channels per block: more than cpu.SPACE_TO_DEPTH_CHANNELS
    (12, 1, 4, 2, "VALID", "space_to_depth"),  # an even kernel, VALID
]


@pytest.mark.parametrize("side,channels,kernel,stride,padding,path", CASES)
def test_same_parameters_values_and_input_gradients_as_nn_conv(side, channels, kernel, stride, padding, path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3, side, side, channels)).astype(np.float32)
    settings = dict(
        features=7,
        kernel_size=(kernel, kernel),
        strides=(stride, stride),
        padding=padding,
        use_bias=side != 1,
    )
    ours, reference = Conv(**settings), nn.Conv(**settings)
    variables = _variables(reference, x, rng)
    assert jax.eval_shape(ours.init, jax.random.key(1), x) == jax.eval_shape(
        reference.init, jax.random.key(1), x
    )
    assert ours._cpu_path(x) == path

    @jax.jit
    def both(x):
        return [
            (module.apply(variables, x), jax.grad(lambda x: jnp.sum(jnp.sin(module.apply(variables, x))))(x))
            for module in (ours, reference)
        ]

    (value, gradient), (expected_value, expected_gradient) = both(x)
    np.testing.assert_allclose(value, expected_value, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(gradient, expected_gradient, rtol=1e-5, atol=1e-5)


def test_layer_methods_see_one_call_per_conv():
    """The fallback runs nn.Conv's body unwrapped: Flax must not record a second call."""
    import jaxplain

    model = jaxplain.load_model("checkpoints/digits_cnn")
    x = jaxplain.data.load("digits").x_test[:2]
    assert jaxplain.grad_cam(model, x, target=0, layer="Conv_1").values.shape[0] == 2


POOLS = [  # (input shape, window, strides, padding)
    ((3, 8, 8, 5), (2, 2), (2, 2), "VALID"),  # the zoo CNN's pools
    ((2, 9, 7, 3), (2, 2), (2, 2), "VALID"),  # odd sides: the last row / column is dropped
    ((2, 10, 10, 3), (3, 3), (2, 2), ((1, 1), (1, 1))),  # ResNet's stem pool
    ((2, 11, 12, 3), (3, 3), (2, 2), "VALID"),  # Inception's pools
    ((2, 7, 9, 2), (3, 2), (1, 3), "SAME"),
    ((1, 6, 6, 2), (2, 2), (2, 2), ((2, 0), (1, 3))),  # padding past a whole window
]


@pytest.mark.parametrize("shape,window,strides,padding", POOLS)
def test_max_pool_values_gradients_and_ties_as_nn_max_pool(shape, window, strides, padding):
    from jaxplain.models import max_pool
    from jaxplain.models.pooling import _explicit_padding

    rng = np.random.default_rng(0)
    x = rng.normal(size=shape).astype(np.float32)
    # Ties inside the first window: two equal maxima, the first one (row-major) takes the gradient.
    x[0, 0, 1, 0] = x[0, 1, 0, 0] = 7.0
    assert _explicit_padding(x, window, strides, padding) is not None
    pooled = jax.eval_shape(lambda x: nn.max_pool(x, window, strides, padding), x)
    weights = rng.normal(size=pooled.shape).astype(np.float32)

    tangent = rng.normal(size=shape).astype(np.float32)

    @jax.jit
    def everything(x):  # one compilation for both pools: values, gradient, vmap, jvp
        found = []
        for pool in (max_pool, nn.max_pool):

            def loss(x, pool=pool):
                return jnp.sum(jnp.sin(pool(x, window, strides, padding)) * weights)

            found.append(
                (
                    pool(x, window, strides, padding),
                    jax.grad(loss)(x),
                    jax.vmap(jax.grad(loss))(x[None])[0],
                    jax.jvp(lambda x, pool=pool: pool(x, window, strides, padding), (x,), (tangent,))[1],
                )
            )
        return found

    (value, gradient, batched, forward), (expected_value, expected, _, expected_forward) = everything(x)
    np.testing.assert_array_equal(value, expected_value)
    np.testing.assert_array_equal(max_pool(x, window, strides, padding), expected_value)  # outside a jit too
    np.testing.assert_allclose(gradient, expected, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(batched, expected, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(forward, expected_forward, rtol=1e-6, atol=1e-6)


def test_max_pool_gives_the_tie_to_the_first_maximum():
    from jaxplain.models import max_pool

    x = jnp.array([[1.0, 3.0], [3.0, 2.0]]).reshape(1, 2, 2, 1)
    gradient = jax.grad(lambda x: max_pool(x, (2, 2), (2, 2)).sum())(x)
    np.testing.assert_array_equal(gradient.reshape(2, 2), [[0, 1], [0, 0]])


def test_deeplift_keeps_its_max_pool_rule_through_max_pool():
    """DeepLIFT's summation-to-delta holds only with its max-pool rule (the plain gradient breaks it)."""
    import jaxplain

    model = jaxplain.load_model("checkpoints/digits_cnn")
    x = jaxplain.data.load("digits").x_test[:4]
    result = jaxplain.deeplift(model, x, target=0)
    np.testing.assert_allclose(result.delta, 0, atol=1e-4)


CONVS = [  # (input shape, kernel shape, strides, padding)
    ((2, 9, 9, 3), (3, 3, 3, 4), (1, 1), "SAME"),
    ((2, 9, 8, 3), (3, 3, 3, 4), (2, 2), ((1, 1), (1, 1))),  # strided: a dilated input gradient
    ((2, 7, 7, 2), (2, 3, 2, 3), (1, 2), "VALID"),
]


@pytest.mark.parametrize("shape,kernel_shape,strides,padding", CONVS)
def test_conv_general_dilated_has_lax_values_and_derivatives(shape, kernel_shape, strides, padding):
    from jaxplain.models import conv_general_dilated

    rng, dtype = np.random.default_rng(0), np.float64 if jax.config.x64_enabled else np.float32
    x, kernel = rng.normal(size=shape).astype(dtype), rng.normal(size=kernel_shape).astype(dtype)
    dx, dk = rng.normal(size=shape).astype(dtype), rng.normal(size=kernel_shape).astype(dtype)
    dn = ("NHWC", "HWIO", "NHWC")

    def check(conv):
        def f(x, kernel):
            return conv(x, kernel, strides, padding, dimension_numbers=dn)

        loss = lambda x, kernel: jnp.sum(jnp.sin(f(x, kernel)))  # noqa: E731
        return (
            f(x, kernel),
            jax.jvp(f, (x, kernel), (dx, dk))[1],
            jax.grad(loss, argnums=(0, 1))(x, kernel),
            jax.vmap(f, in_axes=(None, 0))(x, jnp.stack([kernel, 2 * kernel])),
            jax.jvp(lambda x: jax.grad(loss)(x, kernel), (x,), (dx,))[1],
        )  # a second derivative

    both = jax.jit(lambda: (check(conv_general_dilated), check(jax.lax.conv_general_dilated)))()
    for ours, expected in zip(*map(jax.tree_util.tree_leaves, both)):
        np.testing.assert_allclose(ours, expected, rtol=1e-5, atol=1e-5)


def test_input_gradients_inside_a_loop_read_an_hwio_kernel():
    """XLA:CPU rewrites other kernel layouts into HWIO only outside loops (see conv_general_dilated)."""
    if jax.default_backend() != "cpu":
        pytest.skip("the rewrite is the CPU's")
    from jaxplain.models import conv_general_dilated

    kernel = np.random.default_rng(1).normal(size=(3, 3, 4, 4)).astype(np.float32)

    def looped(conv):
        def gradient(x):
            return jax.grad(
                lambda x: jnp.sum(
                    jnp.tanh(
                        conv(
                            conv(x, kernel, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")),
                            kernel,
                            (1, 1),
                            "SAME",
                            dimension_numbers=("NHWC", "HWIO", "NHWC"),
                        )
                    )
                )
            )(x)

        hlo = (
            jax.jit(lambda xs: jax.lax.map(gradient, xs)).lower(jnp.ones((3, 2, 6, 6, 4))).compile().as_text()
        )
        return [
            line.split("dim_labels=")[1].split(",")[0] for line in hlo.splitlines() if " convolution(" in line
        ]

    labels = looped(conv_general_dilated)
    assert len(labels) == 4 and set(labels) == {"b01f_01io->b01f"}
