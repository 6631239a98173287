"""What a model is given beyond one array: per-example arguments and several inputs.

`model_kwargs=`: per-example arguments a model reads but that are not attributed.

Text models take lengths or padding masks, multi-modal models a second input, some
models a per-example condition: `method(model, x, target=..., model_kwargs={"lengths":
lengths})` passes `lengths[i]` to the model at every point made from `x[i]`, held fixed.

Every registered method takes `model_kwargs` (`registry.register` adds it). With it, the
method runs once per example inside one compiled program (`jax.lax.map`): the example's
arguments are bound to the model, broadcast to whatever rows the method evaluates (its
path points, perturbed copies, references), so no method has to know about them and the
answer for one example is exactly what the method gives on that example alone. Per-example
options split along with `x`: `target` of shape (B,) or (B, k), and `baseline` or
`feature_mask` given per example (shaped like `x`); a `key` is folded with the example's
index, so examples draw independently.

Several inputs: `x` may be a tuple or dict of arrays (an image and tabular features, two
views); they are explained together, and the values come back in x's structure
(`run_several`).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import inspect
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxplain.model import LinenApply, Model

# Options that may be given per example, shaped like x (B, ...): they split with x.
PER_EXAMPLE = ("baseline",)

# The Linen collection that carries one example's arguments into `module.apply`.
COLLECTION = "jaxplain_model_kwargs"


@dataclasses.dataclass(frozen=True)
class BoundApply:
    """`apply_fn((params, kwargs), rows)`: the model with one example's arguments, each
    (1, ...), broadcast to the rows it is called on."""

    apply_fn: Callable
    names: tuple

    def __call__(self, params, rows):
        variables, arguments = params
        return self.apply_fn(variables, rows, **_broadcast(arguments, rows))


@dataclasses.dataclass(frozen=True)
class BoundLinenMethod:
    """A Linen `method` that reads one example's arguments from the variables.

    The model stays a `LinenApply` of the same module, so the layer methods still find
    its layers by name.
    """

    method: Any

    def __call__(self, module, rows, **kwargs):
        arguments = module.variables[COLLECTION]
        method = self.method
        if method is None:
            method = type(module).__call__
        elif isinstance(method, str):
            method = getattr(type(module), method)
        return method(module, rows, **kwargs, **_broadcast(arguments, rows))


def _broadcast(arguments: Mapping, rows) -> dict:
    count = jax.tree_util.tree_leaves(rows)[0].shape[0]
    return {
        name: jax.tree_util.tree_map(lambda leaf: jnp.broadcast_to(leaf, (count,) + leaf.shape[1:]), value)
        for name, value in arguments.items()
    }


def bind(model: Model, arguments: Mapping) -> Model:
    """`model` with one example's `arguments` (leaves (1, ...)) passed at every call."""
    apply = model.apply_fn
    if isinstance(apply, LinenApply) and COLLECTION not in model.params:
        bound = LinenApply(apply.module, BoundLinenMethod(apply.method), apply.kwargs)
        return model.replace(apply_fn=bound, params={**model.params, COLLECTION: dict(arguments)})
    return model.replace(
        apply_fn=BoundApply(apply, tuple(sorted(arguments))), params=(model.params, arguments)
    )


def named(model_kwargs) -> dict:
    """`model_kwargs` as a dict keyed by argument names, or a clear error."""
    if not isinstance(model_kwargs, Mapping):
        raise TypeError(
            f"model_kwargs must be a dict of per-example arrays, e.g. {{'lengths': lengths}}; "
            f"got {type(model_kwargs).__name__}"
        )
    for name in model_kwargs:
        if not isinstance(name, str) or not name.isidentifier():
            raise ValueError(f"model_kwargs: keys are the model's keyword argument names, got {name!r}")
    return dict(model_kwargs)


