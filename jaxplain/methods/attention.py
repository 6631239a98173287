"""Attention methods: attention rollout, attention flow and gradient-weighted attention.

All three read the self-attention maps of a transformer, on any Flax Linen or NNX model
(`nn.MultiHeadDotProductAttention`, `nn.SelfAttention`, `nnx.MultiHeadAttention`,
attention written by hand with `jax.nn.softmax`) without the user editing the model.

Capture. The model's scores are traced to a jaxpr (`jax.make_jaxpr` of `model(x)` as a
function of its params and x) and evaluated by `jaxplain._jaxpr.evaluate`, whose hook
sees every softmax output, reaching into nested calls (`jit`, `remat`, custom
derivatives). A softmax counts as an attention map when it normalises over its last
axis, its output has three or more axes with the last two equal (N query tokens
attending to N key tokens) and exactly one of its other axes is the batch axis. The
batch axis is found by tracing the model at two batch sizes (the axis that grows with
the batch), since not every implementation puts it first (`jax.nn.dot_product_attention`
computes its weights under a `vmap` that puts a head-group axis first). Every other axis
is a head axis. A classifier's softmax (`output="probs"`), cross-attention (queries and
keys of different lengths) and softmaxes inside `lax.scan` bodies (`nn.scan`-stacked
layers) are not attention maps here; a model without any gets a ValueError naming it.
Attention computed by a fused kernel (`implementation="cudnn"`) has no softmax in the
program to capture.

Tokens and pixels. Every method computes one relevance per token, `extras["tokens"]`,
`(batch, N)`, and spreads it back onto x. For images x `(batch, H, W, C)` the N tokens
are the p x p patches in row-major order, optionally after one class token first: p is
the patch size with (H / p)(W / p) = N or N - 1. `values` is then the map `(batch, H,
W)` in which every pixel holds its patch's relevance. For token ids `(batch, T)` or
embeddings `(batch, T, D)`, N = T (the first token is the class token, e.g. BERT's
[CLS]) or N = T + 1 (a class token the model prepends), and `values` is `(batch, T)`.
A class token's own relevance is left out of `values` and kept in `extras["tokens"]`.

Targets. Rollout and flow do not depend on the class: `target` (the predicted class by
default) only labels the result, and k targets repeat the same values k times, so that
these methods run wherever a class-specific method does (metrics, `evaluate`, the
command line). Gradient-weighted attention is class-specific; several targets share one
forward pass (`engine.gradients`).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxplain import _checks, _jaxpr, engine
from jaxplain.attribution import Attribution
from jaxplain.methods.registry import register
from jaxplain.model import LinenApply, Model, Targets, _NnxApply

HEAD_FUSIONS = ("mean", "max", "min")

# Attention flow rounds each capacity to a multiple of 2**-FLOW_BITS (the max-flow solver
# takes integers); capacities are at most 1, so every flow fits an int32.
FLOW_BITS = 24

_HIGHEST = jax.lax.Precision.HIGHEST


# --- capturing attention maps -------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Map:
    """One attention map of the traced program.

    Attributes:
      where: the softmax's equation path (see `_jaxpr.evaluate`).
      shape: the softmax output's shape, (..., N, N).
      batch_axis: which of its axes is the batch axis.
    """

    where: tuple
    shape: tuple
    batch_axis: int

    @property
    def per_example(self) -> tuple:
        """The map's shape without the batch axis: (*heads, N, N)."""
        return self.shape[: self.batch_axis] + self.shape[self.batch_axis + 1 :]


def _scores(model: Model) -> Callable:
    """`(params, x) -> model(x)` with the params as an argument, to trace."""
    return lambda params, x: model.replace(params=params)(x)


def _softmaxes(jaxpr, path: tuple = ()) -> list:
    """`(where, shape, axes)` of every softmax, in the order `_jaxpr.evaluate` visits them."""
    units = _jaxpr.softmax_units(jaxpr)
    found = []
    for index, eqn in enumerate(jaxpr.eqns):
        if eqn.primitive.name in _jaxpr.CALLS:
            found += _softmaxes(_jaxpr.body(eqn)[0], path + (index,))
        elif index in units:
            found.append((path + (index,), tuple(eqn.outvars[0].aval.shape), tuple(units[index].axes)))
    return found


