"""Layer and neuron attributions of Flax Linen and NNX models: Grad-CAM, layer gradient x
activation, layer Integrated Gradients, token attributions, neuron attributions, FullGrad.

Layer names. A layer is a submodule whose `__call__` the model runs. Linen layers are
named by their module path (`module.path`, the scope names from the root down) joined
with "/": "Conv_1", "Dense_0", "stage1_block1/BatchNorm_1",
"blocks_0/MultiHeadDotProductAttention_0/query", "token_embedding". Names are Flax's own:
the `name=` given to a submodule, the attribute name of one built in `setup` (lists get
"_0", "_1", ...), or "ClassName_i" for an unnamed one. NNX layers are named by their
attribute path from the model: "conv2", "blocks/0/attn", "blocks/0/attn/query",
"layers/1" (an item of an `nnx.List` or list, e.g. inside `nnx.Sequential`), "heads/cls"
(a dict key); a module reachable by two paths is named by the first one Flax lists. A
layer's output is what its `__call__` returns; plain functions (`nn.relu`,
`nnx.max_pool`) are not modules and have no name, so a layer's output is taken before
any activation its parent applies to it. `layer_names(model, x)` lists every usable layer
with its output shape, in the order the calls finish (inner layers before the block that
holds them). Usable means: `__call__` returns one floating array with a leading batch
axis, and the layer runs once per forward pass (a module called twice, e.g. with shared
weights, has no single output to explain).

How. A model from `Model.from_linen` or `jaxplain.load_model` applies its module through
`module.apply`; these methods run that same call under `flax.linen.intercept_methods`,
which reaches the named submodule's `__call__`. A model from `Model.from_nnx` is merged
from its state inside the traced function and each of its modules' `__call__` is routed
through a hook for that call (`jaxplain._nnx.routed_calls`); modules that NNX transforms
(`nnx.vmap`, `nnx.scan`) copy inside the call are not reached. Either way the hook
records the layer's output, replaces it (the
rest of the network then reads the replacement while every other path, e.g. a skip
connection around the layer, still reads the original input), or adds a perturbation to
it (so the gradient with respect to the perturbation is the gradient with respect to the
layer's output). The interceptors are built inside each compiled program from static
data (the layer's name), so new parameters or inputs of the same shapes reuse the
program. The gradients come from `engine.gradients` and `engine.path_gradients`, so
several targets share one forward pass and layer IG is chunked like input IG.

Shapes. For `grad_cam`, `layer_gradient_x_activation` and `layer_integrated_gradients`,
`Attribution.values` is shaped like the LAYER's output, `(batch, *layer_shape)` (with a
target axis after the batch axis for several targets); Grad-CAM's is a map `(batch,
height, width)`. `token_attributions`, `neuron_attribution` and `fullgrad` with
`post_process=False` return values shaped like `x`; post-processed FullGrad returns a map
of x's spatial shape.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxplain import _checks, _nnx, engine, schedules
from jaxplain.attribution import Attribution
from jaxplain.methods.arguments import BoundApply
from jaxplain.methods.gradients import saliency
from jaxplain.methods.integrated import integrated_gradients, straight_path
from jaxplain.methods.registry import METHODS, register
from jaxplain.model import LinenApply, Model, Targets, _NnxApply, normalize_targets

Array = jax.Array

# Modules whose output is `linear(input) + bias`, with the bias as the parameter "bias".
_AFFINE_MODULES = (nn.Dense, nn.DenseGeneral, nn.Conv, nn.ConvTranspose, nn.ConvLocal)
_NNX_AFFINE_MODULES = (nnx.Linear, nnx.LinearGeneral, nnx.Conv, nnx.ConvTranspose)
_EMBEDDINGS = (nn.Embed, nnx.Embed)


# --- running a model with one layer intercepted ------------------------------------------


def _apply_intercepted(apply: LinenApply | _NnxApply, variables, x, on_call: Callable):
    """`apply(variables, x)`, every submodule `__call__` routed through `on_call`.

    `on_call(call, module, path, occurrence)` returns the call's output; `call()` runs
    the module; `occurrence` counts earlier calls of the same path in this pass. Linen
    modules are reached with `nn.intercept_methods`, NNX modules with
    `_nnx.routed_calls` on the module merged from `variables`.
    """
    counts: dict[str, int] = {}

    def counted(call, module, path):
        occurrence = counts.get(path, 0)
        counts[path] = occurrence + 1
        return on_call(call, module, path, occurrence)

    nnx_apply = _nnx_apply_of(apply)
    if nnx_apply is not None:
        routed = _NnxRouted(nnx_apply, counted)
        # A model bound to per-example `model_kwargs` wraps its apply: keep the wrapper,
        # which passes them, around the routed call.
        return (routed if apply is nnx_apply else dataclasses.replace(apply, apply_fn=routed))(variables, x)

    def interceptor(next_fun, args, kwargs, context):
        if context.method_name != "__call__":
            return next_fun(*args, **kwargs)
        return counted(lambda: next_fun(*args, **kwargs), context.module, "/".join(context.module.path))

    with nn.intercept_methods(interceptor):
        return apply(variables, x)


def _nnx_apply_of(apply) -> _NnxApply | None:
    """The `_NnxApply` of an NNX model, also under `model_kwargs`; None for Linen."""
    if isinstance(apply, BoundApply):
        apply = apply.apply_fn
    return apply if isinstance(apply, _NnxApply) else None


def _nnx_state(model: Model):
    """The NNX state of a model from `Model.from_nnx` (its params, or their first part
    when `model_kwargs` are bound to it)."""
    return model.params[0] if isinstance(model.apply_fn, BoundApply) else model.params


@dataclasses.dataclass(frozen=True)
class _NnxRouted:
    """`apply(state, x, **arguments)` with every module call routed through `hook`."""

    apply: _NnxApply
    hook: Callable

    def __call__(self, state, x, **arguments):
        module = nnx.merge(self.apply.graphdef, state)
        with _nnx.routed_calls(module, self.hook):
            return self.apply.run(module, x, **arguments)


def _run(apply: LinenApply | _NnxApply, variables, x, layer: str, replacement=None):
    """`(apply(variables, x), layer's output)`, the output replaced when one is given."""
    seen = []

    def on_call(call, module, path, occurrence):
        del module, occurrence
        if path != layer:
            return call()
        # A replaced layer is not run: what fed only it is dead code that XLA removes.
        seen.append(call() if replacement is None else replacement)
        return seen[-1]

    result = _apply_intercepted(apply, variables, x, on_call)
    return result, seen[0]


@dataclasses.dataclass(frozen=True)
class _LayerOutput:
    """`apply_fn(variables, x)`: the layer's output at x, flattened to (batch, units)."""

    apply: LinenApply | _NnxApply
    layer: str

    def __call__(self, variables, x):
        output = _run(self.apply, variables, x, self.layer)[1]
        return output.reshape(output.shape[0], -1)