def check(model_kwargs, batch: int) -> dict:
    """`model_kwargs` as a dict of arrays with `batch` rows, or a clear error."""
    checked = {}
    for name, value in named(model_kwargs).items():
        leaves = jax.tree_util.tree_leaves(value)
        if not leaves:
            raise ValueError(f"model_kwargs[{name!r}] holds no arrays")
        converted = jax.tree_util.tree_map(
            lambda leaf: leaf if isinstance(leaf, jax.Array) else jnp.asarray(np.asarray(leaf)), value
        )
        for leaf in jax.tree_util.tree_leaves(converted):
            if leaf.ndim == 0 or leaf.shape[0] != batch:
                raise ValueError(
                    f"model_kwargs[{name!r}] has shape {tuple(leaf.shape)}: model_kwargs hold one row per "
                    f"example of x ({batch} rows); an argument shared by every example belongs in the "
                    f"model (e.g. Model.from_linen(module, variables, name=value))"
                )
        checked[name] = converted
    return checked


class _Static:
    """An option fixed in the program (an integer NumPy array, a dict of options such as
    `method_options`): equal and hashed by its contents."""

    def __init__(self, value):
        self.value = value
        self._key = _contents(value)

    def __eq__(self, other):
        return isinstance(other, _Static) and self._key == other._key

    def __hash__(self):
        return hash(self._key)


def _contents(value):
    """A hashable description of `value`'s contents (arrays by shape, dtype and bytes)."""
    if isinstance(value, (np.ndarray, jax.Array)) and not isinstance(value, jax.core.Tracer):
        array = np.ascontiguousarray(np.asarray(value))
        return ("array", array.shape, array.dtype.str, hashlib.sha1(array.tobytes()).hexdigest())
    if isinstance(value, Mapping):
        return ("dict", tuple(sorted((str(k), _contents(v)) for k, v in value.items())))
    if isinstance(value, (list, tuple)):
        return (type(value).__name__, tuple(_contents(v) for v in value))
    hash(value)  # a TypeError names what cannot be fixed in the program
    return value


def _hashable(value) -> bool:
    try:
        hash(value)
    except TypeError:
        return False
    return True


def _is_array(value) -> bool:
    return isinstance(value, (jax.Array, np.ndarray)) or jax.dtypes.issubdtype(
        getattr(value, "dtype", np.dtype("O")), jax.dtypes.prng_key
    )


def run(function: Callable, model: Model, x, model_kwargs, options: dict):
    """`function(model, x, **options)` with `model_kwargs`, one example at a time."""
    if not isinstance(model, Model):
        raise TypeError(f"model must be a jaxplain.Model, got {type(model).__name__}")
    if not hasattr(x, "shape") or len(x.shape) < 1:
        raise TypeError("x must be an array with a leading batch axis when model_kwargs are given")
    x = x if isinstance(x, jax.Array) else jnp.asarray(np.asarray(x))
    batch = x.shape[0]
    arguments = check(model_kwargs, batch)
    options = dict(options)
    if isinstance(options.get("target"), (list, tuple)):
        options["target"] = np.asarray(options["target"])
    split = {}
    for name in ("target",) + PER_EXAMPLE:
        value = options.get(name)
        ndim = x.ndim if name != "target" else None
        if (
            _is_array(value)
            and value.ndim >= 1
            and value.shape[0] == batch
            and value.ndim == (ndim or value.ndim)
        ):
            split[name] = jnp.asarray(options.pop(name))
    key = options.pop("key", None)
    # Integer NumPy options (feature masks, groups) fix the program's shapes: they stay
    # concrete, part of its static settings; other arrays are its traced inputs.
    # So do options that cannot be hashed as they are (a dict of the wrapped method's
    # options), by their contents.
    try:
        for name, value in options.items():
            if isinstance(value, np.ndarray) and np.issubdtype(value.dtype, np.integer):
                options[name] = _Static(value)
            elif not _is_array(value) and not _hashable(value):
                options[name] = _Static(value)
    except TypeError as error:
        raise TypeError(
            f"with model_kwargs, method options must be arrays or hashable values: {error}"
        ) from None
    arrays = {k: v for k, v in options.items() if _is_array(v)}
    static = tuple(sorted((k, v) for k, v in options.items() if k not in arrays))
    return _run(function, model, x, arguments, split, arrays, key, static)


