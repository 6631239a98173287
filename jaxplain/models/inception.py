"""Inception-v3 without the auxiliary classifier."""

from __future__ import annotations

from collections.abc import Callable

import flax.linen as nn
import jax.numpy as jnp

from jaxplain.models.conv import Conv
from jaxplain.models.pooling import max_pool

Pair = int | tuple[int, int]


def _pair(value: Pair) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else tuple(value)


class ConvBN(nn.Module):
    """A convolution without bias, BatchNorm (epsilon 1e-3) and the activation.

    Attributes:
      features: the number of output channels.
      kernel: the kernel size, an int or `(height, width)`.
      strides: the stride, an int or `(height, width)`.
      padding: zeros added on both sides, an int or `(height, width)`, as in torch's
        `Conv2d(padding=...)`.
      activation: the nonlinearity applied last.
    """

    features: int
    kernel: Pair
    strides: Pair = 1
    padding: Pair = 0
    activation: Callable = nn.relu

    @nn.compact
    def __call__(self, x, train: bool = False):
        pad_height, pad_width = _pair(self.padding)
        x = Conv(
            self.features,
            _pair(self.kernel),
            strides=_pair(self.strides),
            padding=((pad_height, pad_height), (pad_width, pad_width)),
            use_bias=False,
        )(x)
        x = nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-3)(x)
        return self.activation(x)


def _average_pool(x):
    # 3x3 stride 1, zero padding counted in the mean (torch's count_include_pad=True).
    return nn.avg_pool(x, (3, 3), strides=(1, 1), padding=((1, 1), (1, 1)), count_include_pad=True)


def _max_pool(x):
    return max_pool(x, (3, 3), strides=(2, 2))


class _Block(nn.Module):
    """A base for the Inception blocks: `self.conv` builds a named `ConvBN`."""

    activation: Callable = nn.relu

    def conv(self, x, train, name, features, kernel, strides=1, padding=0):
        block = ConvBN(features, kernel, strides, padding, self.activation, name=name)
        return block(x, train)


class InceptionA(_Block):
    """35x35 block: 1x1, 5x5, double 3x3 and pooled branches; 224 + pool_features channels."""

    pool_features: int = 32

    @nn.compact
    def __call__(self, x, train: bool = False):
        branch1x1 = self.conv(x, train, "branch1x1", 64, 1)
        branch5x5 = self.conv(x, train, "branch5x5_1", 48, 1)
        branch5x5 = self.conv(branch5x5, train, "branch5x5_2", 64, 5, padding=2)
        branch3x3dbl = self.conv(x, train, "branch3x3dbl_1", 64, 1)
        branch3x3dbl = self.conv(branch3x3dbl, train, "branch3x3dbl_2", 96, 3, padding=1)
        branch3x3dbl = self.conv(branch3x3dbl, train, "branch3x3dbl_3", 96, 3, padding=1)
        branch_pool = self.conv(_average_pool(x), train, "branch_pool", self.pool_features, 1)
        return jnp.concatenate([branch1x1, branch5x5, branch3x3dbl, branch_pool], axis=-1)


class InceptionB(_Block):
    """Grid reduction 35x35 -> 17x17: strided 3x3, strided double 3x3 and max-pool branches."""

    @nn.compact
    def __call__(self, x, train: bool = False):
        branch3x3 = self.conv(x, train, "branch3x3", 384, 3, strides=2)
        branch3x3dbl = self.conv(x, train, "branch3x3dbl_1", 64, 1)
        branch3x3dbl = self.conv(branch3x3dbl, train, "branch3x3dbl_2", 96, 3, padding=1)
        branch3x3dbl = self.conv(branch3x3dbl, train, "branch3x3dbl_3", 96, 3, strides=2)
        return jnp.concatenate([branch3x3, branch3x3dbl, _max_pool(x)], axis=-1)


class InceptionC(_Block):
    """17x17 block with factorised 7x7 convolutions (1x7 then 7x1); 768 channels."""

    channels_7x7: int = 128

    @nn.compact
    def __call__(self, x, train: bool = False):
        c7 = self.channels_7x7
        branch1x1 = self.conv(x, train, "branch1x1", 192, 1)
        branch7x7 = self.conv(x, train, "branch7x7_1", c7, 1)
        branch7x7 = self.conv(branch7x7, train, "branch7x7_2", c7, (1, 7), padding=(0, 3))
        branch7x7 = self.conv(branch7x7, train, "branch7x7_3", 192, (7, 1), padding=(3, 0))
        branch7x7dbl = self.conv(x, train, "branch7x7dbl_1", c7, 1)
        branch7x7dbl = self.conv(branch7x7dbl, train, "branch7x7dbl_2", c7, (7, 1), padding=(3, 0))
        branch7x7dbl = self.conv(branch7x7dbl, train, "branch7x7dbl_3", c7, (1, 7), padding=(0, 3))
        branch7x7dbl = self.conv(branch7x7dbl, train, "branch7x7dbl_4", c7, (7, 1), padding=(3, 0))
        branch7x7dbl = self.conv(branch7x7dbl, train, "branch7x7dbl_5", 192, (1, 7), padding=(0, 3))
        branch_pool = self.conv(_average_pool(x), train, "branch_pool", 192, 1)
        return jnp.concatenate([branch1x1, branch7x7, branch7x7dbl, branch_pool], axis=-1)


