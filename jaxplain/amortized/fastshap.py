"""FastSHAP: an explainer trained on the Shapley-kernel objective, without teacher labels.

The game of example x and class c, over G groups of features (`feature_mask`), is
v_c(S) = the output for class c when the groups outside S are removed. Removal is either
the model at x with those features set to the `reference` (the baseline-Shapley game of
`jaxplain.exact_shapley` and `kernel_shap`), or a *surrogate*: a network that takes the
masked input and the mask and was trained (`train_surrogate`) so that
KL(p_model(x) || p_surrogate(x_S, S)) is small on randomly masked inputs.

The explainer phi(x) is trained to minimise

    E_x E_{S ~ p_Shapley} sum_c (v_c(S) - v_c(0) - 1_S . phi_c(x))^2,
    phi_c <- phi_c + (v_c(1) - v_c(0) - sum_g phi_{c,g}) / G   (additive efficiency),

with |S| = s drawn with probability proportional to (G - 1) / (s (G - s)), S uniform of
that size, each sample paired with its complement. Sampling from the Shapley kernel
makes this the KernelSHAP weighted least-squares problem, whose minimiser under the
efficiency constraint is the vector of Shapley values (Charnes et al. 1988), so the
explainer learns the Shapley values of the game.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxplain import _checks
from jaxplain.amortized import networks, training
from jaxplain.amortized.explainer import Explainer, make, to_groups
from jaxplain.model import Model
from jaxplain.training import TrainConfig, resolve

DEFAULTS = training.RECIPE_DEFAULTS
SURROGATE_DEFAULTS = DEFAULTS.replace(epochs=200, batch_size=64, patience=20)


def shapley_coalitions(key, batch: int, samples: int, groups: int):
    """`(batch, samples, G)` bool: coalitions from the Shapley kernel, each with its complement.

    The first `samples // 2` are drawn (size s in 1..G-1 with probability proportional
    to 1 / (s (G - s)), then a uniform subset of that size); the rest are their complements.
    """
    size_key, order_key = jax.random.split(key)
    sizes = np.arange(1, groups)
    chance = 1.0 / (sizes * (groups - sizes))
    size = jax.random.choice(size_key, sizes, (batch, samples // 2), p=chance / chance.sum())
    ranks = jnp.argsort(jnp.argsort(jax.random.uniform(order_key, (batch, samples // 2, groups)), -1), -1)
    drawn = ranks < size[..., None]
    return jnp.concatenate([drawn, ~drawn], axis=1)


def uniform_coalitions(key, batch: int, samples: int, groups: int):
    """`(batch, samples, G)` bool: size uniform in 0..G, then a uniform subset of that size."""
    size_key, order_key = jax.random.split(key)
    size = jax.random.randint(size_key, (batch, samples), 0, groups + 1)
    ranks = jnp.argsort(jnp.argsort(jax.random.uniform(order_key, (batch, samples, groups)), -1), -1)
    return ranks < size[..., None]


def objective(phi, coalitions, values, empty, full):
    """The FastSHAP loss of group values `phi` `(B, C, G)`, after additive efficiency.

    Args:
      phi: the explainer's group values per class.
      coalitions: `(B, n, G)` bool, from `shapley_coalitions`.
      values: `(B, n, C)`, v_c(S) at each coalition.
      empty, full: `(B, C)`, v_c(0) and v_c(1).

    Returns:
      mean over examples, coalitions and classes of (v(S) - v(0) - 1_S . phi)^2.
    """
    groups = phi.shape[-1]
    phi = phi + ((full - empty) - phi.sum(-1))[..., None] / groups
    predicted = empty[:, None] + jnp.einsum("bng,bcg->bnc", coalitions.astype(phi.dtype), phi)
    return jnp.mean((values - predicted) ** 2)


@dataclasses.dataclass(frozen=True)
class Surrogate:
    """A trained surrogate: `network(masked_x, present)` gives logits with features removed."""

    network: nn.Module
    variables: Any


class MaskedInput(nn.Module):
    """A classifier of the masked input with the mask appended on the last axis.

    Integer inputs (token ids) get no mask channel: removed tokens are padding already.
    """

    classifier: nn.Module

    @nn.compact
    def __call__(self, masked, present):
        if jnp.issubdtype(masked.dtype, jnp.integer):
            return self.classifier(masked)
        return self.classifier(jnp.concatenate([masked, present.astype(masked.dtype)], axis=-1))


def checked_inputs(model, x, reference, feature_mask):
    """`(x, reference, mask, G, classes)`, checked: what FastSHAP and CoRTX train on."""
    x, num_classes = _checks.check_x(model, training.inputs(x), integer_ids=True)
    x = np.asarray(x)
    mask, groups = _checks.feature_mask(feature_mask, x)
    return x, _reference(reference, x), mask, groups, num_classes


def _reference(value, x) -> np.ndarray:
    """The value of removed features: a scalar or one example, numbers like x (ids for ids)."""
    if np.issubdtype(x.dtype, np.floating):
        value = np.asarray(_checks.as_float_array("reference", value))
    else:
        value = np.asarray(value)
        whole = np.issubdtype(value.dtype, np.floating) and np.all(value == np.round(value))
        if value.dtype == bool or not (np.issubdtype(value.dtype, np.integer) or whole):
            raise TypeError(
                f"reference must be integer ids like x (dtype {x.dtype}), e.g. the padding id; got "
                f"{value.dtype} {value.ravel()[:4].tolist()}"
            )
    try:
        return np.broadcast_to(value, x.shape[1:]).astype(x.dtype)
    except ValueError:
        raise ValueError(
            f"reference of shape {value.shape} is not a scalar or one example of shape {tuple(x.shape[1:])}"
        ) from None


def masked_inputs(x, reference, mask, coalitions):
    """`(B, n, *features)`: x where the feature's group is in S, the reference elsewhere."""
    present = jnp.take(coalitions, jnp.asarray(mask), axis=-1)  # (B, n, *features)
    return jnp.where(present, x[:, None], reference), present


