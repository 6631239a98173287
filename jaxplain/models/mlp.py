"""A multilayer perceptron classifier."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import flax.linen as nn


class MLP(nn.Module):
    """A fully connected classifier: (dense, activation, dropout) per hidden layer, then dense.

    Inputs of any shape `(batch, ...)` are flattened to `(batch, -1)` first, so the
    same module serves tabular data and small images.

    Attributes:
      num_classes: the number of output logits.
      features: the width of each hidden layer.
      activation: the nonlinearity after every hidden layer.
      dropout_rate: the dropout probability after every hidden layer (training only;
        draws from the "dropout" rng collection).

    References:
      Rumelhart, Hinton, Williams. Learning representations by back-propagating
      errors. Nature 323, 1986.
    """

    num_classes: int
    features: Sequence[int] = (64, 64)
    activation: Callable = nn.relu
    dropout_rate: float = 0.0

    @nn.compact
    def __call__(self, x, train: bool = False):
        """Returns logits `(batch, num_classes)` for inputs `(batch, ...)`."""
        x = x.reshape((x.shape[0], -1))
        for width in self.features:
            x = self.activation(nn.Dense(width)(x))
            x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
        return nn.Dense(self.num_classes)(x)
