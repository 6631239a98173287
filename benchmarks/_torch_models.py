"""PyTorch twins of jaxplain's zoo models, with the weights copied from Flax Linen variables.

The MLP and CNN twins take the same NHWC (or flat) input as the Flax model, the ResNet
and Inception-v3 twins NCHW input (see below), and all return the same logits, so
attributions from Captum and jaxplain compare element for element:

* Flax `Dense` kernels are (in, out); a torch `Linear` weight is (out, in).
* Flax `Conv` kernels are HWIO; a torch `Conv2d` weight is OIHW. A 3x3 "SAME" convolution
  with stride 1 pads one pixel on every side, which is torch's `padding=1`.
* The CNN permutes NHWC -> NCHW for its convolutions and back to NHWC before flattening,
  because Flax flattens in (h, w, c) order.
* The ResNet and Inception-v3 twins (`resnet_from_flax`, `inception_from_flax`) take NCHW
  input, as torch image models do (or NHWC with `channels_last=True`); their BatchNorm
  layers are `nn.BatchNorm2d` in eval mode holding Flax's `batch_stats` and epsilon.
  Those Flax models pad every convolution and pool explicitly and symmetrically
  (k // 2, or Inception's torch-style paddings), never "SAME", so torch's `padding=`
  reproduces them exactly.
* Every activation is its own module instance: Captum's DeepLift, LRP and guided
  backprop hook modules and store per-call state on them, so a reused module breaks them.
  Reshapes and permutes are plain tensor operations, not modules, because Captum's LRP
  refuses modules it has no rule for.
"""

from __future__ import annotations

from collections.abc import Sequence

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
        if conv.bias is not None:
            conv.bias.copy_(_tensor(flax_params["bias"], conv.bias.dtype))


def _copy_batch_norm(norm: nn.BatchNorm2d, flax_params: dict, flax_stats: dict) -> None:
    """Flax BatchNorm `scale`/`bias` (params) and `mean`/`var` (batch_stats) -> BatchNorm2d."""
    with torch.no_grad():
        norm.weight.copy_(_tensor(flax_params["scale"], norm.weight.dtype))
        norm.bias.copy_(_tensor(flax_params["bias"], norm.bias.dtype))
        norm.running_mean.copy_(_tensor(flax_stats["mean"], norm.running_mean.dtype))
        norm.running_var.copy_(_tensor(flax_stats["var"], norm.running_var.dtype))


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
        in_channels,
        channels,
        pooled,
        flat,
        hidden,
        classes,
        _activation_class(module.activation),
        pooling=pooling,
    ).to(dtype)
    for conv, layer in zip(twin.convs, convs):
        _copy_conv(conv, layer)
    _copy_dense(twin.hidden, dense[0])
    _copy_dense(twin.head, dense[1])
    return twin.eval()


# --- ResNet and Inception-v3 --------------------------------------------------------------


class TorchConvBN(nn.Module):
    """Convolution without bias, BatchNorm2d and (unless `activation` is None) the activation.

    Flax's `momentum=0.9` (the weight of the old running average) is torch's `momentum=0.1`;
    it only matters in training mode, and the twins are returned in eval mode.
    """

    def __init__(self, in_channels, out_channels, kernel, stride=1, padding=0, activation=None, eps=1e-5):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel, stride=stride, padding=padding, bias=False)
        self.bn = nn.BatchNorm2d(out_channels, eps=eps, momentum=0.1)
        self.activation = activation() if activation is not None else None

    def forward(self, x):
        x = self.bn(self.conv(x))
        return x if self.activation is None else self.activation(x)


def _conv_bn(conv_params, bn_params, bn_stats, *, stride, padding, activation, eps, dtype) -> TorchConvBN:
    """A `TorchConvBN` in `dtype`, shaped by a Flax conv kernel (H, W, I, O), holding the
    Flax conv kernel, BatchNorm scale/bias and running mean/var (copied after the cast, so
    float64 weights never pass through float32)."""
    height, width, in_channels, out_channels = np.shape(conv_params["kernel"])
    layer = TorchConvBN(in_channels, out_channels, (height, width), stride, padding, activation, eps).to(
        dtype
    )
    _copy_conv(layer.conv, conv_params)
    _copy_batch_norm(layer.bn, bn_params, bn_stats)
    return layer


def _linear(flax_params: dict, dtype) -> nn.Linear:
    linear = nn.Linear(*np.shape(flax_params["kernel"])).to(dtype)
    _copy_dense(linear, flax_params)
    return linear