def _game(model: Model, surrogate: Surrogate | None, x, reference, mask, coalitions):
    """v(S) `(B, n, C)` in the model's output space, by the model or the surrogate."""
    masked, present = masked_inputs(x, reference, mask, coalitions)
    rows = masked.reshape(-1, *x.shape[1:])
    if surrogate is None:
        outputs = model(rows)
    else:
        logits = surrogate.network.apply(surrogate.variables, rows, present.reshape(rows.shape))
        # the surrogate predicts the selected scores: only their transform is left
        outputs = Model(lambda _, scores: scores, (), getattr(model.output, "transform", model.output))(
            logits
        )
    return jax.lax.stop_gradient(outputs.reshape(*coalitions.shape[:2], -1).astype(jnp.float32))


def train_surrogate(
    classifier: nn.Module,
    model: Model,
    x,
    *,
    reference=0.0,
    feature_mask=None,
    samples: int = 4,
    variables=None,
    config: TrainConfig | None = None,
    **settings,
) -> Surrogate:
    """Trains a surrogate by KL to the model on inputs with random groups removed.

    Loss: KL(softmax(F(x)) || softmax(s(x_S, S))) with S of uniform size (0..G) and
    uniform given its size, `samples` coalitions per example and step, plus
    (mean_c s_c - mean_c F_c(x))^2: the KL fixes the surrogate's logits only up to an
    additive constant, and this term picks the constant so that the game is on the
    model's logit scale (it does not move the KL's minimum).

    Args:
      classifier: a Linen classifier for the masked input with its mask appended on
        the last axis (e.g. `jaxplain.models.MLP`; for token ids, a `TextClassifier`
        of the padded sequence); it is wrapped in `MaskedInput`.
      model, x, reference, feature_mask: the model, its training inputs, the value of
        removed features, the groups.
      samples: coalitions per example per step.
      variables: variables of `MaskedInput(classifier)` to start from.
      config, **settings: a `jaxplain.training.TrainConfig` and/or its fields as
        keywords (which win), over `SURROGATE_DEFAULTS`: 200 epochs, batches of 64,
        learning rate 2e-3, early stopping after 20 epochs without improvement on 15%
        of the rows held out (coalitions drawn with a fixed key there).

    Returns:
      A `Surrogate`.

    References:
      Covert, Lundberg, Lee. Explaining by Removing: A Unified Framework for Model
      Explanation. JMLR 22, 2021, arXiv:2011.14878 (surrogate by KL on masked inputs);
      Jethani et al. FastSHAP, ICLR 2022, arXiv:2107.07436.
    """
    config = resolve("train_surrogate", SURROGATE_DEFAULTS, config, settings)
    samples = _checks.positive_int("samples", samples)
    if not isinstance(classifier, nn.Module):
        raise TypeError(
            f"classifier must be a flax.linen.Module (e.g. jaxplain.models.MLP), got {type(classifier).__name__}"
        )
    if variables is not None and not (hasattr(variables, "keys") and "params" in variables):
        raise TypeError("variables must be the dict of MaskedInput(classifier).init, {'params': ...}")
    x, reference, mask, groups, num_classes = checked_inputs(model, x, reference, feature_mask)
    network = MaskedInput(classifier)
    if variables is None:
        variables = jax.jit(network.init)(networks.random_key(config.seed), x[:1], np.ones(x[:1].shape, bool))
    logits = jax.eval_shape(network.apply, variables, x[:1], np.ones(x[:1].shape, bool))
    if tuple(logits.shape) != (1, num_classes):
        raise ValueError(
            f"classifier must return (batch, {num_classes}) logits like the model, got shape "
            f"{tuple(logits.shape)} for one example: build it with num_classes={num_classes}"
        )

    def loss(params, batch, key):
        coalitions = uniform_coalitions(key, batch["x"].shape[0], samples, groups)
        masked, present = masked_inputs(batch["x"], reference, mask, coalitions)
        rows = masked.reshape(-1, *x.shape[1:])
        logits = network.apply({**variables, "params": params}, rows, present.reshape(rows.shape))
        logits = logits.reshape(*coalitions.shape[:2], -1)
        wanted = jax.lax.stop_gradient(model.with_output("logits")(batch["x"]))[:, None]
        kl = jnp.sum(jax.nn.softmax(wanted) * (jax.nn.log_softmax(wanted) - jax.nn.log_softmax(logits)), -1)
        gauge = (logits.mean(-1) - wanted.mean(-1)) ** 2
        return jnp.mean(kl + gauge)

    result = training.fit_held_out(loss, variables["params"], {"x": x}, config, description="surrogate")
    return Surrogate(network, {**variables, "params": result.params})


