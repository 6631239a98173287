"""The model being explained, and which of its outputs an explanation is about.

`Model` is a pytree: the parameters are its leaves and the apply function is static
metadata. Passing a `Model` into a jitted explainer therefore compiles once per
architecture and input shape; new parameters of the same shapes reuse the program.
"""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array

# What `output=` may name by a string: a transform of the selected scores. Keys of a dict
# output are selected with `select("key")`, so a key can never be read as a transform.
OUTPUTS = ("logits", "probs", "log_probs", "sigmoid")
REDUCTIONS = ("sum", "mean")

# Keyword arguments that put common Flax models in evaluation mode. `Model.from_linen`
# passes them when the applied method accepts them and the caller did not set them.
_EVAL_KWARGS = {
    "train": False,
    "training": False,
    "is_training": False,
    "deterministic": True,
    "use_running_average": True,
}


@dataclasses.dataclass(frozen=True)
class LinenApply:
    """`module.apply(variables, x, method=..., **kwargs)`; hashable so jit can cache on it."""

    module: Any
    method: Any
    kwargs: tuple

    def __call__(self, variables, x):
        return self.module.apply(variables, x, method=self.method, **dict(self.kwargs))


@dataclasses.dataclass(frozen=True)
class _NnxApply:
    """Rebuilds an NNX module from its graph definition and state, then calls it.

    `method` is None (`__call__`), a method name or a function `method(module, x,
    **kwargs)`; `kwargs` are the call's keyword arguments, as sorted (name, value) pairs.
    Keyword arguments given at the call (per-example `model_kwargs`) are passed too.
    """

    graphdef: Any
    method: Any = None
    kwargs: tuple = ()

    def __call__(self, state, x, **arguments):
        from flax import nnx

        return self.run(nnx.merge(self.graphdef, state), x, **arguments)

    def run(self, module, x, **arguments):
        """Calls the merged `module` on x as this model does (layer methods hook it first)."""
        kwargs = {**dict(self.kwargs), **arguments}
        if self.method is None:
            return module(x, **kwargs)
        if isinstance(self.method, str):
            return getattr(module, self.method)(x, **kwargs)
        return self.method(module, x, **kwargs)


@dataclasses.dataclass(frozen=True)
class _CallableApply:
    """A parameter-free function `f(x)`."""

    function: Callable

    def __call__(self, params, x):
        del params
        return self.function(x)


@dataclasses.dataclass(frozen=True, eq=False)
class Region:
    """Positions of a dense output to explain together, and how they are reduced.

    Static metadata of a `Model`, so it is compared and hashed by the mask's contents:
    an equal mask reuses the compiled program, another mask compiles a new one.

    Attributes:
      mask: a float NumPy array over the output's positions, e.g. (height, width);
        weights (a bool mask becomes 0/1).
      reduce: "sum" (the weighted sum over the positions) or "mean" (divided by the
        sum of the weights).
    """

    mask: np.ndarray
    reduce: str = "sum"

    def __post_init__(self):
        digest = hashlib.sha256(np.ascontiguousarray(self.mask).tobytes()).hexdigest()
        object.__setattr__(self, "_identity", (self.mask.shape, self.mask.dtype.str, digest, self.reduce))

    def __eq__(self, other):
        return isinstance(other, Region) and self._identity == other._identity

    def __hash__(self):
        return hash(self._identity)

    def __repr__(self):
        shape, dtype, digest, reduce = self._identity
        return f"Region(mask=<{np.dtype(dtype).name}{list(shape)} sha256:{digest[:16]}>, reduce={reduce!r})"

    def apply(self, scores: Array) -> Array:
        """(batch, *positions, classes) or (batch, *positions) -> (batch, classes) or (batch,)."""
        positions = tuple(scores.shape[1:])
        if positions[: self.mask.ndim] != self.mask.shape or len(positions) > self.mask.ndim + 1:
            raise OutputStructureError(
                f"output=region(mask): the mask has shape {self.mask.shape} but the selected "
                f"output has shape {tuple(scores.shape)}; the mask covers the positions after the "
                "batch axis: (batch, *mask.shape) or (batch, *mask.shape, classes)"
            )
        weights = jnp.asarray(self.mask, scores.dtype)
        axes = tuple(range(1, 1 + self.mask.ndim))
        reduced = jnp.tensordot(scores, weights, axes=(axes, tuple(range(self.mask.ndim))))
        return reduced / self.mask.sum() if self.reduce == "mean" else reduced