@dataclasses.dataclass(frozen=True)
class _LayerReplaced:
    """`apply_fn(variables, (activation, x))`: the model on x, the layer's output := activation."""

    apply: LinenApply | _NnxApply
    layer: str

    def __call__(self, variables, inputs):
        activation, x = inputs
        return _run(self.apply, variables, x, self.layer, replacement=activation)[0]


def _bias_of(module, output) -> Array | None:
    """The constant an affine layer adds to its output, broadcastable to it; else None.

    Dense / Conv layers (Linen) and Linear / Conv layers (NNX) add their "bias"
    parameter. Eval-mode BatchNorm computes
    scale * (h - mean) / sqrt(var + eps) + bias = s * h + (bias - s * mean), so its
    implicit bias is bias - scale * mean / sqrt(var + eps).
    """
    if isinstance(module, _AFFINE_MODULES):
        return module.get_variable("params", "bias") if module.use_bias else None
    if isinstance(module, _NNX_AFFINE_MODULES):
        return _nnx.value(getattr(module, "bias", None))
    if isinstance(module, nn.BatchNorm):
        mean = module.get_variable("batch_stats", "mean")
        variance = module.get_variable("batch_stats", "var")
        scale = module.get_variable("params", "scale") if module.use_scale else 1.0
        shift = module.get_variable("params", "bias") if module.use_bias else 0.0
    elif isinstance(module, nnx.BatchNorm) and module.use_running_average:
        mean, variance = _nnx.value(module.mean), _nnx.value(module.var)
        scale = _nnx.value(module.scale) if module.scale is not None else 1.0
        shift = _nnx.value(module.bias) if module.bias is not None else 0.0
    else:
        return None
    if mean is None or variance is None:
        return None
    implicit = shift - scale * mean * jax.lax.rsqrt(variance + module.epsilon)
    axes = {a % output.ndim for a in np.atleast_1d(module.axis)}
    return implicit.reshape([output.shape[a] if a in axes else 1 for a in range(output.ndim)])


@dataclasses.dataclass(frozen=True)
class _BiasesPerturbed:
    """`apply_fn(variables, rows)`, rows = [x | e_1 | ... | e_L] flattened per example:
    the model on x with e_l added to the output of bias site l = (path, occurrence, shape)."""

    apply: LinenApply | _NnxApply
    input_shape: tuple
    sites: tuple

    def __call__(self, variables, rows):
        pieces = _split(rows, (self.input_shape,) + tuple(shape for _, _, shape in self.sites))
        added = {(path, occurrence): e for (path, occurrence, _), e in zip(self.sites, pieces[1:])}

        def on_call(call, module, path, occurrence):
            del module
            output = call()
            if (path, occurrence) in added:
                output = output + added[path, occurrence].astype(output.dtype)
            return output

        return _apply_intercepted(self.apply, variables, pieces[0], on_call)


def _split(rows, shapes):
    """Splits (R, ..., sum of sizes) along the last axis into pieces (R, ..., *shape)."""
    sizes = [int(np.prod(shape)) for shape in shapes]
    pieces = jnp.split(rows, np.cumsum(sizes)[:-1], axis=-1)
    return [p.reshape(p.shape[:-1] + tuple(s)) for p, s in zip(pieces, shapes)]


def _biases(model: Model, x, sites) -> list:
    """Each bias site's bias, broadcast to its per-example output shape."""
    wanted, found = {(path, occurrence) for path, occurrence, _ in sites}, {}

    def on_call(call, module, path, occurrence):
        output = call()
        if (path, occurrence) in wanted:
            bias = _bias_of(module, output)
            found[path, occurrence] = jnp.broadcast_to(bias, output.shape)[0].astype(output.dtype)
        return output

    _apply_intercepted(model.apply_fn, model.params, x, on_call)
    return [found[path, occurrence] for path, occurrence, _ in sites]