class _ChannelsFirst(nn.Module):
    """A base for the image twins: NCHW input, or NHWC permuted to NCHW when `channels_last`."""

    def _to_nchw(self, x):
        return x.permute(0, 3, 1, 2) if self.channels_last else x


class TorchResNetBlock(nn.Module):
    """`jaxplain.models.resnet.BasicBlock` or `BottleneckBlock`: the ConvBNs in `layers`
    (activation after all but the last), an optional projection shortcut, the sum and the
    activation. The stride sits where Flax puts it (first 3x3, or the bottleneck's 3x3)."""

    def __init__(self, layers: Sequence[TorchConvBN], shortcut: TorchConvBN | None, activation: type):
        super().__init__()
        self.layers = nn.ModuleList(layers)
        self.shortcut = shortcut
        self.activation = activation()

    def forward(self, x):
        y = x
        for layer in self.layers:
            y = layer(y)
        return self.activation(y + (x if self.shortcut is None else self.shortcut(x)))


class TorchResNet(_ChannelsFirst):
    """`jaxplain.models.ResNet` (v1.5) on NCHW input (NHWC when `channels_last`).

    `stem` is a ConvBN with activation; `stem_pool` the "imagenet" stem's 3x3 stride-2
    max-pool with one pixel of (-inf) padding, or None for the "small" stem; `stages` a
    list of `nn.Sequential` of blocks; then global average pool and `head`.
    """

    def __init__(self, stem, stem_pool, stages, head: nn.Linear, channels_last: bool = False):
        super().__init__()
        self.stem = stem
        self.stem_pool = stem_pool
        self.stages = nn.ModuleList(stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = head
        self.channels_last = channels_last

    def forward(self, x):
        x = self.stem(self._to_nchw(x))
        if self.stem_pool is not None:
            x = self.stem_pool(x)
        for stage in self.stages:
            x = stage(x)
        return self.head(self.pool(x).reshape(x.shape[0], -1))


def resnet_from_flax(module, variables, *, dtype=torch.float32, channels_last: bool = False) -> TorchResNet:
    """An eval-mode `TorchResNet` with the weights of a `jaxplain.models.ResNet`
    (ResNet18, ResNet50, or any `stage_sizes`, `block`, `stem`, `num_filters`).

    `variables` is the full dict (`params` and `batch_stats`). The twin's forward takes
    NCHW images (NHWC when `channels_last`) and returns the logits of
    `module.apply(variables, x_nhwc, train=False)`. Projection shortcuts are built where
    the variables hold one (`shortcut_conv`), which is where Flax made one.
    """
    params, stats = variables["params"], variables["batch_stats"]
    activation = _activation_class(module.activation)
    if module.block not in ("basic", "bottleneck"):
        raise ValueError(f"block must be 'basic' or 'bottleneck', got {module.block!r}")

    def conv_bn(conv_params, bn_params, bn_stats, stride, act):
        # Flax pads k // 2 on both sides (never "SAME"): torch's symmetric padding
        padding = np.shape(conv_params["kernel"])[0] // 2
        return _conv_bn(
            conv_params,
            bn_params,
            bn_stats,
            stride=stride,
            padding=padding,
            activation=act,
            eps=1e-5,
            dtype=dtype,
        )

    imagenet = module.stem == "imagenet"
    stem = conv_bn(params["stem_conv"], params["stem_bn"], stats["stem_bn"], 2 if imagenet else 1, activation)
    stem_pool = nn.MaxPool2d(3, stride=2, padding=1) if imagenet else None
    stages = []
    for stage, size in enumerate(module.stage_sizes):
        blocks = []
        for index in range(size):
            name = f"stage{stage + 1}_block{index + 1}"
            block_params, block_stats = params[name], stats[name]
            strides = 2 if stage > 0 and index == 0 else 1
            convs = _numbered(block_params, "Conv")
            norms = _numbered(block_params, "BatchNorm")
            norm_stats = _numbered(block_stats, "BatchNorm")
            # the strided convolution: the basic block's first, the bottleneck's second (v1.5)
            strided = 0 if module.block == "basic" else 1
            layers = [
                conv_bn(c, n, s, strides if i == strided else 1, activation if i < len(convs) - 1 else None)
                for i, (c, n, s) in enumerate(zip(convs, norms, norm_stats))
            ]
            shortcut = None
            if "shortcut_conv" in block_params:
                shortcut = conv_bn(
                    block_params["shortcut_conv"],
                    block_params["shortcut_bn"],
                    block_stats["shortcut_bn"],
                    strides,
                    None,
                )
            blocks.append(TorchResNetBlock(layers, shortcut, activation))
        stages.append(nn.Sequential(*blocks))
    twin = TorchResNet(stem, stem_pool, stages, _linear(params["head"], dtype), channels_last=channels_last)
    return twin.eval()


class _InceptionBlock(nn.Module):
    """Builds the named ConvBNs of one Flax Inception block from its variables."""

    def __init__(self, params: dict, stats: dict, activation: type, dtype):
        super().__init__()
        self._flax = (params, stats, activation, dtype)

    def _add(self, name, stride=1, padding=0) -> None:
        params, stats, activation, dtype = self._flax
        setattr(self, name, _inception_conv_bn(params, stats, name, stride, padding, activation, dtype))

    def _finish(self) -> None:
        del self._flax  # the module holds torch parameters only


def _inception_conv_bn(params, stats, name, stride, padding, activation, dtype) -> TorchConvBN:
    """`jaxplain.models.inception.ConvBN` named `name`: BatchNorm epsilon 1e-3, and the
    torch-style symmetric `padding` the Flax code passes explicitly."""
    return _conv_bn(
        params[name]["Conv_0"],
        params[name]["BatchNorm_0"],
        stats[name]["BatchNorm_0"],
        stride=stride,
        padding=padding,
        activation=activation,
        eps=1e-3,
        dtype=dtype,
    )


def _average_pool() -> nn.AvgPool2d:
    # Flax: 3x3, stride 1, one pixel of zeros counted in the mean (count_include_pad=True)
    return nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=True)


