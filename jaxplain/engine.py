"""The attribution engine: weighted sums of input-gradients over sets of points.

Every gradient method in jaxplain is a choice of points and weights. For a batch `x`
of B examples, K points per example `p_k = point_fn(param_k, x)` and weights `w_k`,
the engine computes, for each example b and each of its k targets t,

    sum_k w[k, b] * d F_t(p) / d p  at p = p_k[b]      (shape (B, k, *x.shape[1:]))

and, where asked, the target outputs F_t(p_k[b]) at every point (shape (B, K, k)); its
forward-only form folds the outputs of each chunk into running statistics
(`fold_outputs`). This is the only module that knows how points are batched:

* Points are evaluated `chunk_size` at a time: all B examples times `chunk_size` points
  form one batch of rows for the model. Chunks run one after another (`fold_chunks`),
  either unrolled (a few chunks on the CPU, see `max_unrolled_chunks`) or as a
  `lax.scan` over the full chunks plus one shorter call for the remainder, so a chunk
  size that does not divide K gives the same answer without wasted evaluations. A
  chunk's point parameters are sliced from arrays of K, or made from the points'
  indices (`Indexed`: random draws from `fold_in(key, i)`, schedules by formula), so
  peak memory is set by the chunk, never by K.
* Rows are laid out example-major (row = b * chunk + j), so a batch sharded across
  devices along its first axis stays sharded.
* Several targets share one forward pass per chunk: the pullback of that forward pass
  is vmapped over the targets' one-hot cotangents.
* Weights are applied, and sums accumulated, in float32 or wider, whatever the
  model's compute dtype (a bfloat16 model keeps float32 quadrature weights); sums over
  chunks are compensated (`compensated_add`) and running statistics merged pairwise
  (`merge_moments`, `merge_comoments`), so their error does not grow with K.
"""

from __future__ import annotations

import functools
import os
import weakref
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxplain.attribution import Attribution
from jaxplain.backends import cpu
from jaxplain.model import Model, Targets

Array = jax.Array

# Bytes a chunk may use for the activations saved for the backward pass, when the caller
# does not set `chunk_size`: a quarter of an accelerator's memory; on the CPU, an eighth
# of the machine's memory, at least DEFAULT_CHUNK_BYTES (which also applies where the OS
# does not tell). The environment variable JAXPLAIN_CHUNK_BYTES overrides it. On the CPU
# a default chunk is capped far below it (`cpu.chunk_points`); the budget decides
# whether a few chunks are laid out unrolled (`fits_at_once`).
DEFAULT_CHUNK_BYTES = 1 << 30


def convolutional(model) -> bool:
    """Whether a model has convolution kernels (`cpu.has_convolutions`): the programs
    that take jaxplain's XLA:CPU options (see `jaxplain.backends.cpu`)."""
    return _model_facts(model)[2]


# Per model object: its tree structure, its leaves' shapes and dtypes, and whether it is
# `convolutional`, found once (a `Model` is immutable; walking a large model's parameters
# each call would cost more than the call's other host work).
_MODEL_FACTS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _model_facts(model) -> tuple:
    try:
        found = _MODEL_FACTS.get(model)
    except TypeError:  # not weakly referable or not hashable: found anew each time
        found = None
    if found is None:
        leaves, treedef = jax.tree_util.tree_flatten(model)
        avals = tuple(
            (np.shape(leaf), getattr(leaf, "dtype", None) or np.result_type(leaf)) for leaf in leaves
        )
        found = (treedef, avals, cpu.has_convolutions(getattr(model, "params", None)))
        if not any(isinstance(leaf, jax.core.Tracer) for leaf in leaves):
            try:
                _MODEL_FACTS[model] = found
            except TypeError:
                pass
    return found


def jit(fun: Callable, *, model=None, **options):
    """`jax.jit(fun, **options)` with jaxplain's XLA options (`cpu.compiler_options`),
    unless `model` is given and is not `convolutional`. Call the result at top level."""
    tuned = cpu.compiler_options(model is None or convolutional(model))
    if tuned:
        options["compiler_options"] = {**tuned, **options.get("compiler_options", {})}
    return jax.jit(fun, **options)


