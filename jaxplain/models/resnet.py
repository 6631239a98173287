"""Residual networks (ResNet v1.5) with BatchNorm."""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

import flax.linen as nn
import jax.numpy as jnp

from jaxplain.models.conv import Conv
from jaxplain.models.pooling import max_pool


def _conv(features: int, kernel: int, strides: int = 1, name: str | None = None) -> Conv:
    # Symmetric k // 2 padding as in the reference implementation; "SAME" would pad
    # strided convolutions asymmetrically and shift every feature map by a pixel.
    return Conv(
        features,
        (kernel, kernel),
        strides=(strides, strides),
        padding=[(kernel // 2, kernel // 2)] * 2,
        use_bias=False,  # the BatchNorm that follows has its own bias
        name=name,
    )


def _batch_norm(train: bool) -> Callable[..., nn.BatchNorm]:
    return functools.partial(nn.BatchNorm, use_running_average=not train, momentum=0.9, epsilon=1e-5)


def _shortcut(x, like, strides: int, train: bool):
    """The identity, or a 1x1 convolution and BatchNorm when the shape changes."""
    if x.shape == like.shape:
        return x
    x = _conv(like.shape[-1], 1, strides, name="shortcut_conv")(x)
    return _batch_norm(train)(name="shortcut_bn")(x)


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with a residual connection (ResNet-18/34).

    Attributes:
      filters: the number of output channels.
      strides: the stride of the first convolution and of the shortcut.
      activation: the nonlinearity after the first convolution and after the sum.
    """

    filters: int
    strides: int = 1
    activation: Callable = nn.relu

    @nn.compact
    def __call__(self, x, train: bool = False):
        norm = _batch_norm(train)
        y = self.activation(norm()(_conv(self.filters, 3, self.strides)(x)))
        y = norm()(_conv(self.filters, 3)(y))
        return self.activation(y + _shortcut(x, y, self.strides, train))


class BottleneckBlock(nn.Module):
    """1x1 reduce, 3x3, 1x1 expand (x4) with a residual connection (ResNet-50 and up).

    The stride sits on the 3x3 convolution (the "v1.5" variant) rather than on the
    first 1x1, which would discard three quarters of its input.

    Attributes:
      filters: the number of channels of the 3x3 convolution; the block outputs
        `4 * filters`.
      strides: the stride of the 3x3 convolution and of the shortcut.
      activation: the nonlinearity after each of the first two convolutions and after
        the sum.
    """

    filters: int
    strides: int = 1
    activation: Callable = nn.relu

    @nn.compact
    def __call__(self, x, train: bool = False):
        norm = _batch_norm(train)
        y = self.activation(norm()(_conv(self.filters, 1)(x)))
        y = self.activation(norm()(_conv(self.filters, 3, self.strides)(y)))
        y = norm()(_conv(4 * self.filters, 1)(y))
        return self.activation(y + _shortcut(x, y, self.strides, train))


_BLOCKS = {"basic": BasicBlock, "bottleneck": BottleneckBlock}
_STEMS = ("imagenet", "small")


class ResNet(nn.Module):
    """A residual network for NHWC images (ResNet v1.5).

    Stem, then one stage per entry of `stage_sizes` (the first block of every stage
    after the first halves the resolution and doubles the width), global average pool
    and a dense layer. The "imagenet" stem is a 7x7 stride-2 convolution, BatchNorm,
    activation and a 3x3 stride-2 max-pool; the "small" stem is a 3x3 stride-1
    convolution, BatchNorm and activation, which keeps enough resolution for 32x32 or
    64x64 images. Every nonlinearity is a call to `activation`, so rules that replace
    it (for example modified gradients) reach the whole network.

    Attributes:
      num_classes: the number of output logits.
      stage_sizes: the number of blocks in each stage, e.g. `(2, 2, 2, 2)`.
      block: "basic" (two 3x3 convolutions) or "bottleneck" (1x1, 3x3, 1x1 x4).
      num_filters: the width of the first stage.
      activation: the nonlinearity used throughout.
      stem: "imagenet" or "small".

    References:
      He, Zhang, Ren, Sun. Deep Residual Learning for Image Recognition.
      arXiv:1512.03385, 2015.
    """

    num_classes: int
    stage_sizes: Sequence[int]
    block: str = "basic"
    num_filters: int = 64
    activation: Callable = nn.relu
    stem: str = "imagenet"

    @nn.compact
    def __call__(self, x, train: bool = False):
        """Returns logits `(batch, num_classes)` for images `(batch, height, width, channels)`."""
        if self.block not in _BLOCKS:
            raise ValueError(f"block must be one of {sorted(_BLOCKS)}, got {self.block!r}")
        if self.stem not in _STEMS:
            raise ValueError(f"stem must be one of {list(_STEMS)}, got {self.stem!r}")
        if self.stem == "imagenet":
            x = _conv(self.num_filters, 7, 2, name="stem_conv")(x)
        else:
            x = _conv(self.num_filters, 3, 1, name="stem_conv")(x)
        x = self.activation(_batch_norm(train)(name="stem_bn")(x))
        if self.stem == "imagenet":
            x = max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
        block = _BLOCKS[self.block]
        for stage, size in enumerate(self.stage_sizes):
            for index in range(size):
                strides = 2 if stage > 0 and index == 0 else 1
                x = block(
                    self.num_filters * 2**stage,
                    strides=strides,
                    activation=self.activation,
                    name=f"stage{stage + 1}_block{index + 1}",
                )(x, train)
        x = jnp.mean(x, axis=(1, 2))
        return nn.Dense(self.num_classes, name="head")(x)


def _variant(name: str, stage_sizes: Sequence[int], block: str, parameters: str, example: str):
    """A named constructor of `ResNet`: `name(num_classes=1000, **config)`."""

    def constructor(num_classes: int = 1000, **config) -> ResNet:
        return ResNet(num_classes=num_classes, stage_sizes=stage_sizes, block=block, **config)

    constructor.__name__ = constructor.__qualname__ = name
    constructor.__doc__ = f"""{name[:6]}-{name[6:]}: {block} blocks, stage sizes {tuple(stage_sizes)}; {parameters} parameters at 1000 classes.

    Args:
      num_classes: the number of output logits.
      **config: other `ResNet` fields, e.g. {example}.

    Returns:
      A `ResNet` module.

    References:
      He, Zhang, Ren, Sun. Deep Residual Learning for Image Recognition.
      arXiv:1512.03385, 2015.
    """
    return constructor


ResNet18 = _variant("ResNet18", (2, 2, 2, 2), "basic", "11,689,512", '`stem="small"` for 32x32 images')
ResNet50 = _variant("ResNet50", (3, 4, 6, 3), "bottleneck", "25,557,032", '`stem="small"` or `activation`')