class TorchInceptionA(_InceptionBlock):
    def __init__(self, params, stats, activation, dtype):
        super().__init__(params, stats, activation, dtype)
        self._add("branch1x1")
        self._add("branch5x5_1")
        self._add("branch5x5_2", padding=2)
        self._add("branch3x3dbl_1")
        self._add("branch3x3dbl_2", padding=1)
        self._add("branch3x3dbl_3", padding=1)
        self.avg_pool = _average_pool()
        self._add("branch_pool")
        self._finish()

    def forward(self, x):
        branch5x5 = self.branch5x5_2(self.branch5x5_1(x))
        branch3x3dbl = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        branch_pool = self.branch_pool(self.avg_pool(x))
        return torch.cat([self.branch1x1(x), branch5x5, branch3x3dbl, branch_pool], dim=1)


class TorchInceptionB(_InceptionBlock):
    def __init__(self, params, stats, activation, dtype):
        super().__init__(params, stats, activation, dtype)
        self._add("branch3x3", stride=2)
        self._add("branch3x3dbl_1")
        self._add("branch3x3dbl_2", padding=1)
        self._add("branch3x3dbl_3", stride=2)
        self.max_pool = nn.MaxPool2d(3, stride=2)  # Flax's default "VALID": no padding
        self._finish()

    def forward(self, x):
        branch3x3dbl = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return torch.cat([self.branch3x3(x), branch3x3dbl, self.max_pool(x)], dim=1)


class TorchInceptionC(_InceptionBlock):
    def __init__(self, params, stats, activation, dtype):
        super().__init__(params, stats, activation, dtype)
        self._add("branch1x1")
        self._add("branch7x7_1")
        self._add("branch7x7_2", padding=(0, 3))
        self._add("branch7x7_3", padding=(3, 0))
        self._add("branch7x7dbl_1")
        self._add("branch7x7dbl_2", padding=(3, 0))
        self._add("branch7x7dbl_3", padding=(0, 3))
        self._add("branch7x7dbl_4", padding=(3, 0))
        self._add("branch7x7dbl_5", padding=(0, 3))
        self.avg_pool = _average_pool()
        self._add("branch_pool")
        self._finish()

    def forward(self, x):
        branch7x7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        branch7x7dbl = x
        for name in (
            "branch7x7dbl_1",
            "branch7x7dbl_2",
            "branch7x7dbl_3",
            "branch7x7dbl_4",
            "branch7x7dbl_5",
        ):
            branch7x7dbl = getattr(self, name)(branch7x7dbl)
        branch_pool = self.branch_pool(self.avg_pool(x))
        return torch.cat([self.branch1x1(x), branch7x7, branch7x7dbl, branch_pool], dim=1)