class _Program:
    """A jitted explainer body, compiled with `cpu.compiler_options` when called at top
    level on a `convolutional` model.

    XLA options can only be given to a top-level `jax.jit`: called under a caller's
    transformation (`cpu.top_level` is False), the body is the plain `jax.jit`, staged
    into the caller's program and compiled with the caller's options.

    `traces` counts the times the body was traced (a compile cache miss), so that a test
    can check that a call reused a compiled program.
    """

    def __init__(self, fun: Callable, static_argnames: tuple[str, ...]):
        self.traces = 0

        @functools.wraps(fun)
        def counted(*args, **kwargs):
            self.traces += 1
            return fun(*args, **kwargs)

        self._fun, self._static = counted, static_argnames
        self._plain = jax.jit(counted, static_argnames=static_argnames)
        self._tuned = None
        functools.update_wrapper(self, fun)

    def _top_level(self):
        if self._tuned is None:
            self._tuned = jit(self._fun, static_argnames=self._static)
        return self._tuned

    def __call__(self, *args, **kwargs):
        models = [a for a in (*args, *kwargs.values()) if isinstance(a, Model)]
        if cpu.compiler_options(any(convolutional(m) for m in models)) and cpu.top_level((args, kwargs)):
            return self._top_level()(*args, **kwargs)
        return self._plain(*args, **kwargs)

    def lower(self, *args, **kwargs):
        return self._top_level().lower(*args, **kwargs)


def program(fun: Callable | None = None, *, static_argnames: Sequence[str] = ()):
    """Decorator: compile an explainer's traced body as one XLA program.

    Every method wraps its body with it, so that all of jaxplain's programs are
    compiled the same way: `jax.jit` with `static_argnames`, and jaxplain's XLA:CPU
    options for convolutional models (`jaxplain.backends.cpu`). The result counts its
    traces in `traces`.
    """
    if fun is None:
        return functools.partial(program, static_argnames=static_argnames)
    return _Program(fun, tuple(static_argnames))


def after(value: Array, dependency: Array) -> Array:
    """`value + 0 * dependency`: `value`, available only once `dependency` is computed.

    XLA's CPU runtime runs independent operations of one program at the same time.
    When both are multi-threaded matmuls (the first backward step, which needs only the
    cotangent, next to the forward pass; or IG's endpoint pass next to its path) they
    compete for the same cores and both slow down several-fold (docs/architecture.md,
    "Ordering matmuls on the CPU"). An optimisation barrier does not order them at run
    time; a data dependency does. `dependency` must broadcast to `value`'s shape; pass
    a cheap piece of the result to wait for (an elementwise tie costs one fused add; a
    reduction over a matmul's output can cost more than the matmul). Where
    `dependency` is NaN or infinite the result is NaN, which only happens when the
    model's outputs are already unusable.
    """
    dependency = jax.lax.stop_gradient(dependency).astype(value.dtype)
    return value + jnp.zeros((), value.dtype) * dependency


def forward(model: Model, x: Array) -> Array:
    """The model's selected outputs (B, classes) for one batch, without gradients."""
    return model(x)


def forward_rows(model: Model, rows: Array, *, chunk_size: int | None = None) -> Array:
    """The model's outputs (M, classes) for M rows, `chunk_size` rows at a time.

    For row sets whose size is the user's (a background set of references), so that
    the activations held are one chunk's, whatever M. By default as many rows as the
    chunk budget allows (`default_chunk_size`).
    """
    chunk_size = points_per_chunk(chunk_size, model, rows[:1], rows.shape[0])

    def chunk(carry, start, size, _):
        outputs = model(jax.lax.dynamic_slice_in_dim(rows, start, size))
        return carry, outputs[None]

    _, outputs = fold_chunks(
        chunk,
        rows.shape[0],
        chunk_size,
        rows[:1],
        jnp.zeros(()),
        dependency=lambda carry: carry,
        unroll=False,
        collect=True,
    )
    return outputs[0]