# --- the layer table: every submodule call, by abstract evaluation ------------------------


@dataclasses.dataclass(frozen=True)
class _Call:
    path: str
    occurrence: int
    module_type: type
    output: jax.ShapeDtypeStruct | None  # None unless one floating array
    has_bias: bool
    vocabulary: int | None  # an embedding layer's number of rows


_TABLES: dict = {}
_TABLE_LIMIT = 256


def _calls(model: Model, x) -> tuple[_Call, ...]:
    """Every submodule `__call__` of one forward pass on x, in the order they finish."""
    leaves, treedef = jax.tree_util.tree_flatten(model)
    key = (
        treedef,
        tuple((np.shape(leaf), getattr(leaf, "dtype", None) or np.result_type(leaf)) for leaf in leaves),
        tuple(x.shape),
        np.dtype(x.dtype),
    )
    if key not in _TABLES:
        if len(_TABLES) >= _TABLE_LIMIT:
            _TABLES.clear()
        calls = []

        def on_call(call, module, path, occurrence):
            output = call()
            usable = isinstance(output, jax.Array) and jnp.issubdtype(output.dtype, jnp.floating)
            struct = jax.ShapeDtypeStruct(output.shape, output.dtype) if usable else None
            has_bias = usable and _bias_of(module, output) is not None
            vocabulary = getattr(module, "num_embeddings", None) if isinstance(module, _EMBEDDINGS) else None
            calls.append(_Call(path, occurrence, _nnx.declared_class(module), struct, has_bias, vocabulary))
            return output

        jax.eval_shape(
            lambda params, x: _apply_intercepted(model.apply_fn, params, x, on_call),
            model.params,
            jax.ShapeDtypeStruct(x.shape, x.dtype),
        )
        _TABLES[key] = tuple(calls)
    return _TABLES[key]


def _layers(model: Model, x) -> dict[str, _Call]:
    """The usable layers: named (not the root), run once, one floating batched output."""
    calls = _calls(model, x)
    runs: dict[str, int] = {}
    for call in calls:
        runs[call.path] = runs.get(call.path, 0) + 1
    return {
        call.path: call
        for call in calls
        if call.path
        and runs[call.path] == 1
        and call.output is not None
        and call.output.ndim >= 1
        and call.output.shape[0] == x.shape[0]
    }


def _describe(layers: dict[str, _Call]) -> str:
    return ", ".join(f"{path} {tuple(call.output.shape[1:])}" for path, call in layers.items())


# --- boundary checks ------------------------------------------------------------------


def _check_named(model) -> None:
    _checks.check_model(model)
    if not isinstance(model.apply_fn, LinenApply) and _nnx_apply_of(model.apply_fn) is None:
        raise TypeError(
            "layer methods need a Flax Linen or NNX model (jaxplain.Model.from_linen, "
            "Model.from_nnx or jaxplain.load_model), whose layers have names; this model's "
            f"apply_fn is {type(model.apply_fn).__name__}. Explain its input instead, or wrap "
            "the module with Model.from_linen or Model.from_nnx"
        )


def _check_x(model: Model, x):
    """x checked against a Linen or NNX model; returns `(x, num_classes)`. Layer methods
    differentiate a layer, not x, so x may hold integer ids such as tokens."""
    _check_named(model)
    return _checks.check_x(model, x, integer_ids=True)


def _prepare(model: Model, x, target):
    x, num_classes = _check_x(model, x)
    return x, normalize_targets(target, x.shape[0], num_classes)


def _check_layer(model: Model, x, layer) -> _Call:
    if not isinstance(layer, str):
        raise TypeError(
            f"layer must be a module path such as 'Dense_0' or 'block1/Conv_1', got "
            f"{type(layer).__name__}; see jaxplain.layer_names(model, x)"
        )
    layers = _layers(model, x)
    if layer in layers:
        return layers[layer]
    runs = sum(1 for call in _calls(model, x) if call.path == layer)
    if runs > 1:
        raise ValueError(
            f"layer {layer!r} runs {runs} times in one forward pass (shared weights); layer "
            "methods need a layer that runs once"
        )
    reason = "has no single floating output with a batch axis" if runs else "is not a layer of this model"
    raise ValueError(
        f"layer {layer!r} {reason}; available layers (per-example output shape): {_describe(layers)}"
    )


def _check_baseline(value, x):
    """A baseline input: floats like `_checks.baseline`, or integer ids for integer x."""
    if jnp.issubdtype(x.dtype, jnp.floating):
        return _checks.baseline(value, x)
    if not _checks.is_traced(value):
        value = np.asarray(value)
        if not np.issubdtype(value.dtype, np.integer) and not (
            np.issubdtype(value.dtype, np.floating) and np.all(value == np.round(value))
        ):
            raise TypeError(
                f"baseline must hold integer ids like x (dtype {x.dtype}), e.g. the padding "
                f"token; got dtype {value.dtype}"
            )
    _checks.broadcastable("baseline", value, x)
    return jnp.asarray(value).astype(x.dtype)


# --- layer gradients --------------------------------------------------------------------