class TorchInceptionD(_InceptionBlock):
    def __init__(self, params, stats, activation, dtype):
        super().__init__(params, stats, activation, dtype)
        self._add("branch3x3_1")
        self._add("branch3x3_2", stride=2)
        self._add("branch7x7x3_1")
        self._add("branch7x7x3_2", padding=(0, 3))
        self._add("branch7x7x3_3", padding=(3, 0))
        self._add("branch7x7x3_4", stride=2)
        self.max_pool = nn.MaxPool2d(3, stride=2)
        self._finish()

    def forward(self, x):
        branch3x3 = self.branch3x3_2(self.branch3x3_1(x))
        branch7x7x3 = x
        for name in ("branch7x7x3_1", "branch7x7x3_2", "branch7x7x3_3", "branch7x7x3_4"):
            branch7x7x3 = getattr(self, name)(branch7x7x3)
        return torch.cat([branch3x3, branch7x7x3, self.max_pool(x)], dim=1)


class TorchInceptionE(_InceptionBlock):
    def __init__(self, params, stats, activation, dtype):
        super().__init__(params, stats, activation, dtype)
        self._add("branch1x1")
        self._add("branch3x3_1")
        self._add("branch3x3_2a", padding=(0, 1))
        self._add("branch3x3_2b", padding=(1, 0))
        self._add("branch3x3dbl_1")
        self._add("branch3x3dbl_2", padding=1)
        self._add("branch3x3dbl_3a", padding=(0, 1))
        self._add("branch3x3dbl_3b", padding=(1, 0))
        self.avg_pool = _average_pool()
        self._add("branch_pool")
        self._finish()

    def forward(self, x):
        branch3x3 = self.branch3x3_1(x)
        branch3x3 = torch.cat([self.branch3x3_2a(branch3x3), self.branch3x3_2b(branch3x3)], dim=1)
        branch3x3dbl = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        branch3x3dbl = torch.cat(
            [self.branch3x3dbl_3a(branch3x3dbl), self.branch3x3dbl_3b(branch3x3dbl)], dim=1
        )
        branch_pool = self.branch_pool(self.avg_pool(x))
        return torch.cat([self.branch1x1(x), branch3x3, branch3x3dbl, branch_pool], dim=1)


# The stem: (name, stride, padding) of each ConvBN, and its two 3x3 stride-2 "VALID"
# max-pools; then (name, block class) of the Inception blocks, in Flax's order.
_INCEPTION_STEM = (
    ("Conv2d_1a_3x3", 2, 0),
    ("Conv2d_2a_3x3", 1, 0),
    ("Conv2d_2b_3x3", 1, 1),
    "pool",
    ("Conv2d_3b_1x1", 1, 0),
    ("Conv2d_4a_3x3", 1, 0),
    "pool",
)
_INCEPTION_BLOCKS = (
    ("Mixed_5b", TorchInceptionA),
    ("Mixed_5c", TorchInceptionA),
    ("Mixed_5d", TorchInceptionA),
    ("Mixed_6a", TorchInceptionB),
    ("Mixed_6b", TorchInceptionC),
    ("Mixed_6c", TorchInceptionC),
    ("Mixed_6d", TorchInceptionC),
    ("Mixed_6e", TorchInceptionC),
    ("Mixed_7a", TorchInceptionD),
    ("Mixed_7b", TorchInceptionE),
    ("Mixed_7c", TorchInceptionE),
)


class TorchInceptionV3(_ChannelsFirst):
    """`jaxplain.models.InceptionV3` (no auxiliary head) on NCHW input (NHWC when
    `channels_last`), at least 75x75. Submodules carry the Flax names (`Conv2d_1a_3x3`,
    `Mixed_5b.branch1x1`, ...); the stem's max-pools are `pool1`, `pool2`; dropout is
    the identity in eval mode."""

    def __init__(
        self, params, stats, activation: type, dropout_rate: float, dtype, channels_last: bool = False
    ):
        super().__init__()
        pools = 0
        for entry in _INCEPTION_STEM:
            if entry == "pool":
                pools += 1
                setattr(self, f"pool{pools}", nn.MaxPool2d(3, stride=2))  # "VALID", floor
                continue
            name, stride, padding = entry
            setattr(self, name, _inception_conv_bn(params, stats, name, stride, padding, activation, dtype))
        for name, block in _INCEPTION_BLOCKS:
            setattr(self, name, block(params[name], stats[name], activation, dtype))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout_rate)
        self.fc = _linear(params["fc"], dtype)
        self.channels_last = channels_last

    def forward(self, x):
        x = self._to_nchw(x)
        if min(x.shape[2:]) < 75:
            raise ValueError(f"InceptionV3 needs images of at least 75x75, got NCHW shape {tuple(x.shape)}")
        pools = 0
        for entry in _INCEPTION_STEM:
            if entry == "pool":
                pools += 1
                x = getattr(self, f"pool{pools}")(x)
            else:
                x = getattr(self, entry[0])(x)
        for name, _ in _INCEPTION_BLOCKS:
            x = getattr(self, name)(x)
        x = self.pool(x).reshape(x.shape[0], -1)
        return self.fc(self.dropout(x))


