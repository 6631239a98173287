"""`max_pool`: `flax.linen.max_pool` with a fast derivative on the CPU.

XLA differentiates a max-pool (`reduce_window_max`) with `select_and_scatter`, which is
slow on the CPU (timings: docs/performance.md, section "CPU tuning").

`max_pool` keeps `reduce_window_max` as its value and gives it its own derivative (a
`jax.custom_jvp`, so forward mode, `vmap` and reverse mode all take it); where it is
differentiated, the value is the maximum of the same slices the derivative reads. The derivative
is written in the polyphase form of the pool: the padded input is split into its
`strides` phases (x[a::s, b::s]), and the window element (i, j) of every output is the
contiguous slice of phase (i % s, j % s) starting at (i // s, j // s). The tangent of the
output is the sum, over the window's elements, of those slices of the tangent where the
element is its window's first maximum (row-major order, the tie rule of XLA's and
PyTorch's max-pool gradients). Its transpose, the gradient, is then a sum of padded
output-sized arrays per phase and one interleave, with no scatter.

Elsewhere (GPU and TPU, JAXPLAIN_CPU_TUNING=off: `jaxplain.backends.cpu.polyphase_max_pool`;
integer inputs, other than two spatial axes) it is `nn.max_pool`.
jaxplain's modified-gradient methods see the same `reduce_window_max` inside the
function, so DeepLIFT's max-pool rule applies unchanged.

Use it in your own models in place of `nn.max_pool`: `from jaxplain.models import max_pool`.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxplain.backends import cpu
from jaxplain.models.conv import output_size, same_padding


def max_pool(x, window_shape: Sequence[int], strides: Sequence[int] | None = None, padding="VALID"):
    """`nn.max_pool(x, window_shape, strides, padding)`, with the fast CPU derivative where it applies.

    Args:
      x: `(batch, height, width, features)` (other ranks go to `nn.max_pool`).
      window_shape: the window's (height, width).
      strides: the step along each spatial axis (default: 1, as `nn.max_pool`).
      padding: "VALID", "SAME" or explicit `(low, high)` pairs, as `nn.max_pool`.
    """
    window = _sizes("window_shape", window_shape)
    strides = _sizes("strides", strides) if strides is not None else (1,) * len(window)
    if len(strides) != len(window):
        raise ValueError(f"strides {strides} must have one step per window axis, {window}")
    if isinstance(padding, str) and padding not in ("VALID", "SAME", "SAME_LOWER"):
        # lax would raise a RuntimeError from inside reduce_window
        raise ValueError(
            f"padding must be 'VALID', 'SAME', 'SAME_LOWER' or (low, high) pairs, got {padding!r}"
        )
    pads = _explicit_padding(x, window, strides, padding)
    if pads is None or not cpu.polyphase_max_pool():
        return nn.max_pool(x, window, strides=strides, padding=padding)
    return _pool(x, window, strides, pads)


def _sizes(name: str, value) -> tuple:
    """Window sizes or strides: a sequence of ints >= 1 (checked here, not by reduce_window)."""
    if (
        isinstance(value, (str, bytes))
        or not hasattr(value, "__iter__")
        or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in value)
    ):
        raise TypeError(f"{name} must be a sequence of ints, e.g. (2, 2), got {value!r}")
    if not value or min(value) < 1:
        raise ValueError(f"{name} must be >= 1 on every axis, got {tuple(value)}")
    return tuple(int(v) for v in value)


def _explicit_padding(x, window, strides, padding):
    """((top, bottom), (left, right)) where the fast path applies, else None."""
    if x.ndim != 4 or len(window) != 2 or len(strides) != 2 or not jnp.issubdtype(x.dtype, jnp.floating):
        return None
    if padding == "VALID":
        return ((0, 0), (0, 0))
    if padding == "SAME":
        return same_padding(x.shape[1:3], window, strides)
    if isinstance(padding, str):
        return None
    pads = tuple(tuple(int(p) for p in pair) for pair in padding)
    return pads if len(pads) == 2 and all(len(p) == 2 and min(p) >= 0 for p in pads) else None


@functools.partial(jax.custom_jvp, nondiff_argnums=(1, 2, 3))
def _pool(x, window, strides, pads):
    return nn.max_pool(x, window, strides=strides, padding=pads)


@_pool.defjvp
def _pool_jvp(window, strides, pads, primals, tangents):
    (x,), (t,) = primals, tangents
    shape = (
        x.shape[0],
        *(output_size(x.shape[1 + a], window[a], strides[a], pads[a]) for a in (0, 1)),
        x.shape[3],
    )
    x_windows = _window_elements(x, window, strides, pads, shape, -jnp.inf)
    # The value from the same slices: one pass over the phases that the derivative reads
    # anyway, faster than `reduce_window_max` for it (docs/performance.md, "CPU tuning").
    out = functools.reduce(jnp.maximum, x_windows)
    t_windows = _window_elements(t, window, strides, pads, out.shape, 0)
    taken = jnp.zeros(out.shape, bool)
    tangent = jnp.zeros(out.shape, t.dtype)
    for element, element_tangent in zip(x_windows, t_windows):
        first = (element == out) & ~taken
        taken = taken | first
        tangent = tangent + jnp.where(first, element_tangent, 0)
    return out, tangent


def _window_elements(x, window, strides, pads, out_shape, fill):
    """For each window element (i, j), row-major: the (batch, out_h, out_w, c) values it takes."""
    (kh, kw), (sh, sw) = window, strides
    out_h, out_w = out_shape[1:3]
    # Phase rows / columns: enough for every slice, and the padded input cut into whole phases.
    rows = max(-(-(x.shape[1] + sum(pads[0])) // sh), (kh - 1) // sh + out_h)
    cols = max(-(-(x.shape[2] + sum(pads[1])) // sw), (kw - 1) // sw + out_w)
    (top, _), (left, _) = pads
    bottom = rows * sh - x.shape[1] - top
    right = cols * sw - x.shape[2] - left
    padded = jnp.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)), constant_values=fill)
    phases = padded.reshape(x.shape[0], rows, sh, cols, sw, x.shape[3])
    elements = []
    for i in range(kh):
        for j in range(kw):
            phase = phases[:, :, i % sh, :, j % sw, :]
            elements.append(
                jax.lax.slice(
                    phase,
                    (0, i // sh, j // sw, 0),
                    (x.shape[0], i // sh + out_h, j // sw + out_w, x.shape[3]),
                )
            )
    return elements
