"""One registry of every explainer: the CLI, the docs and the tests list methods from it."""

from __future__ import annotations

import dataclasses
import functools
import inspect
from typing import Callable, Dict

import jax
import numpy as np

FAMILIES = ("gradient", "path", "noise", "rules", "layer", "perturbation")


@dataclasses.dataclass(frozen=True)
class MethodInfo:
    """What the registry knows of a method.

    Attributes:
      name: the public name, e.g. "integrated_gradients".
      function: the method, `function(model, x, *, target, ...) -> Attribution`.
      family: one of FAMILIES.
      summary: the first line of its docstring.
      randomized: whether it takes a `key` (same key, same result).
    """

    name: str
    function: Callable
    family: str
    summary: str
    randomized: bool


METHODS: Dict[str, MethodInfo] = {}


def register(family: str, *, randomized: bool = False) -> Callable[[Callable], Callable]:
    """Decorator that adds a public method to `METHODS` and returns it unchanged."""
    if family not in FAMILIES:
        raise ValueError(f"family must be one of {FAMILIES}, got {family!r}")

    def add(function: Callable) -> Callable:
        summary = (function.__doc__ or "").strip().splitlines()[0] if function.__doc__ else ""
        METHODS[function.__name__] = MethodInfo(function.__name__, function, family, summary, randomized)
        return function

    return add


def resolve(name: str, wrap: str | None = None) -> Callable:
    """The function of method `name`, `function(model, x, *, target, ...)`.

    A noise method (smoothgrad, smoothgrad_sq, vargrad) runs another method on noisy
    copies: `wrap` names it, and the result is the noise method with it bound.
    """
    if name not in METHODS:
        raise ValueError(f"method: {name!r} is not a jaxplain method; known: {', '.join(sorted(METHODS))}")
    info = METHODS[name]
    if info.family != "noise":
        return info.function
    if wrap is None:
        raise ValueError(f"method {name!r} wraps another method: pass wrap='saliency' (or any method)")
    inner = resolve(wrap)
    return functools.partial(info.function, inner)


def randomized(name: str, wrap: str | None = None) -> bool:
    """Whether method `name` (wrapping `wrap`, for a noise method) takes a `key`."""
    info = METHODS[name]
    return info.randomized or (info.family == "noise" and wrap is not None and METHODS[wrap].randomized)


def method_options(method, options: dict, *, caller: str):
    """Checks `method` and splits its options into traced arrays and hashable settings.

    For the callers that run a method inside their own program (the noise wrappers, the
    robustness and randomisation metrics). Returns `(arrays, static, takes_key)`:
    `takes_key` says whether the method draws at random (see `takes_key`); the caller
    passes it a key of its own, so `key` and `target` are refused as options, naming
    `caller`.
    """
    if not callable(method):
        raise TypeError(f"method must be a jaxplain method such as jaxplain.saliency, got {method!r}")
    wrapper = METHODS.get(getattr(method, "__name__", ""))
    if wrapper is not None and wrapper.function is method and wrapper.family == "noise":
        # Called as method(model, x, ...) it would fail inside the program, missing `x`.
        raise TypeError(
            f"method {wrapper.name} wraps another method; pass "
            f"functools.partial(jaxplain.{wrapper.name}, jaxplain.saliency) (or any method)"
        )
    for reserved in ("key", "target"):
        if reserved in options:
            raise TypeError(f"pass {reserved} to the {caller} itself, not as a method option")
    arrays = {k: v for k, v in options.items() if _is_array(v)}
    static = tuple(sorted((k, v) for k, v in options.items() if k not in arrays))
    try:
        hash(static)
    except TypeError as error:
        raise TypeError(f"method options must be arrays or hashable values: {error}") from error
    return arrays, static, takes_key(method)


def _is_array(value) -> bool:
    return isinstance(value, (jax.Array, np.ndarray))


def takes_key(method: Callable) -> bool:
    """Whether `method` draws at random and so takes a `key`: what the registry says of a
    jaxplain method, and for any other callable whether it has a `key` parameter."""
    for info in METHODS.values():
        if info.function is method:
            return info.randomized
    try:
        return "key" in inspect.signature(method).parameters
    except (TypeError, ValueError):
        return False
