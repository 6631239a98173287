"""Axiomatic metrics: non_sensitivity and input_invariance."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import jaxplain
from jaxplain.metrics.axiomatic import input_invariance, non_sensitivity, shifted_first_layer

KEY = jax.random.key(0)
# Features 1 and 3 are ignored by both classes.
WEIGHTS = jnp.array([[1.0, -1.0], [0.0, 0.0], [2.0, 0.5], [0.0, 0.0], [-3.0, 1.0]])
LINEAR = jaxplain.Model(jax.jit(lambda w, x: x @ w), WEIGHTS)
X = jnp.array(
    [[1.0, 2.0, 3.0, 4.0, 5.0], [0.5, -1.0, 0.0, 2.0, 1.5], [2.0, 1.0, -1.0, 0.5, 0.0]]
)  # zeros at (1, 2) and (2, 4)


def close(a, b, **kwargs):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), **{"rtol": 1e-5, "atol": 1e-6, **kwargs})


# --- non_sensitivity ----------------------------------------------------------------------


def test_non_sensitivity_counts_hand_computed_violations():
    saliency = jnp.broadcast_to(WEIGHTS[:, 0], X.shape)
    # the gradient is zero exactly where the model ignores a feature, except where x already
    # equals the baseline: there removing a used feature changes nothing (one violation)
    close(non_sensitivity(LINEAR, X, saliency, target=0), [0, 1, 1])
    # gradient x input is zero there too: no violation
    close(non_sensitivity(LINEAR, X, saliency * X, target=0), [0, 0, 0])
    # attributing every feature violates at the two ignored ones (and at x = baseline)
    close(non_sensitivity(LINEAR, X, jnp.ones_like(X), target=0), [2, 3, 3])
    # attributing nothing violates at the three used ones (fewer where x = baseline)
    close(non_sensitivity(LINEAR, X, jnp.zeros_like(X), target=0), [3, 2, 2])


def test_non_sensitivity_groups_normalisation_and_baseline():
    saliency = jnp.broadcast_to(WEIGHTS[:, 0], X.shape)
    # groups {0, 1}, {2, 3}, {4}: every group holds a used feature and is attributed, but
    # removing {2, 3} from the second example and {4} from the third changes nothing
    mask = jnp.array([0, 0, 1, 1, 2])
    close(non_sensitivity(LINEAR, X, saliency, target=0, feature_mask=mask), [0, 1, 1])
    # one mask per example, the last two one group each: removing the second example's moves
    # F = 0.5 - 4.5 to 0, removing the third's leaves F = 2 - 2 unchanged although it is attributed
    masks = np.array([[0, 0, 1, 1, 2], [0, 0, 0, 0, 0], [0, 0, 0, 0, 0]])
    close(non_sensitivity(LINEAR, X, saliency, target=0, feature_mask=masks), [0, 0, 1])
    # eps is relative to the largest |phi| with normalise, absolute without
    tiny = saliency * 1e-7
    close(non_sensitivity(LINEAR, X, tiny, target=0), [0, 1, 1])
    close(non_sensitivity(LINEAR, X, tiny, target=0, normalise=False), [3, 2, 2])
    # a baseline of 1 makes the features at 1 the ones that do not move
    close(non_sensitivity(LINEAR, X, saliency, target=0, baseline=1.0), [1, 0, 0])


def test_non_sensitivity_batch_equals_loop_and_chunk_size_does_not_matter():
    x = jax.random.normal(jax.random.key(1), (3, 2, 3, 2))
    model = jaxplain.Model(
        jax.jit(lambda w, x: jnp.tanh(x.reshape(x.shape[0], -1) @ w)),
        jax.random.normal(jax.random.key(2), (12, 3)) * (jnp.arange(12) % 3 != 0)[:, None],
    )
    targets = np.array([0, 1, 2])
    dropped = jax.random.bernoulli(jax.random.key(6), 0.3, x.shape)  # some used features unattributed
    values = jaxplain.saliency(model, x, target=targets).values * ~dropped
    batch = non_sensitivity(model, x, values, target=targets, chunk_size=5)
    close(batch, non_sensitivity(model, x, values, target=targets, chunk_size=12), rtol=0, atol=0)
    assert batch.dtype == jnp.int32 and len(set(np.asarray(batch).tolist())) > 1
    for i in range(3):
        alone = non_sensitivity(model, x[i : i + 1], values[i : i + 1], target=int(targets[i]), chunk_size=5)
        close(batch[i], alone[0], rtol=0, atol=0)
    # per pixel: no pixel is ignored whole, so a pixel violates when both its channels are unattributed
    pixels = non_sensitivity(model, x, values, target=targets, per_pixel=True)
    both = (dropped | (jnp.arange(12) % 3 == 0).reshape(2, 3, 2)).all(axis=-1).sum(axis=(1, 2))
    close(pixels, both, rtol=0, atol=0)


def test_non_sensitivity_errors_name_the_argument():
    with pytest.raises(ValueError, match="attribution must be shaped like x"):
        non_sensitivity(LINEAR, X, jnp.ones((3, 4)), target=0)
    with pytest.raises(ValueError, match="eps must be"):
        non_sensitivity(LINEAR, X, jnp.ones_like(X), target=0, eps=0.0)
    with pytest.raises(TypeError, match="normalise must be True or False"):
        non_sensitivity(LINEAR, X, jnp.ones_like(X), target=0, normalise="yes")
    with pytest.raises(ValueError, match="baseline"):
        non_sensitivity(LINEAR, X, jnp.ones_like(X), target=0, baseline=jnp.zeros(4))


# --- input_invariance ---------------------------------------------------------------------

AFFINE_PARAMS = {"dense": {"kernel": WEIGHTS, "bias": jnp.array([0.5, -0.25])}}
AFFINE = jaxplain.Model(jax.jit(lambda p, x: x @ p["dense"]["kernel"] + p["dense"]["bias"]), AFFINE_PARAMS)


def test_the_shifted_model_absorbs_the_shift_in_its_first_bias():
    shifted = shifted_first_layer(AFFINE, -1.0)
    # b - shift * W^T 1, by hand: column sums are 0 and 0.5
    close(shifted.params["dense"]["bias"], [0.5, 0.25])
    close(shifted(X - 1.0), AFFINE(X), atol=1e-5)


def test_gradient_is_input_invariant_and_gradient_x_input_is_not():
    close(input_invariance(jaxplain.saliency, AFFINE, X, target=0), [True] * 3)
    close(input_invariance(jaxplain.input_x_gradient, AFFINE, X, target=0), [False] * 3)
    close(input_invariance(jaxplain.integrated_gradients, AFFINE, X, target=1, steps=4), [False] * 3)
    # without a shift nothing moves
    close(input_invariance(jaxplain.input_x_gradient, AFFINE, X, target=0, shift=0.0), [True] * 3)


class _Network(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Conv(3, (3, 3), padding="VALID", name="conv")(x))
        return nn.Dense(2, name="head")(x.reshape(x.shape[0], -1))


class _NnxNetwork(nnx.Module):
    def __init__(self, rngs):
        self.first = nnx.Linear(5, 4, rngs=rngs)
        self.second = nnx.Linear(4, 2, rngs=rngs)

    def __call__(self, x):
        return self.second(nnx.relu(self.first(x)))


class _Backwards(nnx.Module):  # runs zeta first; the state stores alpha first
    def __init__(self, rngs):
        self.zeta = nnx.Linear(5, 4, rngs=rngs)
        self.alpha = nnx.Linear(4, 2, rngs=rngs)

    def __call__(self, x):
        return self.alpha(nnx.relu(self.zeta(x)))


def test_input_invariance_on_an_nnx_model_and_batch_equals_loop():
    model = jaxplain.Model.from_nnx(_NnxNetwork(nnx.Rngs(5)))
    close(shifted_first_layer(model, -1.0, layer="first")(X - 1.0), model(X), atol=1e-5)
    close(input_invariance(jaxplain.saliency, model, X, target=1, layer="first"), [True] * 3)
    # the signs of x move under a shift of 0.5 only for x in (-0.5, 0]: the second and third
    # examples hold a 0
    positive = lambda model, x, *, target: jaxplain.Attribution(values=(x > 0).astype(x.dtype), target=target)
    targets = np.array([0, 1, 0])
    batch = input_invariance(positive, AFFINE, X, target=targets, shift=0.5)
    close(batch, [True, False, False])
    for i in range(3):
        alone = input_invariance(positive, AFFINE, X[i : i + 1], target=int(targets[i]), shift=0.5)
        assert bool(alone[0]) == bool(batch[i])


@pytest.mark.slow
def test_input_invariance_on_a_linen_conv_model():
    x = jax.random.normal(jax.random.key(3), (3, 5, 5, 2))
    module = _Network()
    linen = jaxplain.Model.from_linen(module, module.init(jax.random.key(4), x))
    close(shifted_first_layer(linen, 0.7)(x + 0.7), linen(x), atol=1e-5)
    targets = np.array([0, 1, 0])
    close(input_invariance(jaxplain.saliency, linen, x, target=targets, shift=0.7), [True] * 3)
    close(input_invariance(jaxplain.input_x_gradient, linen, x, target=targets, shift=0.7), [False] * 3)


@pytest.mark.slow
def test_input_invariance_of_a_randomized_method_uses_one_key_for_both():
    close(
        input_invariance(jaxplain.smoothgrad, AFFINE, X, target=0, key=KEY, samples=4, wrap="saliency"),
        [True] * 3,
    )


def test_input_invariance_errors_name_the_argument():
    no_bias = jaxplain.Model(lambda p, x: x @ p["dense"]["kernel"], {"dense": {"kernel": WEIGHTS}})
    with pytest.raises(ValueError, match="must hold one 'kernel' and one 'bias'.*shifted_model"):
        input_invariance(jaxplain.saliency, no_bias, X, target=0)
    backwards = jaxplain.Model.from_nnx(_Backwards(nnx.Rngs(6)))
    with pytest.raises(ValueError, match="layer 'alpha' takes 4 input features.*pass layer="):
        input_invariance(jaxplain.saliency, backwards, X, target=0)
    close(input_invariance(jaxplain.saliency, backwards, X, target=0, layer="zeta"), [True] * 3)
    with pytest.raises(ValueError, match="layer must name one of"):
        input_invariance(jaxplain.saliency, AFFINE, X, target=0, layer="conv")
    with pytest.raises(TypeError, match="shifted_model must be a jaxplain.Model"):
        input_invariance(jaxplain.saliency, AFFINE, X, target=0, shifted_model=AFFINE_PARAMS)
    with pytest.raises(TypeError, match="shift must be a number"):
        input_invariance(jaxplain.saliency, AFFINE, X, target=0, shift="black")
    with pytest.raises(TypeError, match="key is required"):
        input_invariance(jaxplain.smoothgrad, AFFINE, X, target=0, samples=2)
    # a shifted model built by hand is used as given
    close(
        input_invariance(jaxplain.saliency, no_bias, X, target=0, shifted_model=no_bias, shift=0.0),
        [True] * 3,
    )