def _activation_and_gradients(model: Model, x, targets: Targets, layer: str):
    """`(chosen, A, grads)`: the layer's output A at x and dF_t/dA, (B, k, *A.shape[1:])."""
    _, activation = _run(model.apply_fn, model.params, x, layer)
    replaced = model.replace(apply_fn=_LayerReplaced(model.apply_fn, layer))
    _, chosen, grads = engine.gradients(replaced, activation, targets.resolve, context=x)
    dtype = engine.accumulation_dtype(activation)
    return chosen, activation.astype(dtype), grads.astype(dtype)


@engine.program(static_argnames=("layer", "relu", "upsample"))
def _grad_cam(model, x, targets: Targets, *, layer, relu, upsample):
    chosen, activation, grads = _activation_and_gradients(model, x, targets, layer)
    channel_weights = grads.mean(axis=(2, 3))
    cam = jnp.einsum("bkc,bhwc->bkhw", channel_weights, activation)
    cam = jax.nn.relu(cam) if relu else cam
    extras = {}
    if upsample:
        extras["layer_map"] = cam
        cam = jax.image.resize(cam, cam.shape[:2] + x.shape[1:3], "bilinear")
    return engine.attribution(targets, cam, chosen, extras=extras)


@register("layer")
def grad_cam(model: Model, x, *, target, layer: str, relu: bool = True, upsample: bool = True) -> Attribution:
    """Grad-CAM: a class-discriminative map from a convolutional layer's channels.

    With A = the layer's output (batch, h, w, C) and F_t the target output,

      alpha_c = (1 / (h w)) sum_{i,j} dF_t / dA_{ijc},
      cam_{ij} = relu(sum_c alpha_c A_{ijc}).

    Args:
      model: a Linen or NNX `jaxplain.Model` (`Model.from_linen`, `Model.from_nnx`,
        `jaxplain.load_model`).
      x: a batch of NHWC images.
      target: an int, an int array `(batch,)` or `(batch, k)`, `"predicted"`, or
        `jaxplain.top_k(k)`.
      layer: the module path of a layer whose output is NHWC, usually the last
        convolution or block (see `layer_names`).
      relu: keep only the positive evidence (the paper's map); False returns the
        signed map.
      upsample: resize the map bilinearly to x's height and width.

    Returns:
      An `Attribution` whose `values` are the map, `(batch, H, W)` of x's spatial
      size with `upsample=True` (then `extras["layer_map"]` holds the
      `(batch, h, w)` map at the layer's resolution) or `(batch, h, w)` without; a
      target axis follows the batch axis for several targets.

    References:
      Selvaraju, Cogswell, Das, Vedantam, Parikh, Batra. Grad-CAM: Visual
      Explanations from Deep Networks via Gradient-based Localization.
      arXiv:1610.02391, 2017.
    """
    x, targets = _prepare(model, x, target)
    call = _check_layer(model, x, layer)
    if call.output.ndim != 4:
        raise ValueError(
            f"grad_cam needs a layer with NHWC output (batch, height, width, channels); "
            f"layer {layer!r} outputs shape {tuple(call.output.shape)}"
        )
    relu, upsample = _checks.flag("relu", relu), _checks.flag("upsample", upsample)
    if upsample and x.ndim != 4:
        raise ValueError(
            f"upsample=True resizes the map to NHWC images, but x has shape {tuple(x.shape)}; "
            "pass upsample=False"
        )
    return _grad_cam(model, x, targets, layer=layer, relu=relu, upsample=upsample)


@engine.program(static_argnames=("layer",))
def _layer_gradient_x_activation(model, x, targets: Targets, *, layer):
    chosen, activation, grads = _activation_and_gradients(model, x, targets, layer)
    return engine.attribution(targets, grads * activation[:, None], chosen)


@register("layer")
def layer_gradient_x_activation(model: Model, x, *, target, layer: str) -> Attribution:
    """A layer's output times the gradient of the target output with respect to it.

    phi_j = A_j(x) dF_t / dA_j, for every unit j of the layer's output A. For a layer
    followed by a ReLU and a dense layer, sum_j phi_j = F_t(x) - bias_t.

    Args:
      model: a Linen or NNX `jaxplain.Model`.
      x: a batch of inputs (floating, or integer ids such as tokens).
      target: as for `grad_cam`.
      layer: a module path (see `layer_names`).

    Returns:
      An `Attribution` whose `values` are shaped like the layer's output
      `(batch, *layer_shape)`, or `(batch, k, *layer_shape)` for k targets.

    References:
      Shrikumar, Greenside, Shcherbina, Kundaje. Not Just a Black Box: Learning
      Important Features Through Propagating Activation Differences.
      arXiv:1605.01713, 2016 (gradient x input, here applied to a layer).
    """
    x, targets = _prepare(model, x, target)
    _check_layer(model, x, layer)
    return _layer_gradient_x_activation(model, x, targets, layer=layer)


# --- layer integrated gradients -----------------------------------------------------------