@functools.partial(jax.jit, static_argnames=("function", "static"))
def _run(function, model, x, arguments, split, arrays, key, static):
    def one(row):
        index, x_i, arguments_i, split_i = row
        options = {**arrays, **{k: v.value if isinstance(v, _Static) else v for k, v in static}}
        options.update({name: value[None] for name, value in split_i.items()})
        if key is not None:
            options["key"] = jax.random.fold_in(key, index)
        bound = bind(model, jax.tree_util.tree_map(lambda leaf: leaf[None], arguments_i))
        return function(bound, x_i[None], **options)

    rows = (jnp.arange(x.shape[0], dtype=jnp.int32), x, arguments, split)
    stacked = jax.lax.map(one, rows)
    return jax.tree_util.tree_map(lambda leaf: leaf.reshape((leaf.shape[0],) + leaf.shape[2:]), stacked)


def accepting(function: Callable) -> Callable:
    """`function` (a method) taking `model_kwargs=` too; without it, `function` itself runs."""

    @functools.wraps(function)
    def method(*args, model_kwargs=None, **options):
        x = args[1] if len(args) > 1 else options.get("x")
        several = is_several(x)
        if model_kwargs is None and not several:
            return function(*args, **options)
        if len(args) != 2:
            raise TypeError(
                f"{function.__name__}(model, x, ...): with model_kwargs or several inputs, pass model and x "
                f"first and the method's options by name"
            )
        model, x = args
        if several:
            return run_several(function, model, x, options, model_kwargs)
        return run(function, model, x, model_kwargs, options)

    signature = inspect.signature(function)
    parameters = list(signature.parameters.values())
    keyword = inspect.Parameter("model_kwargs", inspect.Parameter.KEYWORD_ONLY, default=None)
    at = next((i for i, p in enumerate(parameters) if p.kind == p.VAR_KEYWORD), len(parameters))
    method.__signature__ = signature.replace(parameters=parameters[:at] + [keyword] + parameters[at:])
    method.__doc__ = (function.__doc__ or "").rstrip() + MORE
    return method


# What every registered method's docstring ends with.
MORE = """

    Every jaxplain method also takes `model_kwargs=`, a dict of per-example arrays
    `(batch, ...)` passed to the model at every point and never attributed (lengths,
    masks), and `x` as a tuple or dict of inputs explained together
    (`jaxplain.methods.arguments`, docs/porting.md).
"""


# --- several inputs: x a tuple or dict of arrays --------------------------------------------


@dataclasses.dataclass(frozen=True)
class PackedApply:
    """`apply_fn(params, rows)` of a model of several inputs, given them packed side by
    side in one (rows, D) array: unpacks them, in their shapes and dtypes, and calls it."""

    apply_fn: Callable
    treedef: Any
    shapes: tuple
    dtypes: tuple

    def __call__(self, params, rows, **kwargs):
        return self.apply_fn(params, unpack(rows, self.treedef, self.shapes, self.dtypes), **kwargs)


def unpack(rows, treedef, shapes: tuple, dtypes: tuple | None = None):
    """The inputs of packed `rows` (..., D), each (..., *shape): the inverse of `pack`."""
    sizes = [int(np.prod(shape, dtype=np.int64)) for shape in shapes]
    parts = jnp.split(rows, np.cumsum(sizes)[:-1], axis=-1)
    leaves = [
        part.reshape(rows.shape[:-1] + tuple(shape)).astype(dtypes[i] if dtypes else part.dtype)
        for i, (part, shape) in enumerate(zip(parts, shapes))
    ]
    return jax.tree_util.tree_unflatten(treedef, leaves)


def _leaves(value, treedef, name: str):
    leaves, structure = jax.tree_util.tree_flatten(value)
    if structure != treedef:
        raise ValueError(f"{name} must have the structure of x ({treedef}), got {structure}")
    return leaves


def is_several(x) -> bool:
    """Whether `x` is several inputs: a tuple or dict of arrays (a list is one array)."""
    return isinstance(x, (tuple, Mapping))


