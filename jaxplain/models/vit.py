"""A small Vision Transformer for low-resolution images."""

from __future__ import annotations

from collections.abc import Callable

import flax.linen as nn
import jax.numpy as jnp

from jaxplain.models.conv import Conv
from jaxplain.models.text import EncoderBlock


class ViT(nn.Module):
    """A Vision Transformer classifier for NHWC images, read from its class token.

    The image is cut into non-overlapping `patch_size` x `patch_size` patches, each
    embedded linearly (a convolution with kernel and stride `patch_size`); a learned
    class token is put before the patches and learned position embeddings are added.
    `depth` pre-LayerNorm encoder blocks follow (x + attention(norm(x)), then
    x + mlp(norm(x)), with flax's own `nn.MultiHeadDotProductAttention`), then a final
    LayerNorm and a dense head on the class token. On scikit-learn digits (8x8x1) with
    patches of 2 that is 16 patch tokens and the class token.

    Attributes:
      num_classes: the number of output logits.
      patch_size: the side of the square patches; must divide the image's height and
        width.
      hidden: the width of the token embeddings and of the encoder.
      depth: the number of encoder blocks.
      heads: the number of attention heads; must divide `hidden`.
      mlp_dim: the hidden width of each block's MLP.
      dropout_rate: the dropout probability on attention weights, the embeddings and
        the residual branches (training only; draws from the "dropout" rng collection).
      activation: the MLP nonlinearity.

    References:
      Dosovitskiy, Beyer, Kolesnikov, Weissenborn, Zhai, Unterthiner, Dehghani,
      Minderer, Heigold, Gelly, Uszkoreit, Houlsby. An Image is Worth 16x16 Words:
      Transformers for Image Recognition at Scale. arXiv:2010.11929, 2020.
    """

    num_classes: int
    patch_size: int = 2
    hidden: int = 64
    depth: int = 2
    heads: int = 4
    mlp_dim: int = 128
    dropout_rate: float = 0.0
    activation: Callable = nn.gelu

    @nn.compact
    def __call__(self, x, train: bool = False):
        """Returns logits `(batch, num_classes)` for images `(batch, height, width, channels)`."""
        if x.ndim != 4:
            raise ValueError(f"x must be images (batch, height, width, channels), got shape {x.shape}")
        if x.shape[1] % self.patch_size or x.shape[2] % self.patch_size:
            raise ValueError(
                f"patch_size {self.patch_size} must divide the image's height and width, "
                f"got images of {x.shape[1]}x{x.shape[2]}"
            )
        patch = (self.patch_size, self.patch_size)
        x = Conv(self.hidden, patch, strides=patch, padding="VALID", name="patch_embedding")(x)
        batch = x.shape[0]
        x = x.reshape((batch, -1, self.hidden))
        class_token = self.param("class_token", nn.initializers.zeros, (1, 1, self.hidden))
        x = jnp.concatenate([jnp.broadcast_to(class_token, (batch, 1, self.hidden)), x], axis=1)
        position = self.param(
            "position_embedding", nn.initializers.normal(stddev=0.02), (1, x.shape[1], self.hidden)
        )
        x = nn.Dropout(self.dropout_rate, deterministic=not train)(x + position)
        for index in range(self.depth):
            block = EncoderBlock(
                self.heads, self.mlp_dim, self.dropout_rate, self.activation, name=f"block_{index}"
            )
            x = block(x, None, train)
        x = nn.LayerNorm(name="final_norm")(x)
        return nn.Dense(self.num_classes, name="head")(x[:, 0])