@dataclasses.dataclass(frozen=True)
class Output:
    """Which scores of the model's output an explanation is about.

    Applied in order: `select` takes the scores out of what the model returns,
    `transform` maps them along their last (class) axis, and `region` reduces a dense
    output over its positions to one score per class. Build it with `jaxplain.select`
    or `jaxplain.region`; `output=` also takes the shorthands listed in `Model`.

    Attributes:
      select: a path of dict keys, attribute names and sequence indices into the
        model's output (e.g. `("heads", 0)`), or a function `f(model_output) ->
        scores`; `()` takes the output as it is.
      transform: "logits", "probs", "log_probs" or "sigmoid".
      region: a `Region` of a dense output, or None.
    """

    select: tuple | Callable = ()
    transform: str = "logits"
    region: Region | None = None

    def __post_init__(self):
        if not callable(self.select):
            if not isinstance(self.select, tuple):
                raise TypeError(
                    f"select must be a tuple of keys and indices or a function, got {self.select!r}"
                )
            for step in self.select:
                if isinstance(step, bool) or not isinstance(step, (str, int, np.integer)):
                    raise TypeError(
                        f"select: each step is a dict key or attribute name (str) or an index (int), got {step!r}"
                    )
        if self.transform not in OUTPUTS:
            raise ValueError(f"transform must be one of {OUTPUTS}, got {self.transform!r}")
        if self.region is not None and not isinstance(self.region, Region):
            raise TypeError(f"region must be a jaxplain.Region (see jaxplain.region), got {self.region!r}")

    def apply(self, returned, apply_fn=None) -> Array:
        """The explained scores, from what the model's `apply_fn` returned."""
        scores = _select(returned, self.select)
        if not (hasattr(scores, "shape") and hasattr(scores, "dtype")):
            raise OutputStructureError(_output_structure_message(apply_fn, scores, self))
        if self.transform in ("probs", "log_probs") and (scores.ndim < 2 or scores.shape[-1] == 1):
            raise OutputStructureError(
                f"output {self.transform!r} is a softmax over classes, but the selected output has one "
                f"score per {'example' if scores.ndim < 2 else 'position'} (shape {tuple(scores.shape)}): "
                "its softmax is 1 everywhere. For a one-logit binary model use output='sigmoid'"
            )
        if self.transform == "probs":
            scores = jax.nn.softmax(scores, axis=-1)
        elif self.transform == "log_probs":
            scores = jax.nn.log_softmax(scores, axis=-1)
        elif self.transform == "sigmoid":
            scores = jax.nn.sigmoid(scores)
        if self.region is not None:
            scores = self.region.apply(scores)
        # One score per example (a regressor, a one-logit binary model) is one class.
        return scores[:, None] if scores.ndim == 1 else scores


def _select(returned, path):
    if callable(path):
        return path(returned)
    value = returned
    for depth, step in enumerate(path):
        try:
            if isinstance(value, Mapping):
                value = value[step]
            elif isinstance(step, str):
                value = getattr(value, step)
            elif isinstance(value, (tuple, list)):
                value = value[step]
            else:
                raise TypeError
        except (KeyError, IndexError, AttributeError, TypeError):
            where = "".join(f"[{s!r}]" for s in path[:depth])
            raise OutputStructureError(
                f"output=select{tuple(path)!r}: the model's output{where} is "
                f"{'an array' if hasattr(value, 'shape') else 'a ' + type(value).__name__}"
                f" without {'key or attribute' if isinstance(step, str) else 'index'} {step!r}; it "
                f"holds {_listing(value)}"
            ) from None
    return value


def _as_jax_leaves(params):
    """`params` with NumPy leaves as jax arrays; other leaves (tracers, placeholders) kept.

    A NumPy parameter indexed by a traced input (`embedding[ids]`) would be converted to
    NumPy with the tracer and fail; as a jax array it is traced like any other.
    """
    leaves, treedef = jax.tree_util.tree_flatten(params)
    if not any(isinstance(leaf, (np.ndarray, np.generic)) for leaf in leaves):
        return params
    converted = [jnp.asarray(leaf) if isinstance(leaf, (np.ndarray, np.generic)) else leaf for leaf in leaves]
    return jax.tree_util.tree_unflatten(treedef, converted)


