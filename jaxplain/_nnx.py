"""Flax NNX support shared by `Model.from_nnx` and the layer methods.

Two things jaxplain needs from an NNX module that Flax does not offer the same way in
every release it supports (flax >= 0.10):

* an evaluation-mode copy (Dropout deterministic, BatchNorm on its running statistics)
  that leaves the user's module untouched (`nnx.view` exists only from flax 0.12.4;
  `evaluation_state` merges a copy and sets the attributes on it instead);
* a way to see or replace what a submodule's `__call__` returns, as Linen's
  `intercept_methods` does. `routed_calls` gives each module of a freshly merged copy,
  for the duration of one call, a subclass of its own class whose `__call__` goes
  through a hook; the classes are restored afterwards. The copy is made inside the
  traced function, so the hook is part of a pure function of (state, x).
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Callable, Iterator

import jax
from flax import nnx

# id(module) -> (path, hook) for the modules routed in the current context.
_ROUTES: contextvars.ContextVar[dict | None] = contextvars.ContextVar("jaxplain_nnx_routes", default=None)

_EVAL_ATTRIBUTES = {"deterministic": True, "use_running_average": True}


def evaluation_state(module: nnx.Module):
    """`(graphdef, state)` of an evaluation-mode copy of `module`; `module` is not changed.

    Every submodule with a `deterministic` attribute gets True and every one with a
    `use_running_average` attribute gets True (what `module.eval()` sets), on a copy
    that shares the arrays. The state holds variables of its own: `nnx.split` returns
    the module's variable objects, through which a later in-place update of the module
    (an optimizer step) would have changed the model being explained.
    """
    copy = nnx.merge(*nnx.split(module))
    copy.set_attributes(**_EVAL_ATTRIBUTES, raise_if_not_found=False)
    graphdef, state = nnx.split(copy)
    return graphdef, jax.tree_util.tree_map(lambda leaf: leaf, state)


def path_name(path: tuple) -> str:
    """("blocks", 0, "attn") -> "blocks/0/attn"."""
    return "/".join(str(part) for part in path)


def modules(root: nnx.Module) -> Iterator[tuple[str, nnx.Module]]:
    """`(path, module)` for every module in `root`'s graph, `root` itself as ""."""
    for path, node in nnx.iter_graph(root):
        if isinstance(node, nnx.Module):
            yield path_name(path), node


def value(variable):
    """The array held by an NNX variable (None for a missing one)."""
    if variable is None:
        return None
    return variable.get_value() if hasattr(variable, "get_value") else variable.value


_ROUTED: dict[type, type] = {}  # a module class -> its routed subclass


def _routed_class(cls: type) -> type:
    """A subclass of `cls` whose `__call__` runs through the current context's hook."""
    if cls in _ROUTED:
        return _ROUTED[cls]

    def __call__(self, *args, **kwargs):
        def call():
            return cls.__call__(self, *args, **kwargs)

        route = (_ROUTES.get() or {}).get(id(self))
        if route is None:  # a copy Flax made inside the call (e.g. under nnx.vmap)
            return call()
        path, hook = route
        return hook(call, self, path)

    namespace = {"__call__": __call__, "__module__": cls.__module__, "__qualname__": cls.__qualname__}
    return _ROUTED.setdefault(cls, type(cls)(cls.__name__, (cls,), namespace))


def declared_class(module) -> type:
    """The module's own class, also while its calls are routed."""
    cls = type(module)
    base = cls.__bases__[0]
    return base if _ROUTED.get(base) is cls else cls


@contextlib.contextmanager
def routed_calls(root: nnx.Module, hook: Callable):
    """Within the block, calling any module of `root`'s graph returns `hook(call, module, path)`.

    `call()` runs the module's own `__call__` with the arguments given; `path` is its
    attribute path from `root` ("" for `root`). Meant for a copy made by `nnx.merge`
    inside a traced function: the modules' classes are swapped for the block and
    restored after it.
    """
    found = {}
    for path, module in modules(root):
        if callable(module):
            found.setdefault(id(module), (path, module))  # a shared module: its first path
    found = list(found.values())
    routes = {**(_ROUTES.get() or {}), **{id(module): (path, hook) for path, module in found}}
    token = _ROUTES.set(routes)
    originals = [(module, type(module)) for _, module in found]
    try:
        for module, cls in originals:
            object.__setattr__(module, "__class__", _routed_class(cls))
        yield
    finally:
        for module, cls in originals:
            object.__setattr__(module, "__class__", cls)
        _ROUTES.reset(token)