def _model_name(model: Model) -> str:
    apply = model.apply_fn
    while not isinstance(apply, (LinenApply, _NnxApply)) and hasattr(apply, "apply_fn"):
        apply = apply.apply_fn  # model_kwargs or several inputs wrap the model's apply
    if isinstance(apply, LinenApply):
        return type(apply.module).__name__
    if isinstance(apply, _NnxApply):
        nodes = getattr(apply.graphdef, "nodes", None)
        kind = getattr(nodes[0], "type", None) if nodes else None
        return getattr(kind, "__name__", "the NNX model")
    function = getattr(apply, "function", apply)  # the function of Model.from_callable
    return getattr(function, "__name__", type(function).__name__)


def _attention_maps(model: Model, x) -> tuple[_Map, ...]:
    """Every self-attention map of `model` on x (see the module docstring), from the
    program traced at x's batch size and at one more, whose softmaxes are matched in order."""

    def table(batch):
        struct = jax.ShapeDtypeStruct((batch,) + tuple(x.shape[1:]), x.dtype)
        return _softmaxes(jax.make_jaxpr(_scores(model))(model.params, struct).jaxpr)

    batch = x.shape[0]
    softmaxes = table(batch)
    # The same softmaxes in the same order; their equation paths may differ (a broadcast
    # to batch 1 is no equation at all).
    grown = [shape for _, shape, _ in table(batch + 1)]
    if len(grown) != len(softmaxes):
        raise ValueError(
            f"{_model_name(model)} computes {len(softmaxes)} softmaxes for {batch} examples but "
            f"{len(grown)} for {batch + 1}: the attention methods need the same program for every batch size"
        )
    maps = []
    for (where, shape, axes), other in zip(softmaxes, grown):
        if len(shape) < 3 or axes != (len(shape) - 1,) or shape[-1] != shape[-2]:
            continue
        if len(other) != len(shape) or other[-2:] != shape[-2:]:
            continue
        changed = [a for a in range(len(shape) - 2) if other[a] != shape[a]]
        if len(changed) == 1 and (shape[changed[0]], other[changed[0]]) == (batch, batch + 1):
            maps.append(_Map(where, shape, changed[0]))
    if not maps:
        seen = ", ".join(f"{shape} over axes {axes}" for _, shape, axes in softmaxes) or "none"
        raise ValueError(
            f"{_model_name(model)} has no self-attention maps to explain: the attention methods need "
            f"softmaxes over the last axis shaped (batch, heads..., tokens, tokens), computed in the "
            f"traced program (not inside lax.scan, nor by a fused attention kernel); softmaxes found: {seen}"
        )
    tokens = sorted({m.shape[-1] for m in maps})
    if len(tokens) > 1:
        raise ValueError(
            f"{_model_name(model)}'s attention maps attend over different numbers of tokens {tokens}: "
            "rollout, flow and gradient-weighted attention chain maps over the same tokens"
        )
    return tuple(maps)


def _run(model: Model, x, maps: tuple[_Map, ...], added=None):
    """`(model(x), weights)`: the scores, and each attention map batch first, (B, *heads,
    N, N). With `added`, `added[i]` (B, *heads, N, N) is added to map i in the pass."""
    closed = jax.make_jaxpr(_scores(model))(model.params, x)
    position = {m.where: i for i, m in enumerate(maps)}
    weights = {}

    def hook(output, where):
        i = position.get(where)
        if i is None:
            return output
        weights[i] = jnp.moveaxis(output, maps[i].batch_axis, 0)
        if added is None:
            return output
        return output + jnp.moveaxis(added[i].astype(output.dtype), 0, maps[i].batch_axis)

    leaves = jax.tree_util.tree_leaves((model.params, x))
    (scores,) = _jaxpr.evaluate(closed.jaxpr, closed.consts, leaves, hook)
    return scores, [weights[i] for i in range(len(maps))]


