"""Supervised amortized explainers (Empirical Explainers, RTX): regress a teacher's attributions.

The network phi_theta is fitted to a teacher's labels phi* (`make_labels`) by

    L(theta) = mean_{x, c, i} (phi_theta(x)_{c,i} - phi*(x)_{c,i})^2 / s^2
               + rank_weight * mean_{x, c, i != j} log(1 + exp(-sign(phi*_i - phi*_j)(phi_i - phi_j) / s)),

with s the labels' standard deviation (so one learning rate suits any output scale; the
network predicts phi / s). The optional second term is a pairwise logistic rank loss: it
only cares that features come out in the teacher's order. Training uses the shared
Optax loop with early stopping on a held-out part of the training rows.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxplain import _checks
from jaxplain.amortized import networks, training
from jaxplain.amortized.explainer import Explainer, make
from jaxplain.amortized.labels import Labels
from jaxplain.methods.registry import METHODS
from jaxplain.model import Model
from jaxplain.training import TrainConfig, resolve

DEFAULTS = training.RECIPE_DEFAULTS


def rank_loss(predicted, target):
    """Pairwise logistic loss on the order of the features, per (example, class) row."""
    p = predicted.reshape(*predicted.shape[:2], -1)
    t = target.reshape(*target.shape[:2], -1)
    order = jnp.sign(t[..., :, None] - t[..., None, :])
    return jnp.mean(jnp.abs(order) * jax.nn.softplus(-order * (p[..., :, None] - p[..., None, :])))


def teacher_facts(labels: Labels) -> dict:
    """Reference, feature mask and whether the values sum to F(x) - F(reference)."""
    settings = labels.teacher["settings"]
    baseline = settings.get("baseline")
    family = METHODS[labels.teacher["method"]].family
    # Layer methods sum to the change of the output through the layer, not F(x) - F(b).
    completeness = family != "layer" and bool(np.isfinite(labels.delta).all())
    return {
        "reference": 0.0 if baseline is None else baseline,
        "feature_mask": settings.get("feature_mask"),
        "completeness": completeness,
    }


def check_labelled(x, labels) -> np.ndarray:
    """x as training inputs, checked against its `Labels` (type, count, example shape)."""
    if not isinstance(labels, Labels):
        raise TypeError(
            f"labels must be jaxplain.amortized.Labels (from make_labels), got {type(labels).__name__}"
        )
    x = training.inputs(x)
    if len(labels) != len(x):
        raise ValueError(f"labels hold {len(labels)} examples but x holds {len(x)}")
    if tuple(labels.values.shape[2:]) != tuple(x.shape[1:]):
        raise ValueError(
            f"labels explain examples of shape {tuple(labels.values.shape[2:])} but x holds examples "
            f"of shape {tuple(x.shape[1:])}: pass the x the labels were made from"
        )
    return x


def train_supervised(
    network,
    model: Model,
    x,
    labels: Labels,
    *,
    rank_weight: float = 0.0,
    efficiency: bool | None = None,
    variables=None,
    train_only_head: bool = False,
    recipe: str = "supervised",
    label_fraction: float = 1.0,
    config: TrainConfig | None = None,
    **settings,
) -> Explainer:
    """Fits `network` to a teacher's labels by mean squared error (and a rank loss).

    Args:
      network: an explainer network (`jaxplain.amortized.networks`) for inputs like x
        and `labels.values.shape[1]` classes.
      model: the `jaxplain.Model` the labels explain (used to start a `TokenExplainer`
        from the classifier's encoder, and recorded nowhere else).
      x: the labelled inputs `(n, ...)`; `labels` holds their attributions.
      labels: from `make_labels`.
      rank_weight: weight of the pairwise rank loss (0 = plain regression).
      efficiency: apply the additive efficiency correction at inference; by default
        when the teacher's values sum to F(x) - F(reference).
      variables: start from these variables (CoRTX's pre-trained encoder) instead of
        a fresh initialisation.
      train_only_head: freeze the encoder (CoRTX's second stage).
      recipe, label_fraction: recorded in the metadata.
      config, **settings: a `jaxplain.training.TrainConfig` and/or its fields as
        keywords (which win), over `DEFAULTS`: 300 epochs, batches of 32, learning
        rate 2e-3, early stopping after 30 epochs without improvement on 15% of the
        rows held out.

    Returns:
      An `Explainer` with `metadata["history"]`.

    References:
      Schwarzenberg, Feldhus, Moeller. Efficient Explanations from Empirical Explainers.
      BlackboxNLP 2021, arXiv:2103.15429; Chuang, Wang, Yang, Zhong, Chen, Hu. CoRTX:
      Contrastive Framework for Real-time Explanation. ICLR 2023, arXiv:2303.02794 (RTX).
    """
    config = resolve("train_supervised", DEFAULTS, config, settings)
    x = check_labelled(x, labels)
    rank_weight = _checks.number("rank_weight", rank_weight)
    efficiency = None if efficiency is None else _checks.flag("efficiency", efficiency)
    train_only_head = _checks.flag("train_only_head", train_only_head)
    if not isinstance(recipe, str):
        raise TypeError(f"recipe must be a str (it is recorded in the metadata), got {type(recipe).__name__}")
    _checks.fraction("label_fraction", label_fraction)
    facts = teacher_facts(labels)
    scale = float(np.std(labels.values)) or 1.0
    targets = labels.values / scale
    if variables is None:
        variables = networks.init(network, x, seed=config.seed, model=model)
    networks.check_output(network, variables, x, labels.values.shape[1])

    def loss(params, batch, key):
        del key
        predicted = network.apply({"params": params}, batch["x"])
        value = jnp.mean((predicted - batch["target"]) ** 2)
        return value + rank_weight * rank_loss(predicted, batch["target"]) if rank_weight else value

    trainable = None
    if train_only_head:
        trainable = {
            name: jax.tree_util.tree_map(lambda _: name == "head", tree)
            for name, tree in variables["params"].items()
        }
    result = training.fit_held_out(
        loss,
        variables["params"],
        {"x": x, "target": targets},
        config,
        trainable=trainable,
        description=recipe,
    )
    return make(
        network,
        {"params": result.params},
        recipe=recipe,
        teacher=labels.teacher,
        label_fraction=label_fraction,
        num_classes=int(labels.values.shape[1]),
        input_shape=list(x.shape[1:]),
        input_dtype=str(x.dtype),
        output_scale=scale,
        efficiency=facts["completeness"] if efficiency is None else bool(efficiency),
        rank_weight=rank_weight,
        labelled_examples=len(x),
        history=training.summary(result),
        **facts,
    )