def gradients(model: Model, points, choose: Callable[[Array], Array], *, context=None):
    """Outputs at `points` and gradients of chosen outputs, in one forward pass.

    Args:
      model: the model; called as `model(points)`, or `model((points, context))` when
        a context is given.
      points: (R, ...) rows to differentiate.
      choose: maps the outputs (R, C) (gradient stopped) to the (R, k) int classes to
        differentiate; k targets share the forward pass.
      context: optional pytree of (R, ...) rows the model also reads but that are not
        differentiated (e.g. the input of a network whose inner layer is `points`).

    Returns:
      `(outputs, targets, grads)`: outputs (R, C), targets (R, k) and
      grads (R, k, ...) with grads[r, j] = d outputs[r, targets[r, j]] / d points[r].
    """
    function = model if context is None else (lambda p: model((p, context)))
    outputs, pullback = jax.vjp(function, points)
    targets = choose(jax.lax.stop_gradient(outputs))
    cotangents = jax.nn.one_hot(targets, outputs.shape[-1], dtype=outputs.dtype)
    cotangents = after(cotangents, outputs[:, None])
    if targets.shape[1] == 1:
        grads = jax.tree_util.tree_map(lambda g: g[:, None], pullback(cotangents[:, 0])[0])
    else:
        grads = jax.vmap(pullback, in_axes=1, out_axes=1)(cotangents)[0]
    return outputs, targets, grads


def _rows(tree, size: int):
    """Per-example pytree leaves (B, ...) repeated for `size` points: (B * size, ...)."""
    return jax.tree_util.tree_map(lambda leaf: jnp.repeat(leaf, size, axis=0), tree)


def _points(point_fn, params, x, batch: int):
    """The chunk's points as example-major rows, (batch * size, ...)."""
    points = jax.vmap(point_fn, in_axes=(0, None), out_axes=1)(params, x)
    return points.reshape((-1,) + points.shape[2:])


class Indexed(NamedTuple):
    """The parameters of `count` points, made one chunk at a time instead of all at once.

    `at(indices)` returns the parameters of the points `indices` (an int32 array of
    shape (size,)) as a pytree with a leading axis of that size. A method whose points
    are drawn at random draws each from its index (e.g. `jax.random.fold_in(key, i)`),
    so nothing of size `count` is ever held and the answer does not depend on the chunk.
    """

    count: int
    at: Callable[[Array], Any]


def point_count(point_params) -> int:
    """K: the number of points of `Indexed` parameters or of a pytree of (K, ...) leaves."""
    if isinstance(point_params, Indexed):
        return point_params.count
    return jax.tree_util.tree_leaves(point_params)[0].shape[0]


def chunk_params(point_params, start, size: int):
    """The parameters of the points start .. start + size - 1 (`start` may be traced)."""
    if isinstance(point_params, Indexed):
        return point_params.at(start + jnp.arange(size, dtype=jnp.int32))
    return jax.tree_util.tree_map(lambda leaf: jax.lax.dynamic_slice_in_dim(leaf, start, size), point_params)


def compensated_add(total, value):
    """Kahan summation: `total` is a pair (sum, compensation) of pytrees; adds `value`.

    Sums over many chunks (a million samples make thousands) lose the low bits of
    every addend in float32; the compensation carries them, so the error does not
    grow with the number of chunks.
    """
    sums, compensation = total
    corrected = jax.tree_util.tree_map(jnp.subtract, value, compensation)
    new = jax.tree_util.tree_map(jnp.add, sums, corrected)
    compensation = jax.tree_util.tree_map(
        lambda new, old, corrected: (new - old) - corrected, new, sums, corrected
    )
    return new, compensation


def merge_moments(state, samples):
    """Adds `samples` (B, n, ...) to running (count, mean, sum of squared deviations).

    Chan, Golub and LeVeque's pairwise update: the chunk's own mean and squared
    deviations, merged with the state's. Unlike running sums of x and x^2, it keeps the
    variance accurate in float32 however many samples are folded in and however large
    their mean is next to their spread. `count` is a scalar; start from (0, 0, 0).
    """
    count, mean, squares = state
    new = samples.shape[1]
    chunk_mean = samples.mean(axis=1)
    chunk_squares = ((samples - chunk_mean[:, None]) ** 2).sum(axis=1)
    total = count + new
    shift = chunk_mean - mean
    return (total, mean + shift * (new / total), squares + chunk_squares + shift**2 * (count * new / total))


