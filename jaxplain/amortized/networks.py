"""Explainer networks: one forward pass from an input to its attributions for every class.

Every network maps a batch `(B, *feature_shape)` to `(B, num_classes, *feature_shape)`:
one attribution map per class, of which the explainer's `target` picks. Each is an
*encoder* (submodule "encoder", whose pooled output `embedding(x)` is what CoRTX
pre-trains contrastively) followed by a *head* (submodule "head"), so that a recipe can
train both or freeze the encoder and fit only the head.

* `MLPExplainer`: tabular inputs (or anything flattened), dense layers.
* `ConvExplainer`: NHWC images, a small U-Net (convolutions, average-pool down,
  transposed convolutions up, skip connections); the map comes out at input resolution,
  or at superpixel resolution (`patch`) and is repeated onto the pixels.
* `TokenExplainer`: token ids, a `jaxplain.models.TextClassifier`'s encoder (the
  classifier's own module without its head, so `init` copies the classifier's weights
  into it) plus a per-token dense layer, as the Empirical Explainers do.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxplain.models.text import TextClassifier


class DenseStack(nn.Module):
    """Dense layers, each followed by the activation."""

    features: Sequence[int]
    activation: Callable = nn.gelu

    @nn.compact
    def __call__(self, x):
        for width in self.features:
            x = self.activation(nn.Dense(width)(x))
        return x


class _DenseHead(nn.Module):
    """Hidden dense layers, then one score per (class, feature), shaped `(B, C, *shape)`."""

    num_classes: int
    feature_shape: Sequence[int]
    features: Sequence[int]
    activation: Callable

    @nn.compact
    def __call__(self, h):
        h = DenseStack(self.features, self.activation)(h)
        scores = nn.Dense(self.num_classes * math.prod(self.feature_shape))(h)
        return scores.reshape((h.shape[0], self.num_classes, *self.feature_shape))


class MLPExplainer(nn.Module):
    """Dense encoder and head for tabular inputs: `(B, *shape) -> (B, C, *shape)`.

    Attributes:
      num_classes: attribution maps per example, one per class of the model explained.
      feature_shape: the shape of one input, e.g. `(13,)`.
      features: widths of the encoder's layers; the last is the embedding's width.
      head_features: widths of the head's hidden layers before its output layer.
      activation: the nonlinearity.
      multiplier: output `head(x) * (x - reference)`: a feature equal to the reference
        then gets exactly 0, as baseline Shapley values and Integrated Gradients give it.
      reference: the reference input's value (a scalar), for `multiplier`.
    """

    num_classes: int
    feature_shape: Sequence[int]
    features: Sequence[int] = (128, 128)
    head_features: Sequence[int] = (128,)
    activation: Callable = nn.gelu
    multiplier: bool = False
    reference: float = 0.0

    def setup(self):
        self.encoder = DenseStack(self.features, self.activation)
        self.head = _DenseHead(self.num_classes, self.feature_shape, self.head_features, self.activation)

    def embedding(self, x):
        return self.encoder(x.reshape((x.shape[0], -1)))

    def __call__(self, x):
        return _times_input(self.head(self.embedding(x)), x, self.multiplier, self.reference)


def _times_input(maps, x, multiplier: bool, reference: float):
    """`maps * (x - reference)` per class when `multiplier`, else `maps`."""
    return maps * (x - reference)[:, None] if multiplier else maps


class _ConvEncoder(nn.Module):
    channels: Sequence[int]
    activation: Callable

    @nn.compact
    def __call__(self, x):
        levels = []
        for level, width in enumerate(self.channels):
            if level:
                x = nn.avg_pool(x, (2, 2), strides=(2, 2))
            x = self.activation(nn.Conv(width, (3, 3))(x))
            x = self.activation(nn.Conv(width, (3, 3))(x))
            levels.append(x)
        return tuple(levels)


class _ConvDecoder(nn.Module):
    """Up from the deepest level to level log2(patch), then one channel per (class, input channel)."""

    num_classes: int
    in_channels: int
    channels: Sequence[int]
    patch: int
    activation: Callable

    @nn.compact
    def __call__(self, levels):
        stop = int(math.log2(self.patch))
        x = levels[-1]
        for level in range(len(levels) - 2, stop - 1, -1):
            width = self.channels[level]
            x = self.activation(nn.ConvTranspose(width, (2, 2), strides=(2, 2))(x))
            x = jnp.concatenate([x, levels[level]], axis=-1)
            x = self.activation(nn.Conv(width, (3, 3))(x))
        x = nn.Conv(self.num_classes * self.in_channels, (1, 1))(x)
        x = jnp.repeat(jnp.repeat(x, self.patch, axis=1), self.patch, axis=2)
        batch, height, width, _ = x.shape
        x = x.reshape(batch, height, width, self.num_classes, self.in_channels)
        return jnp.moveaxis(x, 3, 1)


class ConvExplainer(nn.Module):
    """A small U-Net for NHWC images: `(B, H, W, K) -> (B, C, H, W, K)`.

    Attributes:
      num_classes: attribution maps per example.
      feature_shape: `(H, W, K)`; H and W divisible by 2^(len(channels) - 1).
      channels: filters per level; each level after the first halves the resolution.
      patch: 1 for maps at pixel resolution; 2^j (j < len(channels)) for maps at the
        resolution of level j, each value repeated over a patch x patch superpixel.
      activation: the nonlinearity.
      multiplier, reference: as for `MLPExplainer` (at pixel resolution).
    """

    num_classes: int
    feature_shape: Sequence[int]
    channels: Sequence[int] = (16, 32)
    patch: int = 1
    activation: Callable = nn.gelu
    multiplier: bool = False
    reference: float = 0.0

    def setup(self):
        self.encoder = _ConvEncoder(self.channels, self.activation)
        self.head = _ConvDecoder(
            self.num_classes, self.feature_shape[-1], self.channels, self.patch, self.activation
        )

    def embedding(self, x):
        return self.encoder(x)[-1].mean(axis=(1, 2))

    def __call__(self, x):
        return _times_input(self.head(self.encoder(x)), x, self.multiplier, self.reference)


class _TokenHead(nn.Module):
    num_classes: int

    @nn.compact
    def __call__(self, encoded):
        states, mask = encoded
        scores = nn.Dense(self.num_classes)(states) * mask[..., None]
        return jnp.swapaxes(scores, 1, 2)


class TokenExplainer(nn.Module):
    """A text classifier's encoder plus one score per token and class: `(B, T) -> (B, C, T)`.

    Padding positions score 0. The attributes after `feature_shape` (`ENCODER_FIELDS`)
    are those of the `TextClassifier` whose encoder it copies, with its defaults
    (`init(..., model=...)` copies the weights).
    """

    num_classes: int
    feature_shape: Sequence[int]
    vocab_size: int
    embed_dim: int = TextClassifier.embed_dim
    num_layers: int = TextClassifier.num_layers
    num_heads: int = TextClassifier.num_heads
    mlp_dim: int = TextClassifier.mlp_dim
    activation: Callable = TextClassifier.activation
    pad_id: int = TextClassifier.pad_id

    def setup(self):
        # The classifier itself, of which only the encoder is used (`states`): its
        # parameters have the classifier's names, so its weights copy in; its head is
        # never called and has no parameters here.
        self.encoder = TextClassifier(
            num_classes=1,
            max_length=self.feature_shape[0],
            dropout_rate=0.0,
            **{field: getattr(self, field) for field in ENCODER_FIELDS},
        )
        self.head = _TokenHead(self.num_classes)

    def embedding(self, tokens):
        states, mask = self.encoder.states(tokens)
        weights = mask[..., None].astype(states.dtype)
        return (states * weights).sum(axis=1) / jnp.maximum(weights.sum(axis=1), 1.0)

    def __call__(self, tokens):
        return self.head(self.encoder.states(tokens))


# The `TextClassifier` fields a `TokenExplainer` shares (the rest: its classes, length, dropout).
ENCODER_FIELDS = ("vocab_size", "embed_dim", "num_layers", "num_heads", "mlp_dim", "activation", "pad_id")


def random_key(seed: int):
    """The key the recipes draw from (initialisation, shuffling, coalitions, masks)."""
    return jax.random.key(seed, impl="rbg")


NETWORKS = {"mlp": MLPExplainer, "conv": ConvExplainer, "token": TokenExplainer}


def name_of(network: nn.Module) -> str:
    """The `NETWORKS` name of an explainer network."""
    for name, cls in NETWORKS.items():
        if type(network) is cls:
            return name
    raise TypeError(
        f"network must be one of {', '.join(c.__name__ for c in NETWORKS.values())}, "
        f"got {type(network).__name__}"
    )


def config_of(network: nn.Module) -> dict:
    """The fields that rebuild `network` with `NETWORKS[name_of(network)](**config)`."""
    return {
        field: getattr(network, field)
        for field in type(network).__dataclass_fields__
        if field not in ("parent", "name")
    }


def token_explainer_for(classifier, num_classes: int, length: int) -> TokenExplainer:
    """A `TokenExplainer` with the encoder configuration of a `TextClassifier`."""
    return TokenExplainer(
        num_classes, (length,), **{field: getattr(classifier, field) for field in ENCODER_FIELDS}
    )


def init(network: nn.Module, x, *, seed: int = 0, model=None):
    """Fresh variables for `network` on inputs like `x`, the same for the same seed.

    The key is an "rbg" key (XLA's RngBitGenerator): on the CPU its draws compile in a
    fraction of the time of threefry's, one per parameter. With a `TokenExplainer` and a `model` wrapping a Linen `TextClassifier`
    (`jaxplain.load_model`), the encoder starts from the classifier's weights.
    """
    if not isinstance(network, nn.Module):
        raise TypeError(
            f"network must be an explainer network ({', '.join(c.__name__ for c in NETWORKS.values())}), "
            f"got {type(network).__name__}"
        )
    variables = jax.jit(network.init)(random_key(seed), jnp.asarray(x[:1]))
    if isinstance(network, TokenExplainer) and model is not None:
        classifier = model.params["params"]
        encoder = dict(variables["params"]["encoder"])
        for key in encoder:
            if key in classifier:
                encoder[key] = jax.tree_util.tree_map(jnp.asarray, classifier[key])
        variables = {"params": {**variables["params"], "encoder": encoder}}
    return variables


def check_output(network: nn.Module, variables, x, num_classes: int) -> None:
    """Checks that `network` maps x to one map per class, `(B, num_classes, *x.shape[1:])`.

    Abstract evaluation only; a network built for other classes or inputs otherwise
    failed inside the compiled loss, with shapes that did not broadcast.
    """
    out = jax.eval_shape(network.apply, variables, jax.ShapeDtypeStruct((1, *x.shape[1:]), x.dtype))
    expected = (1, num_classes, *x.shape[1:])
    if tuple(out.shape) != expected:
        raise ValueError(
            f"network maps one example of shape {tuple(x.shape[1:])} to {tuple(out.shape[1:])}, but "
            f"{num_classes} maps of the input's shape are needed, {expected[1:]}: build it with "
            f"num_classes={num_classes} and feature_shape={tuple(x.shape[1:])}"
        )
