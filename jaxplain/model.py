"""The model being explained, and which of its outputs an explanation is about.

`Model` is a pytree: the parameters are its leaves and the apply function is static
metadata. Passing a `Model` into a jitted explainer therefore compiles once per
architecture and input shape; new parameters of the same shapes reuse the program.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array

OUTPUTS = ("logits", "probs", "log_probs")

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
    """Rebuilds an NNX module from its graph definition and state, then calls it."""

    graphdef: Any

    def __call__(self, state, x):
        from flax import nnx

        return nnx.merge(self.graphdef, state)(x)


@dataclasses.dataclass(frozen=True)
class _CallableApply:
    """A parameter-free function `f(x)`."""

    function: Callable

    def __call__(self, params, x):
        del params
        return self.function(x)


@dataclasses.dataclass(frozen=True, eq=False)
class Model:
    """A classifier to explain: `apply_fn(params, x) -> (batch, classes)` plus its params.

    `params` are pytree leaves and `apply_fn` and `output` are static, so
    `model.replace(params=new_params)` never triggers a recompilation of an explainer
    that has already run on a model of the same architecture.

    Attributes:
      apply_fn: a hashable callable `apply_fn(params, x)` returning raw scores
        (logits) of shape `(batch, classes)`.
      params: any pytree of arrays.
      output: which output the explanation is about: `"logits"` (the raw scores),
        `"probs"` (softmax of the scores) or `"log_probs"` (log-softmax).

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
    output: str = "logits"

    def __post_init__(self):
        if not callable(self.apply_fn):
            raise TypeError(f"apply_fn must be callable, got {type(self.apply_fn).__name__}")
        if self.output not in OUTPUTS:
            raise ValueError(f"output must be one of {OUTPUTS}, got {self.output!r}")

    def __call__(self, x: Array) -> Array:
        """Returns the selected output (logits, probs or log_probs) for a batch `x`."""
        scores = self.apply_fn(self.params, x)
        # A tuple or dict (e.g. `(logits, features)`) would otherwise fail far away, in
        # softmax or at `.shape`; this is a check on the Python structure, not on values.
        if not (hasattr(scores, "shape") and hasattr(scores, "dtype")):
            raise OutputStructureError(_output_structure_message(self.apply_fn, scores))
        if self.output == "probs":
            return jax.nn.softmax(scores, axis=-1)
        if self.output == "log_probs":
            return jax.nn.log_softmax(scores, axis=-1)
        return scores

    def replace(self, **changes) -> Model:
        """Returns a copy with some fields replaced, e.g. `model.replace(params=p)`."""
        return dataclasses.replace(self, **changes)

    def with_output(self, output: str) -> Model:
        """Returns the same model explaining `output` ("logits", "probs", "log_probs")."""
        return self.replace(output=output)

    @classmethod
    def from_callable(cls, function: Callable, *, output: str = "logits") -> Model:
        """Wraps a parameter-free function `function(x) -> (batch, classes)`."""
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
        output: str = "logits",
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
          output: "logits", "probs" or "log_probs".
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
        accepted = _keyword_names(target)
        kwargs = {k: v for k, v in _EVAL_KWARGS.items() if k in accepted}
        kwargs.update(apply_kwargs)
        return cls(LinenApply(module, method, tuple(sorted(kwargs.items()))), variables, output)

    @classmethod
    def from_nnx(cls, module, *, output: str = "logits") -> Model:
        """Wraps a Flax NNX module, in evaluation mode.

        The module is not modified: jaxplain explains a view of it with
        `deterministic=True` and `use_running_average=True` wherever modules have
        those attributes (Dropout, BatchNorm).
        """
        from flax import nnx

        if not isinstance(module, nnx.Module):
            raise TypeError(f"module must be a flax.nnx.Module, got {type(module).__name__}")
        evaluating = nnx.view(module, deterministic=True, use_running_average=True, raise_if_not_found=False)
        graphdef, state = nnx.split(evaluating)
        return cls(_NnxApply(graphdef), state, output)


jax.tree_util.register_dataclass(Model, data_fields=["params"], meta_fields=["apply_fn", "output"])


class OutputStructureError(TypeError):
    """The model returned something other than one array of scores (a tuple, a dict, ...)."""


def _output_structure_message(apply_fn, scores) -> str:
    """What the model returned (its structure and leaf shapes) and how to select the scores."""
    entries = jax.tree_util.tree_flatten_with_path(scores)[0]

    def show(leaf):
        if hasattr(leaf, "shape") and hasattr(leaf, "dtype"):
            return f"{np.dtype(leaf.dtype).name}{list(leaf.shape)}"
        return type(leaf).__name__

    listing = ", ".join(f"{jax.tree_util.keystr(path)} {show(leaf)}" for path, leaf in entries[:8])
    listing += ", ..." if len(entries) > 8 else ""
    message = (
        f"the model returned a {type(scores).__name__}"
        + (f" ({listing})" if entries else "")
        + ", not one (batch, classes) array of scores"
    )
    two_d = [path for path, leaf in entries if len(getattr(leaf, "shape", ())) == 2]
    logits = [path for path in two_d if "logit" in jax.tree_util.keystr(path).lower()]
    chosen = (logits or two_d or [path for path, _ in entries] or [None])[0]
    if chosen is None:
        return message + "; apply_fn must return the scores to explain"
    select = jax.tree_util.keystr(chosen)
    if isinstance(apply_fn, LinenApply) and (apply_fn.method is None or isinstance(apply_fn.method, str)):
        # A Linen `method` keeps the module's layer names, which layer methods need.
        called = "module" if apply_fn.method is None else f"module.{apply_fn.method}"
        keywords = "".join(f", {k}={v!r}" for k, v in apply_fn.kwargs)
        how = f"jaxplain.Model.from_linen(module, variables, method=lambda module, x: {called}(x{keywords}){select})"
    elif isinstance(apply_fn, _CallableApply):
        how = f"jaxplain.Model.from_callable(lambda x: f(x){select}) with f your function"
    else:
        how = f"apply = model.apply_fn; model = model.replace(apply_fn=lambda params, x: apply(params, x){select})"
    return f"{message}. Select the scores to explain, e.g. {how}"


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
    example, all explained in one pass); "predicted" (the argmax); `top_k(k)`.
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
        raise ValueError("target is required: an int, an int array, 'predicted' or top_k(k)")
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
