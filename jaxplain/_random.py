"""Random draws made one point at a time, for methods and metrics that never hold them all.

Point i of a randomized computation draws from `jax.random.fold_in(key, i)`: its draws do
not depend on which chunk evaluates it (so the answer does not depend on `chunk_size`),
and nothing of size (points x batch x features) is ever formed.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp


def point_keys(key, indices):
    """The key of each point index, `fold_in(key, i)`: (len(indices),) keys."""
    return jax.vmap(lambda i: jax.random.fold_in(key, i))(indices)


def point_words(key, indices, shape):
    """Random uint32 words of `shape` for each point index: (len(indices), *shape).

    Each point's draw is flat, then reshaped: under JAX's partitionable threefry a
    multi-dimensional draw compiled much slower on XLA:CPU (a (2, 4, 10) draw per point
    3.7 s, a flat one 0.45 s).
    """
    size = math.prod(shape)
    words = jax.vmap(lambda k: jax.random.bits(k, (size,), jnp.uint32))(point_keys(key, indices))
    return words.reshape(indices.shape + tuple(shape))


def uniform(words):
    """Uniform floats in [0, 1) on a grid of 2^-24, from random uint32 words."""
    return (words >> 8).astype(jnp.float32) * (2.0**-24)


def random_ranks(words):
    """Uniformly random rankings from random words (2, ..., G): each row a permutation of 0..G-1.

    The rows of 0..G-1 are sorted by random keys of two 32-bit words each, so that
    ties (which would favour the lower index) practically never occur.
    """
    order = jnp.broadcast_to(jnp.arange(words.shape[-1], dtype=jnp.int32), words.shape[1:])
    return jax.lax.sort((words[0], words[1], order), dimension=words.ndim - 2, num_keys=2)[2]


def subsets(key, indices, batch: int, groups: int, size=None):
    """(len(indices), B, G) bool: which groups each point's draw takes, per example.

    Each group independently with probability 1/2 (`size=None`), or a uniformly random
    subset of exactly `size` groups (an int, or an int array broadcastable to
    (len(indices), 1, 1)).
    """
    if size is None:
        return uniform(point_words(key, indices, (batch, groups))) < 0.5
    words = point_words(key, indices, (2, batch, groups))
    return random_ranks(jnp.moveaxis(words, 1, 0)) < size