def _as_output(output) -> str | Output:
    """`output=` normalised: a transform name, or an `Output` for anything more."""
    if isinstance(output, Output):
        plain = output.select == () and output.region is None
        return output.transform if plain else output
    if isinstance(output, str):
        if output not in OUTPUTS:
            raise ValueError(
                f"output must be one of {OUTPUTS}, an index, jaxplain.select(...), jaxplain.region(...) "
                f"or a function of the model's output; got {output!r} (a dict key is selected with "
                f"output=jaxplain.select({output!r}))"
            )
        return output
    if isinstance(output, (int, np.integer)) and not isinstance(output, bool):
        return Output(select=(int(output),))
    if callable(output):
        return Output(select=output)
    raise TypeError(
        f"output must be one of {OUTPUTS}, an int index, jaxplain.select(...), jaxplain.region(...) "
        f"or a function of the model's output; got {type(output).__name__}"
    )


def select(*path, transform: str = "logits") -> Output:
    """Selects the scores to explain from a model that returns several outputs.

    Args:
      *path: dict keys, attribute names (dataclasses, flax structs, NamedTuples) and
        sequence indices, applied in order; or one function `f(model_output) ->
        scores`.
      transform: "logits" (as they are), "probs", "log_probs" or "sigmoid".

    Returns:
      An `Output`, for `output=` of `Model`, its constructors and `load_model`.

    Example:
      >>> import jax.numpy as jnp
      >>> import jaxplain
      >>> model = jaxplain.Model.from_callable(
      ...     lambda x: {"logits": x, "features": 2 * x}, output=jaxplain.select("logits", transform="probs")
      ... )
      >>> model(jnp.zeros((1, 2))).tolist()
      [[0.5, 0.5]]
    """
    if len(path) == 1 and callable(path[0]):
        return Output(select=path[0], transform=transform)
    return Output(select=tuple(int(s) if isinstance(s, np.integer) else s for s in path), transform=transform)


def region(mask, reduce: str = "sum", *, output="logits") -> Output:
    """Explains a dense output (e.g. segmentation logits) over a region of its positions.

    A model returning `(batch, *positions, classes)` (or `(batch, *positions)`) is
    explained through `sum_p mask[p] * scores[b, p, c]` (or that divided by
    `sum(mask)` for `reduce="mean"`): one score per example and class, and `target`
    picks the class as for a classifier. The mask is shared by every example.

    Args:
      mask: bool or non-negative weights over the positions, e.g. (height, width);
        not all zero.
      reduce: "sum" or "mean".
      output: the scores before the reduction: a transform name, an index,
        `jaxplain.select(...)` or a function (see `Model`); the transform acts on each
        position's classes (e.g. "probs": the mean of per-pixel probabilities).

    Returns:
      An `Output`, for `output=`.

    Example:
      >>> import jax.numpy as jnp
      >>> import numpy as np
      >>> import jaxplain
      >>> mask = np.zeros((2, 2), bool)
      >>> mask[0] = True
      >>> model = jaxplain.Model.from_callable(lambda x: x, output=jaxplain.region(mask))
      >>> model(jnp.arange(8.0).reshape(1, 2, 2, 2)).tolist()
      [[2.0, 4.0]]
    """
    if isinstance(mask, jax.core.Tracer):
        raise TypeError("region(mask): mask must be a concrete array (it is part of the model), got a tracer")
    try:
        weights = np.asarray(mask)
    except Exception as error:
        raise TypeError(f"region(mask): mask must be an array, got {type(mask).__name__}") from error
    if weights.dtype != bool and not np.issubdtype(weights.dtype, np.number):
        raise TypeError(f"region(mask): mask must hold bools or numbers, got dtype {weights.dtype}")
    weights = weights.astype(np.float32)
    if weights.ndim < 1:
        raise ValueError(
            "region(mask): mask must cover the output's positions, e.g. (height, width); got a scalar"
        )
    if not np.isfinite(weights).all() or (weights < 0).any() or not weights.any():
        raise ValueError("region(mask): mask must be finite, non-negative and not all zero")
    if reduce not in REDUCTIONS:
        raise ValueError(f"region(reduce=): must be one of {REDUCTIONS}, got {reduce!r}")
    inner = _as_output(output)
    if isinstance(inner, str):
        inner = Output(transform=inner)
    if inner.region is not None:
        raise ValueError("region(output=): the output already has a region")
    return dataclasses.replace(inner, region=Region(weights, reduce))