def run_several(function: Callable, model: Model, x, options: dict, model_kwargs=None):
    """`function` on a model of several inputs `x` (a tuple or dict of (B, ...) arrays).

    The inputs are packed side by side into one (B, D) array of their common floating
    dtype and the model unpacks them, so a method moves all of them along one path (its
    completeness holds for the sum over every input). Each input keeps its own
    baseline (`baseline=` a scalar, or the structure of x); `feature_mask=` may be given
    per input (the structure of x, group ids numbered across inputs). The values come
    back in the structure of x.
    """
    if not isinstance(model, Model):
        raise TypeError(f"model must be a jaxplain.Model, got {type(model).__name__}")
    leaves, treedef = jax.tree_util.tree_flatten(x)
    if not leaves:
        raise ValueError("x holds no arrays")
    leaves = [leaf if isinstance(leaf, jax.Array) else jnp.asarray(np.asarray(leaf)) for leaf in leaves]
    names = [jax.tree_util.keystr(path) for path, _ in jax.tree_util.tree_flatten_with_path(x)[0]]
    batch = leaves[0].shape[0] if leaves[0].ndim else None
    for name, leaf in zip(names, leaves):
        if leaf.ndim < 1 or leaf.shape[0] != batch:
            raise ValueError(
                f"x{name} has shape {tuple(leaf.shape)}: every input needs the same leading batch axis "
                f"({batch} rows in the first)"
            )
        if not jnp.issubdtype(leaf.dtype, jnp.floating):
            raise TypeError(
                f"x{name} has dtype {leaf.dtype}: inputs explained together must be floating point; pass "
                f"integer inputs (token ids, lengths) that are not attributed as model_kwargs"
            )
    dtype = jnp.result_type(*[leaf.dtype for leaf in leaves])
    shapes = tuple(tuple(leaf.shape[1:]) for leaf in leaves)
    dtypes = tuple(np.dtype(leaf.dtype) for leaf in leaves)

    def pack(values, name):
        parts = []
        for leaf, shape, path in zip(_leaves(values, treedef, name), shapes, names):
            leaf = jnp.asarray(leaf, dtype)
            if leaf.ndim <= len(shape):  # one for every example
                leaf = leaf.reshape((1,) * (len(shape) + 1 - leaf.ndim) + leaf.shape)
            if leaf.ndim != len(shape) + 1:
                raise ValueError(f"{name}{path} has shape {tuple(leaf.shape)}, not that of x{path}")
            try:
                leaf = jnp.broadcast_to(leaf, (leaf.shape[0],) + shape)
            except ValueError:
                raise ValueError(
                    f"{name}{path} of shape {tuple(leaf.shape)} does not broadcast to x{path}'s examples {shape}"
                ) from None
            parts.append(leaf.reshape(leaf.shape[0], -1))
        rows = max(part.shape[0] for part in parts)
        return jnp.concatenate([jnp.broadcast_to(p, (rows, p.shape[1])) for p in parts], axis=1)

    options = dict(options)
    for name in ("baseline", "background"):
        value = options.get(name)
        if is_several(value):
            options[name] = pack(value, name)
    if is_several(options.get("feature_mask")):
        masks, offset = [], 0
        for leaf, shape in zip(_leaves(options["feature_mask"], treedef, "feature_mask"), shapes):
            leaf = np.broadcast_to(np.asarray(leaf), shape)
            masks.append(leaf.reshape(-1) + offset)
            offset = int(masks[-1].max()) + 1
        options["feature_mask"] = np.concatenate(masks).astype(np.int32)
    packed = jnp.concatenate([leaf.astype(dtype).reshape(batch, -1) for leaf in leaves], axis=1)
    packed_model = model.replace(apply_fn=PackedApply(model.apply_fn, treedef, shapes, dtypes))
    if model_kwargs is None:
        result = function(packed_model, packed, **options)
    else:
        result = run(function, packed_model, packed, model_kwargs, options)
    if result.values.shape[-1] != packed.shape[1]:
        raise ValueError(
            f"{function.__name__} gave values of shape {tuple(result.values.shape)}, not one value per "
            f"input feature: it cannot explain several inputs at once"
        )
    return dataclasses.replace(result, values=unpack(result.values, treedef, shapes))
