"""The engine on its own: weighted sums over point sets, chunking, the memory budget."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxplain
from jaxplain import engine

from conftest import mlp_model


def _per_point_reference(model, x, targets, points, weights):
    """sum_k weights[k, b] * grad F_t(points[k, b]), one point at a time."""
    total = 0.0
    for k in range(points.shape[0]):
        def score(p):
            return jnp.take_along_axis(model(p), targets, axis=1).sum()

        total = total + weights[k][:, None] * jax.grad(score)(points[k])
    return total


@pytest.mark.parametrize("chunk_size", [1, 3, 4, 11])
def test_path_gradients_with_per_example_weights(chunk_size, rng):
    model = mlp_model(features=5)
    x = jnp.asarray(rng.normal(size=(3, 5)), jnp.float32)
    offsets = jnp.asarray(rng.normal(size=(11, 5)), jnp.float32)
    weights = jnp.asarray(rng.uniform(size=(11, 3)), jnp.float32)
    targets = jnp.array([[0], [2], [1]], jnp.int32)
    total, outputs = jax.jit(
        lambda x: engine.path_gradients(
            model, x, targets, lambda o, x: x + o, offsets, weights, chunk_size=chunk_size
        )
    )(x)
    points = x[None] + offsets[:, None]
    expected = _per_point_reference(model, x, targets, points, weights)
    np.testing.assert_allclose(total[:, 0], expected, rtol=1e-5, atol=1e-6)
    chosen = jnp.take_along_axis(jax.vmap(model)(points), targets[None], axis=2)[..., 0]
    np.testing.assert_allclose(outputs[..., 0], chosen.T, rtol=1e-6)


def test_default_chunk_size_follows_the_memory_budget(monkeypatch, rng):
    model = mlp_model(features=5)
    x = np.zeros((4, 5), np.float32)
    monkeypatch.setenv("JAXPLAIN_CHUNK_BYTES", "1")
    assert engine.default_chunk_size(model, x, 50) == 1
    monkeypatch.setenv("JAXPLAIN_CHUNK_BYTES", str(1 << 30))
    assert engine.default_chunk_size(model, x, 50) == 50
    # A budget for 40 rows of 4 examples: ten points per chunk.
    per_row = engine.default_chunk_size.__globals__["_bytes_per_row"](model, (5,), jnp.float32)
    monkeypatch.setenv("JAXPLAIN_CHUNK_BYTES", str(40 * per_row))
    assert engine.default_chunk_size(model, x, 50) == 10


def test_saved_activations_per_row_are_measured():
    # Two tanh layers of width 16 and a softplus layer: each row keeps at least 16 floats.
    model = mlp_model(features=5)
    per_row = engine._bytes_per_row(model, (5,), jnp.float32)
    assert 16 * 4 <= per_row <= 4096


def test_bfloat16_inputs_accumulate_in_float32(rng):
    x = rng.normal(size=(4, 5))
    low = jaxplain.integrated_gradients(
        mlp_model(features=5, dtype=jnp.bfloat16), jnp.asarray(x, jnp.bfloat16), target=0, steps=32
    )
    full = jaxplain.integrated_gradients(
        mlp_model(features=5), jnp.asarray(x, jnp.float32), target=0, steps=32
    )
    assert low.values.dtype == jnp.float32
    error = jnp.linalg.norm(low.values - full.values) / jnp.linalg.norm(full.values)
    assert float(error) < 0.05  # bfloat16 keeps ~3 significant digits per gradient