def merge_comoments(state, samples, weights=None):
    """Adds weighted samples (..., n, p) to running (total weight (...), mean (..., p),
    co-moment sum_i w_i (s_i - mean)(s_i - mean)^T (..., p, p)).

    The chunk's own weighted mean and centred co-moments, merged with the state's by
    Chan et al.'s pairwise update: covariances, correlations and least-squares fits
    from it keep their accuracy in float32 for any number of samples, where raw sums of
    s s^T lose it to cancellation. `weights` (..., n) default to 1; start from zeros.
    """
    total_a, mean_a, co_a = state
    if weights is None:
        weights = jnp.ones(samples.shape[:-1], samples.dtype)
    total_b = weights.sum(axis=-1)
    mean_b = (weights[..., None] * samples).sum(axis=-2) / jnp.where(total_b > 0, total_b, 1.0)[..., None]
    centred = samples - mean_b[..., None, :]
    co_b = jnp.einsum(
        "...n,...np,...nq->...pq", weights, centred, centred, precision=jax.lax.Precision.HIGHEST
    )
    total = total_a + total_b
    share = jnp.where(total > 0, total_b / jnp.where(total > 0, total, 1.0), 0.0)
    shift = mean_b - mean_a
    cross = (total_a * share)[..., None, None]
    return (
        total,
        mean_a + shift * share[..., None],
        co_a + co_b + cross * shift[..., :, None] * shift[..., None, :],
    )


def fold_chunks(
    chunk, count: int, chunk_size: int, x, init, dependency, *, unroll: bool, collect: bool = False
):
    """Runs `chunk` over K = `count` points in chunks of `chunk_size`, one after another.

    `chunk(carry, start, size, x) -> (carry, values)` evaluates the points start ..
    start + size - 1 (`start` is a Python int or a traced int32, `size` is static) and
    folds them into `carry` (any pytree; `init` is its first value). With `collect`,
    `values` (B, size, ...) are concatenated along axis 1 and returned; otherwise they
    are dropped (return None) and nothing grows with K. With `unroll`, up to
    `max_unrolled_chunks()` chunks are laid out in straight-line code; otherwise, or with
    more chunks, they run as a `lax.scan` over the full chunks plus one call for the
    remainder. Either way each chunk's `x` is tied (`after`) to `dependency(carry)` of
    the chunk before, so they run one at a time. Only the scan bounds memory by one
    chunk: XLA:CPU does not reuse the buffers of unrolled chunks (docs/performance.md,
    "CPU tuning"), so callers unroll only when all the points would fit the memory
    budget at once (`fits_at_once`).

    Returns `(carry, values)`.
    """
    batch = x.shape[0]

    def tied(carry):
        return after(x, dependency(carry).astype(x.dtype))

    chunk_size = min(chunk_size, count)
    starts = range(0, count, chunk_size)
    # One chunk is one chunk's memory either way, and straight-line code is what XLA:CPU
    # optimizes best: it rewrites convolutions into the layouts of its fast kernels only
    # outside loops (see `jaxplain.models.conv_general_dilated`).
    if (unroll and len(starts) <= max_unrolled_chunks()) or len(starts) == 1:
        carry, collected, chunk_x = init, [], x
        for start in starts:
            carry, values = chunk(carry, start, min(chunk_size, count - start), chunk_x)
            collected.append(values)
            chunk_x = tied(carry)
        return carry, (jnp.concatenate(collected, axis=1) if collect else None)

    full, remainder = divmod(count, chunk_size)

    def body(carry, index):
        carry, values = chunk(carry, index * chunk_size, chunk_size, x)
        return carry, (values if collect else None)

    carry, collected = jax.lax.scan(body, init, jnp.arange(full, dtype=jnp.int32))
    if collect:
        collected = collected.swapaxes(0, 1)
        collected = collected.reshape((batch, full * chunk_size) + collected.shape[3:])
    if remainder:
        carry, values = chunk(carry, full * chunk_size, remainder, tied(carry))
        if collect:
            collected = jnp.concatenate([collected, values], axis=1)
    return carry, collected


def explain_copies(explain, copies, targets, arrays: dict, keys=None):
    """Explains noisy copies (size, B, ...) of a batch x: values (B, size, ...).

    `explain(rows, targets, arrays, key) -> values (rows, ...)` runs a method. Without
    `keys` the copies go through one batched call of size x B rows (example-major), and
    array options shaped like x (a baseline per example) follow their example. With
    `keys` (one per copy, (size,), or one for all, ()) a randomized method is mapped
    over the copies, each call explaining the whole batch: its draws for a copy then do
    not depend on which copies share its chunk.
    """
    size, batch = copies.shape[:2]
    if keys is not None:
        values = jax.vmap(
            lambda copy, key: explain(copy, targets, arrays, key), in_axes=(0, 0 if keys.ndim else None)
        )(copies, keys)
        return values.swapaxes(0, 1)
    rows = copies.swapaxes(0, 1).reshape((batch * size,) + copies.shape[2:])
    repeated = {
        k: jnp.repeat(v, size, axis=0) if v.shape == copies.shape[1:] else v for k, v in arrays.items()
    }
    values = explain(rows, jnp.repeat(targets, size, axis=0), repeated, None)
    return values.reshape((batch, size) + values.shape[1:])


