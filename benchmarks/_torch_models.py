"""PyTorch twins of jaxplain's zoo models, with the weights copied from Flax Linen variables.

The twins take the same NHWC (or flat) input as the Flax model and return the same
logits, so attributions from Captum and jaxplain compare element for element:

* Flax `Dense` kernels are (in, out); a torch `Linear` weight is (out, in).
* Flax `Conv` kernels are HWIO; a torch `Conv2d` weight is OIHW. A 3x3 "SAME" convolution
  with stride 1 pads one pixel on every side, which is torch's `padding=1`.
* The CNN permutes NHWC -> NCHW for its convolutions and back to NHWC before flattening,
  because Flax flattens in (h, w, c) order.
* Every activation is its own module instance: Captum's DeepLift, LRP and guided
  backprop hook modules and store per-call state on them, so a reused module breaks them.
  Reshapes and permutes are plain tensor operations, not modules, because Captum's LRP
  refuses modules it has no rule for.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

# Flax activation (by function name) -> torch module class.
ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh}


def _activation_class(function) -> type:
    name = getattr(function, "__name__", repr(function))
    if name not in ACTIVATIONS:
        raise ValueError(f"no torch twin for the activation {name!r}; known: {', '.join(ACTIVATIONS)}")
    return ACTIVATIONS[name]


def _tensor(value, dtype) -> torch.Tensor:
    return torch.tensor(np.array(value, dtype=np.float64)).to(dtype)


def _numbered(params: dict, prefix: str) -> list:
    """The submodules `prefix_0, prefix_1, ...` of a Flax params dict, in index order."""
    names = [name for name in params if name.startswith(prefix + "_")]
    return [params[name] for name in sorted(names, key=lambda name: int(name.rsplit("_", 1)[1]))]


def _copy_dense(linear: nn.Linear, flax_params: dict) -> None:
    with torch.no_grad():
        linear.weight.copy_(_tensor(flax_params["kernel"], linear.weight.dtype).T)
        linear.bias.copy_(_tensor(flax_params["bias"], linear.bias.dtype))


def _copy_conv(conv: nn.Conv2d, flax_params: dict) -> None:
    with torch.no_grad():
        kernel = _tensor(flax_params["kernel"], conv.weight.dtype)  # (H, W, I, O)
        conv.weight.copy_(kernel.permute(3, 2, 0, 1))
        conv.bias.copy_(_tensor(flax_params["bias"], conv.bias.dtype))


class TorchMLP(nn.Module):
    """flatten, (Linear, activation) per hidden layer, Linear: `jaxplain.models.MLP`."""

    def __init__(self, widths: Sequence[int], activation: type = nn.ReLU):
        super().__init__()
        self.dense = nn.ModuleList(nn.Linear(a, b) for a, b in zip(widths[:-1], widths[1:]))
        self.activations = nn.ModuleList(activation() for _ in widths[1:-1])

    def forward(self, x):
        x = x.reshape(x.shape[0], -1)
        for dense, activation in zip(self.dense, self.activations):
            x = activation(dense(x))
        return self.dense[-1](x)


class TorchSmallCNN(nn.Module):
    """`jaxplain.models.SmallCNN` on NHWC input: (3x3 conv, activation[, 2x2 max-pool])
    per entry of `channels`, flatten in (h, w, c) order, dense, activation, dense.

    `pooling` says how the max-pools are applied; it changes no value, only what Captum's
    hooks see (see `crosscheck_captum.py`):

      "module"        an `nn.MaxPool2d` reading the activation's output (the default);
      "clone_module"  an `nn.MaxPool2d` reading `activation_output.clone()`, so the pool's
                      input is a tensor of its own;
      "functional"    `F.max_pool2d`, which module hooks (DeepLift's) do not reach.
    """

    POOLINGS = ("module", "clone_module", "functional")

    def __init__(
        self,
        in_channels: int,
        channels: Sequence[int],
        pooled: Sequence[bool],
        flat: int,
        dense: int,
        num_classes: int,
        activation: type = nn.ReLU,
        pooling: str = "module",
    ):
        super().__init__()
        if pooling not in self.POOLINGS:
            raise ValueError(f"pooling must be one of {self.POOLINGS}, got {pooling!r}")
        widths = [in_channels, *channels]
        self.convs = nn.ModuleList(nn.Conv2d(a, b, 3, padding=1) for a, b in zip(widths[:-1], widths[1:]))
        self.conv_activations = nn.ModuleList(activation() for _ in channels)
        self.pooled = tuple(bool(p) for p in pooled)
        self.pools = nn.ModuleList(nn.MaxPool2d(2, stride=2) for p in self.pooled if p)
        self.hidden = nn.Linear(flat, dense)
        self.hidden_activation = activation()
        self.head = nn.Linear(dense, num_classes)
        self.pooling = pooling

    def forward(self, x):
        x = x.permute(0, 3, 1, 2)  # NHWC -> NCHW
        pools = iter(self.pools)
        for conv, activation, pooled in zip(self.convs, self.conv_activations, self.pooled):
            x = activation(conv(x))
            if pooled:
                pool = next(pools)
                if self.pooling == "functional":
                    x = F.max_pool2d(x, pool.kernel_size, pool.stride)
                else:
                    x = pool(x.clone() if self.pooling == "clone_module" else x)
        x = x.permute(0, 2, 3, 1).reshape(x.shape[0], -1)  # flatten in Flax's (h, w, c) order
        return self.head(self.hidden_activation(self.hidden(x)))


def mlp_from_flax(module, variables, *, dtype=torch.float64) -> TorchMLP:
    """A `TorchMLP` with the weights of a `jaxplain.models.MLP` and its variables."""
    params = variables["params"]
    layers = _numbered(params, "Dense")
    widths = [np.shape(layers[0]["kernel"])[0]] + [np.shape(layer["kernel"])[1] for layer in layers]
    if list(widths[1:-1]) != list(module.features):
        raise ValueError(f"variables hold hidden widths {widths[1:-1]}, the module {list(module.features)}")
    twin = TorchMLP(widths, _activation_class(module.activation)).to(dtype)
    for linear, layer in zip(twin.dense, layers):
        _copy_dense(linear, layer)
    return twin.eval()


def small_cnn_from_flax(
    module, variables, input_shape, *, dtype=torch.float64, pooling: str = "module"
) -> TorchSmallCNN:
    """A `TorchSmallCNN` with the weights of a `jaxplain.models.SmallCNN`.

    `input_shape` is one example's (height, width, channels): as in the Flax model, a
    convolution is followed by a max-pool only while its map is at least 4x4.
    """
    params = variables["params"]
    convs, dense = _numbered(params, "Conv"), _numbered(params, "Dense")
    height, width, in_channels = input_shape
    pooled = []
    for _ in convs:
        pooled.append(min(height, width) >= 4)
        if pooled[-1]:
            height, width = height // 2, width // 2
    channels = [np.shape(conv["kernel"])[3] for conv in convs]
    flat = height * width * channels[-1]
    hidden, classes = np.shape(dense[0]["kernel"])[1], np.shape(dense[1]["kernel"])[1]
    if np.shape(dense[0]["kernel"])[0] != flat:
        raise ValueError(f"the first dense layer takes {np.shape(dense[0]['kernel'])[0]} inputs, not {flat}")
    twin = TorchSmallCNN(
        in_channels, channels, pooled, flat, hidden, classes,
        _activation_class(module.activation), pooling=pooling,
    ).to(dtype)
    for conv, layer in zip(twin.convs, convs):
        _copy_conv(conv, layer)
    _copy_dense(twin.hidden, dense[0])
    _copy_dense(twin.head, dense[1])
    return twin.eval()


def from_checkpoint(checkpoint, variables=None, **options) -> nn.Module:
    """The torch twin of a loaded `jaxplain.io.Checkpoint` (architectures "mlp", "small_cnn").

    `variables` replaces the checkpoint's own (e.g. cast, or with biases zeroed);
    `options` go to the builder (`dtype`, and `pooling` for the CNN).
    """
    variables = checkpoint.variables if variables is None else variables
    architecture = checkpoint.metadata["architecture"]
    if architecture == "mlp":
        return mlp_from_flax(checkpoint.module, variables, **options)
    if architecture == "small_cnn":
        return small_cnn_from_flax(
            checkpoint.module, variables, checkpoint.metadata["input_shape"], **options
        )
    raise ValueError(f"no torch twin for architecture {architecture!r}")
