"""`max_pool`: `flax.linen.max_pool` with a fast gradient for non-overlapping windows on the CPU.

XLA computes the gradient of a max-pool (`reduce_window_max`) with `select_and_scatter`,
which is slow on the CPU: for the digits CNN of the zoo (two 2x2 pools), the input gradient
of 1024 images takes 90 ms with it and 28 ms when the pools' gradient is a mask of each
window's maximum (measured on this project's 2-core CPU, jax 0.10.2); the forward pass
costs 6 ms either way. Where the windows do not overlap (strides equal to the window,
no padding), `max_pool` keeps `reduce_window_max` as its value and gives it that mask as
its derivative (a `jax.custom_jvp`, so forward mode, `vmap` and reverse mode all take it).
Ties go to the first maximum of a window in row-major order, as in XLA's and PyTorch's
max-pool gradients. Elsewhere (overlapping windows, padding, GPU and TPU) it is
`nn.max_pool`.

jaxplain's modified-gradient methods see the same `reduce_window_max` inside the function,
so DeepLIFT's max-pool rule applies to it unchanged.

Use it in your own models in place of `nn.max_pool`: `from jaxplain.models import max_pool`.
"""

from __future__ import annotations

import functools
from typing import Sequence

import jax
import jax.numpy as jnp
import flax.linen as nn


def max_pool(x, window_shape: Sequence[int], strides: Sequence[int] | None = None, padding="VALID"):
    """`nn.max_pool(x, window_shape, strides, padding)`, with the fast CPU gradient where it applies.

    Args:
      x: `(batch, *spatial, features)` (or without the batch axis, as `nn.max_pool`).
      window_shape: the window's size along each spatial axis.
      strides: the step along each spatial axis (default: 1, as `nn.max_pool`).
      padding: "VALID", "SAME" or explicit `(low, high)` pairs, as `nn.max_pool`.
    """
    window_shape = tuple(int(w) for w in window_shape)
    strides = tuple(int(s) for s in strides) if strides is not None else (1,) * len(window_shape)
    if not _non_overlapping(x, window_shape, strides, padding):
        return nn.max_pool(x, window_shape, strides=strides, padding=padding)
    return _tiled_max(x, window_shape)


def _non_overlapping(x, window_shape, strides, padding) -> bool:
    if jax.default_backend() != "cpu" or strides != window_shape or x.ndim != len(window_shape) + 2:
        return False
    valid = padding == "VALID" or (not isinstance(padding, str)
                                   and all(tuple(p) == (0, 0) for p in padding))
    return valid and jnp.issubdtype(x.dtype, jnp.floating)


@functools.partial(jax.custom_jvp, nondiff_argnums=(1,))
def _tiled_max(x, window_shape):
    return nn.max_pool(x, window_shape, strides=window_shape, padding="VALID")


@_tiled_max.defjvp
def _tiled_max_jvp(window_shape, primals, tangents):
    (x,), (t,) = primals, tangents
    mask, shape = _first_maximum(x, window_shape)
    out = _tiled_max(x, window_shape)
    cropped = _crop(t, window_shape).reshape(shape)
    axes = tuple(range(2, len(shape) - 1, 2))
    return out, jnp.sum(jnp.where(mask, cropped, 0), axis=axes)


def _crop(x, window_shape):
    """The part of x that whole windows cover (as VALID pooling drops the rest)."""
    ends = [(size // w) * w for size, w in zip(x.shape[1:-1], window_shape)]
    return x[(slice(None),) + tuple(slice(0, e) for e in ends) + (slice(None),)]


def _first_maximum(x, window_shape):
    """A mask of each window's first maximum (row-major), on the (batch, n1, w1, n2, w2, ..., c) view."""
    cropped = _crop(x, window_shape)
    shape = [cropped.shape[0]]
    for size, w in zip(cropped.shape[1:-1], window_shape):
        shape += [size // w, w]
    shape.append(cropped.shape[-1])
    tiles = cropped.reshape(shape)
    axes = tuple(range(2, len(shape) - 1, 2))
    top = jnp.max(tiles, axis=axes, keepdims=True)
    # Position of each element inside its window, row-major, broadcast over the view.
    position = jnp.zeros([1] * len(shape), jnp.int32)
    stride = 1
    for axis, w in reversed(list(zip(axes, window_shape))):
        index = jax.lax.broadcasted_iota(jnp.int32, [w if a == axis else 1 for a in range(len(shape))], axis)
        position = position + index * stride
        stride *= w
    candidate = jnp.where(tiles == top, position, stride)
    first = jnp.min(candidate, axis=axes, keepdims=True)
    return position == first, shape