def points_per_chunk(chunk_size: int | None, model: Model, x, count: int, *, context=None) -> int:
    """The chunk a program evaluates `count` points in: the caller's `chunk_size` (at most
    `count`), or `default_chunk_size` when it is None. Called while tracing, where the
    point count is static, so no method restates its count to size its chunk."""
    if chunk_size is None:
        return default_chunk_size(model, x, count, context=context)
    return max(1, min(int(chunk_size), count))


# --- the skeleton every method shares ---------------------------------------------------


def accumulation_dtype(value) -> Any:
    """The dtype weights are applied and sums kept in: float32, or wider if `value`'s
    dtype is (a bfloat16 model keeps float32 sums). `value` is an array or a dtype."""
    return jnp.promote_types(jnp.result_type(value), jnp.float32)


def tie(value: Array, dependency: Array) -> Array:
    """`value` (R, ...), available only once `dependency` (R, ...) is computed: each row
    waits for the first element of its own row of `dependency` (see `after`)."""
    first = dependency.reshape(dependency.shape[0], -1)[:, :1]
    return after(value, first.reshape((value.shape[0],) + (1,) * (value.ndim - 1)))


class Endpoints(NamedTuple):
    """What a method knows after its first forward pass (see `endpoints`).

    Attributes:
      targets: (B, k) int classes, resolved at x (from `target="predicted"`, `top_k`).
      at_x: (B, k) target outputs at x, in the accumulation dtype.
      at_reference: (B, k) target outputs at the reference, or None without one.
      x: x, tied to this pass: what the method evaluates its points from.
    """

    targets: Array
    at_x: Array
    at_reference: Array | None
    x: Array


def endpoints(model: Model, x: Array, targets: Targets, reference: Array | None = None) -> Endpoints:
    """One forward pass over x (and a reference per example, (B, ...)), before any point.

    Resolves `targets` at x and returns x tied to the pass
    (`tie`), so that the points that follow wait for it instead of competing with it
    for the cores.
    """
    batch = x.shape[0]
    rows = x if reference is None else jnp.concatenate([x, reference.astype(x.dtype)])
    outputs = forward(model, rows)
    chosen = targets.resolve(outputs[:batch])

    def pick(outputs):
        return jnp.take_along_axis(outputs, chosen, axis=1).astype(accumulation_dtype(x))

    at_x = pick(outputs[:batch])
    at_reference = None if reference is None else pick(outputs[batch:])
    return Endpoints(chosen, at_x, at_reference, tie(x, at_x))


def completeness_gap(values: Array, difference: Array) -> Array:
    """sum(values) - difference per example and target: values (B, k, ...), (B, k)."""
    return values.reshape(values.shape[:2] + (-1,)).sum(axis=-1) - difference


def attribution(
    targets: Targets,
    values: Array,
    chosen: Array,
    *,
    difference: Array | None = None,
    delta: Any = None,
    extras: dict | None = None,
) -> Attribution:
    """The `Attribution` of per-target values (B, k, ...) for the classes `chosen` (B, k).

    `difference` is F_t(x) - F_t(reference) (B, k), for methods with a reference;
    `delta` is their completeness gap (B, k): an array, "sum" for
    `completeness_gap(values, difference)`, or None for methods that promise no
    completeness. Every field, and every array in `extras`, drops the target axis when
    one target per example was asked for (`Targets.squeeze`).
    """
    if isinstance(delta, str):
        delta = completeness_gap(values, difference)
    squeeze = functools.partial(jax.tree_util.tree_map, targets.squeeze)
    return Attribution(
        values=targets.squeeze(values),
        target=targets.squeeze(chosen),
        delta=None if delta is None else targets.squeeze(delta),
        extras=squeeze(extras or {}),
        output_difference=None if difference is None else targets.squeeze(difference),
    )


