"""A user's own classifier: trained, saved with orbax, restored and explained (docs/porting.md)."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest
from flax import nnx

import jaxplain


class UserClassifier(nn.Module):
    """Not from jaxplain's zoo: a conv net with BatchNorm and Dropout, as a user writes it."""

    @nn.compact
    def __call__(self, x, train: bool):
        x = nn.Conv(8, (3, 3))(x)
        x = nn.BatchNorm(use_running_average=not train)(x)
        x = nn.relu(x)
        x = nn.Dropout(0.3, deterministic=not train)(x.reshape((x.shape[0], -1)))
        return nn.Dense(10)(x)


def _digits():
    data = jaxplain.data.load("digits")
    return jnp.asarray(data.x_train[:256]), jnp.asarray(data.y_train[:256]), jnp.asarray(data.x_test[:8])


@pytest.mark.slow  # end to end: docs/porting.md's steps; test_model explains Linen BatchNorm and Dropout, test_io round-trips checkpoints
def test_linen_classifier_trained_saved_with_orbax_restored_and_explained(tmp_path):
    x, y, x_test = _digits()
    module = UserClassifier()
    variables = module.init(jax.random.PRNGKey(0), x[:1], train=False)
    optimizer = optax.adam(1e-2)
    opt_state = optimizer.init(variables["params"])

    @jax.jit
    def step(variables, opt_state, key):
        def loss_fn(params):
            logits, updates = module.apply(
                {**variables, "params": params},
                x,
                train=True,
                rngs={"dropout": key},
                mutable=["batch_stats"],
            )
            return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean(), updates

        (loss, updates), grads = jax.value_and_grad(loss_fn, has_aux=True)(variables["params"])
        changes, opt_state = optimizer.update(grads, opt_state)
        params = optax.apply_updates(variables["params"], changes)
        return {"params": params, **updates}, opt_state, loss

    losses = []
    for i in range(20):
        variables, opt_state, loss = step(variables, opt_state, jax.random.PRNGKey(i))
        losses.append(float(loss))
    assert losses[-1] < losses[0]

    checkpointer = ocp.StandardCheckpointer()
    checkpointer.save(tmp_path / "user_model", variables)
    checkpointer.wait_until_finished()
    abstract = jax.eval_shape(lambda: module.init(jax.random.PRNGKey(0), x[:1], train=False))
    restored = checkpointer.restore(tmp_path / "user_model", abstract)

    model = jaxplain.Model.from_linen(module, restored)  # train=False is filled in
    np.testing.assert_allclose(model(x_test), module.apply(variables, x_test, train=False), rtol=1e-5)
    a = jaxplain.integrated_gradients(model, x_test, target="predicted", steps=128)
    assert a.values.shape == x_test.shape
    assert float(jnp.max(a.relative_delta)) < 0.05
    again = jaxplain.integrated_gradients(model, x_test, target="predicted", steps=128)
    np.testing.assert_array_equal(a.values, again.values)  # dropout is off


class UserNnxClassifier(nnx.Module):
    def __init__(self, rngs: nnx.Rngs):
        self.conv = nnx.Conv(1, 8, (3, 3), rngs=rngs)
        self.norm = nnx.BatchNorm(8, rngs=rngs)
        self.dropout = nnx.Dropout(0.3, rngs=rngs)
        self.dense = nnx.Linear(8 * 8 * 8, 10, rngs=rngs)

    def __call__(self, x):
        x = nnx.relu(self.norm(self.conv(x)))
        return self.dense(self.dropout(x.reshape((x.shape[0], -1))))


def test_nnx_classifier_trained_saved_with_orbax_restored_and_explained(tmp_path):
    x, y, x_test = _digits()
    model = UserNnxClassifier(nnx.Rngs(0))
    optimizer = nnx.Optimizer(model, optax.adam(1e-2), wrt=nnx.Param)

    @nnx.jit
    def step(model, optimizer):
        def loss_fn(model):
            return optax.softmax_cross_entropy_with_integer_labels(model(x), y).mean()

        loss, grads = nnx.value_and_grad(loss_fn)(model)
        optimizer.update(model, grads)
        return loss

    losses = [float(step(model, optimizer)) for _ in range(20)]
    assert losses[-1] < losses[0]

    _, state = nnx.split(model)
    checkpointer = ocp.StandardCheckpointer()
    checkpointer.save(tmp_path / "user_nnx", state)
    checkpointer.wait_until_finished()
    fresh = nnx.eval_shape(lambda: UserNnxClassifier(nnx.Rngs(1)))
    graphdef, abstract = nnx.split(fresh)
    restored = nnx.merge(graphdef, checkpointer.restore(tmp_path / "user_nnx", abstract))

    explained = jaxplain.Model.from_nnx(restored)  # evaluation mode, module untouched
    evaluating = nnx.view(model, deterministic=True, use_running_average=True)
    np.testing.assert_allclose(explained(x_test), evaluating(x_test), rtol=1e-5, atol=1e-6)
    a = jaxplain.integrated_gradients(explained, x_test, target="predicted", steps=128)
    assert float(jnp.max(a.relative_delta)) < 0.05