@engine.program(static_argnames=("layer", "steps", "schedule", "chunk_size"))
def _layer_integrated_gradients(model, x, baseline, targets: Targets, *, layer, steps, schedule, chunk_size):
    batch = x.shape[0]
    baseline = jnp.broadcast_to(baseline, x.shape).astype(x.dtype)
    ends, activations = _run(model.apply_fn, model.params, jnp.concatenate([x, baseline]), layer)
    ends = Model(lambda _, scores: scores, (), model.output)(ends)  # logits, probs or log-probs
    chosen = targets.resolve(ends[:batch])
    acc_dtype = engine.accumulation_dtype(activations)

    def pick(outputs):
        return jnp.take_along_axis(outputs, chosen, axis=1).astype(acc_dtype)

    difference = pick(ends[:batch]) - pick(ends[batch:])
    at_x, at_baseline = activations[:batch], activations[batch:]
    replaced = model.replace(apply_fn=_LayerReplaced(model.apply_fn, layer))
    layer_difference = pick(ends[:batch]) - pick(replaced((at_baseline, x)))

    values = straight_path(  # the path waits for the endpoint passes (`engine.tie`)
        replaced,
        engine.tie(at_x, layer_difference),
        at_baseline,
        chosen,
        steps=steps,
        schedule=schedule,
        chunk_size=chunk_size,
        context=x,
    )
    return engine.attribution(
        targets,
        values,
        chosen,
        difference=difference,
        delta="sum",
        extras={"layer_output_difference": layer_difference},
    )


@register("layer")
def layer_integrated_gradients(
    model: Model,
    x,
    *,
    target,
    layer: str,
    baseline=0.0,
    steps: int = 50,
    schedule: str = "gauss_legendre",
    chunk_size=None,
) -> Attribution:
    """Integrated Gradients in a layer's activation space.

    With A the layer's output and G(a; x) the model on x with that output replaced
    by a (every other path, e.g. a skip connection around the layer or a padding
    mask computed from the tokens, still reads x),

      phi_j = (A_j(x) - A_j(b)) integral_0^1 dG_t(A(b) + s (A(x) - A(b)); x) / da_j ds,

    approximated with the `schedule`'s nodes and weights over `steps` points, chunked
    by the engine exactly like `integrated_gradients`. These are the semantics of
    Captum's LayerIntegratedGradients. The path integral gives
    sum_j phi_j = G_t(A(x); x) - G_t(A(b); x) = F_t(x) - G_t(A(b); x), which is
    `extras["layer_output_difference"]`; it equals F_t(x) - F_t(b) when everything
    after the layer reads only the layer's output (an MLP layer, a ResNet block's
    output, a text model's embeddings when x and the baseline have the same padding).
    `delta` is sum_j phi_j - (F_t(x) - F_t(b)) with F_t(b) the model on the baseline
    input, so it holds both the quadrature error and the part of the output change
    that flows around the layer.

    Token attributions: with x = token ids and `layer` = the token embedding module,
    `values` are `(batch, tokens, embed_dim)` and `values.sum(-1)` scores each token;
    `token_attributions` does this.

    Args:
      model: a Linen or NNX `jaxplain.Model`.
      x: a batch of inputs (floating, or integer ids such as tokens).
      target: as for `integrated_gradients`.
      layer: a module path (see `layer_names`).
      baseline: a baseline INPUT (a scalar, one example or one per example; integer
        ids for integer x); its layer output A(b) starts the path.
      steps: number of points on the path.
      schedule: as for `integrated_gradients`.
      chunk_size: points evaluated at once; by default the engine's choice for the
        whole model at x.

    Returns:
      An `Attribution` whose `values` are shaped like the layer's output,
      `(batch, *layer_shape)` or `(batch, k, *layer_shape)`, with `delta`,
      `output_difference` = F_t(x) - F_t(b) and
      `extras["layer_output_difference"]` = F_t(x) - G_t(A(b); x).

    References:
      Sundararajan, Taly, Yan. Axiomatic Attribution for Deep Networks.
      arXiv:1703.01365, 2017. Layer attribution as in Kokhlikyan et al., Captum: A
      unified and generic model interpretability library for PyTorch.
      arXiv:2009.07896, 2020.
    """
    x, targets = _prepare(model, x, target)
    _check_layer(model, x, layer)
    baseline = _check_baseline(baseline, x)
    steps = _checks.positive_int("steps", steps)
    schedule = _checks.schedule(schedule)
    schedules.check_steps(schedule, steps)
    chunk_size = _checks.chunk_size(chunk_size)
    return _layer_integrated_gradients(
        model, x, baseline, targets, layer=layer, steps=steps, schedule=schedule, chunk_size=chunk_size
    )


def embedding_layer(model: Model, x) -> str:
    """The path of the model's only embedding layer (`nn.Embed` or `nnx.Embed`).

    Args:
      model: a Linen or NNX `jaxplain.Model`.
      x: a batch of token ids.

    Returns:
      The layer's name, e.g. "token_embedding" (Linen) or "embed" (NNX).

    Raises:
      ValueError: the model has no embedding layer, or more than one.
    """
    x, _ = _check_x(model, x)
    found = [path for path, call in _layers(model, x).items() if issubclass(call.module_type, _EMBEDDINGS)]
    if len(found) != 1:
        raise ValueError(
            f"layer=None needs exactly one embedding layer (nn.Embed or nnx.Embed), this model has "
            f"{found or 'none'}; pass layer= one of: {_describe(_layers(model, x))}"
        )
    return found[0]


def _root_attribute(model: Model, name: str, default):
    """An attribute of the model's top module (e.g. `pad_id`), or `default`."""
    apply = model.apply_fn
    if isinstance(apply, LinenApply):
        return getattr(apply.module, name, default)
    root = nnx.merge(_nnx_apply_of(apply).graphdef, _nnx_state(model))
    return getattr(root, name, default)