def _chunk_weights(weights, params, start, size: int, batch: int, dtype):
    """The chunk's weights as (B, size): from a (K,) or (K, B) array, or a callable of the
    chunk's parameters returning (size,) or (size, B)."""
    if callable(weights):
        chunk_weights = weights(params)
    else:
        chunk_weights = jax.lax.dynamic_slice_in_dim(jnp.asarray(weights), start, size)
    chunk_weights = jnp.asarray(chunk_weights, dtype).reshape(size, -1)
    return jnp.broadcast_to(chunk_weights, (size, batch)).T


def path_gradients(
    model: Model,
    x: Array,
    targets: Array,
    point_fn: Callable[[Any, Array], Array],
    point_params: Any,
    weights: Any,
    *,
    chunk_size: int,
    contribution_fn: Callable | None = None,
    context: Any = None,
    keep_outputs: bool = True,
) -> tuple[Array, Array | None]:
    """Weighted sum of target gradients over K points per example, chunked.

    Computes sum_k w[k, b] * c_k(grad F_t(p_k[b])) with p_k = point_fn(param_k, x) and
    c_k = contribution_fn (the identity by default).

    Args:
      model: the model.
      x: inputs (B, ...).
      targets: (B, k) int class indices.
      point_fn: `point_fn(param, x) -> (B, ...)`, the points for one parameter.
      point_params: a pytree whose leaves have a leading axis of size K (e.g. the
        alphas of a path), or `Indexed` parameters made one chunk at a time.
      weights: (K,) or (K, B) weight of each point, or a callable of a chunk's
        parameters returning its weights, (size,) or (size, B).
      chunk_size: points evaluated at once (static, >= 1), or None for
        `default_chunk_size` (sized from the point count, while tracing).
      contribution_fn: `contribution_fn(params, x, grads) -> grads'`, applied to one
        chunk's gradients of shape (B, size, k, *x.shape[1:]) before they are weighted
        and summed; `params` holds the chunk's point parameters (leading axis size).
        E.g. multiplies each gradient by its own path step (x - b_k).
      context: optional per-example pytree (B, ...) that the model reads as
        `model((points, context_rows))` without differentiating it.
      keep_outputs: return the target outputs at every point; without them nothing
        the call holds grows with K.

    Returns:
      `(gradient_sum, outputs)`: (B, k, *x.shape[1:]) in float32 or wider, and the
      target outputs at every point, (B, K, k) (None without `keep_outputs`).
    """
    batch, count = x.shape[0], targets.shape[1]
    acc_dtype = accumulation_dtype(x)
    points = point_count(point_params)
    chunk_size = points_per_chunk(chunk_size, model, x, points, context=context)

    def chunk(total, start, size, x):
        params = chunk_params(point_params, start, size)
        row_targets = _rows(targets, size)
        outputs, _, grads = gradients(
            model,
            _points(point_fn, params, x, batch),
            lambda _: row_targets,
            context=None if context is None else _rows(context, size),
        )
        chosen = jnp.take_along_axis(outputs, row_targets, axis=1).reshape(batch, size, count)
        grads = grads.astype(acc_dtype).reshape((batch, size, count) + x.shape[1:])
        if contribution_fn is not None:
            grads = contribution_fn(params, x, grads).astype(acc_dtype)
        chunk_weights = _chunk_weights(weights, params, start, size, batch, acc_dtype)
        # (batch, size, everything else): a rank-3 reduction compiles to a faster
        # kernel than one with the target and feature axes kept apart.
        partial = (grads.reshape(batch, size, -1) * chunk_weights[:, :, None]).sum(axis=1)
        return compensated_add(total, partial.reshape(x.shape[:1] + (count,) + x.shape[1:])), chosen

    zeros = jnp.zeros((batch, count) + x.shape[1:], acc_dtype)
    (total, _), outputs = fold_chunks(
        chunk,
        points,
        chunk_size,
        x,
        (zeros, zeros),
        # the next chunk waits for this chunk's gradients (an elementwise tie)
        dependency=lambda total: total[0][:, 0],
        unroll=fits_at_once(model, x, batch * points, context=context),
        collect=keep_outputs,
    )
    return total, outputs


