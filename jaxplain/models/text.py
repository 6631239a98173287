"""A small transformer encoder for sequence classification."""

from __future__ import annotations

from collections.abc import Callable

import flax.linen as nn
import jax.numpy as jnp


class EncoderBlock(nn.Module):
    """A pre-LayerNorm transformer encoder block: x + attention(norm(x)), then x + mlp(norm(x)).

    Attributes:
      num_heads: the number of attention heads.
      mlp_dim: the hidden width of the MLP.
      dropout_rate: the dropout probability on attention weights and on both
        residual branches (training only).
      activation: the MLP nonlinearity.
    """

    num_heads: int
    mlp_dim: int
    dropout_rate: float = 0.1
    activation: Callable = nn.gelu

    @nn.compact
    def __call__(self, x, attention_mask, train: bool = False):
        deterministic = not train
        y = nn.MultiHeadDotProductAttention(
            self.num_heads, dropout_rate=self.dropout_rate, deterministic=deterministic
        )(nn.LayerNorm()(x), mask=attention_mask)
        x = x + nn.Dropout(self.dropout_rate, deterministic=deterministic)(y)
        y = self.activation(nn.Dense(self.mlp_dim)(nn.LayerNorm()(x)))
        y = nn.Dropout(self.dropout_rate, deterministic=deterministic)(y)
        y = nn.Dense(x.shape[-1])(y)
        return x + nn.Dropout(self.dropout_rate, deterministic=deterministic)(y)


class TextClassifier(nn.Module):
    """A transformer encoder that classifies token sequences.

    Token embedding, learned position embedding, `num_layers` pre-LayerNorm encoder
    blocks, a final LayerNorm, the mean over valid positions and a dense layer.
    Padding is handled by a validity mask: padded positions are never attended to and
    are left out of the mean, so they do not change the logits.

    The forward pass is split so that attribution methods can work on the continuous
    token embeddings (Integrated Gradients interpolates embeddings, not token ids):

      embeddings = module.apply(variables, tokens, method="embed")
      logits = module.apply(variables, embeddings, mask, method="logits_from_embeddings")

    and `module.apply(variables, tokens)` does both with `mask = tokens != pad_id`.

    Attributes:
      vocab_size: the number of token ids.
      num_classes: the number of output logits.
      max_length: the longest sequence accepted (the number of positions embedded).
      embed_dim: the width of the embeddings and of the encoder.
      num_layers: the number of encoder blocks.
      num_heads: the number of attention heads; must divide `embed_dim`.
      mlp_dim: the hidden width of each block's MLP.
      dropout_rate: the dropout probability (training only; draws from the "dropout"
        rng collection).
      activation: the MLP nonlinearity.
      pad_id: the token id marking padding in `__call__`.

    References:
      Vaswani, Shazeer, Parmar, Uszkoreit, Jones, Gomez, Kaiser, Polosukhin.
      Attention Is All You Need. arXiv:1706.03762, 2017.
      Xiong, Yang, He, Zheng, Zheng, Xing, Zhang, Lan, Wang, Liu. On Layer
      Normalization in the Transformer Architecture. arXiv:2002.04745, 2020.
    """

    vocab_size: int
    num_classes: int
    max_length: int
    embed_dim: int = 64
    num_layers: int = 1
    num_heads: int = 4
    mlp_dim: int = 128
    dropout_rate: float = 0.1
    activation: Callable = nn.gelu
    pad_id: int = 0

    def setup(self):
        self.token_embedding = nn.Embed(self.vocab_size, self.embed_dim)
        self.position_embedding = self.param(
            "position_embedding", nn.initializers.normal(stddev=0.02), (self.max_length, self.embed_dim)
        )
        self.embedding_dropout = nn.Dropout(self.dropout_rate)
        self.blocks = [
            EncoderBlock(self.num_heads, self.mlp_dim, self.dropout_rate, self.activation)
            for _ in range(self.num_layers)
        ]
        self.final_norm = nn.LayerNorm()
        self.head = nn.Dense(self.num_classes)

    def embed(self, tokens):
        """Returns the token embeddings `(batch, length, embed_dim)`, without positions."""
        return self.token_embedding(tokens)

    def logits_from_embeddings(self, embeddings, mask=None, train: bool = False):
        """Returns logits `(batch, num_classes)` from token embeddings.

        Args:
          embeddings: `(batch, length, embed_dim)`, as returned by `embed`.
          mask: `(batch, length)` bool, True at valid tokens; None means all valid.
          train: apply dropout.

        Returns:
          Logits `(batch, num_classes)`.
        """
        x, mask = self.states_from_embeddings(embeddings, mask, train)
        weights = mask[..., None].astype(x.dtype)
        pooled = jnp.sum(x * weights, axis=1) / jnp.maximum(jnp.sum(weights, axis=1), 1.0)
        return self.head(pooled)

    def states_from_embeddings(self, embeddings, mask=None, train: bool = False):
        """Returns the encoder's token states `(batch, length, embed_dim)` and the mask.

        Everything `logits_from_embeddings` computes before pooling: positions, the
        encoder blocks and the final LayerNorm. `mask` is returned as bool `(batch,
        length)` (all True when None).
        """
        batch, length, _ = embeddings.shape
        if length > self.max_length:
            raise ValueError(f"embeddings has length {length}, more than max_length={self.max_length}")
        mask = jnp.ones((batch, length), bool) if mask is None else mask.astype(bool)
        x = embeddings + self.position_embedding[:length]
        x = self.embedding_dropout(x, deterministic=not train)
        # Masking keys only: every query, padded or not, still has valid keys to attend
        # to, so no softmax row is empty.
        attention_mask = nn.make_attention_mask(jnp.ones_like(mask), mask)
        for block in self.blocks:
            x = block(x, attention_mask, train)
        return self.final_norm(x), mask

    def states(self, tokens):
        """Token states and validity mask for token ids: the encoder without its head."""
        return self.states_from_embeddings(self.embed(tokens), mask=tokens != self.pad_id)

    def __call__(self, tokens, train: bool = False):
        """Returns logits `(batch, num_classes)` for token ids `(batch, length)`."""
        return self.logits_from_embeddings(self.embed(tokens), mask=tokens != self.pad_id, train=train)
