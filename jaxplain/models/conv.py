"""`Conv`: `flax.linen.Conv` with a fast path for small feature maps on the CPU.

XLA's CPU convolution is pathologically slow when a kernel is as large as the map it
slides over: a 3x3 convolution of 512 channels on a 2x2 map (the last stage of a
ResNet-18 at 64x64) takes 70 ms for 8 images where PyTorch takes 1.5 ms, and its input
gradient as long (measured on this project's 2-core CPU, jax 0.10.2). The same
convolution written as one matmul per kernel offset over the shifted, padded input takes
2.4 ms, and so does its gradient. `Conv` takes that path on the CPU when an output side
is smaller than the kernel's; everywhere else (and on GPU and TPU) it is `nn.Conv`. The
parameters are the same (`kernel` HWIO, `bias`), so checkpoints do not change, and the
answers agree to float rounding.

Use it as a drop-in for `nn.Conv` in your own models: `from jaxplain.models import Conv`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import flax.linen as nn


class Conv(nn.Conv):
    """`nn.Conv`, computed by shifted matmuls for small outputs on the CPU (see the module)."""

    @nn.compact
    def __call__(self, inputs):
        if not self._small_on_cpu(inputs):
            # nn.Conv's own body, unwrapped: through super().__call__ Flax would see a
            # second call of this module, which layer methods (one call per layer) refuse.
            return nn.Conv.__call__.__wrapped__(self, inputs)
        kh, kw = self.kernel_size
        sh, sw = self._strides()
        features_in = inputs.shape[-1]
        kernel = self.param("kernel", self.kernel_init, (kh, kw, features_in, self.features), self.param_dtype)
        dtype = self.dtype or jnp.result_type(inputs, kernel)
        x, kernel = inputs.astype(dtype), kernel.astype(dtype)
        (top, bottom), (left, right) = self._pads(inputs.shape[1:3])
        x = jnp.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)))
        out_h = (x.shape[1] - kh) // sh + 1
        out_w = (x.shape[2] - kw) // sw + 1
        out = None
        for i in range(kh):
            for j in range(kw):
                window = jax.lax.slice(x, (0, i, j, 0), (x.shape[0], i + sh * (out_h - 1) + 1,
                                                         j + sw * (out_w - 1) + 1, x.shape[3]), (1, sh, sw, 1))
                term = jnp.dot(window, kernel[i, j], precision=self.precision)
                out = term if out is None else out + term
        if self.use_bias:
            bias = self.param("bias", self.bias_init, (self.features,), self.param_dtype)
            out = out + bias.astype(dtype)
        return out

    def _pads(self, spatial):
        padding = self.padding
        if isinstance(padding, str):
            if padding == "VALID":
                return ((0, 0), (0, 0))
            # "SAME": total padding so that out = ceil(in / stride), the extra at the end
            pads = []
            for size, k, s in zip(spatial, self.kernel_size, self._strides()):
                out = -(-size // s)
                total = max((out - 1) * s + k - size, 0)
                pads.append((total // 2, total - total // 2))
            return tuple(pads)
        if isinstance(padding, int):
            return ((padding, padding), (padding, padding))
        return tuple((p, p) if isinstance(p, int) else tuple(p) for p in padding)

    def _strides(self):
        strides = 1 if self.strides is None else self.strides
        return (strides, strides) if isinstance(strides, int) else tuple(strides)

    def _small_on_cpu(self, inputs) -> bool:
        if jax.default_backend() != "cpu" or inputs.ndim != 4 or len(tuple(self.kernel_size)) != 2:
            return False
        if self.feature_group_count != 1 or (self.kernel_dilation not in (None, 1, (1, 1))) \
                or (self.input_dilation not in (None, 1, (1, 1))) or self.mask is not None:
            return False
        if not isinstance(self.padding, (str, int, tuple, list)) or self.padding in ("CIRCULAR", "REFLECT", "CAUSAL"):
            return False
        (top, bottom), (left, right) = self._pads(inputs.shape[1:3])
        strides = self._strides()
        out_h = (inputs.shape[1] + top + bottom - self.kernel_size[0]) // strides[0] + 1
        out_w = (inputs.shape[2] + left + right - self.kernel_size[1]) // strides[1] + 1
        return out_h < self.kernel_size[0] or out_w < self.kernel_size[1]