def fold_outputs(
    model: Model,
    x: Array,
    targets: Array,
    point_fn: Callable[[Any, Array], Array],
    point_params: Any,
    fold: Callable,
    init: Any,
    *,
    chunk_size: int | None = None,
) -> Any:
    """Folds the target outputs at K points per example into `init`, chunk by chunk.

    The streaming form of `path_outputs`: `fold(carry, params, outputs) -> carry` sees
    one chunk's point parameters (leading axis size) and its target outputs
    (B, size, k) in float32 or wider, and the outputs are not kept. With `Indexed`
    parameters nothing the call holds grows with K. A `fold` that needs whole groups
    of points together (e.g. all prefixes of one permutation) takes a `chunk_size` that
    is a multiple of the group: chunks start at multiples of `chunk_size`.

    Returns the final carry.
    """
    batch, count = x.shape[0], targets.shape[1]
    acc_dtype = accumulation_dtype(x)
    points = point_count(point_params)
    chunk_size = points_per_chunk(chunk_size, model, x, points)

    def chunk(carry, start, size, x):
        params = chunk_params(point_params, start, size)
        outputs = model(_points(point_fn, params, x, batch))
        chosen = jnp.take_along_axis(outputs, _rows(targets, size), axis=1)
        return fold(carry, params, chosen.reshape(batch, size, count).astype(acc_dtype)), None

    def dependency(carry):  # one element of every leaf: whichever the outputs reach
        first = sum(leaf.reshape(-1)[0].astype(acc_dtype) for leaf in jax.tree_util.tree_leaves(carry))
        return first.reshape((1,) * x.ndim)

    carry, _ = fold_chunks(
        chunk, points, chunk_size, x, init, dependency, unroll=fits_at_once(model, x, batch * points)
    )
    return carry


def path_outputs(
    model: Model,
    x: Array,
    targets: Array,
    point_fn: Callable[[Any, Array], Array],
    point_params: Any,
    *,
    chunk_size: int | None = None,
) -> Array:
    """The target outputs at K points per example, F_t(point_fn(param_k, x)), chunked.

    The forward-only counterpart of `path_gradients`, for perturbation methods: the
    same chunking, the same row layout, no gradients.

    Args:
      model: the model.
      x: inputs (B, ...).
      targets: (B, k) int class indices.
      point_fn: `point_fn(param, x) -> (B, ...)`, e.g. x with one window occluded.
      point_params: a pytree whose leaves have a leading axis of size K, or `Indexed`.
      chunk_size: points evaluated at once (static, >= 1), or None for the default.

    Returns:
      The target outputs (B, K, k), in the model's output dtype.
    """
    batch, count = x.shape[0], targets.shape[1]
    points = point_count(point_params)
    chunk_size = points_per_chunk(chunk_size, model, x, points)

    def chunk(total, start, size, x):
        outputs = model(_points(point_fn, chunk_params(point_params, start, size), x, batch))
        chosen = jnp.take_along_axis(outputs, _rows(targets, size), axis=1)
        chosen = chosen.reshape(batch, size, count)
        return total + chosen.sum(axis=1), chosen

    _, outputs = fold_chunks(
        chunk,
        points,
        chunk_size,
        x,
        jnp.zeros((batch, count), output_dtype(model, x)),
        dependency=lambda total: total[:, :1].reshape((batch,) + (1,) * (x.ndim - 1)),
        unroll=fits_at_once(model, x, batch * points),
        collect=True,
    )
    return outputs


def output_dtype(model: Model, x) -> Any:
    """The dtype of the model's outputs for inputs like `x` (abstract evaluation)."""
    return jax.eval_shape(model, jax.ShapeDtypeStruct(x.shape, x.dtype)).dtype


def max_unrolled_chunks() -> int:
    """How many chunks a program lays out one after another instead of looping
    (`cpu.unrolled_chunks`: a few on the CPU, chained by data dependencies so they run
    one at a time; accelerators loop, which keeps compile time independent of the number
    of chunks)."""
    return cpu.unrolled_chunks()


def _cache_key(model: Model, x) -> tuple:
    treedef, avals, _ = _model_facts(model)
    return treedef, avals, tuple(x.shape), np.dtype(x.dtype)


# Abstract-evaluation results keyed by (model structure, parameter shapes, input shape).
# A model built from a new Python function each call gets a new key, so the caches are
# bounded.
_CACHE_LIMIT = 512
_OUTPUT_STRUCTS: dict = {}
_BYTES_PER_ROW: dict = {}


def _cached(cache: dict, key, compute):
    if key not in cache:
        if len(cache) >= _CACHE_LIMIT:
            cache.clear()
        cache[key] = compute()
    return cache[key]


