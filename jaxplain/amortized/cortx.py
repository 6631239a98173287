"""CoRTX: contrastive pre-training of an explanation encoder, then a head on few labels.

Stage 1 (no labels). For every anchor x, `candidates` copies are made, each with a random
subset of the groups (every group independently with probability `drop_probability`)
replaced by the reference; the copy whose black-box prediction (class probabilities) is
closest to the anchor's, in l2, is its positive. The encoder's embeddings of anchors and
positives go through a projection (two dense layers) and are compared by cosine
similarity; the InfoNCE loss treats the other anchors' positives in the batch as
negatives, in both directions:

    L = -1/2B sum_b [log softmax_j(cos(z_b, z+_j) / tau)_b + log softmax_j(cos(z+_b, z_j) / tau)_b].

Stage 2. The encoder is frozen and the explanation head is fitted to a fraction of the
teacher's labels by mean squared error (`train_supervised(train_only_head=True)`). At
inference the additive efficiency correction spreads F(x) - F(reference) - sum(phi)
evenly over the groups.
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxplain import _checks
from jaxplain.amortized import networks, supervised, training
from jaxplain.amortized.explainer import Explainer
from jaxplain.amortized.fastshap import checked_inputs, masked_inputs
from jaxplain.amortized.labels import Labels
from jaxplain.amortized.supervised import check_labelled, teacher_facts, train_supervised
from jaxplain.model import Model
from jaxplain.training import TrainConfig, resolve

PRETRAIN_DEFAULTS = training.DEFAULTS.replace(learning_rate=2e-3, patience=None, validation_fraction=None)


def labelled_rows(n: int, fraction: float, seed: int = 0) -> np.ndarray:
    """The sorted rows whose labels CoRTX's head sees: `max(1, round(fraction * n))` of n."""
    n = _checks.positive_int("n", n)
    _checks.seed(seed)
    if _checks.fraction("label_fraction", fraction) == 0:
        raise ValueError(f"label_fraction must be in (0, 1], got {fraction}")
    count = max(1, int(round(fraction * n)))
    return np.sort(np.random.default_rng(seed).permutation(n)[:count])


def positives(
    model: Model, x, key, *, reference, mask, groups: int, candidates: int = 30, drop_probability: float = 0.5
):
    """CoRTX's synthetic positives: of `candidates` randomly masked copies, the closest in output.

    Args:
      model: the black box.
      x: anchors `(B, ...)`.
      key: a `jax.random` key.
      reference: one example; a dropped group takes its values.
      mask: the group id of every feature, shaped like one example.
      groups: the number of groups G.
      candidates: masked copies per anchor.
      drop_probability: each group is replaced independently with this probability.

    Returns:
      `(positive, kept)`: the chosen copies `(B, ...)` and their coalitions `(B, G)`
      (True = the group kept x's values).
    """
    kept = ~jax.random.bernoulli(key, drop_probability, (x.shape[0], candidates, groups))
    copies, _ = masked_inputs(x, reference, mask, kept)
    probabilities = model.with_output("probs")
    outputs = probabilities(copies.reshape(-1, *x.shape[1:])).reshape(x.shape[0], candidates, -1)
    distance = jnp.sum((outputs - probabilities(x)[:, None]) ** 2, axis=-1)
    best = jnp.argmin(distance, axis=1)
    rows = jnp.arange(x.shape[0])
    return copies[rows, best], kept[rows, best]


def info_nce(anchors, positive, temperature: float):
    """Symmetric InfoNCE on cosine similarity with in-batch negatives (see the module docstring)."""
    # rsqrt(|v|^2 + eps) rather than 1 / |v|: the norm's gradient is NaN at v = 0, which
    # a ReLU encoder does output.
    a = anchors * jax.lax.rsqrt(jnp.sum(anchors**2, axis=-1, keepdims=True) + 1e-12)
    p = positive * jax.lax.rsqrt(jnp.sum(positive**2, axis=-1, keepdims=True) + 1e-12)
    logits = a @ p.T / temperature
    diagonal = jnp.arange(a.shape[0])
    forward = jax.nn.log_softmax(logits, axis=1)[diagonal, diagonal]
    backward = jax.nn.log_softmax(logits, axis=0)[diagonal, diagonal]
    return -0.5 * jnp.mean(forward + backward)


class Projection(nn.Module):
    """The projection used only during pre-training (discarded afterwards)."""

    features: Sequence[int] = (128, 64)

    @nn.compact
    def __call__(self, h):
        return nn.Dense(self.features[1])(nn.gelu(nn.Dense(self.features[0])(h)))