@dataclasses.dataclass(frozen=True, eq=False)
class Model:
    """A model to explain: `apply_fn(params, x)` plus its params, and which scores to explain.

    `params` are pytree leaves and `apply_fn` and `output` are static, so
    `model.replace(params=new_params)` never triggers a recompilation of an explainer
    that has already run on a model of the same architecture. NumPy leaves of `params`
    (what `flax.serialization.from_bytes` returns) become jax arrays.

    The explained scores, `model(x)`, are `(batch, classes)`. A model with one score per
    example (a regressor, a one-logit binary classifier) has one class, and `target=None`
    (or 0) explains it.

    Attributes:
      apply_fn: a hashable callable `apply_fn(params, x)`.
      params: any pytree of arrays.
      output: which scores the explanation is about. A string names a transform of
        the model's scores: `"logits"` (as they are), `"probs"` (softmax over the last
        axis), `"log_probs"` (log-softmax) or `"sigmoid"` (elementwise: one-logit
        binary or multi-label models). For a model that returns several outputs:
        an int index (`output=0` for `(logits, features)`), `jaxplain.select(*path,
        transform=...)` for dict keys, attribute names (dataclasses, flax structs) and
        nested paths, or a function `f(model_output) -> scores` (define it once: a
        new function compiles a new program). For dense outputs (segmentation),
        `jaxplain.region(mask, reduce, output=...)`. A dict key is never read as a
        transform: `output="logits"` is the raw scores, `select("logits")` the key.

    Example:
      >>> import jax.numpy as jnp
      >>> import jaxplain
      >>> w = jnp.array([[1.0, -1.0], [2.0, 0.5]])
      >>> model = jaxplain.Model(lambda w, x: x @ w, w)
      >>> model(jnp.ones((3, 2))).shape
      (3, 2)
    """

    apply_fn: Callable
    params: Any
    output: Any = "logits"

    def __post_init__(self):
        if not callable(self.apply_fn):
            raise TypeError(f"apply_fn must be callable, got {type(self.apply_fn).__name__}")
        object.__setattr__(self, "output", _as_output(self.output))
        object.__setattr__(self, "params", _as_jax_leaves(self.params))

    def __call__(self, x: Array) -> Array:
        """Returns the explained scores for a batch `x`: (batch, classes), see `output`."""
        returned = self.apply_fn(self.params, x)
        output = Output(transform=self.output) if isinstance(self.output, str) else self.output
        # A tuple or dict (e.g. `(logits, features)`) would otherwise fail far away, in
        # softmax or at `.shape`; these are checks on the Python structure, not on values.
        return output.apply(returned, self.apply_fn)

    def replace(self, **changes) -> Model:
        """Returns a copy with some fields replaced, e.g. `model.replace(params=p)`."""
        return dataclasses.replace(self, **changes)

    def with_output(self, output) -> Model:
        """Returns the same model explaining `output` (any form `Model` takes).

        A transform name keeps the model's selection and region and changes only the
        transform: `model.with_output("probs")` of a model with `output=0` explains the
        softmax of the first output.
        """
        if isinstance(output, str) and isinstance(self.output, Output):
            _as_output(output)  # names the argument if it is not a transform
            return self.replace(output=dataclasses.replace(self.output, transform=output))
        return self.replace(output=output)

    @classmethod
    def from_callable(cls, function: Callable, *, output: Any = "logits") -> Model:
        """Wraps a parameter-free function `function(x)`, e.g. `-> (batch, classes)`."""
        if not callable(function):
            raise TypeError(f"function must be callable, got {type(function).__name__}")
        return cls(_CallableApply(function), (), output)

    @classmethod
    def from_linen(
        cls,
        module,
        variables,
        method: str | Callable | None = None,
        *,
        output: Any = "logits",
        **apply_kwargs,
    ) -> Model:
        """Wraps a Flax Linen module and its variables, in evaluation mode.

        Nothing is mutable: BatchNorm must use its running statistics and Dropout must
        be deterministic. When the applied method takes one of the keyword arguments
        `train`, `training`, `is_training` (set to False), `deterministic` or
        `use_running_average` (set to True) and `apply_kwargs` does not set it,
        jaxplain sets it to evaluation mode for you.

        Args:
          module: a `flax.linen.Module`.
          variables: the full variables dict (`{"params": ..., "batch_stats": ...}`).
          method: the method to apply (name or function); `__call__` by default. A
            function also selects the scores of a module that returns several outputs,
            e.g. `method=lambda module, x: module(x)[0]` for `(logits, features)`.
          output: which scores to explain: "logits", "probs", "log_probs", "sigmoid",
            an index, `jaxplain.select(...)`, `jaxplain.region(...)` or a function of
            the module's output (see `Model`).
          **apply_kwargs: further keyword arguments for `module.apply`.

        Returns:
          A `Model`.
        """
        import flax.linen as nn

        if not isinstance(module, nn.Module):
            raise TypeError(f"module must be a flax.linen.Module, got {type(module).__name__}")
        if not isinstance(variables, dict) and not hasattr(variables, "keys"):
            raise TypeError(
                "variables must be the dict returned by module.init (e.g. {'params': ...}), "
                f"got {type(variables).__name__}"
            )
        if method is not None and not isinstance(method, str) and not callable(method):
            raise TypeError(f"method must be a method name, a function or None, got {type(method).__name__}")
        if isinstance(method, str) and not callable(getattr(type(module), method, None)):
            # getattr on the unbound module would raise Flax's AttributeError from inside.
            raise ValueError(f"method {method!r} is not a method of {type(module).__name__}")
        target = getattr(module, method) if isinstance(method, str) else (method or module.__call__)
        kwargs = evaluation_kwargs(target)
        kwargs.update(apply_kwargs)
        return cls(LinenApply(module, method, tuple(sorted(kwargs.items()))), variables, output)

    @classmethod
    def from_nnx(
        cls,
        module,
        *,
        method: str | Callable | None = None,
        output: str = "logits",
        **call_kwargs,
    ) -> Model:
        """Wraps a Flax NNX module, in evaluation mode.

        The module is not modified: jaxplain explains a copy of it (sharing its arrays)
        with `deterministic=True` and `use_running_average=True` wherever modules have
        those attributes (Dropout, BatchNorm), as `module.eval()` would set them. As
        for `from_linen`, a called method that takes `train`, `training`,
        `is_training` (set to False), `deterministic` or `use_running_average` (set to
        True) gets them unless `call_kwargs` sets them.

        Args:
          module: a `flax.nnx.Module`.
          method: the method to call (a name, or a function `method(module, x,
            **call_kwargs)`); `__call__` by default. A function also selects the
            scores of a module that returns several outputs.
          output: "logits", "probs" or "log_probs".
          **call_kwargs: keyword arguments passed at every call, e.g. `rngs=None`
            for a `__call__(self, x, rngs)`; static values (flags, None, strings).

        Returns:
          A `Model`.

        Example:
          >>> from flax import nnx
          >>> import jax.numpy as jnp
          >>> import jaxplain
          >>> class Classifier(nnx.Module):
          ...     def __init__(self, rngs):
          ...         self.dense = nnx.Linear(3, 2, rngs=rngs)
          ...         self.dropout = nnx.Dropout(0.5, rngs=rngs)
          ...     def __call__(self, x, rngs=None):
          ...         return self.dense(self.dropout(x, rngs=rngs))
          >>> model = jaxplain.Model.from_nnx(Classifier(nnx.Rngs(0)), rngs=None)
          >>> model(jnp.ones((4, 3))).shape
          (4, 2)
        """
        from flax import nnx

        from jaxplain import _nnx

        if not isinstance(module, nnx.Module):
            raise TypeError(f"module must be a flax.nnx.Module, got {type(module).__name__}")
        if method is not None and not isinstance(method, str) and not callable(method):
            raise TypeError(f"method must be a method name, a function or None, got {type(method).__name__}")
        if isinstance(method, str) and not callable(getattr(type(module), method, None)):
            raise ValueError(f"method {method!r} is not a method of {type(module).__name__}")
        for name, value in call_kwargs.items():
            try:
                hash(value)
            except TypeError:
                raise TypeError(
                    f"from_nnx keyword argument {name}= must be a static (hashable) value such as "
                    f"a flag or None, got {type(value).__name__}; arrays are not passed this way"
                ) from None
        called = getattr(module, method) if isinstance(method, str) else (method or module.__call__)
        kwargs = evaluation_kwargs(called)
        kwargs.update(call_kwargs)
        graphdef, state = _nnx.evaluation_state(module)
        return cls(_NnxApply(graphdef, method, tuple(sorted(kwargs.items()))), state, output)


