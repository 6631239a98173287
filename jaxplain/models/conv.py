"""`Conv`: `flax.linen.Conv` with faster paths for shapes that XLA's CPU convolution handles badly.

* An output side smaller than the kernel (the last stage of a ResNet-18 at 64x64): one
  matmul per kernel offset over the shifted input, each offset multiplying only the
  inputs it meets, not the padding.
* A strided convolution of few input channels (at most `cpu.SPACE_TO_DEPTH_CHANNELS` per
  s x s block, such as a ResNet's 7x7 stride-2 stem over RGB): cut into s x s blocks of
  the input (space to depth) and the kernel cut the same way, a stride-1 convolution,
  whose input gradient is no strided transposed convolution.
* A 1x1 convolution is a matmul over the channels, and `Conv` writes it as one: XLA
  rewrites it so itself, except inside a loop (the engine's `lax.scan` over chunks).
* Every other convolution goes through `conv_general_dilated` (below), whose input
  gradient XLA:CPU runs on its fast kernel inside a loop too.

`Conv` takes those paths where jaxplain tunes for XLA:CPU
(`jaxplain.backends.cpu.rewrite_convolutions`); everywhere else (GPU and TPU, or
JAXPLAIN_CPU_TUNING=off) it is `nn.Conv`. The timings behind each path are in
docs/performance.md, section "CPU tuning".
The parameters are the same (`kernel` HWIO, `bias`), so checkpoints do not change, and
the answers agree to float rounding.

Use it as a drop-in for `nn.Conv` in your own models: `from jaxplain.models import Conv`.
"""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.custom_derivatives import SymbolicZero

from jaxplain.backends import cpu

_NHWC = ("NHWC", "HWIO", "NHWC")


def conv_general_dilated(
    lhs,
    rhs,
    window_strides,
    padding,
    lhs_dilation=None,
    rhs_dilation=None,
    dimension_numbers=None,
    feature_group_count=1,
    batch_group_count=1,
    precision=None,
    preferred_element_type=None,
):
    """`jax.lax.conv_general_dilated`, with an input gradient XLA:CPU runs fast inside loops.

    XLA:CPU runs a convolution on its fast (Eigen) kernel only when its kernel is laid out
    HWIO, and it rewrites other layouts into that one only in a program's top-level
    computation. JAX writes the input gradient of an NHWC / HWIO convolution with the
    kernel read as HWOI, so inside a loop (the engine's `lax.scan` over chunks) every input
    gradient takes the slow generic kernel.

    Here the forward-mode derivative reads the kernel with its feature axes swapped
    (an HWOI view of a transposed copy), so its transpose, the input gradient, reads an
    HWIO kernel and takes the fast kernel wherever it runs (timings: docs/performance.md,
    "CPU tuning"). The value, `jax.jvp`, `vmap`, second derivatives and the kernel's
    gradient are `lax.conv_general_dilated`'s. Other layouts, grouped convolutions, other
    backends and JAXPLAIN_CPU_TUNING=off call `lax.conv_general_dilated` itself.

    Pass it to your own `flax.linen.Conv(..., conv_general_dilated=conv_general_dilated)`
    to give its gradients the same speed on the CPU.
    """
    options = dict(
        window_strides=tuple(window_strides),
        lhs_dilation=_tuple(lhs_dilation),
        rhs_dilation=_tuple(rhs_dilation),
        precision=precision,
        preferred_element_type=preferred_element_type,
        padding=padding if isinstance(padding, str) else tuple(tuple(p) for p in padding),
    )
    plain = (
        not cpu.rewrite_convolutions()
        or lhs.ndim != 4
        or feature_group_count != 1
        or batch_group_count != 1
        or jax.lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers)
        != jax.lax.conv_dimension_numbers(lhs.shape, rhs.shape, _NHWC)
    )
    if plain:
        return jax.lax.conv_general_dilated(
            lhs,
            rhs,
            dimension_numbers=dimension_numbers,
            feature_group_count=feature_group_count,
            batch_group_count=batch_group_count,
            **options,
        )
    return _canonical_conv(tuple(options.items()))(lhs, rhs)


def _tuple(value):
    return None if value is None else tuple(value)


