"""Randomisation metrics: does the explanation depend on the model and on the class explained?

`model_parameter_randomisation` (MPRT) and its repairs `smooth_mprt` and `efficient_mprt`
redraw the model's parameters layer by layer and compare the explanations; `random_logit`
compares the explanation of the target class with that of a random other class. All
re-run the explainer (method first); the explainer's program is compiled once and the
randomised parameters reuse it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxplain import _checks, engine
from jaxplain.methods.smoothing import smoothgrad
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


LAYER_ORDERS = ("top_down", "bottom_up", "independent")
SIMILARITIES = ("spearman", "pearson", "ssim")
COMPLEXITIES = ("discrete_entropy", "entropy")
_SSIM_WINDOW = 7  # scikit-image's default window, as Quantus' ssim uses it


@engine.program(static_argnames=("method", "static", "takes_key"))
def _explained(model, x, chosen, key, arrays, *, method, static, takes_key):
    return _common.explain(method, model, x, chosen, key, arrays, static, takes_key)


@engine.program
def _resolved(model, x, targets: Targets):
    return targets.resolve(engine.forward(model, x))


# --- comparing two explanations ---------------------------------------------------------


def _prepared(values, absolute: bool, normalise: bool):
    """(B, features) values, divided by the example's largest |value| (an all-zero one is
    kept) and then made absolute, as Quantus' `normalise_by_max` and `abs`."""
    if normalise:
        largest = jnp.abs(values).max(axis=1, keepdims=True)
        values = values / jnp.where(largest == 0, 1, largest)
    return jnp.abs(values) if absolute else values


def _ssim(a, b):
    """Quantus' SSIM of two explanations per example: scikit-image's structural similarity of
    the flattened (B, features) vectors with a uniform window of 7 features, sample
    covariances, K1 = 0.01, K2 = 0.03 and the data range of both together."""
    span = jnp.maximum(a.max(axis=1), b.max(axis=1)) - jnp.minimum(a.min(axis=1), b.min(axis=1))
    c1, c2 = ((0.01 * span) ** 2)[:, None], ((0.03 * span) ** 2)[:, None]
    window = jnp.full((_SSIM_WINDOW,), 1 / _SSIM_WINDOW, a.dtype)
    means = jax.vmap(lambda row: jnp.convolve(row, window, mode="valid"))
    mean_a, mean_b = means(a), means(b)
    unbiased = _SSIM_WINDOW / (_SSIM_WINDOW - 1)
    var_a = unbiased * (means(a * a) - mean_a**2)
    var_b = unbiased * (means(b * b) - mean_b**2)
    cov = unbiased * (means(a * b) - mean_a * mean_b)
    local = ((2 * mean_a * mean_b + c1) * (2 * cov + c2)) / (
        (mean_a**2 + mean_b**2 + c1) * (var_a + var_b + c2)
    )
    return local.mean(axis=1)


@engine.program(static_argnames=("similarity", "absolute", "normalise"))
def _compared(a, b, *, similarity, absolute, normalise):
    a, b = _common.flat_pair(a, b)
    a, b = _prepared(a, absolute, normalise), _prepared(b, absolute, normalise)
    if similarity == "ssim":
        return _ssim(a, b)
    if similarity == "spearman":
        a, b = _common.average_ranks(a), _common.average_ranks(b)
    return _common.pearson(a, b)


