"""`Conv`: `flax.linen.Conv` with faster paths for two shapes that XLA's CPU convolution handles badly.

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

`Conv` takes those paths on the CPU; everywhere else (and on GPU and TPU) it is `nn.Conv`.
The parameters are the same (`kernel` HWIO, `bias`), so checkpoints do not change, and
the answers agree to float rounding.

Use it as a drop-in for `nn.Conv` in your own models: `from jaxplain.models import Conv`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import flax.linen as nn


# A strided convolution of at most this many channels per s x s block of its input takes
# the space-to-depth path on the CPU (a ResNet's 7x7 stride-2 stem over RGB: 3 * 4 = 12).
SPACE_TO_DEPTH_CHANNELS = 16


def same_padding(spatial, window, strides) -> tuple:
    """XLA's "SAME" padding as ((low, high), ...): out = ceil(in / stride), the extra at the end."""
    pads = []
    for size, k, s in zip(spatial, window, strides):
        total = max((-(-size // s) - 1) * s + k - size, 0)
        pads.append((total // 2, total - total // 2))
    return tuple(pads)


class Conv(nn.Conv):
    """`nn.Conv`, by shifted matmuls or space to depth where that is faster on the CPU (see the module)."""

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
        (top, bottom), (left, right) = self._pads(inputs.shape[1:3])
        x = jnp.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)))
        out = (self._shifted_matmuls if path == "matmuls" else self._space_to_depth)(x, kernel)
        if self.use_bias:
            bias = self.param("bias", self.bias_init, (self.features,), self.param_dtype)
            out = out + bias.astype(dtype)
        return out

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
        out = jax.lax.conv_general_dilated(x, kernel, (1, 1), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                           precision=self.precision)
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
        """"matmuls", "space_to_depth" or None (nn.Conv); see the module docstring."""
        if jax.default_backend() != "cpu" or inputs.ndim != 4 or len(tuple(self.kernel_size)) != 2:
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
        if out_h < self.kernel_size[0] or out_w < self.kernel_size[1] or tuple(self.kernel_size) == (1, 1):
            return "matmuls"
        if min(strides) > 1 and inputs.shape[-1] * strides[0] * strides[1] <= SPACE_TO_DEPTH_CHANNELS:
            return "space_to_depth"
        return None