@functools.cache
def _canonical_conv(options: tuple):
    options = dict(options)

    def conv(x, kernel):
        return jax.lax.conv_general_dilated(x, kernel, dimension_numbers=_NHWC, **options)

    def conv_jvp(primals, tangents):
        (x, kernel), (x_dot, kernel_dot) = primals, tangents
        out = conv(x, kernel)
        terms = []
        if not isinstance(x_dot, SymbolicZero):
            swapped = jnp.swapaxes(kernel, 2, 3)
            terms.append(
                jax.lax.conv_general_dilated(
                    x_dot, swapped, dimension_numbers=("NHWC", "HWOI", "NHWC"), **options
                )
            )
        if not isinstance(kernel_dot, SymbolicZero):
            terms.append(conv(x, kernel_dot))
        tangent = functools.reduce(jnp.add, terms) if terms else jnp.zeros_like(out)
        return out, tangent

    function = jax.custom_jvp(conv)
    function.defjvp(conv_jvp, symbolic_zeros=True)
    return function


def output_size(size, window, stride, pad) -> int:
    """Outputs along one axis of a window of `window` taps, stepped by `stride`, over `size`
    inputs padded by `pad` = (low, high)."""
    return (size + pad[0] + pad[1] - window) // stride + 1


def _tap_ranges(size, window, stride, pad):
    """For each tap k along one axis: (first output, end output, first input) where it meets the input."""
    low = pad[0]
    out = output_size(size, window, stride, pad)
    ranges = []
    for k in range(window):
        first = max(0, -(-(low - k) // stride))
        end = min(out, (size - 1 + low - k) // stride + 1)
        ranges.append((first, max(first, end), first * stride + k - low))
    return ranges, out


def same_padding(spatial, window, strides) -> tuple:
    """XLA's "SAME" padding as ((low, high), ...): out = ceil(in / stride), the extra at the end."""
    pads = []
    for size, k, s in zip(spatial, window, strides):
        total = max((-(-size // s) - 1) * s + k - size, 0)
        pads.append((total // 2, total - total // 2))
    return tuple(pads)


class Conv(nn.Conv):
    """`nn.Conv`, by shifted matmuls, space to depth or `conv_general_dilated` on the CPU (see the module)."""

    @nn.compact
    def __call__(self, inputs):
        path = self._cpu_path(inputs)
        if path is None:
            # nn.Conv's own body, unwrapped: through super().__call__ Flax would see a
            # second call of this module, which layer methods (one call per layer) refuse.
            return nn.Conv.__call__.__wrapped__(self, inputs)
        kh, kw = self.kernel_size
        features_in = inputs.shape[-1]
        kernel = self.param(
            "kernel", self.kernel_init, (kh, kw, features_in, self.features), self.param_dtype
        )
        dtype = self.dtype or jnp.result_type(inputs, kernel)
        x, kernel = inputs.astype(dtype), kernel.astype(dtype)
        pads = self._pads(inputs.shape[1:3])
        if path == "conv":
            out = conv_general_dilated(
                x, kernel, self._strides(), pads, dimension_numbers=_NHWC, precision=self.precision
            )
        elif path == "matmuls":
            out = self._shifted_matmuls(x, kernel, pads)
        else:
            out = self._space_to_depth(jnp.pad(x, ((0, 0),) + pads + ((0, 0),)), kernel)
        if self.use_bias:
            bias = self.param("bias", self.bias_init, (self.features,), self.param_dtype)
            out = out + bias.astype(dtype)
        return out

    def _shifted_matmuls(self, x, kernel, pads):
        """One matmul per kernel tap, over the input positions the tap meets.

        The products with the padding are skipped: each tap's term covers the block of
        outputs whose tap lands inside the input, and is padded with zeros to the output.
        """
        (kh, kw), (sh, sw) = self.kernel_size, self._strides()
        n, height, width, c = x.shape
        rows, out_h = _tap_ranges(height, kh, sh, pads[0])
        cols, out_w = _tap_ranges(width, kw, sw, pads[1])
        out = jnp.zeros((n, out_h, out_w, kernel.shape[-1]), jnp.result_type(x, kernel))
        for i, (row_lo, row_hi, row_start) in enumerate(rows):
            for j, (col_lo, col_hi, col_start) in enumerate(cols):
                if row_lo >= row_hi or col_lo >= col_hi:
                    continue
                window = jax.lax.slice(
                    x,
                    (0, row_start, col_start, 0),
                    (
                        n,
                        row_start + sh * (row_hi - row_lo - 1) + 1,
                        col_start + sw * (col_hi - col_lo - 1) + 1,
                        c,
                    ),
                    (1, sh, sw, 1),
                )
                term = jnp.dot(window, kernel[i, j], precision=self.precision)
                out = out + jnp.pad(
                    term, ((0, 0), (row_lo, out_h - row_hi), (col_lo, out_w - col_hi), (0, 0))
                )
        return out

    def _space_to_depth(self, x, kernel):
        """A stride-s convolution as a stride-1 one over s x s blocks of the padded input.

        Block (p, q) holds x[p*s : p*s + s, q*s : q*s + s] as s*s*c channels, and the
        kernel, zero-padded to a multiple of s, is cut the same way, so output (p, q) =
        sum over kernel blocks (a, b) of block (p + a, q + b) times kernel block (a, b).
        """
        kh, kw = self.kernel_size
        sh, sw = self._strides()
        n, height, width, c = x.shape
        out_h, out_w = (height - kh) // sh + 1, (width - kw) // sw + 1
        blocks_kh, blocks_kw = -(-kh // sh), -(-kw // sw)
        rows = max(-(-height // sh), blocks_kh - 1 + out_h)
        cols = max(-(-width // sw), blocks_kw - 1 + out_w)
        x = jnp.pad(x, ((0, 0), (0, rows * sh - height), (0, cols * sw - width), (0, 0)))
        x = (
            x.reshape(n, rows, sh, cols, sw, c)
            .transpose(0, 1, 3, 2, 4, 5)
            .reshape(n, rows, cols, sh * sw * c)
        )
        kernel = jnp.pad(kernel, ((0, blocks_kh * sh - kh), (0, blocks_kw * sw - kw), (0, 0), (0, 0)))
        kernel = kernel.reshape(blocks_kh, sh, blocks_kw, sw, c, -1).transpose(0, 2, 1, 3, 4, 5)
        kernel = kernel.reshape(blocks_kh, blocks_kw, sh * sw * c, -1)
        out = conv_general_dilated(
            x, kernel, (1, 1), "VALID", dimension_numbers=_NHWC, precision=self.precision
        )
        return out[:, :out_h, :out_w]

    def _pads(self, spatial):
        padding = self.padding
        if isinstance(padding, str):
            if padding == "VALID":
                return ((0, 0), (0, 0))
            return same_padding(spatial, self.kernel_size, self._strides())
        if isinstance(padding, int):
            return ((padding, padding), (padding, padding))
        return tuple((p, p) if isinstance(p, int) else tuple(p) for p in padding)

    def _strides(self):
        strides = 1 if self.strides is None else self.strides
        return (strides, strides) if isinstance(strides, int) else tuple(strides)

    def _cpu_path(self, inputs):
        """ "matmuls", "space_to_depth", "conv" or None (nn.Conv); see the module docstring."""
        if not cpu.rewrite_convolutions() or inputs.ndim != 4 or len(tuple(self.kernel_size)) != 2:
            return None
        if self.conv_general_dilated is not None or self.conv_general_dilated_cls is not None:
            return None
        if (
            self.feature_group_count != 1
            or (self.kernel_dilation not in (None, 1, (1, 1)))
            or (self.input_dilation not in (None, 1, (1, 1)))
            or self.mask is not None
        ):
            return None
        if not isinstance(self.padding, (str, int, tuple, list)) or self.padding in (
            "CIRCULAR",
            "REFLECT",
            "CAUSAL",
        ):
            return None
        pads, strides = self._pads(inputs.shape[1:3]), self._strides()
        out_h, out_w = (
            output_size(inputs.shape[1 + a], self.kernel_size[a], strides[a], pads[a]) for a in (0, 1)
        )
        if out_h < self.kernel_size[0] or out_w < self.kernel_size[1] or tuple(self.kernel_size) == (1, 1):
            return "matmuls"
        if min(strides) > 1 and inputs.shape[-1] * strides[0] * strides[1] <= cpu.SPACE_TO_DEPTH_CHANNELS:
            return "space_to_depth"
        return "conv"