jax.tree_util.register_dataclass(Model, data_fields=["params"], meta_fields=["apply_fn", "output"])


class OutputStructureError(TypeError):
    """The model returned something other than one array of scores (a tuple, a dict, ...)."""


def _listing(value) -> str:
    """The leaves of `value` with their paths, dtypes and shapes (the first 8)."""
    entries = jax.tree_util.tree_flatten_with_path(value)[0]

    def show(leaf):
        if hasattr(leaf, "shape") and hasattr(leaf, "dtype"):
            return f"{np.dtype(leaf.dtype).name}{list(leaf.shape)}"
        return type(leaf).__name__

    listing = ", ".join(f"{jax.tree_util.keystr(path)} {show(leaf)}" for path, leaf in entries[:8])
    return listing + (", ..." if len(entries) > 8 else "")


def _step(key):
    """A path entry of `tree_flatten_with_path` as a `select` step, or None."""
    if isinstance(key, jax.tree_util.FlattenedIndexKey):
        return None  # a custom pytree's n-th leaf: no key or attribute reaches it
    for field in ("idx", "key", "name"):
        if isinstance(getattr(key, field, None), (int, str)):
            return getattr(key, field)
    return None


def _output_structure_message(apply_fn, scores, output: Output | None = None) -> str:
    """What the model returned (its structure and leaf shapes) and how to select the scores."""
    output = output or Output()
    entries = jax.tree_util.tree_flatten_with_path(scores)[0]
    listing = _listing(scores)
    what = "the model returned" if output.select == () else f"the selected output (output={output}) is"
    message = (
        f"{what} a {type(scores).__name__}"
        + (f" ({listing})" if entries else "")
        + (", not one (batch, classes) array of scores")
    )
    two_d = [path for path, leaf in entries if len(getattr(leaf, "shape", ())) == 2]
    logits = [path for path in two_d if "logit" in jax.tree_util.keystr(path).lower()]
    chosen = (logits or two_d or [path for path, _ in entries] or [None])[0]
    if chosen is None:
        return message + "; apply_fn must return the scores to explain"
    select = jax.tree_util.keystr(chosen)
    steps = [_step(key) for key in chosen]
    if callable(output.select) or None in steps:
        how = f"output=lambda out: out{select}"
    else:
        path = output.select + tuple(steps)
        transform = "" if output.transform == "logits" else f", transform={output.transform!r}"
        plain = len(path) == 1 and isinstance(path[0], int) and not transform
        how = (
            f"output={path[0]}"
            if plain
            else f"output=jaxplain.select({', '.join(map(repr, path))}{transform})"
        )
    if (
        output.select == ()
        and isinstance(apply_fn, LinenApply)
        and (apply_fn.method is None or isinstance(apply_fn.method, str))
    ):
        called = "module" if apply_fn.method is None else f"module.{apply_fn.method}"
        keywords = "".join(f", {k}={v!r}" for k, v in apply_fn.kwargs)
        by_hand = f"jaxplain.Model.from_linen(module, variables, method=lambda module, x: {called}(x{keywords}){select})"
    elif output.select == () and isinstance(apply_fn, _CallableApply):
        by_hand = f"jaxplain.Model.from_callable(lambda x: f(x){select}) with f your function"
    elif output.select == ():
        by_hand = f"apply = model.apply_fn; model = model.replace(apply_fn=lambda params, x: apply(params, x){select})"
    else:
        return f"{message}. Select the scores to explain with {how}"
    return f"{message}. Select the scores to explain with {how} (on Model.from_linen, from_nnx, from_callable, load_model or model.with_output), or by hand: {by_hand}"