def _comparison(similarity, absolute, normalise, x) -> dict:
    """The checked options of `_compared`."""
    similarity = _checks.choice("similarity", similarity, SIMILARITIES)
    features = int(x.size // x.shape[0])
    if similarity == "ssim" and features < _SSIM_WINDOW:
        raise ValueError(
            f"similarity='ssim' needs at least {_SSIM_WINDOW} features per example (its window), "
            f"got {features}"
        )
    return {
        "similarity": similarity,
        "absolute": _checks.flag("absolute", absolute),
        "normalise": _checks.flag("normalise", normalise),
    }


# --- the randomised models ---------------------------------------------------------------


def _plan(params, layers, layer_order: str) -> tuple:
    """`(leaves, treedef, layer of each leaf, the layers in the order they are randomised)`."""
    leaves, treedef, names, stored = _layers(params)
    if not stored:
        raise ValueError("model has no floating parameters to randomise (model.params holds no layers)")
    if layers is None:
        return leaves, treedef, names, stored[::-1] if layer_order == "top_down" else stored
    if isinstance(layers, str) or not layers or not all(isinstance(n, str) for n in layers):
        raise TypeError(f"layers must be a non-empty sequence of layer names, got {layers!r}")
    unknown = [n for n in layers if n not in stored]
    if unknown or len(set(layers)) != len(layers):
        raise ValueError(f"layers must name distinct layers among {stored}, got {list(layers)}")
    return leaves, treedef, names, list(layers)


def _randomised(model: Model, key, leaves, treedef, names, order, *, cascading: bool):
    """`(layer, model)` for each layer of `order`: the model with that layer redrawn and, when
    `cascading`, every layer before it in `order` too. A layer's new values are the same in
    every model (drawn once from `key`)."""
    floating = [i for i, n in enumerate(names) if n is not None]
    redrawn = dict(zip(floating, _redrawn([leaves[i] for i in floating], key)))
    current = list(leaves)
    for layer in order:
        base = current if cascading else leaves
        current = [redrawn[i] if names[i] == layer else leaf for i, leaf in enumerate(base)]
        yield layer, model.replace(params=jax.tree_util.tree_unflatten(treedef, current))


def _parameter_randomisation(
    bound, model, x, target, key, layers, layer_order, comparison
) -> dict[str, jax.Array]:
    """The MPRT loop shared by `model_parameter_randomisation` and `smooth_mprt`."""
    method, arrays, static, takes_key = bound
    x, targets = _common.prepare(model, x, target)
    key = _checks.key(key)
    layer_order = _checks.choice("layer_order", layer_order, LAYER_ORDERS)
    comparison = _comparison(**comparison, x=x)
    leaves, treedef, names, order = _plan(model.params, layers, layer_order)
    redraw_key, method_key = jax.random.split(key)
    chosen = _resolved(model, x, targets)
    run = lambda m: _explained(
        m, x, chosen, method_key, arrays, method=method, static=static, takes_key=takes_key
    )
    original = run(model)
    models = _randomised(
        model, redraw_key, leaves, treedef, names, order, cascading=layer_order != "independent"
    )
    return {layer: _compared(original, run(randomised), **comparison) for layer, randomised in models}


def model_parameter_randomisation(
    method: Callable,
    model: Model,
    x,
    *,
    target,
    key,
    layers: Sequence[str] | None = None,
    layer_order: str = "top_down",
    similarity: str = "spearman",
    absolute: bool = True,
    normalise: bool = True,
    **method_options,
) -> dict[str, jax.Array]:
    """The model-parameter randomisation test (MPRT): similarity to the original explanation.

    The layers are randomised one after another and after each the explanation is
    recomputed and compared with the original, per example (Adebayo et al. 2018; Quantus'
    MPRT):

        s_l = sim(phi(x; theta), phi(x; theta with layers up to l redrawn)).

    `layer_order="top_down"` (the paper's cascade) randomises from the output layer down,
    each layer staying random for the rest of the cascade; `"bottom_up"` cascades from the
    input layer up; `"independent"` randomises each layer alone. A method whose
    explanation depends on the model gives similarities that fall along the cascade; one
    that stays near 1 explains the input, not the model. Every explanation is of the
    class resolved with the original model at x.

    Before comparing, each explanation is divided by its largest |value| (`normalise`, as
    Quantus' `normalise_by_max`, but per example) and made absolute (`absolute`); the
    division, a positive rescaling, changes neither correlation and matters for "ssim"
    only.

    Layers: for a Linen model (`Model.from_linen`, `jaxplain.load_model`) the entries of
    `params["params"]` (batch statistics are kept), otherwise the top-level entries of
    `model.params` (for `Model.from_nnx`, the module's attributes); in the order they are
    stored, which for Linen is the order the modules were defined (first call) and is
    kept by jaxplain checkpoints, and for NNX the attributes' names sorted (pass
    `layers` for the order they run). `jax.tree_util.tree_map` re-sorts dict keys, so for
    params that went through it, pass `layers` explicitly. Randomisation: each floating
    leaf of a layer is redrawn from a normal with the leaf's own mean and standard
    deviation (a zero bias stays zero), from `key`; a layer's new values are the same
    whichever order randomises it. The explainer's program is compiled once; the new
    parameters reuse it.

    Args:
      method: any jaxplain method or its name, e.g. `jaxplain.saliency` or
        "integrated_gradients"; a noise method takes the method it wraps as `wrap=`.
      model: a `jaxplain.Model` whose params are a pytree.
      x: a batch of inputs, `(batch, ...)`.
      target: an int, `(batch,)` ints or "predicted" (resolved with the original model).
      key: a `jax.random.key`; same key, same randomised parameters. A randomized
        method gets one key derived from it, the same for every explanation.
      layers: the layers to randomise, in the order they are randomised; by default
        every layer, in `layer_order`'s order.
      layer_order: "top_down" (Quantus' default for MPRT), "bottom_up" or "independent".
      similarity: "spearman" (rank correlation, Quantus' default), "pearson" or "ssim"
        (Quantus' structural similarity of the flattened explanations).
      absolute: compare |phi| (Quantus' default; Adebayo et al. report both).
      normalise: divide each explanation by its largest |value| first.
      **method_options: passed to `method` (e.g. steps=16).

    Returns:
      A dict from layer name to `(batch,)` similarities, in the order randomised (lower
      is better: the explanation follows the model).

    Example:
      >>> import jax, jax.numpy as jnp
      >>> import jaxplain
      >>> from jaxplain.metrics.randomisation import model_parameter_randomisation
      >>> params = {"hidden": jnp.eye(3), "out": jnp.ones((3, 2))}
      >>> model = jaxplain.Model(lambda p, x: jnp.tanh(x @ p["hidden"]) @ p["out"], params)
      >>> the_input = lambda model, x, *, target: jaxplain.Attribution(values=x, target=target)
      >>> x = jnp.array([[0.1, 0.5, 0.3]])
      >>> model_parameter_randomisation(the_input, model, x, target=0, key=jax.random.key(0))
      {'out': Array([1.], dtype=float32), 'hidden': Array([1.], dtype=float32)}

    References:
      Adebayo, Gilmer, Muelly, Goodfellow, Hardt, Kim. Sanity Checks for Saliency
      Maps. NeurIPS 2018, arXiv:1810.03292; Hedstroem et al. Quantus: An Explainable
      AI Toolkit for Responsible Evaluation of Neural Network Explanations. JMLR 2023,
      arXiv:2202.06861.
    """
    comparison = {"similarity": similarity, "absolute": absolute, "normalise": normalise}
    return _parameter_randomisation(
        _common.bind(method, method_options), model, x, target, key, layers, layer_order, comparison
    )


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
    """Cascading model-parameter randomisation, signed by default: `model_parameter_randomisation`
    with `layer_order="top_down"`, `similarity="spearman"`, `normalise=False` and
    `absolute=False` (the name and defaults of earlier releases).

        s_l = spearman(phi(x; theta), phi(x; theta with layers top..l redrawn)).

    Args:
      method: any jaxplain method or its name.
      model: a `jaxplain.Model` whose params are a pytree.
      x: a batch of inputs, `(batch, ...)`.
      target: an int, `(batch,)` ints or "predicted" (resolved with the original model).
      key: a `jax.random.key`; same key, same randomised parameters.
      layers: the layers to randomise, in cascade order (first randomised first);
        by default every layer, from the last stored to the first.
      absolute: compare |phi| instead of phi (Adebayo et al. report both).
      **method_options: passed to `method` (e.g. steps=16).

    Returns:
      A dict from layer name to `(batch,)` similarities, in cascade order (lower is better).

    References:
      Adebayo, Gilmer, Muelly, Goodfellow, Hardt, Kim. Sanity Checks for Saliency
      Maps. NeurIPS 2018, arXiv:1810.03292.
    """
    if not isinstance(absolute, bool):
        raise TypeError(f"absolute must be a bool, got {type(absolute).__name__}")
    return model_parameter_randomisation(
        method,
        model,
        x,
        target=target,
        key=key,
        layers=layers,
        layer_order="top_down",
        similarity="spearman",
        absolute=absolute,
        normalise=False,
        **method_options,
    )


def smooth_mprt(
    method: Callable,
    model: Model,
    x,
    *,
    target,
    key,
    layers: Sequence[str] | None = None,
    layer_order: str = "bottom_up",
    samples: int = 50,
    noise_scale: float = 0.1,
    noise_chunk_size=None,
    similarity: str = "spearman",
    absolute: bool = True,
    normalise: bool = True,
    **method_options,
) -> dict[str, jax.Array]:
    """Smooth MPRT (sMPRT): MPRT on explanations denoised by averaging over noisy inputs.

    Hedstroem et al. 2024 repair the MPRT's sensitivity to the explanation's noise by
    comparing smoothed explanations,

        phi_bar(x; theta) = 1/N sum_{i=1..N} phi(x + eps_i; theta),
        eps_i ~ N(0, (noise_scale * (max(x) - min(x)))^2),

    s_l = sim(phi_bar(x; theta), phi_bar(x; theta with layers up to l redrawn)), with
    everything else as `model_parameter_randomisation` (by default bottom-up, as the
    paper recommends). The smoothing is `jaxplain.smoothgrad` around `method`, run inside
    the compiled explainer, `noise_chunk_size` noisy copies at a time (only the running
    mean is kept, so memory does not grow with `samples`); the noise comes from `key`
    and is the same draws for the original and every randomised model.

    Args:
      method: any jaxplain method or its name, e.g. `jaxplain.saliency`.
      model: a `jaxplain.Model` whose params are a pytree.
      x: a batch of inputs, `(batch, ...)`.
      target: an int, `(batch,)` ints or "predicted" (resolved with the original model).
      key: a `jax.random.key`; same key, same parameters and noise.
      layers: the layers to randomise, in the order they are randomised; by default
        every layer, in `layer_order`'s order.
      layer_order: "bottom_up" (Quantus' default for sMPRT), "top_down" or "independent".
      samples: N, noisy copies per explanation (Quantus: 50).
      noise_scale: the noise's standard deviation as a fraction of each example's value
        range (Quantus' `noise_magnitude`, 0.1).
      noise_chunk_size: noisy copies explained at once (see `jaxplain.smoothgrad`); the
        answer does not depend on it.
      similarity: "spearman" (Quantus' default), "pearson" or "ssim".
      absolute: compare |phi_bar| (Quantus' default).
      normalise: divide each explanation by its largest |value| first (matters for
        "ssim" only).
      **method_options: passed to `method` (e.g. steps=16).

    Returns:
      A dict from layer name to `(batch,)` similarities, in the order randomised (lower
      is better).

    References:
      Hedstroem, Weber, Lapuschkin, Hoehne. Sanity Checks Revisited: An Exploration to
      Repair the Model Parameter Randomisation Test. XAI in Action workshop, NeurIPS
      2023, arXiv:2401.06465 (extended as A Fresh Look at Sanity Checks for Saliency
      Maps, xAI 2024, arXiv:2405.02383); Adebayo et al.
      Sanity Checks for Saliency Maps. NeurIPS 2018, arXiv:1810.03292.
    """
    options = {
        **method_options,
        "method": method,
        "samples": _checks.positive_int("samples", samples),
        "noise_scale": _checks.number("noise_scale", noise_scale),
        "noise_chunk_size": noise_chunk_size,
    }
    comparison = {"similarity": similarity, "absolute": absolute, "normalise": normalise}
    return _parameter_randomisation(
        _common.bind(smoothgrad, options), model, x, target, key, layers, layer_order, comparison
    )


# --- efficient MPRT -----------------------------------------------------------------------


def _discrete_entropy(values, bins: int):
    """The Shannon entropy (nats) of each row's histogram over `bins` equal bins from its
    minimum to its maximum (numpy.histogram's bins; a constant row has entropy 0)."""
    low, high = values.min(axis=1, keepdims=True), values.max(axis=1, keepdims=True)
    width = jnp.where(high > low, high - low, 1)
    index = jnp.clip(((values - low) * (bins / width)).astype(jnp.int32), 0, bins - 1)
    rows = jnp.arange(values.shape[0])[:, None]
    shares = jnp.zeros((values.shape[0], bins), values.dtype).at[rows, index].add(1) / values.shape[1]
    return -jnp.where(shares > 0, shares * jnp.log(jnp.where(shares > 0, shares, 1)), 0).sum(axis=1)


def _entropy(values):
    """The Shannon entropy (nats) of each row's |values| as a distribution, p = |a| / sum |a|."""
    shares = jnp.abs(values) / jnp.abs(values).sum(axis=1, keepdims=True)
    return -jnp.where(shares > 0, shares * jnp.log(jnp.where(shares > 0, shares, 1)), 0).sum(axis=1)


@engine.program(static_argnames=("complexity", "bins", "absolute"))
def _rise(original, randomised, *, complexity, bins, absolute):
    a, b = _common.flat_pair(original, randomised)
    a, b = _prepared(a, absolute, False), _prepared(b, absolute, False)
    measure = (lambda v: _discrete_entropy(v, bins)) if complexity == "discrete_entropy" else _entropy
    before, after = measure(a), measure(b)
    return (after - before) / before


def efficient_mprt(
    method: Callable,
    model: Model,
    x,
    *,
    target,
    key,
    layers: Sequence[str] | None = None,
    complexity: str = "discrete_entropy",
    bins: int = 100,
    absolute: bool = False,
    **method_options,
) -> jax.Array:
    """Efficient MPRT (eMPRT): the relative rise in the explanation's complexity when the
    model is fully randomised.

        eMPRT = (H(phi(x; theta_random)) - H(phi(x; theta))) / H(phi(x; theta)),

    where theta_random has every layer (or every layer of `layers`) redrawn, as at the
    end of `model_parameter_randomisation`'s cascade (with the same draws from `key`),
    and H is the explanation's complexity (Hedstroem et al. 2024):

    * "discrete_entropy" (Quantus' default): the Shannon entropy (nats) of the histogram
      of the example's values over `bins` equal-width bins from its minimum to its
      maximum (numpy.histogram's bins);
    * "entropy": the Shannon entropy of p = |phi| / sum |phi| (Quantus' `entropy`, which
      requires phi >= 0).

    An explanation of a trained model is structured; one of a random model should be
    noise, so a faithful explainer's complexity rises. Only two explanations per
    example are computed (no per-layer pass), with the explainer's program compiled once.

    Args:
      method: any jaxplain method or its name, e.g. `jaxplain.saliency`; a noise method
        takes the method it wraps as `wrap=`.
      model: a `jaxplain.Model` whose params are a pytree.
      x: a batch of inputs, `(batch, ...)`.
      target: an int, `(batch,)` ints or "predicted" (resolved with the original model).
      key: a `jax.random.key`; same key, same randomised parameters. A randomized
        method gets one key derived from it, the same for both explanations.
      layers: the layers to randomise (see `model_parameter_randomisation`); by default
        every layer.
      complexity: "discrete_entropy" or "entropy".
      bins: the histogram's bins for "discrete_entropy" (Quantus: 100).
      absolute: measure |phi| (Quantus' default: False).
      **method_options: passed to `method` (e.g. steps=16).

    Returns:
      `(batch,)` relative rises (higher is better); inf or NaN where the original
      explanation's complexity is 0 (e.g. a constant explanation).

    References:
      Hedstroem, Weber, Lapuschkin, Hoehne. Sanity Checks Revisited: An Exploration to
      Repair the Model Parameter Randomisation Test. XAI in Action workshop, NeurIPS
      2023, arXiv:2401.06465 (extended as A Fresh Look at Sanity Checks for Saliency
      Maps, xAI 2024, arXiv:2405.02383).
    """
    method, arrays, static, takes_key = _common.bind(method, method_options)
    x, targets = _common.prepare(model, x, target)
    key = _checks.key(key)
    complexity = _checks.choice("complexity", complexity, COMPLEXITIES)
    bins = _checks.positive_int("bins", bins)
    absolute = _checks.flag("absolute", absolute)
    leaves, treedef, names, order = _plan(model.params, layers, "bottom_up")
    redraw_key, method_key = jax.random.split(key)
    chosen = _resolved(model, x, targets)
    run = lambda m: _explained(
        m, x, chosen, method_key, arrays, method=method, static=static, takes_key=takes_key
    )
    *_, (_, randomised) = _randomised(model, redraw_key, leaves, treedef, names, order, cascading=True)
    return _rise(run(model), run(randomised), complexity=complexity, bins=bins, absolute=absolute)


# --- random logit -----------------------------------------------------------------------


@engine.program(static_argnames=("method", "static", "takes_key", "similarity", "absolute", "normalise"))
def _random_logit(
    model,
    x,
    targets: Targets,
    key,
    given,
    arrays,
    *,
    method,
    static,
    takes_key,
    similarity,
    absolute,
    normalise,
):
    outputs = engine.forward(model, x)
    chosen = targets.resolve(outputs)
    draw_key, method_key = (None, None) if key is None else jax.random.split(key)
    if given is None:  # example b's other class from fold_in(key, b), uniform over the C - 1 others
        classes = outputs.shape[-1]
        draw = lambda b: jax.random.randint(jax.random.fold_in(draw_key, b), (), 0, classes - 1)
        drawn = jax.vmap(draw)(jnp.arange(x.shape[0], dtype=jnp.int32))
        given = drawn + (drawn >= chosen[:, 0])
    explained = _common.explain(method, model, x, chosen, method_key, arrays, static, takes_key)
    other = _common.explain(method, model, x, given[:, None], method_key, arrays, static, takes_key)
    return _compared(explained, other, similarity=similarity, absolute=absolute, normalise=normalise)


def _other_target(value, model, x, targets, classes: int):
    """A user's `other_target`: (batch,) class indices, each different from the target."""
    given = np.asarray(value)
    if given.dtype == bool or not np.issubdtype(given.dtype, np.integer):
        raise TypeError(f"other_target must hold int class indices, got dtype {given.dtype}")
    if given.shape != (x.shape[0],):
        raise ValueError(f"other_target must have shape (batch,) = ({x.shape[0]},), got {given.shape}")
    if given.min() < 0 or given.max() >= classes:
        raise ValueError(f"other_target must hold classes in 0..{classes - 1}, got {given.tolist()}")
    if bool((given == np.asarray(_resolved(model, x, targets)[:, 0])).any()):
        raise ValueError("other_target must differ from the class explained in every example")
    return jnp.asarray(given, jnp.int32)


def random_logit(
    method: Callable,
    model: Model,
    x,
    *,
    target,
    key,
    similarity: str = "ssim",
    absolute: bool = False,
    normalise: bool = True,
    other_target=None,
    **method_options,
) -> jax.Array:
    """Random logit: how similar the explanation of the target is to that of another class.

        RL(phi, x) = sim(phi(x, t), phi(x, t')),   t' uniform over the classes != t,

    after Sixt et al. 2020, who show that many modified back-propagation explanations
    hardly change with the class explained; a class-sensitive explanation has a low
    similarity. Both explanations are computed in one compiled program. Example b's
    other class t' is drawn from `fold_in(key, b)` (it depends on the example's position
    in the batch), or given as `other_target`. Before comparing, each explanation is
    divided by its largest |value| (`normalise`, Quantus' `normalise_by_max`, but per
    example) and made absolute (`absolute`).

    Args:
      method: any jaxplain method or its name, e.g. `jaxplain.saliency`; a noise method
        takes the method it wraps as `wrap=`.
      model: a `jaxplain.Model` with at least two classes.
      x: a batch of inputs, `(batch, ...)`.
      target: the class explained: an int, `(batch,)` ints or "predicted".
      key: a `jax.random.key`: same key, same other classes. None with `other_target`,
        unless the method is randomized (it gets one key derived from `key`, the same
        for both explanations).
      similarity: "ssim" (Quantus' default: scikit-image's structural similarity of the
        flattened explanations, window 7), "spearman" or "pearson".
      absolute: compare |phi| (Quantus' default: False).
      normalise: divide each explanation by its largest |value| first (Quantus: True).
      other_target: `(batch,)` ints, the other class of each example, instead of random
        ones (each must differ from the example's target).
      **method_options: passed to `method` (e.g. steps=16).

    Returns:
      `(batch,)` similarities (lower is better).

    Example:
      >>> import jax, jax.numpy as jnp
      >>> import jaxplain
      >>> from jaxplain.metrics.randomisation import random_logit
      >>> w = jnp.array([[1.0, 3.0], [2.0, 2.0], [3.0, 1.0]])  # class 1 weighs the features in reverse
      >>> model = jaxplain.Model(lambda w, x: x @ w, w)
      >>> x = jnp.ones((1, 3))
      >>> random_logit(jaxplain.saliency, model, x, target=0, key=jax.random.key(0), similarity="spearman")
      Array([-1.], dtype=float32)

    References:
      Sixt, Granz, Landgraf. When Explanations Lie: Why Many Modified BP Attributions
      Fail. ICML 2020, arXiv:1912.09818.
    """
    method, arrays, static, takes_key = _common.bind(method, method_options)
    x, targets = _common.prepare(model, x, target)
    classes = engine.output_struct(model, x).shape[-1]
    if classes < 2:
        raise ValueError(f"random_logit needs a model with at least two classes, got {classes}")
    given = None if other_target is None else _other_target(other_target, model, x, targets, classes)
    key = _common.key_or_perturbations(key, given, needed=takes_key)
    comparison = _comparison(similarity, absolute, normalise, x)
    return _random_logit(
        model,
        x,
        targets,
        key,
        given,
        arrays,
        method=method,
        static=static,
        takes_key=takes_key,
        **comparison,
    )
