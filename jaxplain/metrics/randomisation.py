"""The model-parameter randomisation test: does the explanation depend on the model?"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import jax
import jax.numpy as jnp

from jaxplain import _checks, engine
from jaxplain.metrics import _common
from jaxplain.model import Model, Targets


def _name(entry) -> str:
    for field in ("key", "idx", "name"):
        if hasattr(entry, field):
            return str(getattr(entry, field))
    return str(entry)


def _layers(params):
    """`(leaves, treedef, layer of each leaf or None, layers in stored order)`.

    A Linen variables dict's layers are the entries of `params["params"]` (other
    collections such as batch statistics are kept); any other pytree's are its
    top-level entries. Only floating leaves are redrawn.
    """
    with_paths, treedef = jax.tree_util.tree_flatten_with_path(params)
    linen = isinstance(params, Mapping) and isinstance(params.get("params"), Mapping)
    container = params["params"] if linen else params

    def layer(path, leaf):
        if not jnp.issubdtype(jnp.result_type(leaf), jnp.floating):
            return None
        if linen:
            return _name(path[1]) if len(path) > 1 and _name(path[0]) == "params" else None
        return _name(path[0]) if path else None

    names = [layer(path, leaf) for path, leaf in with_paths]
    used = set(names) - {None}
    if isinstance(container, Mapping):
        stored = [str(k) for k in container.keys() if str(k) in used]
    else:
        stored = list(dict.fromkeys(n for n in names if n is not None))
    return [leaf for _, leaf in with_paths], treedef, names, stored


@engine.program
def _redrawn(leaves, key):
    """Each leaf redrawn from a normal with the leaf's own mean and standard deviation."""
    return [
        (leaf.mean() + leaf.std() * jax.random.normal(jax.random.fold_in(key, i), leaf.shape)).astype(
            leaf.dtype
        )
        for i, leaf in enumerate(leaves)
    ]


@engine.program(static_argnames=("method", "static", "takes_key"))
def _explained(model, x, chosen, key, arrays, *, method, static, takes_key):
    return _common.explain(method, model, x, chosen, key, arrays, static, takes_key)


@engine.program
def _resolved(model, x, targets: Targets):
    return targets.resolve(engine.forward(model, x))


def randomisation_check(
    method: Callable,
    model: Model,
    x,
    *,
    target,
    key,
    layers: Sequence[str] | None = None,
    absolute: bool = False,
    **method_options,
) -> dict[str, jax.Array]:
    """Cascading model-parameter randomisation: similarity to the original explanation.

    The layers are randomised one after another from the top (the output layer first),
    each staying random for the rest of the cascade; after each one the explanation is
    recomputed and compared with the original by Spearman's rank correlation per
    example (Adebayo et al. 2018; Quantus' MPRT):

        s_l = spearman(phi(x; theta), phi(x; theta with layers top..l redrawn)).

    A method whose explanation depends on the model gives similarities that fall along
    the cascade; one that stays near 1 explains the input, not the model. Every
    explanation is of the class resolved with the original model at x.

    Layers: for a Linen model (`Model.from_linen`, `jaxplain.load_model`) the entries
    of `params["params"]` (batch statistics are kept), otherwise the top-level entries
    of `model.params`; in the order they are stored, which for Linen is the order the
    modules were defined (first call) and is kept by jaxplain checkpoints. The cascade
    runs that order backwards. `jax.tree_util.tree_map` re-sorts dict keys, so for
    params that went through it, pass `layers` explicitly. Randomisation: each floating
    leaf of a layer is redrawn from a normal with the leaf's own mean and standard
    deviation (a zero bias stays zero), from `key`. The explainer's program is
    compiled once; the new parameters reuse it.

    Args:
      method: any jaxplain method or its name, e.g. `jaxplain.saliency` or
        "integrated_gradients"; a noise method takes the method it wraps as `wrap=`.
      model: a `jaxplain.Model` whose params are a pytree.
      x: a batch of inputs, `(batch, ...)`.
      target: an int, `(batch,)` ints or "predicted" (resolved with the original model).
      key: a `jax.random.key`; same key, same randomised parameters. A randomized
        method gets one key derived from it, the same for every explanation.
      layers: the layers to randomise, in cascade order (first randomised first);
        by default every layer, from the last stored to the first.
      absolute: compare |phi| instead of phi (Adebayo et al. report both).
      **method_options: passed to `method` (e.g. steps=16).

    Returns:
      A dict from layer name to `(batch,)` similarities, in cascade order.

    References:
      Adebayo, Gilmer, Muelly, Goodfellow, Hardt, Kim. Sanity Checks for Saliency
      Maps. NeurIPS 2018, arXiv:1810.03292; Hedstroem et al. Quantus: An Explainable
      AI Toolkit for Responsible Evaluation of Neural Network Explanations. JMLR 2023,
      arXiv:2202.06861.
    """
    method, arrays, static, takes_key = _common.bind(method, method_options)
    x, targets = _common.prepare(model, x, target)
    key = _checks.key(key)
    if not isinstance(absolute, bool):
        raise TypeError(f"absolute must be a bool, got {type(absolute).__name__}")
    leaves, treedef, names, stored = _layers(model.params)
    if not stored:
        raise ValueError("model has no floating parameters to randomise (model.params holds no layers)")
    if layers is None:
        layers = stored[::-1]
    elif isinstance(layers, str) or not all(isinstance(n, str) for n in layers) or not layers:
        raise TypeError(f"layers must be a non-empty sequence of layer names, got {layers!r}")
    unknown = [n for n in layers if n not in stored]
    if unknown or len(set(layers)) != len(layers):
        raise ValueError(f"layers must name distinct layers among {stored}, got {list(layers)}")
    redraw_key, method_key = jax.random.split(key)
    chosen = _resolved(model, x, targets)
    run = lambda m: _explained(
        m, x, chosen, method_key, arrays, method=method, static=static, takes_key=takes_key
    )
    original = run(model)
    original = jnp.abs(original) if absolute else original
    floating = [i for i, n in enumerate(names) if n is not None]
    redrawn = dict(zip(floating, _redrawn([leaves[i] for i in floating], redraw_key)))
    current, similarities = list(leaves), {}
    for layer in layers:
        current = [redrawn[i] if names[i] == layer else leaf for i, leaf in enumerate(current)]
        values = run(model.replace(params=jax.tree_util.tree_unflatten(treedef, current)))
        similarities[layer] = _common.spearman(original, jnp.abs(values) if absolute else values)
    return similarities