def _check_ids(model: Model, x, layer, *named) -> None:
    """Token ids within the embedding table of `layer`, where it is an embedding layer.

    nn.Embed and nnx.Embed look ids up without a bound check: ids past the table gave
    NaN attributions and negative ones wrapped around, silently.
    """
    call = _layers(model, x).get(layer) if isinstance(layer, str) else None
    if call is None or call.vocabulary is None:
        return
    size = call.vocabulary
    for name, ids in named:
        if _checks.is_traced(ids):
            continue
        try:
            ids = np.asarray(ids)
        except ValueError:
            continue  # ragged: the checks of layer_integrated_gradients name it
        if ids.size and np.issubdtype(ids.dtype, np.integer) and (ids.min() < 0 or ids.max() >= size):
            raise ValueError(
                f"{name} holds token ids {ids.min()}..{ids.max()}, outside the embedding table of "
                f"{layer!r} (ids 0..{size - 1})"
            )


@register("layer")
def token_attributions(
    model: Model,
    x,
    *,
    target,
    layer: str | None = None,
    baseline=None,
    steps: int = 50,
    schedule: str = "gauss_legendre",
    chunk_size=None,
) -> Attribution:
    """One score per token: layer Integrated Gradients on the token embeddings, summed.

    phi_{b,t} = sum_d LIG_{b,t,d}, with LIG = `layer_integrated_gradients` on the
    embedding layer (its output `(batch, tokens, embed_dim)`). The baseline sequence
    defaults to the padding token everywhere; the model's padding mask is still
    computed from `x`, so every position of the baseline is attended to (see
    `extras["layer_output_difference"]` for what the scores sum to).

    Args:
      model: a Linen or NNX `jaxplain.Model` that takes token ids, e.g.
        `jaxplain.load_model("checkpoints/synthetic_text")`.
      x: int token ids `(batch, length)`.
      target: as for `integrated_gradients`.
      layer: the embedding module's path; by default the model's only `nn.Embed`
        or `nnx.Embed`.
      baseline: baseline token ids (a scalar, one sequence or one per example); by
        default the module's `pad_id` (0 if it has none).
      steps, schedule, chunk_size: as for `layer_integrated_gradients`.

    Returns:
      An `Attribution` whose `values` are shaped like `x` (or `(batch, k,
      length)`), with the `delta` and extras of `layer_integrated_gradients` plus
      `extras["embedding_attributions"]`, the per-dimension attributions.

    References:
      Sundararajan, Taly, Yan. Axiomatic Attribution for Deep Networks.
      arXiv:1703.01365, 2017.
    """
    checked, _ = _check_x(model, x)
    layer = embedding_layer(model, checked) if layer is None else layer
    baseline = _root_attribute(model, "pad_id", 0) if baseline is None else baseline
    _check_ids(model, checked, layer, ("x", x), ("baseline", baseline))
    result = layer_integrated_gradients(
        model,
        x,
        target=target,
        layer=layer,
        baseline=baseline,
        steps=steps,
        schedule=schedule,
        chunk_size=chunk_size,
    )
    return dataclasses.replace(
        result,
        values=result.values.sum(axis=-1),
        extras={**result.extras, "embedding_attributions": result.values},
    )


# --- neuron attributions ----------------------------------------------------------------


def neuron_model(model: Model, x, layer: str) -> Model:
    """A `Model` whose outputs are `layer`'s activations flattened to (batch, units).

    Any jaxplain method explains unit u of the layer when given this model and
    `target=u`; `neuron_attribution` does that. The new model's outputs are the raw
    activations (its `output` is "logits"), whatever `model.output` says.

    Args:
      model: a Linen or NNX `jaxplain.Model`.
      x: a batch of inputs like the ones to explain (used to check `layer`).
      layer: a module path (see `layer_names`).
    """
    x, _ = _check_x(model, x)
    _check_layer(model, x, layer)
    return Model(_LayerOutput(model.apply_fn, layer), model.params)


def _neuron_target(neuron, shape: tuple):
    """An int index into the flattened layer (or (1, k) of them for a list of neurons)."""
    units = int(np.prod(shape))

    def is_int(value):
        return isinstance(value, (int, np.integer)) and not isinstance(value, bool)

    def flat(one):
        if is_int(one):
            if not 0 <= one < units:
                raise ValueError(
                    f"neuron {one} is outside the layer's {units} units (per-example shape {shape})"
                )
            return int(one)
        if isinstance(one, tuple) and all(is_int(i) for i in one):
            if len(one) != len(shape) or not all(0 <= i < n for i, n in zip(one, shape)):
                raise ValueError(f"neuron {one} is not an index into the layer's per-example shape {shape}")
            return int(np.ravel_multi_index(one, shape))
        raise TypeError(
            f"neuron must be an int (flat unit index), a tuple index into the layer's "
            f"per-example shape {shape}, or a list of those; got {one!r}"
        )

    if isinstance(neuron, list):
        if not neuron:
            raise ValueError("neuron is an empty list")
        return np.asarray([[flat(one) for one in neuron]], np.int32)
    return flat(neuron)