def evaluation_kwargs(function) -> dict:
    """The keyword arguments of `_EVAL_KWARGS` (`train=False`, `deterministic=True`, ...)
    that `function` takes: what puts a Flax model in evaluation mode."""
    accepted = _keyword_names(function)
    return {k: v for k, v in _EVAL_KWARGS.items() if k in accepted}


def _keyword_names(function) -> set:
    try:
        return set(inspect.signature(function).parameters)
    except (TypeError, ValueError):
        return set()


@dataclasses.dataclass(frozen=True)
class TopK:
    """Target rule: explain each example's `k` highest-scoring classes."""

    k: int


def top_k(k: int) -> TopK:
    """Target that explains the `k` highest-scoring classes of each example.

    `jaxplain.top_k(1)` is `target="predicted"` except that the attribution keeps a
    target axis of size 1.
    """
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"top_k(k): k must be a positive int, got {k!r}")
    return TopK(int(k))


@dataclasses.dataclass(frozen=True, eq=False)
class Targets:
    """Which output index each example is explained for, normalised at the boundary.

    Either `indices` holds explicit classes of shape (batch, k), or `top` says to take
    the `top` highest-scoring classes at the input. `single` means the caller asked
    for one target per example, so attributions drop the target axis.
    """

    indices: Array | None
    top: int | None
    single: bool

    @property
    def count(self) -> int:
        return self.top if self.indices is None else self.indices.shape[1]

    def resolve(self, outputs_at_x: Array) -> Array:
        """(batch, k) int32 class indices, given the model's outputs at the input."""
        if self.indices is not None:
            return self.indices
        return jax.lax.top_k(outputs_at_x, self.top)[1].astype(jnp.int32)

    def squeeze(self, values: Array) -> Array:
        """Drops the target axis (axis 1) when a single target was asked for."""
        return values[:, 0] if self.single else values