def inception_from_flax(
    module, variables, *, dtype=torch.float32, channels_last: bool = False
) -> TorchInceptionV3:
    """An eval-mode `TorchInceptionV3` with the weights of a `jaxplain.models.InceptionV3`.

    `variables` is the full dict (`params` and `batch_stats`). The twin's forward takes
    NCHW images (NHWC when `channels_last`), 299x299 as in the paper or anything from
    75x75, and returns the logits of `module.apply(variables, x_nhwc, train=False)`.
    """
    twin = TorchInceptionV3(
        variables["params"],
        variables["batch_stats"],
        _activation_class(module.activation),
        module.dropout_rate,
        dtype,
        channels_last=channels_last,
    )
    return twin.eval()


class ChannelsFirst(nn.Module):
    """A twin that takes NHWC input (the MLP and CNN twins) made to take NCHW input, as
    Quantus requires of torch models: `forward(x_nchw) = inner(x_nchw.permute(0, 2, 3, 1))`.

    The inner twin's modules are this module's submodules (`inner.convs.0`, ...), in the
    inner twin's order, so whatever walks `named_modules()` (Quantus's layer
    randomisation) finds the same layers in the same order. With `first` (the inner
    twin's first layer, e.g. `inner.convs[0]`), that layer is registered before `inner`
    as well, so `named_modules()[1]` is it: Quantus's `add_mean_shift_to_first_layer`
    takes the first module after the root as the first layer.
    """

    def __init__(self, inner: nn.Module, first: nn.Module | None = None):
        super().__init__()
        if first is not None:
            self.first = first
        self.inner = inner

    def forward(self, x):
        return self.inner(x.permute(0, 2, 3, 1) if x.ndim == 4 else x)


def from_checkpoint(checkpoint, variables=None, **options) -> nn.Module:
    """The torch twin of a loaded `jaxplain.io.Checkpoint` (architectures "mlp", "small_cnn",
    "resnet", "resnet18", "resnet50", "inception_v3").

    `variables` replaces the checkpoint's own (e.g. cast, or with biases zeroed);
    `options` go to the builder (`dtype`; `pooling` for the CNN; `channels_last` for the
    ResNet and Inception twins). The default `dtype` is the builder's: float64 for the MLP
    and CNN, float32 for ResNet and Inception, whose twins also take NCHW input by default
    where the MLP and CNN twins take the Flax model's NHWC input.
    """
    variables = checkpoint.variables if variables is None else variables
    architecture = checkpoint.metadata["architecture"]
    if architecture == "mlp":
        return mlp_from_flax(checkpoint.module, variables, **options)
    if architecture == "small_cnn":
        return small_cnn_from_flax(
            checkpoint.module, variables, checkpoint.metadata["input_shape"], **options
        )
    if architecture in ("resnet", "resnet18", "resnet50"):
        return resnet_from_flax(checkpoint.module, variables, **options)
    if architecture == "inception_v3":
        return inception_from_flax(checkpoint.module, variables, **options)
    raise ValueError(f"no torch twin for architecture {architecture!r}")


# ---------------------------------------------------------------------------------------
# The causal language model (jaxplain.models.CausalLM)


class _LogitsOutput:
    """What a Hugging Face causal LM returns, as far as Captum's LLM attribution reads it."""

    def __init__(self, logits):
        self.logits = logits