def neuron_attribution(
    method: str | Callable, model: Model, x, *, layer: str, neuron, **method_kwargs
) -> Attribution:
    """Explains one unit of a named layer, instead of a class, with any jaxplain method.

    Runs `method(neuron_model(model, x, layer), x, target=unit, **method_kwargs)`:
    the derived model outputs the layer's activations flattened to (batch, units),
    so the target output is the activation of `neuron`. Several neurons (a list)
    share one pass and add a neuron axis after the batch axis.

    Args:
      method: a jaxplain method (`jaxplain.integrated_gradients`, ...) or its
        registered name ("saliency", ...), taking `(model, x, *, target, ...)`.
      model: a Linen or NNX `jaxplain.Model`.
      x: a batch of inputs, as `method` takes them.
      layer: a module path (see `layer_names`).
      neuron: an int index into the layer's flattened per-example output, a tuple
        index into its per-example shape (e.g. `(row, column, channel)`), or a list
        of those.
      **method_kwargs: further settings of `method` (e.g. `steps`, `baseline`).

    Returns:
      What `method` returns, with values shaped like x; `target` holds the flat unit
      index.

    Example:
      >>> a = neuron_attribution("integrated_gradients", model, x,
      ...                        layer="Conv_1", neuron=(2, 3, 5))  # doctest: +SKIP
    """
    if isinstance(method, str):
        if method not in METHODS:
            known = ", ".join(sorted(METHODS))
            raise ValueError(f"method {method!r} is not a jaxplain method; known: {known}")
        method = METHODS[method].function
    if not callable(method):
        raise TypeError(f"method must be a jaxplain method or its name, got {type(method).__name__}")
    if "target" in method_kwargs:
        raise TypeError("neuron_attribution sets the method's target from neuron; do not pass target")
    checked, _ = _check_x(model, x)
    shape = tuple(_check_layer(model, checked, layer).output.shape[1:])
    unit = _neuron_target(neuron, shape)
    return method(neuron_model(model, checked, layer), x, target=unit, **method_kwargs)


@register("layer")
def neuron_gradient(model: Model, x, *, layer: str, neuron) -> Attribution:
    """The gradient of one unit of a layer with respect to the input.

    phi_i = dA_u(x) / dx_i for the unit u = `neuron` of `layer`'s output A: the
    saliency of a neuron. See `neuron_attribution`.

    Args:
      model: a Linen or NNX `jaxplain.Model`.
      x: a batch of inputs.
      layer: a module path (see `layer_names`).
      neuron: an int (flat index), a tuple index into the layer's per-example
        shape, or a list of those.

    Returns:
      An `Attribution` with values shaped like x.

    References:
      Simonyan, Vedaldi, Zisserman. Deep Inside Convolutional Networks.
      arXiv:1312.6034, 2013.
    """
    return neuron_attribution(saliency, model, x, layer=layer, neuron=neuron)


@register("layer")
def neuron_integrated_gradients(
    model: Model,
    x,
    *,
    layer: str,
    neuron,
    baseline=0.0,
    steps: int = 50,
    schedule: str = "gauss_legendre",
    chunk_size=None,
) -> Attribution:
    """Integrated Gradients of one unit of a layer: sum_i phi_i = A_u(x) - A_u(baseline).

    See `neuron_attribution` and `jaxplain.integrated_gradients`.

    Args:
      model: a Linen or NNX `jaxplain.Model`.
      x: a batch of inputs.
      layer: a module path (see `layer_names`).
      neuron: an int (flat index), a tuple index into the layer's per-example
        shape, or a list of those.
      baseline, steps, schedule, chunk_size: as for `integrated_gradients`.

    Returns:
      An `Attribution` with values shaped like x, `delta` and
      `output_difference` = A_u(x) - A_u(baseline).

    References:
      Sundararajan, Taly, Yan. Axiomatic Attribution for Deep Networks.
      arXiv:1703.01365, 2017.
    """
    return neuron_attribution(
        integrated_gradients,
        model,
        x,
        layer=layer,
        neuron=neuron,
        baseline=baseline,
        steps=steps,
        schedule=schedule,
        chunk_size=chunk_size,
    )


def layer_names(model: Model, x) -> dict[str, tuple[int, ...]]:
    """Every layer the layer methods can name, with its output shape, for inputs like x.

    Found by abstract evaluation (no computation). Names are Flax module paths (Linen)
    or attribute paths (NNX) joined with "/" (see this module's docstring), in the
    order the layers finish in one forward pass.

    Args:
      model: a Linen or NNX `jaxplain.Model`.
      x: a batch of inputs, or a `jax.ShapeDtypeStruct` like one.

    Returns:
      A dict from layer name to its output shape, batch axis included.

    Example:
      >>> import flax.linen as nn, jax, jax.numpy as jnp, jaxplain
      >>> module = nn.Sequential([nn.Dense(4), nn.relu, nn.Dense(2)])
      >>> variables = module.init(jax.random.PRNGKey(0), jnp.zeros((1, 3)))
      >>> layer_names(jaxplain.Model.from_linen(module, variables), jnp.zeros((2, 3)))
      {'layers_0': (2, 4), 'layers_2': (2, 2)}
      >>> from flax import nnx
      >>> rngs = nnx.Rngs(0)
      >>> module = nnx.Sequential(nnx.Linear(3, 4, rngs=rngs), nnx.relu, nnx.Linear(4, 2, rngs=rngs))
      >>> layer_names(jaxplain.Model.from_nnx(module), jnp.zeros((2, 3)))
      {'layers/0': (2, 4), 'layers/2': (2, 2)}
    """
    if isinstance(x, jax.ShapeDtypeStruct):
        x = jnp.zeros(x.shape, x.dtype)
    x, _ = _check_x(model, x)
    return {path: tuple(call.output.shape) for path, call in _layers(model, x).items()}


