"""x as a tuple or dict of arrays: models of several inputs explained at once."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxplain


class ImageAndTable(nn.Module):
    """A conv branch for the image, a dense branch for the table, one head."""

    @nn.compact
    def __call__(self, inputs):
        image, table = inputs["image"], inputs["table"]
        a = nn.tanh(nn.Conv(2, (3, 3))(image)).reshape(image.shape[0], -1)
        b = nn.softplus(nn.Dense(4)(table))
        return nn.Dense(3)(jnp.concatenate([a, b], axis=1))


def _image_and_table(seed=0):
    rng = np.random.default_rng(seed)
    x = {
        "image": rng.normal(size=(2, 4, 4, 1)).astype(np.float32),
        "table": rng.normal(size=(2, 3)).astype(np.float32),
    }
    module = ImageAndTable()
    variables = module.init(jax.random.PRNGKey(0), {k: v[:1] for k, v in x.items()})
    return jaxplain.Model.from_linen(module, variables), x


def test_linear_model_of_two_inputs_gets_its_closed_form():
    w1, w2 = jnp.array([[1.0, -1.0], [2.0, 0.5]]), jnp.array([[3.0, 0.0], [-2.0, 1.0], [0.5, 0.5]])
    model = jaxplain.Model(lambda p, x: x[0] @ p[0] + x[1] @ p[1], (w1, w2))
    x = (jnp.array([[1.0, 2.0], [-1.0, 0.5]]), jnp.array([[0.5, 1.0, -1.0], [2.0, 0.0, 1.0]]))
    baseline = (jnp.array([0.5, 0.5]), 1.0)
    result = jaxplain.integrated_gradients(model, x, target=1, baseline=baseline, steps=4)
    assert isinstance(result.values, tuple) and len(result.values) == 2
    np.testing.assert_allclose(result.values[0], (x[0] - 0.5) * w1[:, 1], rtol=1e-6)
    np.testing.assert_allclose(result.values[1], (x[1] - 1.0) * w2[:, 1], rtol=1e-6)


def test_one_path_through_both_inputs_agrees_with_a_slow_float64_loop():
    model, x = _image_and_table()
    steps = 8
    result = jaxplain.integrated_gradients(model, x, target=2, steps=steps, schedule="riemann_middle")
    with jax.enable_x64():
        params = jax.tree_util.tree_map(lambda p: jnp.asarray(p, jnp.float64), model.params)
        x64 = {k: jnp.asarray(v, jnp.float64) for k, v in x.items()}

        def score(inputs):
            return model.apply_fn(params, inputs)[:, 2].sum()

        total = jax.tree_util.tree_map(jnp.zeros_like, x64)
        for k in range(steps):
            alpha = (k + 0.5) / steps
            grads = jax.grad(score)({name: alpha * value for name, value in x64.items()})
            total = jax.tree_util.tree_map(lambda t, g: t + g / steps, total, grads)
        expected = {name: np.asarray(total[name] * x64[name]) for name in x64}
    for name in x:
        np.testing.assert_allclose(result.values[name], expected[name], rtol=2e-4, atol=1e-5)
    # completeness over the sum of both inputs
    summed = sum(np.asarray(v).reshape(2, -1).sum(axis=1) for v in result.values.values())
    np.testing.assert_allclose(summed - np.asarray(result.output_difference), result.delta, atol=1e-5)


def test_feature_groups_per_input_and_exact_shapley():
    w = (jnp.array([1.0, 2.0, 3.0]), jnp.array([-1.0, 4.0]))
    model = jaxplain.Model(lambda p, x: jnp.stack([x[0] @ p[0] + x[1] @ p[1]], axis=1), w)
    x = (jnp.ones((1, 3)), jnp.ones((1, 2)))
    mask = (np.array([0, 0, 1]), np.array([0, 1]))  # groups {a0, a1}, {a2}, {b0}, {b1}
    result = jaxplain.exact_shapley(model, x, target=0, feature_mask=mask)
    # an additive model: each group's Shapley value is its own contribution, given to
    # every feature of the group (as for one input)
    np.testing.assert_allclose(result.values[0], [[3.0, 3.0, 3.0]], rtol=1e-6)
    np.testing.assert_allclose(result.values[1], [[-1.0, 4.0]], rtol=1e-6)


def test_several_inputs_with_model_kwargs():
    w = jnp.array([[1.0], [2.0]])
    model = jaxplain.Model(lambda p, x, scale: (x["a"] * scale[:, None] + x["b"]) @ p, w)
    x = {"a": jnp.ones((2, 2)), "b": jnp.full((2, 2), 2.0)}
    result = jaxplain.saliency(model, x, target=0, model_kwargs={"scale": jnp.array([1.0, 3.0])})
    np.testing.assert_allclose(result.values["a"], [[1.0, 2.0], [3.0, 6.0]])
    np.testing.assert_allclose(result.values["b"], [[1.0, 2.0], [1.0, 2.0]])


@pytest.mark.parametrize(
    "x, options, message",
    [
        ((np.ones((2, 3), np.float32), np.ones((3, 3), np.float32)), {}, r"x\[1\] has shape \(3, 3\)"),
        ((np.ones((2, 3), np.float32), np.ones((2, 3), np.int32)), {}, r"x\[1\] has dtype int32"),
        (
            (np.ones((2, 3), np.float32), np.ones((2, 3), np.float32)),
            {"baseline": (0.0,)},
            "baseline must have",
        ),
    ],
)
def test_bad_inputs_are_named(x, options, message):
    model = jaxplain.Model(lambda p, x: x[0] + x[1], ())
    with pytest.raises((TypeError, ValueError), match=message):
        jaxplain.integrated_gradients(model, x, target=0, steps=2, **options)