@dataclasses.dataclass(frozen=True)
class _Perturbed:
    """`apply_fn(params, (perturbations, x))`: the model's scores on x with each attention
    map plus its perturbation, the perturbations packed side by side, (B, D)."""

    apply_fn: Callable
    output: Any
    maps: tuple

    def __call__(self, params, inputs):
        packed, x = inputs
        sizes = [int(np.prod(m.per_example)) for m in self.maps]
        pieces = jnp.split(packed, np.cumsum(sizes)[:-1], axis=-1)
        added = [p.reshape((p.shape[0],) + m.per_example) for p, m in zip(pieces, self.maps)]
        return _run(Model(self.apply_fn, params, self.output), x, self.maps, added)[0]


# --- tokens, queries and pixels -----------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Layout:
    """How N tokens sit on x: an optional class token first, then one token per
    position (a p x p patch of an image, or one of T tokens)."""

    tokens: int
    class_token: bool
    patch: int | None


def _layout(model: Model, x_shape: tuple, tokens: int) -> _Layout:
    if len(x_shape) == 4:
        height, width = x_shape[1:3]
        found = [
            _Layout(tokens, bool(extra), p)
            for p in range(1, min(height, width) + 1)
            if height % p == 0 and width % p == 0
            for extra in (0, 1)
            if (height // p) * (width // p) + extra == tokens
        ]
        if len(found) == 1:
            return found[0]
        raise ValueError(
            f"{_model_name(model)} attends over {tokens} tokens, which are not the square patches of "
            f"x's {height} x {width} pixels (with or without one class token)"
            + (f"; several patch sizes fit: {[f.patch for f in found]}" if found else "")
        )
    if len(x_shape) in (2, 3):
        if tokens in (x_shape[1], x_shape[1] + 1):
            return _Layout(tokens, tokens == x_shape[1] + 1, None)
        raise ValueError(
            f"{_model_name(model)} attends over {tokens} tokens but x has {x_shape[1]} positions "
            f"(shape {x_shape}); expected {x_shape[1]}, or {x_shape[1] + 1} with a class token"
        )
    raise ValueError(
        f"x has shape {x_shape}: the attention methods map tokens back onto images (batch, H, W, C), "
        "token ids (batch, T) or embeddings (batch, T, D)"
    )


def _query_option(query, *, mean: bool = True):
    if query == "cls" or (mean and query == "mean"):
        return query
    if isinstance(query, (int, np.integer)) and not isinstance(query, bool) and query >= 0:
        return int(query)
    allowed = "'cls', 'mean'" if mean else "'cls'"
    raise ValueError(f"query must be {allowed} or a token index >= 0, got {query!r}")


def _query(query, layout: _Layout, model: Model):
    """The query token's index ("mean" kept), checked against the model's tokens."""
    if query == "cls":
        if layout.patch is not None and not layout.class_token:
            raise ValueError(
                f"query='cls': {_model_name(model)} has no class token (its {layout.tokens} tokens are "
                "the image's patches); pass query='mean' or a token index"
            )
        return 0
    if query != "mean" and query >= layout.tokens:
        raise ValueError(f"query {query} is not one of {_model_name(model)}'s {layout.tokens} tokens")
    return query


def _row(matrix, query):
    """The query's row of (..., N, N) matrices, or the mean row for query="mean"."""
    return matrix.mean(axis=-2) if query == "mean" else matrix[..., query, :]


def _spread(tokens, layout: _Layout, x_shape: tuple):
    """Token relevance (..., N) as values on x: (..., H, W) for images, else (..., T)."""
    if layout.class_token:
        tokens = tokens[..., 1:]
    if layout.patch is None:
        return tokens
    p = layout.patch
    grid = tokens.reshape(tokens.shape[:-1] + (x_shape[1] // p, x_shape[2] // p))
    return jnp.repeat(jnp.repeat(grid, p, axis=-2), p, axis=-1)


def _result(targets: Targets, chosen, tokens, layout: _Layout, x) -> Attribution:
    """The `Attribution` of token relevance (B, k, N) for the classes `chosen` (B, k)."""
    return engine.attribution(targets, _spread(tokens, layout, x.shape), chosen, extras={"tokens": tokens})


def _fused(weights, head_fusion: str):
    """Attention (B, *heads, N, N) fused over its heads: (B, N, N), float32 or wider."""
    weights = weights.reshape((weights.shape[0], -1) + weights.shape[-2:])
    weights = weights.astype(engine.accumulation_dtype(weights))
    return getattr(jnp, head_fusion)(weights, axis=1)


def _with_residual(weights, residual):
    """residual * I + (1 - residual) * weights, each row renormalised to sum to 1."""
    weights = residual * jnp.eye(weights.shape[-1], dtype=weights.dtype) + (1 - residual) * weights
    total = weights.sum(axis=-1, keepdims=True)
    return jnp.where(total > 0, weights / jnp.where(total > 0, total, 1), 0)


def _setup(model: Model, x):
    maps = _attention_maps(model, x)
    return maps, _layout(model, tuple(x.shape), maps[0].shape[-1])


def _prepare(model: Model, x, target, head_fusion, residual):
    x, targets = _checks.prepare(model, x, target, integer_ids=True)
    head_fusion = _checks.choice("head_fusion", head_fusion, HEAD_FUSIONS)
    residual = jnp.asarray(_checks.fraction("residual", residual), jnp.float32)
    return x, targets, head_fusion, residual


def _broadcast(tokens, chosen):
    """Class-independent relevance (B, N) repeated for the k targets: (B, k, N)."""
    return jnp.broadcast_to(tokens[:, None], (tokens.shape[0], chosen.shape[1]) + tokens.shape[1:])


# --- attention rollout --------------------------------------------------------------------


@engine.program(static_argnames=("head_fusion", "query"))
def _rollout(model, x, targets: Targets, residual, *, head_fusion, query):
    maps, layout = _setup(model, x)
    query = _query(query, layout, model)
    scores, weights = _run(model, x, maps)
    chosen = targets.resolve(scores)
    layers = [_with_residual(_fused(w, head_fusion), residual) for w in weights]
    rollout = functools.reduce(lambda below, layer: jnp.matmul(layer, below, precision=_HIGHEST), layers)
    return _result(targets, chosen, _broadcast(_row(rollout, query), chosen), layout, x)


@register("layer")
def attention_rollout(
    model: Model,
    x,
    *,
    target="predicted",
    head_fusion: str = "mean",
    residual: float = 0.5,
    query="cls",
) -> Attribution:
    """Attention rollout: how much of each input token reaches the query token.

    Each layer's attention, fused over its heads, is mixed with the identity for the
    residual connection and its rows renormalised; the layers are multiplied from the
    input up, and the query token's row is its relevance over the input tokens:

    .. math::

        \\hat A_l = \\mathrm{rows}(r I + (1 - r) \\mathrm{fuse}_h A_l), \\quad
        \\tilde A = \\hat A_L \\cdots \\hat A_1, \\quad \\phi_j = \\tilde A_{q j}.

    With the default `residual=0.5` and `head_fusion="mean"` this is the paper's
    rollout; every row of \\tilde A sums to 1. It does not depend on the class.

    Args:
      model: a `jaxplain.Model` whose program computes self-attention weights with a
        softmax (Linen, NNX or hand-written; see this module's docstring).
      x: images `(batch, H, W, C)`, token ids `(batch, T)` or embeddings
        `(batch, T, D)`.
      target: only labels the result (the rollout is the same for every class): as
        for `saliency`; the predicted class by default. k targets repeat the values.
      head_fusion: "mean", "max" or "min" over each layer's heads.
      residual: r in [0, 1], the weight of the identity (the residual connection).
      query: "cls" (the first token, the class token), a token index, or "mean"
        (the mean of every token's row).

    Returns:
      An `Attribution` whose `values` are `(batch, H, W)` for images (each pixel holds
      its patch's relevance) or `(batch, T)` for tokens (with a target axis after the
      batch axis for several targets); `extras["tokens"]`, `(batch, N)` (or `(batch,
      k, N)`), is the relevance of every token, a class token included.

    Example:
      >>> import jax, jax.numpy as jnp, jaxplain
      >>> def attend(x):  # one head over 3 tokens, then a mean-pooled score
      ...     weights = jax.nn.softmax(jnp.einsum("btd,bsd->bts", x, x), axis=-1)
      ...     return (weights @ x).mean(axis=1)
      >>> model = jaxplain.Model.from_callable(attend)
      >>> result = jaxplain.attention_rollout(model, jnp.eye(3)[None], query=0)
      >>> [round(value, 3) for value in result.values[0].tolist()]
      [0.788, 0.106, 0.106]

    References:
      Abnar, Zuidema. Quantifying Attention Flow in Transformers.
      arXiv:2005.00928, 2020.
    """
    x, targets, head_fusion, residual = _prepare(model, x, target, head_fusion, residual)
    return _rollout(model, x, targets, residual, head_fusion=head_fusion, query=_query_option(query))


# --- attention flow -----------------------------------------------------------------------


def max_flows(capacities, *, query: int) -> np.ndarray:
    """Max flow from the query token of the top layer to every token of the input layer.

    The layered graph has a node (l, i) for token i of layer l = 0 (the input) .. L and
    an edge from (l + 1, i) to (l, j) of capacity `capacities[..., l, i, j]`. Each
    capacity is rounded to a multiple of 2**-FLOW_BITS and the flow is solved exactly
    for the rounded capacities (SciPy's Dinic), so it differs from the exact max flow
    by at most 2**-(FLOW_BITS + 1) per edge of a minimum cut.

    Args:
      capacities: `(..., L, N, N)` non-negative numbers, at most 1.
      query: the source token of layer L.

    Returns:
      `(..., N)` float32 flows.
    """
    from scipy.sparse import csr_matrix
    from scipy.sparse.csgraph import maximum_flow

    capacities = np.asarray(capacities, np.float64)
    *leading, layers, tokens, _ = capacities.shape
    layer, row, column = np.meshgrid(np.arange(layers), np.arange(tokens), np.arange(tokens), indexing="ij")
    tails, heads = ((layer + 1) * tokens + row).ravel(), (layer * tokens + column).ravel()
    nodes = (layers + 1) * tokens
    scale = float(1 << FLOW_BITS)
    flows = []
    for example in capacities.reshape((-1, layers, tokens, tokens)):
        units = np.rint(example.ravel() * scale).astype(np.int32)
        kept = units > 0
        graph = csr_matrix((units[kept], (tails[kept], heads[kept])), shape=(nodes, nodes))
        source = layers * tokens + query
        flows.append([maximum_flow(graph, source, sink).flow_value / scale for sink in range(tokens)])
    return np.asarray(flows, np.float32).reshape((*leading, tokens))


@engine.program(static_argnames=("head_fusion", "query"))
def _flow(model, x, targets: Targets, residual, *, head_fusion, query):
    maps, layout = _setup(model, x)
    query = _query(query, layout, model)
    scores, weights = _run(model, x, maps)
    chosen = targets.resolve(scores)
    capacities = jnp.stack([_with_residual(_fused(w, head_fusion), residual) for w in weights], axis=1)
    flows = jax.pure_callback(
        functools.partial(max_flows, query=query),
        jax.ShapeDtypeStruct(capacities.shape[:1] + capacities.shape[-1:], jnp.float32),
        capacities,
        vmap_method="broadcast_all",
    )
    return _result(targets, chosen, _broadcast(flows, chosen), layout, x)


@register("layer")
def attention_flow(
    model: Model,
    x,
    *,
    target="predicted",
    head_fusion: str = "mean",
    residual: float = 0.5,
    query="cls",
) -> Attribution:
    """Attention flow: the max flow from the query token to each input token.

    The layers' attention (fused over heads, mixed with the identity and renormalised
    as in `attention_rollout`) are the capacities of a layered graph: an edge from token
    i of layer l to token j of layer l - 1 has capacity \\hat A_l[i, j]. phi_j is the
    value of the maximum flow from the query token of the top layer to token j of the
    input layer. Unlike rollout (a product of the layers), a flow is bounded by the
    narrowest cut between the two tokens. It does not depend on the class.

    The attention maps are computed in the compiled program; the flows are a host
    computation (`jax.pure_callback` into SciPy's maximum_flow, not compiled), one max
    flow per example and input token on a graph of (L + 1) N nodes and L N^2 edges:
    about 16 ms per flow for N = 197 tokens and L = 12 layers (ViT-B/16's size, random
    attention-like capacities), so about 3 s per example on one CPU core. Capacities are rounded to multiples of 2**-24
    (`max_flows`). The paper's reference code divides the flows by their sum; this
    returns the flows themselves.

    Args:
      model: as for `attention_rollout`.
      x: as for `attention_rollout`.
      target: only labels the result, as for `attention_rollout`.
      head_fusion: "mean", "max" or "min" over each layer's heads.
      residual: r in [0, 1], the weight of the identity (the residual connection).
      query: "cls" (the first token) or a token index: the source of the flow.

    Returns:
      An `Attribution` shaped as for `attention_rollout`, each value a flow in [0, 1].

    References:
      Abnar, Zuidema. Quantifying Attention Flow in Transformers.
      arXiv:2005.00928, 2020.
    """
    x, targets, head_fusion, residual = _prepare(model, x, target, head_fusion, residual)
    query = _query_option(query, mean=False)
    return _flow(model, x, targets, residual, head_fusion=head_fusion, query=query)


# --- gradient-weighted attention (Chefer et al.) ------------------------------------------


@engine.program(static_argnames=("query",))
def _gradient_weighted(model, x, targets: Targets, *, query):
    maps, layout = _setup(model, x)
    query = _query(query, layout, model)
    _, weights = _run(model, x, maps)
    batch, tokens = x.shape[0], layout.tokens
    perturbed = Model(_Perturbed(model.apply_fn, model.output, maps), model.params)
    sizes = [int(np.prod(m.per_example)) for m in maps]
    zeros = jnp.zeros((batch, sum(sizes)), engine.accumulation_dtype(weights[0]))
    _, chosen, grads = engine.gradients(perturbed, zeros, targets.resolve, context=x)
    count = chosen.shape[1]
    eye = jnp.eye(tokens, dtype=grads.dtype)
    relevance = jnp.broadcast_to(eye, (batch, count, tokens, tokens))
    for w, g in zip(weights, jnp.split(grads, np.cumsum(sizes)[:-1], axis=-1)):
        g = g.reshape((batch, count, -1, tokens, tokens))
        w = w.reshape((batch, 1, -1, tokens, tokens)).astype(g.dtype)
        mixed = jax.nn.relu(g * w).mean(axis=2)
        relevance = relevance + jnp.matmul(mixed, relevance, precision=_HIGHEST)
    return _result(targets, chosen, _row(relevance - eye, query), layout, x)


@register("layer")
def gradient_weighted_attention(model: Model, x, *, target, query="cls") -> Attribution:
    """Gradient-weighted attention relevance (Chefer, Gur, Wolf), class-specific.

    Each self-attention map A_l (heads h) is weighted by the gradient of the target
    output with respect to it, its positive part averaged over the heads, and the
    layers are accumulated from the input up, starting from the identity:

    .. math::

        \\bar A_l = \\mathbb{E}_h \\big[(\\nabla_{A_l} F_t \\odot A_l)^+\\big], \\quad
        R \\leftarrow R + \\bar A_l R \\; (l = 1 .. L,\\ R = I \\text{ at first}),
        \\quad \\phi_j = (R - I)_{q j}.

    The gradients with respect to the attention maps are those of a zero perturbation
    added to each map, all in one backward pass (k targets share the forward pass).

    Args:
      model: as for `attention_rollout`.
      x: as for `attention_rollout`.
      target: as for `saliency`.
      query: "cls" (the first token, the class token), a token index, or "mean".

    Returns:
      An `Attribution` shaped as for `attention_rollout`; `extras["tokens"]` is the
      query's row of R - I over every token.

    References:
      Chefer, Gur, Wolf. Generic Attention-model Explainability for Interpreting
      Bi-Modal and Encoder-Decoder Transformers. arXiv:2103.15679, 2021.
    """
    x, targets = _checks.prepare(model, x, target, integer_ids=True)
    return _gradient_weighted(model, x, targets, query=_query_option(query))