# --- FullGrad ---------------------------------------------------------------------------


def _normalised_map(part, height: int, width: int):
    """FullGrad's post-processing of one (B, k, h, w, C) part: |.|, min-max per map, resize, sum C."""
    part = jnp.abs(part)
    flat = part.reshape(part.shape[:2] + (-1,))
    low = flat.min(axis=-1)[..., None, None, None]
    part = part - low
    high = (flat.max(axis=-1) - flat.min(axis=-1))[..., None, None, None]
    part = jnp.where(high > 0, part / jnp.where(high > 0, high, 1.0), 0.0)
    part = jax.image.resize(part, part.shape[:2] + (height, width, part.shape[-1]), "bilinear")
    return part.sum(axis=-1)


@engine.program(static_argnames=("sites", "post_process"))
def _fullgrad(model, x, targets: Targets, *, sites, post_process):
    batch = x.shape[0]
    shapes = [tuple(x.shape[1:])] + [shape for _, _, shape in sites]
    zeros = [jnp.zeros((batch, int(np.prod(shape))), x.dtype) for shape in shapes[1:]]
    rows = jnp.concatenate([x.reshape(batch, -1)] + zeros, axis=1)
    perturbed = model.replace(apply_fn=_BiasesPerturbed(model.apply_fn, tuple(x.shape[1:]), sites))
    outputs, chosen, grads = engine.gradients(perturbed, rows, targets.resolve)
    acc_dtype = engine.accumulation_dtype(x)
    pieces = _split(grads.astype(acc_dtype), shapes)
    input_part = pieces[0] * x[:, None]
    bias_parts = [g * b.astype(acc_dtype) for g, b in zip(pieces[1:], _biases(model, x, sites))]
    output = jnp.take_along_axis(outputs, chosen, axis=1).astype(acc_dtype)

    def total(part):
        return part.reshape(batch, chosen.shape[1], -1).sum(axis=-1)

    delta = total(input_part) + sum(total(part) for part in bias_parts) - output
    extras = {"output": output}
    if post_process:
        height, width = x.shape[1:3]
        spatial = [p for p in [input_part] + bias_parts if p.ndim == 5]
        values = sum(_normalised_map(p, height, width) for p in spatial)
    else:
        values = input_part
        names = [path if occurrence == 0 else f"{path}#{occurrence}" for path, occurrence, _ in sites]
        extras["bias_gradients"] = dict(zip(names, bias_parts))
    return engine.attribution(targets, values, chosen, delta=delta, extras=extras)


@register("layer")
def fullgrad(model: Model, x, *, target, post_process: bool = True) -> Attribution:
    """FullGrad: input-gradients times the input plus the bias-gradients of every layer.

    For every layer l with a bias b_l (Dense, DenseGeneral, Conv, ConvTranspose and
    ConvLocal biases, and the implicit bias of eval-mode BatchNorm,
    beta - gamma mean / sqrt(var + eps)), the bias-gradient is
    f^b_l = dF_t / dz_l * b_l with z_l the layer's output. For a network that is
    piecewise linear (ReLU, max-pool, the layers above) the full-gradient
    decomposition is exact:

      F_t(x) = sum_i x_i dF_t/dx_i + sum_l sum f^b_l.

    `delta` is the gap of that identity (right minus left), zero up to rounding for
    such networks. Post-processing (the paper's saliency map) takes each part's
    absolute value, min-max normalises it per example, resizes it bilinearly to x's
    height and width and sums its channels; parts that are not NHWC maps (a dense
    layer's bias-gradients) are left out of the map, as in the paper's image maps.
    Every call of a layer counts (a layer called twice has two bias-gradients).

    Args:
      model: a Linen or NNX `jaxplain.Model`.
      x: a batch of inputs (NHWC images for `post_process=True`).
      target: as for `saliency`.
      post_process: return the saliency map; False returns the raw parts.

    Returns:
      An `Attribution` with `delta` and `extras["output"]` = F_t(x). With
      `post_process=True`, `values` is the non-negative map `(batch, H, W)` (or
      `(batch, k, H, W)`). Otherwise `values` = x * dF_t/dx, shaped like x, and
      `extras["bias_gradients"]` maps each layer name (with "#n" appended for its
      n-th repeated call) to its bias-gradients, shaped like its output.

    References:
      Srinivas, Fleuret. Full-Gradient Representation for Neural Network
      Visualization. arXiv:1905.00780, 2019.
    """
    _check_named(model)
    x, targets = _checks.prepare(model, x, target)
    post_process = _checks.flag("post_process", post_process)
    if post_process and x.ndim != 4:
        raise ValueError(
            f"post_process=True builds a map of NHWC images, but x has shape {tuple(x.shape)}; "
            "pass post_process=False for the raw parts"
        )
    sites = tuple(
        (call.path, call.occurrence, tuple(call.output.shape[1:]))
        for call in _calls(model, x)
        if call.has_bias and call.output.ndim >= 1 and call.output.shape[0] == x.shape[0]
    )
    return _fullgrad(model, x, targets, sites=sites, post_process=post_process)