class TorchCausalBlock(nn.Module):
    """Flax's pre-LN EncoderBlock: x + attention(norm(x)), then x + mlp(norm(x)); flax's
    LayerNorm epsilon (1e-6), multi-head attention with the query scaled by
    1/sqrt(head_dim), GELU in its tanh form (flax's `nn.gelu` default)."""

    def __init__(self, hidden: int, heads: int, mlp_dim: int, dtype):
        super().__init__()
        self.heads, self.head_dim = heads, hidden // heads
        self.norm1 = nn.LayerNorm(hidden, eps=1e-6, dtype=dtype)
        self.query, self.key, self.value = (nn.Linear(hidden, hidden, dtype=dtype) for _ in range(3))
        self.out = nn.Linear(hidden, hidden, dtype=dtype)
        self.norm2 = nn.LayerNorm(hidden, eps=1e-6, dtype=dtype)
        self.up = nn.Linear(hidden, mlp_dim, dtype=dtype)
        self.gelu = nn.GELU(approximate="tanh")
        self.down = nn.Linear(mlp_dim, hidden, dtype=dtype)

    def forward(self, x):
        b, t, _ = x.shape
        h = self.norm1(x)

        def split(layer):
            return layer(h).view(b, t, self.heads, self.head_dim).transpose(1, 2)

        q, k, v = split(self.query), split(self.key), split(self.value)
        scores = (q / self.head_dim**0.5) @ k.transpose(-1, -2)
        causal = torch.ones(t, t, dtype=torch.bool, device=x.device).tril()
        scores = scores.masked_fill(~causal, torch.finfo(scores.dtype).min)
        attended = (scores.softmax(-1) @ v).transpose(1, 2).reshape(b, t, -1)
        x = x + self.out(attended)
        return x + self.down(self.gelu(self.up(self.norm2(x))))


class TorchCausalLM(nn.Module):
    """Token ids (batch, length) -> an object with `.logits` (batch, length, vocab)."""

    def __init__(self, vocab_size, max_length, hidden, depth, heads, mlp_dim, dtype):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, hidden, dtype=dtype)
        self.position = nn.Parameter(torch.zeros(max_length, hidden, dtype=dtype))
        self.blocks = nn.ModuleList(TorchCausalBlock(hidden, heads, mlp_dim, dtype) for _ in range(depth))
        self.final_norm = nn.LayerNorm(hidden, eps=1e-6, dtype=dtype)
        self.head = nn.Linear(hidden, vocab_size, dtype=dtype)

    def forward(self, input_ids, attention_mask=None, **unused):
        x = self.embed(input_ids) + self.position[: input_ids.shape[1]]
        for block in self.blocks:
            x = block(x)
        return _LogitsOutput(self.head(self.final_norm(x)))


def _copy_attention(block: TorchCausalBlock, params: dict) -> None:
    with torch.no_grad():
        for name in ("query", "key", "value"):
            kernel = _tensor(params[name]["kernel"], block.up.weight.dtype)  # (hidden, heads, head_dim)
            getattr(block, name).weight.copy_(kernel.reshape(kernel.shape[0], -1).T)
            getattr(block, name).bias.copy_(_tensor(params[name]["bias"], block.up.weight.dtype).reshape(-1))
        kernel = _tensor(params["out"]["kernel"], block.up.weight.dtype)  # (heads, head_dim, hidden)
        block.out.weight.copy_(kernel.reshape(-1, kernel.shape[-1]).T)
        block.out.bias.copy_(_tensor(params["out"]["bias"], block.up.weight.dtype))


def _copy_norm(norm: nn.LayerNorm, params: dict) -> None:
    with torch.no_grad():
        norm.weight.copy_(_tensor(params["scale"], norm.weight.dtype))
        norm.bias.copy_(_tensor(params["bias"], norm.bias.dtype))


def causal_lm_from_flax(module, variables, *, dtype=torch.float32) -> TorchCausalLM:
    """The torch twin of a `jaxplain.models.CausalLM` with its Linen variables."""
    if getattr(module.activation, "__name__", "") != "gelu":
        raise ValueError("the torch twin of CausalLM has flax's tanh GELU only")
    params = variables["params"]
    twin = TorchCausalLM(
        module.vocab_size, module.max_length, module.hidden, module.depth, module.heads, module.mlp_dim, dtype
    )
    with torch.no_grad():
        twin.embed.weight.copy_(_tensor(params["token_embedding"]["embedding"], dtype))
        twin.position.copy_(_tensor(params["position_embedding"], dtype))
    for block, block_params in zip(twin.blocks, _numbered(params, "blocks")):
        _copy_attention(block, block_params["MultiHeadDotProductAttention_0"])
        _copy_norm(block.norm1, block_params["LayerNorm_0"])
        _copy_norm(block.norm2, block_params["LayerNorm_1"])
        _copy_dense(block.up, block_params["Dense_0"])
        _copy_dense(block.down, block_params["Dense_1"])
    _copy_norm(twin.final_norm, params["final_norm"])
    _copy_dense(twin.head, params["head"])
    return twin.eval()
