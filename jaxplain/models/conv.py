"""`Conv`: `flax.linen.Conv` with faster paths for two shapes that XLA's CPU convolution handles badly.

* A map of fewer positions than the kernel has taps (a 3x3 convolution on a 2x2 map): the
  whole convolution is one matmul by a (H * W * Cin) x (out_h * out_w * Cout) matrix made
  of the kernel's taps, which skips the products with the padding. For 272 maps of
  2x2x512, forward 12 ms and forward + input gradient 38 ms, against 28 and 57 ms as one
  matmul per tap (below).
* An output side smaller than the kernel: a 3x3 convolution of 512 channels on a 2x2 map
  (the last stage of a ResNet-18 at 64x64) took 70 ms for 8 images where PyTorch takes
  1.5 ms, and its input gradient as long (measured on this project's 2-core CPU, jax
  0.10.2). Written as one matmul per kernel offset over the shifted, padded input it
  takes 2.4 ms, and so does its gradient.
* A strided convolution of few input channels, such as a ResNet's 7x7 stride-2 stem over
  RGB: its input gradient is a stride-2 transposed convolution into 3 channels, 55 ms for
  64 images at 64x64. Cut into 2x2 blocks of the input (space to depth: 12 channels) and
  the kernel cut the same way (zero-padded to 8x8), it is a 4x4 stride-1 convolution:
  11 + 27 ms forward and gradient against 19 + 55 ms.

* A 1x1 convolution is a matmul over the channels, and `Conv` writes it as one: XLA
  rewrites it so itself, except inside a loop (the engine's `lax.scan` over chunks), where
  40 of InceptionV3's 1x1 input gradients stayed convolutions and its IG ran 2.5x slower.
* Every other convolution goes through `conv_general_dilated` (below), whose input
  gradient XLA:CPU runs on its fast kernel inside a loop too.

`Conv` takes those paths on the CPU; everywhere else (and on GPU and TPU) it is `nn.Conv`.
The parameters are the same (`kernel` HWIO, `bias`), so checkpoints do not change, and
the answers agree to float rounding.

Use it as a drop-in for `nn.Conv` in your own models: `from jaxplain.models import Conv`.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import flax.linen as nn
import numpy as np
from jax.custom_derivatives import SymbolicZero


# A strided convolution of at most this many channels per s x s block of its input takes
# the space-to-depth path on the CPU (a ResNet's 7x7 stride-2 stem over RGB: 3 * 4 = 12).
SPACE_TO_DEPTH_CHANNELS = 16

# A convolution over a map of fewer positions than its kernel has taps is one matmul by a
# matrix of (H * W * Cin) x (out_h * out_w * Cout) on the CPU, up to this size.
DENSE_MATRIX_BYTES = 64 << 20


_NHWC = ("NHWC", "HWIO", "NHWC")


def conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation=None, rhs_dilation=None,
                         dimension_numbers=None, feature_group_count=1, batch_group_count=1,
                         precision=None, preferred_element_type=None):
    """`jax.lax.conv_general_dilated`, with an input gradient XLA:CPU runs fast inside loops.

    XLA:CPU runs a convolution on its fast (Eigen) kernel only when its kernel is laid out
    HWIO, and it rewrites other layouts into that one only in a program's top-level
    computation. JAX writes the input gradient of an NHWC / HWIO convolution with the
    kernel read as HWOI, so inside a loop (the engine's `lax.scan` over chunks) every input
    gradient took the slow generic kernel: the gradient of two 3x3 64-channel convolutions
    over 32 16x16 maps took 44 ms per iteration in a loop against 16 ms outside it
    (this project's 2-core CPU, jax 0.10.2).

    Here the forward-mode derivative reads the kernel with its feature axes swapped
    (an HWOI view of a transposed copy), so its transpose, the input gradient, reads an
    HWIO kernel and takes the fast kernel wherever it runs: the same loop takes 14 ms per
    iteration. The value, `jax.jvp`, `vmap`, second derivatives and the kernel's gradient
    are `lax.conv_general_dilated`'s. Other layouts, grouped convolutions and other
    backends call `lax.conv_general_dilated` itself.

    Pass it to your own `flax.linen.Conv(..., conv_general_dilated=conv_general_dilated)`
    to give its gradients the same speed on the CPU.
    """
    options = dict(window_strides=tuple(window_strides), lhs_dilation=_tuple(lhs_dilation),
                   rhs_dilation=_tuple(rhs_dilation), precision=precision,
                   preferred_element_type=preferred_element_type,
                   padding=padding if isinstance(padding, str) else tuple(tuple(p) for p in padding))
    plain = (jax.default_backend() != "cpu" or lhs.ndim != 4 or feature_group_count != 1
             or batch_group_count != 1
             or jax.lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers)
             != jax.lax.conv_dimension_numbers(lhs.shape, rhs.shape, _NHWC))
    if plain:
        return jax.lax.conv_general_dilated(lhs, rhs, dimension_numbers=dimension_numbers,
                                            feature_group_count=feature_group_count,
                                            batch_group_count=batch_group_count, **options)
    return _canonical_conv(tuple(options.items()))(lhs, rhs)


def _tuple(value):
    return None if value is None else tuple(value)


@functools.lru_cache(maxsize=None)
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
            terms.append(jax.lax.conv_general_dilated(x_dot, swapped, dimension_numbers=("NHWC", "HWOI", "NHWC"),
                                                      **options))
        if not isinstance(kernel_dot, SymbolicZero):
            terms.append(conv(x, kernel_dot))
        tangent = functools.reduce(jnp.add, terms) if terms else jnp.zeros_like(out)
        return out, tangent

    function = jax.custom_jvp(conv)
    function.defjvp(conv_jvp, symbolic_zeros=True)
    return function


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
        kernel = self.param("kernel", self.kernel_init, (kh, kw, features_in, self.features), self.param_dtype)
        dtype = self.dtype or jnp.result_type(inputs, kernel)
        x, kernel = inputs.astype(dtype), kernel.astype(dtype)
        pads = self._pads(inputs.shape[1:3])
        if path == "conv":
            out = conv_general_dilated(x, kernel, self._strides(), pads, dimension_numbers=_NHWC,
                                       precision=self.precision)
        elif path == "dense":
            out = self._dense(x, kernel, pads)
        else:
            x = jnp.pad(x, ((0, 0),) + pads + ((0, 0),))
            out = (self._shifted_matmuls if path == "matmuls" else self._space_to_depth)(x, kernel)
        if self.use_bias:
            bias = self.param("bias", self.bias_init, (self.features,), self.param_dtype)
            out = out + bias.astype(dtype)
        return out

    def _dense(self, x, kernel, pads):
        """The whole convolution as one matmul: (H * W * Cin) -> (out_h * out_w * Cout).

        Block (input position, output position) of the matrix is the kernel tap that joins
        them, or zero; padding is the zero blocks. Where the map has fewer positions than
        the kernel has taps, that is less work than a matmul per tap over the padded input.
        """
        n, height, width, c = x.shape
        taps, out_h, out_w = self._taps(height, width, pads)
        blocks = jnp.concatenate([kernel.reshape(-1, c, kernel.shape[-1]),
                                  jnp.zeros((1, c, kernel.shape[-1]), kernel.dtype)])[taps]
        matrix = blocks.transpose(0, 2, 1, 3).reshape(height * width * c, out_h * out_w * kernel.shape[-1])
        out = jnp.dot(x.reshape(n, -1), matrix, precision=self.precision)
        return out.reshape(n, out_h, out_w, kernel.shape[-1])

    def _taps(self, height, width, pads):
        """(H * W, out_h * out_w) indices into the flattened kernel taps (kh * kw: none), out_h, out_w."""
        kh, kw = self.kernel_size
        sh, sw = self._strides()
        (top, bottom), (left, right) = pads
        out_h, out_w = (height + top + bottom - kh) // sh + 1, (width + left + right - kw) // sw + 1
        i = np.arange(height)[:, None, None, None] + top - sh * np.arange(out_h)[None, None, :, None]
        j = np.arange(width)[None, :, None, None] + left - sw * np.arange(out_w)[None, None, None, :]
        inside = (i >= 0) & (i < kh) & (j >= 0) & (j < kw)
        taps = np.where(inside, i * kw + j, kh * kw)
        return taps.reshape(height * width, out_h * out_w), out_h, out_w

    def _shifted_matmuls(self, x, kernel):
        """One matmul per kernel offset over the shifted (and strided) padded input."""
        kh, kw = self.kernel_size
        sh, sw = self._strides()
        out_h = (x.shape[1] - kh) // sh + 1
        out_w = (x.shape[2] - kw) // sw + 1
        out = None
        for i in range(kh):
            for j in range(kw):
                window = jax.lax.slice(x, (0, i, j, 0), (x.shape[0], i + sh * (out_h - 1) + 1,
                                                         j + sw * (out_w - 1) + 1, x.shape[3]), (1, sh, sw, 1))
                term = jnp.dot(window, kernel[i, j], precision=self.precision)
                out = term if out is None else out + term
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
        x = x.reshape(n, rows, sh, cols, sw, c).transpose(0, 1, 3, 2, 4, 5).reshape(n, rows, cols, sh * sw * c)
        kernel = jnp.pad(kernel, ((0, blocks_kh * sh - kh), (0, blocks_kw * sw - kw), (0, 0), (0, 0)))
        kernel = kernel.reshape(blocks_kh, sh, blocks_kw, sw, c, -1).transpose(0, 2, 1, 3, 4, 5)
        kernel = kernel.reshape(blocks_kh, blocks_kw, sh * sw * c, -1)
        out = conv_general_dilated(x, kernel, (1, 1), "VALID", dimension_numbers=_NHWC, precision=self.precision)
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
        """"dense", "matmuls", "space_to_depth", "conv" or None (nn.Conv); see the module docstring."""
        if jax.default_backend() != "cpu" or inputs.ndim != 4 or len(tuple(self.kernel_size)) != 2:
            return None
        if self.conv_general_dilated is not None or self.conv_general_dilated_cls is not None:
            return None
        if self.feature_group_count != 1 or (self.kernel_dilation not in (None, 1, (1, 1))) \
                or (self.input_dilation not in (None, 1, (1, 1))) or self.mask is not None:
            return None
        if not isinstance(self.padding, (str, int, tuple, list)) or self.padding in ("CIRCULAR", "REFLECT", "CAUSAL"):
            return None
        (top, bottom), (left, right) = self._pads(inputs.shape[1:3])
        strides = self._strides()
        out_h = (inputs.shape[1] + top + bottom - self.kernel_size[0]) // strides[0] + 1
        out_w = (inputs.shape[2] + left + right - self.kernel_size[1]) // strides[1] + 1
        positions, taps = inputs.shape[1] * inputs.shape[2], self.kernel_size[0] * self.kernel_size[1]
        matrix_bytes = positions * out_h * out_w * inputs.shape[-1] * self.features * 4
        if positions < taps and tuple(self.kernel_size) != (1, 1) and matrix_bytes <= DENSE_MATRIX_BYTES:
            return "dense"
        if out_h < self.kernel_size[0] or out_w < self.kernel_size[1] or tuple(self.kernel_size) == (1, 1):
            return "matmuls"
        if min(strides) > 1 and inputs.shape[-1] * strides[0] * strides[1] <= SPACE_TO_DEPTH_CHANNELS:
            return "space_to_depth"
        return "conv"
