"""One registry of every explainer: the CLI, the docs and the tests list methods from it.

It is also the one place that knows how to call a method given by name or as a function
with its options (`resolve`, `options_of`, `bind`, `takes_key`): the noise methods, the
metrics, `evaluate`, `explain_dataset`, `make_labels` and the command line all go through
it. A noise method (smoothgrad, smoothgrad_sq, vargrad) is an ordinary method whose
`method` option names the method it runs on noisy copies.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
from collections.abc import Callable

import jax
import numpy as np

from jaxplain.methods import arguments

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
      parameters: the names of its parameters (`model`, `x`, `target`, its options).
    """

    name: str
    function: Callable
    family: str
    summary: str
    randomized: bool
    parameters: frozenset[str] = frozenset()

    @property
    def wraps(self) -> bool:
        """Whether it runs another method, named by its `method` option (smoothgrad, ...)."""
        return "method" in self.parameters


METHODS: dict[str, MethodInfo] = {}


def register(family: str, *, randomized: bool = False) -> Callable[[Callable], Callable]:
    """Decorator that adds a public method to `METHODS`.

    The method it returns (and registers) also takes `model_kwargs=`, per-example
    arguments of the model (`jaxplain.methods.arguments`); without them it is the
    function itself.
    """
    if family not in FAMILIES:
        raise ValueError(f"family must be one of {FAMILIES}, got {family!r}")

    def add(function: Callable) -> Callable:
        function = arguments.accepting(function)
        summary = (function.__doc__ or "").strip().splitlines()[0] if function.__doc__ else ""
        named = inspect.signature(function).parameters.values()
        parameters = frozenset(
            p.name
            for p in named
            if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD) and p.name != "model_kwargs"
        )
        METHODS[function.__name__] = MethodInfo(
            function.__name__, function, family, summary, randomized, parameters
        )
        return function

    return add


def info(method) -> MethodInfo | None:
    """What the registry knows of `method` (a registered function, its name, or a
    `functools.partial` of one); None for any other callable."""
    if isinstance(method, str):
        return METHODS.get(method)
    while isinstance(method, functools.partial):
        method = method.func
    found = METHODS.get(getattr(method, "__name__", ""))
    return found if found is not None and found.function is method else None


def resolve(method) -> Callable:
    """The function of `method`: a registered name such as "integrated_gradients", or a
    callable `function(model, x, *, target, ...)`, returned as it is."""
    if isinstance(method, str):
        if method not in METHODS:
            raise ValueError(
                f"method: {method!r} is not a jaxplain method; known: {', '.join(sorted(METHODS))}"
            )
        return METHODS[method].function
    if not callable(method):
        raise TypeError(
            f"method must be a jaxplain method such as jaxplain.saliency, or its name, got {method!r}"
        )
    return method


def options_of(method, options: dict) -> dict:
    """`options` as `method` takes them.

    `wrap=` names the method that a noise method (smoothgrad, ...) runs on its noisy
    copies, where the caller's own first argument is already called `method`
    (`explain_dataset`, `make_labels`, the metrics, `evaluate`, the command line's
    `--wrap`): it becomes the noise method's `method` option. A callable the registry
    does not know gets its options as given.
    """
    options = dict(options)
    if "wrap" in options and options["wrap"] is None:  # none named: the method's default
        del options["wrap"]
    found = info(method)
    if "wrap" not in options or found is None:
        return options
    if not found.wraps:
        raise ValueError(f"wrap names the method a noise method wraps; {found.name} wraps none")
    if "method" in options:
        raise TypeError(f"{found.name}: give the method it wraps once, as wrap= or as method=")
    options["method"] = options.pop("wrap")
    return options


def bind(method, options: dict, *, caller: str) -> tuple[Callable, dict, tuple, bool]:
    """`method` with its options, for a caller that runs it inside its own program (the
    noise methods, the robustness and randomisation metrics).

    Returns `(function, arrays, static, takes_key)`: the method's function (a name is
    resolved), its array options (traced) and its other options as a sorted tuple of
    `(name, value)` pairs (hashable, static), and whether it draws at random (see
    `takes_key`). The caller passes it a key of its own and the targets, so `key` and
    `target` are refused as options, naming `caller`.
    """
    function = resolve(method)
    options = options_of(function, options)
    for reserved in ("key", "target"):
        if reserved in options:
            raise TypeError(f"pass {reserved} to the {caller} itself, not as a method option")
    arrays = {k: v for k, v in options.items() if _is_array(v)}
    static = tuple(sorted((k, v) for k, v in options.items() if k not in arrays))
    try:
        hash(static)
    except TypeError as error:
        raise TypeError(f"method options must be arrays or hashable values: {error}") from error
    return function, arrays, static, takes_key(function)


def _is_array(value) -> bool:
    return isinstance(value, (jax.Array, np.ndarray))


def takes_key(method) -> bool:
    """Whether `method` draws at random and so takes a `key`: what the registry says of a
    jaxplain method (or its name, or a `functools.partial` of it), and for any other
    callable whether it has a `key` parameter."""
    found = info(method)
    if found is not None:
        return found.randomized
    try:
        return "key" in inspect.signature(method).parameters
    except (TypeError, ValueError):
        return False