class InceptionD(_Block):
    """Grid reduction 17x17 -> 8x8: strided 3x3, 7x7-then-strided-3x3 and max-pool branches."""

    @nn.compact
    def __call__(self, x, train: bool = False):
        branch3x3 = self.conv(x, train, "branch3x3_1", 192, 1)
        branch3x3 = self.conv(branch3x3, train, "branch3x3_2", 320, 3, strides=2)
        branch7x7x3 = self.conv(x, train, "branch7x7x3_1", 192, 1)
        branch7x7x3 = self.conv(branch7x7x3, train, "branch7x7x3_2", 192, (1, 7), padding=(0, 3))
        branch7x7x3 = self.conv(branch7x7x3, train, "branch7x7x3_3", 192, (7, 1), padding=(3, 0))
        branch7x7x3 = self.conv(branch7x7x3, train, "branch7x7x3_4", 192, 3, strides=2)
        return jnp.concatenate([branch3x3, branch7x7x3, _max_pool(x)], axis=-1)


class InceptionE(_Block):
    """8x8 block whose 3x3 branches split into parallel 1x3 and 3x1; 2048 channels."""

    @nn.compact
    def __call__(self, x, train: bool = False):
        branch1x1 = self.conv(x, train, "branch1x1", 320, 1)
        branch3x3 = self.conv(x, train, "branch3x3_1", 384, 1)
        branch3x3 = jnp.concatenate(
            [
                self.conv(branch3x3, train, "branch3x3_2a", 384, (1, 3), padding=(0, 1)),
                self.conv(branch3x3, train, "branch3x3_2b", 384, (3, 1), padding=(1, 0)),
            ],
            axis=-1,
        )
        branch3x3dbl = self.conv(x, train, "branch3x3dbl_1", 448, 1)
        branch3x3dbl = self.conv(branch3x3dbl, train, "branch3x3dbl_2", 384, 3, padding=1)
        branch3x3dbl = jnp.concatenate(
            [
                self.conv(branch3x3dbl, train, "branch3x3dbl_3a", 384, (1, 3), padding=(0, 1)),
                self.conv(branch3x3dbl, train, "branch3x3dbl_3b", 384, (3, 1), padding=(1, 0)),
            ],
            axis=-1,
        )
        branch_pool = self.conv(_average_pool(x), train, "branch_pool", 192, 1)
        return jnp.concatenate([branch1x1, branch3x3, branch3x3dbl, branch_pool], axis=-1)


class InceptionV3(nn.Module):
    """Inception-v3 for NHWC images of 299x299 (any size from 75x75 works).

    The layout and layer names follow torchvision's `inception_v3`: a stem of five
    convolutions and two max-pools (299 -> 149 -> 147 -> 147 -> 73 -> 73 -> 71 -> 35),
    three InceptionA blocks, an InceptionB reduction (-> 17), four InceptionC blocks,
    an InceptionD reduction (-> 8), two InceptionE blocks, global average pool,
    dropout and a dense layer. Every convolution is followed by BatchNorm and
    `activation`. The auxiliary classifier used only as a training regulariser is
    left out, so there are 23,834,568 parameters at 1000 classes.

    Attributes:
      num_classes: the number of output logits.
      activation: the nonlinearity after every convolution.
      dropout_rate: the dropout probability before the last layer (training only;
        draws from the "dropout" rng collection).

    References:
      Szegedy, Vanhoucke, Ioffe, Shlens, Wojna. Rethinking the Inception Architecture
      for Computer Vision. arXiv:1512.00567, 2015.
    """

    num_classes: int = 1000
    activation: Callable = nn.relu
    dropout_rate: float = 0.5

    @nn.compact
    def __call__(self, x, train: bool = False):
        """Returns logits `(batch, num_classes)` for images `(batch, height, width, 3)`."""
        if min(x.shape[1:3]) < 75:
            raise ValueError(f"InceptionV3 needs images of at least 75x75, got x of shape {x.shape}")
        act = self.activation
        x = ConvBN(32, 3, strides=2, activation=act, name="Conv2d_1a_3x3")(x, train)
        x = ConvBN(32, 3, activation=act, name="Conv2d_2a_3x3")(x, train)
        x = ConvBN(64, 3, padding=1, activation=act, name="Conv2d_2b_3x3")(x, train)
        x = _max_pool(x)
        x = ConvBN(80, 1, activation=act, name="Conv2d_3b_1x1")(x, train)
        x = ConvBN(192, 3, activation=act, name="Conv2d_4a_3x3")(x, train)
        x = _max_pool(x)
        x = InceptionA(act, pool_features=32, name="Mixed_5b")(x, train)
        x = InceptionA(act, pool_features=64, name="Mixed_5c")(x, train)
        x = InceptionA(act, pool_features=64, name="Mixed_5d")(x, train)
        x = InceptionB(act, name="Mixed_6a")(x, train)
        for name, channels in zip(("6b", "6c", "6d", "6e"), (128, 160, 160, 192)):
            x = InceptionC(act, channels_7x7=channels, name=f"Mixed_{name}")(x, train)
        x = InceptionD(act, name="Mixed_7a")(x, train)
        x = InceptionE(act, name="Mixed_7b")(x, train)
        x = InceptionE(act, name="Mixed_7c")(x, train)
        x = jnp.mean(x, axis=(1, 2))
        x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
        return nn.Dense(self.num_classes, name="fc")(x)
