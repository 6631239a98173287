"""A small convolutional classifier for low-resolution images."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import flax.linen as nn

from jaxplain.models.conv import Conv
from jaxplain.models.pooling import max_pool


class SmallCNN(nn.Module):
    """A LeNet-style convolutional classifier for small NHWC images.

    Each entry of `channels` adds a 3x3 convolution and the activation, followed by a
    2x2 max-pool while the feature map stays at least 2x2 after pooling; so the same
    module fits scikit-learn digits (8x8x1), MNIST (28x28x1) and CIFAR (32x32x3).
    The head is flatten, dense, activation, dropout, dense.

    Attributes:
      num_classes: the number of output logits.
      channels: the number of filters of each convolution.
      dense: the width of the hidden dense layer.
      activation: the nonlinearity after every convolution and the hidden dense layer.
      dropout_rate: the dropout probability before the last layer (training only;
        draws from the "dropout" rng collection).

    References:
      LeCun, Bottou, Bengio, Haffner. Gradient-based learning applied to document
      recognition. Proceedings of the IEEE 86(11), 1998.
    """

    num_classes: int
    channels: Sequence[int] = (32, 64)
    dense: int = 128
    activation: Callable = nn.relu
    dropout_rate: float = 0.0

    @nn.compact
    def __call__(self, x, train: bool = False):
        """Returns logits `(batch, num_classes)` for images `(batch, height, width, channels)`."""
        for features in self.channels:
            x = self.activation(Conv(features, (3, 3))(x))
            # Pooling a map smaller than 4x4 would leave less than 2x2 of it.
            if min(x.shape[1:3]) >= 4:
                x = max_pool(x, (2, 2), strides=(2, 2))
        x = x.reshape((x.shape[0], -1))
        x = self.activation(nn.Dense(self.dense)(x))
        x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
        return nn.Dense(self.num_classes)(x)