def pretrain_encoder(
    network,
    model: Model,
    x,
    *,
    reference=0.0,
    feature_mask=None,
    candidates: int = 30,
    drop_probability: float = 0.5,
    temperature: float = 0.02,
    config: TrainConfig | None = None,
    **settings,
):
    """Stage 1: trains `network`'s encoder contrastively; returns the network's variables.

    Args:
      network: an explainer network (its `embedding` is contrasted).
      model: the black box that picks the positives.
      x: unlabelled inputs `(n, ...)`.
      reference: the value of replaced features (CoRTX: the training mean).
      feature_mask: groups replaced together, or None (every feature alone).
      candidates, drop_probability: see `positives`.
      temperature: InfoNCE's tau.
      config, **settings: a `jaxplain.training.TrainConfig` and/or its fields as
        keywords (which win), over `PRETRAIN_DEFAULTS`: 100 epochs, batches of 64,
        learning rate 2e-3. No early stopping (the loss says little about the
        explanations to come): `patience` and `validation_fraction` are refused.

    Returns:
      The variables of `network`, encoder trained, head as initialised.
    """
    config = resolve("pretrain_encoder", PRETRAIN_DEFAULTS, config, settings, stops_early=False)
    candidates = _checks.positive_int("candidates", candidates)
    # p = 1 drops every group: all candidates are the reference, nothing to contrast.
    if _checks.fraction("drop_probability", drop_probability) == 1:
        raise ValueError("drop_probability must be < 1 (at 1 every candidate is the reference)")
    # tau divides the similarities: 0 gives NaN losses, < 0 pushes positives apart.
    temperature = _checks.number("temperature", temperature, above=True)
    x, reference, mask, groups, _ = checked_inputs(model, x, reference, feature_mask)
    variables = networks.init(network, x, seed=config.seed, model=model)
    projection = Projection()
    width = network.apply(variables, x[:1], method="embedding").shape[-1]
    params = {
        "network": variables["params"],
        "projection": jax.jit(projection.init)(networks.random_key(config.seed + 1), jnp.zeros((1, width)))[
            "params"
        ],
    }

    def embed(params, inputs):
        h = network.apply({"params": params["network"]}, inputs, method="embedding")
        return projection.apply({"params": params["projection"]}, h)

    def loss(params, batch, key):
        positive, _ = positives(
            model,
            batch["x"],
            key,
            reference=reference,
            mask=mask,
            groups=groups,
            candidates=candidates,
            drop_probability=drop_probability,
        )
        return info_nce(
            embed(params, batch["x"]), embed(params, jax.lax.stop_gradient(positive)), temperature
        )

    trainable = {
        "network": {
            name: jax.tree_util.tree_map(lambda _: name != "head", tree)
            for name, tree in params["network"].items()
        },
        "projection": jax.tree_util.tree_map(lambda _: True, params["projection"]),
    }
    result = training.fit(
        loss, params, {"x": x}, trainable=trainable, description="cortx encoder", config=config
    )
    return {"params": result.params["network"]}


def train_cortx(
    network,
    model: Model,
    x,
    labels: Labels,
    *,
    label_fraction: float,
    encoder_variables=None,
    head_epochs: int | None = None,
    head_config: TrainConfig | None = None,
    seed: int | None = None,
    progress: bool | None = None,
    **pretrain_settings,
) -> Explainer:
    """CoRTX: contrastive encoder (stage 1) and a head on `label_fraction` of the labels (stage 2).

    Args:
      network: an explainer network.
      model: the black box.
      x: the training inputs `(n, ...)`, all used in stage 1.
      labels: teacher labels of x (`make_labels`); only the rows
        `labelled_rows(n, label_fraction, seed)` are read, so labels of just those
        rows (the others anything, e.g. zeros) give the same explainer.
      label_fraction: the share of x with labels, in (0, 1].
      encoder_variables: the output of `pretrain_encoder` to reuse (several label
        fractions on one encoder); None runs stage 1 here with `pretrain_settings`.
      head_epochs: the most epochs of stage 2 (by default `head_config`'s, else 300).
      head_config: the `jaxplain.training.TrainConfig` of stage 2, over
        `train_supervised`'s defaults.
      seed, progress: for both stages (by default `head_config`'s, else 0 and True).
      **pretrain_settings: for `pretrain_encoder` (`candidates`, `temperature`, its
        `config`, `epochs`, ...).

    Returns:
      An `Explainer` (recipe "cortx").

    References:
      Chuang, Wang, Yang, Zhong, Chen, Hu. CoRTX: Contrastive Framework for Real-time
      Explanation. ICLR 2023, arXiv:2303.02794.
    """
    # Checked before stage 1, which may run for hours: these used to fail only after it.
    x = check_labelled(x, labels)
    if head_epochs is not None:
        _checks.positive_int("head_epochs", head_epochs)
    head = resolve(
        "train_cortx",
        supervised.DEFAULTS,
        head_config,
        {"epochs": head_epochs, "seed": seed, "progress": progress},
    )
    rows = labelled_rows(len(x), label_fraction, head.seed)
    facts = teacher_facts(labels)
    if encoder_variables is None:
        encoder_variables = pretrain_encoder(
            network,
            model,
            x,
            reference=facts["reference"],
            feature_mask=facts["feature_mask"],
            seed=head.seed,
            progress=head.progress,
            **pretrain_settings,
        )
    return train_supervised(
        network,
        model,
        x[rows],
        labels.rows(rows),
        variables=encoder_variables,
        train_only_head=True,
        recipe="cortx",
        label_fraction=label_fraction,
        config=head,
    )
