"""Model adapters: Linen in evaluation mode, NNX, plain functions, output selection."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import jaxplain


class LinenWithBatchNormDropout(nn.Module):
    @nn.compact
    def __call__(self, x, train: bool = True):
        x = nn.Dense(8)(x)
        x = nn.BatchNorm(use_running_average=not train)(x)
        x = nn.Dropout(0.5, deterministic=not train)(nn.relu(x))
        return nn.Dense(3)(x)


def trained_linen(rng):
    module = LinenWithBatchNormDropout()
    x = jnp.asarray(rng.normal(size=(32, 4)), jnp.float32)
    variables = module.init({"params": jax.random.PRNGKey(0), "dropout": jax.random.PRNGKey(1)}, x)
    # one training-mode step so the running statistics are not the initial 0/1
    _, updates = module.apply(
        variables, x * 3.0 + 1.0, mutable=["batch_stats"], rngs={"dropout": jax.random.PRNGKey(2)}
    )
    return module, {**variables, **updates}, x


def test_linen_batchnorm_and_dropout_explained_in_eval_mode(rng):
    module, variables, x = trained_linen(rng)
    model = jaxplain.Model.from_linen(module, variables)
    eval_logits = module.apply(variables, x, train=False)
    np.testing.assert_allclose(model(x), eval_logits, rtol=1e-6)

    first = jaxplain.integrated_gradients(model, x[:4], target=1, steps=64)
    second = jaxplain.integrated_gradients(model, x[:4], target=1, steps=64)
    np.testing.assert_array_equal(first.values, second.values)  # no dropout noise

    def score(z):
        return module.apply(variables, z[None], train=False)[0, 1]

    expected = jax.vmap(jax.grad(score))(x[:4])
    np.testing.assert_allclose(
        jaxplain.saliency(model, x[:4], target=1).values, expected, rtol=1e-5, atol=1e-7
    )
    # Batch statistics are not used: one example explains the same alone or in a batch.
    alone = jaxplain.integrated_gradients(model, x[:1], target=1, steps=64)
    np.testing.assert_allclose(alone.values, first.values[:1], rtol=1e-5, atol=1e-7)


def test_linen_explicit_train_mode_is_refused_with_a_clear_error(rng):
    module, variables, x = trained_linen(rng)
    model = jaxplain.Model.from_linen(module, variables, train=True)
    with pytest.raises(ValueError, match="cannot be applied to x"):
        jaxplain.saliency(model, x, target=0)


def test_linen_method_argument(rng):
    class TwoHeads(nn.Module):
        def setup(self):
            self.body = nn.Dense(4)
            self.head = nn.Dense(2)

        def __call__(self, x):
            return self.head(self.body(x))

        def body_only(self, x):
            return self.body(x)

    module = TwoHeads()
    variables = module.init(jax.random.PRNGKey(0), jnp.zeros((1, 3)))
    model = jaxplain.Model.from_linen(module, variables, method="body_only")
    x = jnp.asarray(rng.normal(size=(2, 3)), jnp.float32)
    np.testing.assert_allclose(model(x), module.apply(variables, x, method="body_only"))
    a = jaxplain.integrated_gradients(model, x, target=3, steps=4)
    kernel = variables["params"]["body"]["kernel"]
    np.testing.assert_allclose(a.values, kernel[:, 3] * x, rtol=1e-5)


class NnxWithBatchNormDropout(nnx.Module):
    def __init__(self, rngs):
        self.dense = nnx.Linear(4, 8, rngs=rngs)
        self.norm = nnx.BatchNorm(8, rngs=rngs)
        self.dropout = nnx.Dropout(0.5, rngs=rngs)
        self.out = nnx.Linear(8, 3, rngs=rngs)

    def __call__(self, x):
        return self.out(self.dropout(nnx.relu(self.norm(self.dense(x)))))


def test_nnx_model_explained_in_eval_mode_without_mutating_it(rng):
    module = NnxWithBatchNormDropout(nnx.Rngs(0))
    x = jnp.asarray(rng.normal(size=(6, 4)), jnp.float32)
    module(x * 2.0 + 1.0)  # training-mode call updates the running statistics
    model = jaxplain.Model.from_nnx(module)
    assert module.dropout.deterministic is False  # the user's module is untouched
    evaluating = nnx.merge(*nnx.split(module))  # a copy in evaluation mode, as module.eval() makes it
    evaluating.eval()
    np.testing.assert_allclose(model(x), evaluating(x), rtol=1e-6)
    first = jaxplain.integrated_gradients(model, x, target=2, steps=64)
    second = jaxplain.integrated_gradients(model, x, target=2, steps=64)
    np.testing.assert_array_equal(first.values, second.values)
    assert float(jnp.max(first.relative_delta)) < 0.05  # piecewise-linear model, 64 points
    expected = jax.vmap(jax.grad(lambda z: evaluating(z[None])[0, 2]))(x)
    np.testing.assert_allclose(jaxplain.saliency(model, x, target=2).values, expected, rtol=1e-5, atol=1e-7)


def test_from_callable_and_output_selection(rng):
    weights = jnp.asarray(rng.normal(size=(3, 4)), jnp.float32)
    model = jaxplain.Model.from_callable(lambda x: jnp.sin(x) @ weights)
    x = jnp.asarray(rng.normal(size=(5, 3)), jnp.float32)
    np.testing.assert_allclose(model(x), jnp.sin(x) @ weights, rtol=1e-6)
    np.testing.assert_allclose(
        model.with_output("log_probs")(x), jax.nn.log_softmax(jnp.sin(x) @ weights), rtol=1e-6
    )
    a = jaxplain.saliency(model, x, target=0)
    np.testing.assert_allclose(a.values, jnp.cos(x) * weights[:, 0], rtol=1e-5, atol=1e-7)


def test_model_is_a_pytree_of_its_params():
    model = jaxplain.Model(lambda p, x: x @ p, jnp.ones((2, 2)))
    leaves, treedef = jax.tree_util.tree_flatten(model)
    assert len(leaves) == 1
    rebuilt = jax.tree_util.tree_unflatten(treedef, [jnp.zeros((2, 2))])
    assert rebuilt.apply_fn is model.apply_fn and rebuilt.output == "logits"


def test_bad_constructor_arguments():
    with pytest.raises(ValueError, match="output must be one of"):
        jaxplain.Model(lambda p, x: x, (), output="softmax")
    with pytest.raises(TypeError, match="apply_fn must be callable"):
        jaxplain.Model(3, ())
    with pytest.raises(TypeError, match="module must be a flax.linen.Module"):
        jaxplain.Model.from_linen(lambda x: x, {})
    with pytest.raises(TypeError, match="module must be a flax.nnx.Module"):
        jaxplain.Model.from_nnx(LinenWithBatchNormDropout())
    with pytest.raises(ValueError, match="k must be a positive int"):
        jaxplain.top_k(0)