def output_struct(model: Model, x) -> jax.ShapeDtypeStruct:
    """Shape and dtype of `model(x)`, found by abstract evaluation and cached."""
    key = _cache_key(model, x)
    return _cached(_OUTPUT_STRUCTS, key, lambda: jax.eval_shape(model, jax.ShapeDtypeStruct(key[2], key[3])))


def _bytes_per_row(model: Model, feature_shape: tuple, dtype, context_rows=None) -> int:
    """Bytes one row keeps for its backward pass (activations), found abstractly.

    `context_rows`: optional pytree of per-row `ShapeDtypeStruct`s (without the row axis)
    that the model also reads, as `model((points, context))`.
    """

    def rows_of(rows, struct):
        return jax.ShapeDtypeStruct((rows,) + tuple(struct.shape), struct.dtype)

    def residual_bytes(rows):
        def pullback(points, context):
            function = model if context is None else (lambda p: model((p, context)))
            return jax.vjp(function, points)[1]

        context = jax.tree_util.tree_map(lambda s: rows_of(rows, s), context_rows)
        structure = jax.eval_shape(
            pullback, rows_of(rows, jax.ShapeDtypeStruct(feature_shape, dtype)), context
        )
        return sum(
            int(np.prod(leaf.shape)) * jnp.dtype(leaf.dtype).itemsize
            for leaf in jax.tree_util.tree_leaves(structure)
        )

    # Residuals that grow with the number of rows are the activations a chunk keeps for
    # its backward pass; the constant part (the parameters) does not depend on the chunk.
    input_bytes = int(np.prod(feature_shape)) * jnp.dtype(dtype).itemsize
    return max(residual_bytes(2) - residual_bytes(1), input_bytes) + 2 * input_bytes


def _row_bytes(model: Model, x, context=None) -> int:
    """`_bytes_per_row` for rows like x's (and context's), cached per structure."""
    context_rows = jax.tree_util.tree_map(
        lambda leaf: jax.ShapeDtypeStruct(leaf.shape[1:], leaf.dtype), context
    )
    key = _cache_key(model, x)[:2] + (
        tuple(x.shape[1:]),
        np.dtype(x.dtype),
        jax.tree_util.tree_structure(context_rows),
        tuple((s.shape, s.dtype) for s in jax.tree_util.tree_leaves(context_rows)),
    )
    return _cached(_BYTES_PER_ROW, key, lambda: _bytes_per_row(model, key[2], key[3], context_rows))


def fits_at_once(model: Model, x, rows: int, *, context=None) -> bool:
    """Whether `rows` rows like x's fit the chunk budget all at once (see `over_chunks`)."""
    return rows * _row_bytes(model, x, context) <= chunk_budget_bytes()


@functools.cache
def _device_memory_bytes() -> int | None:
    return (jax.local_devices()[0].memory_stats() or {}).get("bytes_limit")


def chunk_budget_bytes() -> int:
    """Bytes of saved activations a default chunk may use (see `default_chunk_size`)."""
    override = os.environ.get("JAXPLAIN_CHUNK_BYTES")
    if override:
        return int(override)
    limit = _device_memory_bytes()
    if limit:
        return limit // 4
    physical = cpu.memory_bytes()
    return max(physical // 8, DEFAULT_CHUNK_BYTES) if physical else DEFAULT_CHUNK_BYTES


def default_chunk_size(model: Model, x, num_points: int, *, context=None) -> int:
    """Points per chunk when the caller does not choose.

    The largest chunk whose saved activations fit the memory budget: a quarter of the
    accelerator's memory, an eighth of the machine's on the CPU (`chunk_budget_bytes`), or
    the environment variable JAXPLAIN_CHUNK_BYTES. The activations a row keeps for its backward pass are
    measured by abstract evaluation (no compilation), once per model and input shape.
    On the CPU a chunk is further capped at a fixed amount of work (`cpu.chunk_points`),
    so that its size, and the memory, do not grow with the number of points. `context`: as for `path_gradients`.
    """
    per_row = _row_bytes(model, x, context)
    batch = max(1, x.shape[0])
    size = chunk_budget_bytes() // per_row // batch
    cap = cpu.chunk_points(per_row, batch)
    if cap is not None:
        size = min(size, cap)
    return int(max(1, min(num_points, size)))