def train_fastshap(
    network,
    model: Model,
    x,
    *,
    reference=0.0,
    feature_mask=None,
    surrogate: Surrogate | None = None,
    samples: int = 32,
    config: TrainConfig | None = None,
    **settings,
) -> Explainer:
    """Trains `network` on the FastSHAP objective (see the module docstring).

    Args:
      network: an explainer network for inputs like x; its map is averaged over each
        group (use `ConvExplainer(patch=...)` for superpixels).
      model: the `jaxplain.Model` to explain.
      x: training inputs `(n, ...)`; no labels are needed.
      reference: the value of removed features: a scalar or one example (the pad id
        for token ids).
      feature_mask: group ids per feature (as for `jaxplain.kernel_shap`), or None.
      surrogate: from `train_surrogate`; None plays the model's own game with removed
        features at the reference (the game `exact_shapley` and `kernel_shap` solve).
      samples: coalitions per example per step, complements included (even).
      config, **settings: a `jaxplain.training.TrainConfig` and/or its fields as
        keywords (which win), over `DEFAULTS` (those of `train_supervised`: 300 epochs,
        batches of 32, learning rate 2e-3, patience 30, 15% held out); early stopping
        on the objective on the held-out rows, with fixed coalitions.

    Returns:
      An `Explainer` (recipe "fastshap", no teacher, efficiency correction on).

    References:
      Jethani, Sudarshan, Covert, Lee, Ranganath. FastSHAP: Real-Time Shapley Value
      Estimation. ICLR 2022, arXiv:2107.07436; Covert, Lee. Improving KernelSHAP.
      AISTATS 2021, arXiv:2012.01536 (paired sampling).
    """
    config = resolve("train_fastshap", DEFAULTS, config, settings)
    samples = _checks.positive_int("samples", samples)
    if samples % 2:
        raise ValueError(
            f"samples must be even (each coalition is paired with its complement), got {samples}"
        )
    if surrogate is not None and not isinstance(surrogate, Surrogate):
        raise TypeError(
            f"surrogate must be a Surrogate from train_surrogate or None, got {type(surrogate).__name__}"
        )
    x, reference, mask, groups, num_classes = checked_inputs(model, x, reference, feature_mask)
    if groups < 2:
        raise ValueError("train_fastshap needs at least 2 groups of features")
    variables = networks.init(network, x, seed=config.seed, model=model)
    networks.check_output(network, variables, x, num_classes)
    difference = model(x) - model(reference[None])
    scale = float(np.sqrt(np.mean(np.square(difference)) / groups)) or 1.0
    loss_scale = float(np.mean(np.square(difference))) or 1.0
    extremes = jnp.array([[False], [True]])  # the empty and the full coalition

    def loss(params, batch, key):
        xb = batch["x"]
        coalitions = shapley_coalitions(key, xb.shape[0], samples, groups)
        values = _game(model, surrogate, xb, reference, mask, coalitions)
        ends = _game(
            model, surrogate, xb, reference, mask, jnp.broadcast_to(extremes, (xb.shape[0], 2, groups))
        )
        phi = to_groups(network.apply({"params": params}, xb) * scale, mask, groups)
        return objective(phi, coalitions, values, ends[:, 0], ends[:, 1]) / loss_scale

    result = training.fit_held_out(loss, variables["params"], {"x": x}, config, description="fastshap")
    return make(
        network,
        {"params": result.params},
        recipe="fastshap",
        teacher=None,
        label_fraction=0.0,
        num_classes=num_classes,
        input_shape=list(x.shape[1:]),
        input_dtype=str(x.dtype),
        output_scale=scale,
        reference=reference,
        feature_mask=None if feature_mask is None else mask,
        efficiency=True,
        completeness=True,
        samples=samples,
        value_function="surrogate" if surrogate is not None else "model at reference",
        history=training.summary(result),
    )