jax.tree_util.register_dataclass(Targets, data_fields=["indices"], meta_fields=["top", "single"])


def normalize_targets(target, batch: int, num_classes: int) -> Targets:
    """Turns a user's `target` argument into `Targets`, checking it first.

    Accepted: an int (same class for every example); an int array of shape (batch,)
    (one class per example); an int array of shape (batch, k) or (1, k) (k classes per
    example, all explained in one pass); "predicted" (the argmax); `top_k(k)`; None for
    a model with one class (one score per example).
    """
    if isinstance(target, str):
        if target != "predicted":
            raise ValueError(
                f"target must be an int, an int array, 'predicted' or jaxplain.top_k(k); "
                f"got the string {target!r}"
            )
        return Targets(None, 1, True)
    if isinstance(target, TopK):
        if target.k > num_classes:
            raise ValueError(f"target=top_k({target.k}) but the model has {num_classes} classes")
        return Targets(None, target.k, False)
    if target is None:
        if num_classes == 1:  # one score per example: nothing to choose
            return Targets(jnp.zeros((batch, 1), jnp.int32), None, True)
        raise ValueError(
            f"target is required for a model of {num_classes} classes: an int, an int array, "
            "'predicted' or top_k(k) (target=None is for models with one score per example)"
        )
    if isinstance(target, jax.core.Tracer):
        indices = target
    else:
        indices = np.asarray(target)
        if indices.dtype == bool or not np.issubdtype(indices.dtype, np.integer):
            raise TypeError(f"target must hold integers, got dtype {indices.dtype}")
        if indices.size and (indices.min() < 0 or indices.max() >= num_classes):
            raise ValueError(
                f"target holds {indices.min()}..{indices.max()}, outside the model's "
                f"classes 0..{num_classes - 1}"
            )
    xp = jnp if isinstance(indices, jax.core.Tracer) else np
    if indices.ndim == 0:
        return Targets(jnp.asarray(xp.full((batch, 1), indices, xp.int32)), None, True)
    if indices.ndim == 1:
        if indices.shape[0] != batch:
            raise ValueError(
                f"target has length {indices.shape[0]} but x holds {batch} examples; pass "
                f"one class per example, or shape (1, k) for the same k classes for all"
            )
        return Targets(jnp.asarray(indices.astype(xp.int32)[:, None]), None, True)
    if indices.ndim == 2 and indices.shape[0] in (1, batch) and indices.shape[1] >= 1:
        expanded = xp.broadcast_to(indices.astype(xp.int32), (batch, indices.shape[1]))
        return Targets(jnp.asarray(expanded), None, False)
    raise ValueError(
        f"target has shape {tuple(indices.shape)}; expected (), ({batch},), ({batch}, k) or (1, k)"
    )
