"""One registry of every explainer: the CLI, the docs and the tests list methods from it."""

from __future__ import annotations

import dataclasses
import functools
import inspect
from typing import Callable, Dict

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
