"""Flax Linen classifiers for NHWC images and token sequences, and a causal language model.

Every model has an `activation` field through which all of its nonlinearities pass,
and every `__call__` takes `train: bool = False` (running BatchNorm statistics and no
dropout when False). The classifiers have `num_classes` and return `(batch,
num_classes)` logits; `CausalLM` (lm.py) returns next-token logits `(batch, length,
vocab_size)`.
"""

from __future__ import annotations

from collections.abc import Callable

import flax.linen as nn

from jaxplain import _checks
from jaxplain.models.cnn import SmallCNN
from jaxplain.models.conv import Conv, conv_general_dilated
from jaxplain.models.inception import InceptionV3
from jaxplain.models.lm import CausalLM
from jaxplain.models.mlp import MLP
from jaxplain.models.pooling import max_pool
from jaxplain.models.resnet import ResNet, ResNet18, ResNet50
from jaxplain.models.text import TextClassifier
from jaxplain.models.vit import ViT

ARCHITECTURES: dict[str, Callable[..., nn.Module]] = {
    "mlp": MLP,
    "small_cnn": SmallCNN,
    "resnet": ResNet,
    "resnet18": ResNet18,
    "resnet50": ResNet50,
    "inception_v3": InceptionV3,
    "text_classifier": TextClassifier,
    "vit": ViT,
    "causal_lm": CausalLM,
}


def build(name: str, **config) -> nn.Module:
    """Constructs a model of the zoo by name.

    Args:
      name: a key of `ARCHITECTURES`, e.g. "resnet18".
      **config: the fields of that model, e.g. `num_classes=10`.

    Returns:
      An unbound Flax Linen module.

    Example:
      >>> from jaxplain import models
      >>> models.build("small_cnn", num_classes=10).channels
      (32, 64)
    """
    if not isinstance(name, str) or name not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {name!r}; known: {', '.join(sorted(ARCHITECTURES))}")
    if "num_classes" in config:
        # 0 or 2.5 failed only at init, inside JAX's initialisers
        _checks.positive_int("num_classes", config["num_classes"])
    return ARCHITECTURES[name](**config)


__all__ = [
    "Conv",
    "conv_general_dilated",
    "ARCHITECTURES",
    "CausalLM",
    "InceptionV3",
    "MLP",
    "ResNet",
    "ResNet18",
    "ResNet50",
    "SmallCNN",
    "TextClassifier",
    "ViT",
    "build",
    "max_pool",
]
