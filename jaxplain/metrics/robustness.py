"""Robustness: how much an explanation changes when its input changes a little.

Every metric here re-runs the explainer on perturbed copies x' of the batch inside one
compiled program (`_robustness`), `noise_chunk_size` copies at a time, each copy
explaining the class resolved at the clean input. A copy is scored by a ratio of
distances (the explanation's change over the input's, the output's or a layer's) and
only running statistics of the scores are kept (their maximum, sum and count), so memory
does not grow with `samples`. Random copy i is drawn from `fold_in(key, i)`, so the
chunk does not change the answer. A randomized method (one with a `key` argument) gets
the same key, derived from `key`, for the clean and every perturbed run, and is mapped
over the copies, so the scores measure the input's change alone.

`consistency` judges a given batch of explanations against the model's predictions; it
needs no re-run.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxplain import _checks, _random, engine
from jaxplain.methods.layers import neuron_model
from jaxplain.metrics import _common
from jaxplain.model import Model, Targets

DISCRETISATIONS = ("top_k", "sign")


class _Pair(NamedTuple):
    """The clean batch and one chunk of its copies, flattened per example (acc dtype).

    `inputs` (B, F), `copies` (B, n, F); `values` (B, F) and `copy_values` (B, n, F) the
    explanations; `outputs` (B, C) / `copy_outputs` (B, n, C) the model's outputs and
    `layer` (B, U) / `copy_layer` (B, n, U) a layer's output, where the metric needs them.
    """

    inputs: jax.Array
    copies: jax.Array
    values: jax.Array
    copy_values: jax.Array
    outputs: jax.Array | None
    copy_outputs: jax.Array | None
    layer: jax.Array | None
    copy_layer: jax.Array | None


# --- the scores of one chunk of copies: (ratio (B, n), counted (B, n)) -------------------


def _distance(a, b, ord=2):
    return jnp.linalg.norm(b - a[:, None], ord=ord, axis=-1)


def _change(pair: _Pair, eps):
    """||phi(x') - phi(x)||_2, every copy counted."""
    del eps
    change = _distance(pair.values, pair.copy_values)
    return change, jnp.ones(change.shape, bool)


def _sensitivity(pair: _Pair, eps):
    """||phi(x') - phi(x)||_2 / ||phi(x)||_2 (an all-zero phi(x) divides by 1, as Captum)."""
    norm = jnp.linalg.norm(pair.values, axis=-1)
    change, counted = _change(pair, eps)
    return change / jnp.where(norm == 0, 1, norm)[:, None], counted


def _lipschitz(pair: _Pair, eps):
    """||phi(x') - phi(x)||_2 / ||x' - x||_2 over copies with x' != x."""
    del eps
    moved = _distance(pair.inputs, pair.copies)
    return _distance(pair.values, pair.copy_values) / jnp.where(moved > 0, moved, 1), moved > 0


def _continuity(pair: _Pair, eps):
    """||phi(x') - phi(x)||_1 / ||x' - x||_2 over copies with x' != x."""
    del eps
    moved = _distance(pair.inputs, pair.copies)
    return _distance(pair.values, pair.copy_values, ord=1) / jnp.where(moved > 0, moved, 1), moved > 0


def _relative(a, b, eps):
    """(b - a) / a elementwise, a = 0 read as eps (as Quantus): (B, n, F)."""
    return (b - a[:, None]) / jnp.where(a == 0, eps, a)[:, None]


def _stability(pair: _Pair, denominator, eps):
    """||(phi(x') - phi(x)) / phi(x)||_2 / max(denominator, eps) over copies whose predicted
    class is the clean input's (Agarwal et al. 2022)."""
    change = jnp.linalg.norm(_relative(pair.values, pair.copy_values, eps), axis=-1)
    same = pair.copy_outputs.argmax(axis=-1) == pair.outputs.argmax(axis=-1)[:, None]
    return change / jnp.maximum(denominator, eps), same


def _input_stability(pair: _Pair, eps):
    return _stability(pair, jnp.linalg.norm(_relative(pair.inputs, pair.copies, eps), axis=-1), eps)


def _output_stability(pair: _Pair, eps):
    return _stability(pair, _distance(pair.outputs, pair.copy_outputs), eps)


def _representation_stability(pair: _Pair, eps):
    return _stability(pair, jnp.linalg.norm(_relative(pair.layer, pair.copy_layer, eps), axis=-1), eps)


# --- the copies -----------------------------------------------------------------------


def _translated(x, shift, axis: int):
    """x shifted by `shift` positions along `axis`, the vacated positions at each example's
    minimum (Quantus' "black")."""
    size = x.shape[axis]
    source = jnp.arange(size) - shift
    inside = (source >= 0) & (source < size)
    moved = jnp.take(x, jnp.clip(source, 0, size - 1), axis=axis)
    shape = [1] * x.ndim
    shape[axis] = size
    fill = x.reshape(x.shape[0], -1).min(axis=1).reshape((-1,) + (1,) * (x.ndim - 1))
    return jnp.where(inside.reshape(shape), moved, fill)


def _draw(noise: str, key, indices, x, scale):
    """Random shifts of x, one (B, ...) per index: uniform in [-scale, scale] or N(0, scale^2)."""
    # flat draws, reshaped: they compile several times faster than shaped ones (`_random`)
    keys, size = _random.point_keys(key, indices), int(np.prod(x.shape))
    if noise == "uniform":
        draws = jax.vmap(lambda k: jax.random.uniform(k, (size,), x.dtype, -scale, scale))(keys)
    else:
        draws = jax.vmap(lambda k: scale * jax.random.normal(k, (size,), x.dtype))(keys)
    return draws.reshape(indices.shape + x.shape)


# --- the program ------------------------------------------------------------------------


@engine.program(
    static_argnames=(
        "method",
        "static",
        "takes_key",
        "score",
        "noise",
        "samples",
        "noise_chunk_size",
        "forward",
        "axis",
    )
)
def _robustness(
    model,
    x,
    targets: Targets,
    key,
    scale,
    eps,
    given,
    arrays,
    representation,
    *,
    method,
    static,
    takes_key,
    score,
    noise,
    samples,
    noise_chunk_size,
    forward,
    axis,
):
    """(B,) the maximum, mean and count of `score(pair, eps)` over the copies it counts.

    `noise`: "uniform" / "normal" draws (scale: their size), "given" perturbations added
    to x, or "translate": x shifted by `given[i]` positions along `axis`. `forward`: the
    model's outputs at x and the copies are passed to `score`; `representation`: a model
    whose outputs are a layer's (or None).
    """
    batch = x.shape[0]
    acc = engine.accumulation_dtype(x)
    outputs = engine.forward(model, x)
    chosen = targets.resolve(outputs)  # every copy explains the clean input's class
    noise_key, method_key = (None, None) if key is None else jax.random.split(key)

    def flat(value, rows=batch):
        return value.reshape(rows, -1).astype(acc)

    def explain(rows, targets, arrays, method_key):
        return _common.explain(method, model, rows, targets, method_key, arrays, static, takes_key)

    values = flat(explain(x, chosen, arrays, method_key))
    layer = None if representation is None else flat(engine.forward(representation, x))

    def copies_of(start, size, x):  # (size, B, ...)
        indices = start + jnp.arange(size, dtype=jnp.int32)
        if noise == "translate":
            return jax.vmap(lambda shift: _translated(x, shift, axis))(given[indices])
        if noise == "given":
            return x[None] + jax.lax.dynamic_slice_in_dim(given, start, size)
        return x[None] + _draw(noise, noise_key, indices, x, scale)

    def chunk(state, start, size, tied):  # tied: x, after the chunk before
        copies = copies_of(start, size, tied)
        copy_values = engine.explain_copies(
            explain, copies, chosen, arrays, method_key if takes_key else None
        )
        rows = copies.swapaxes(0, 1).reshape((batch * size,) + x.shape[1:])  # example-major

        def per_copy(value):
            return value.reshape(batch, size, -1).astype(acc)

        pair = _Pair(
            flat(x),
            per_copy(rows),
            values,
            per_copy(copy_values),
            outputs.astype(acc) if forward else None,
            per_copy(engine.forward(model, rows)) if forward else None,
            layer,
            None if representation is None else per_copy(engine.forward(representation, rows)),
        )
        ratio, counted = score(pair, eps)
        largest, total, count = state
        return (
            jnp.maximum(largest, jnp.where(counted, ratio, 0).max(axis=1)),
            total + jnp.where(counted, ratio, 0).sum(axis=1),
            count + counted.sum(axis=1),
        ), None

    zeros = jnp.zeros(batch, acc)
    state, _ = engine.fold_chunks(
        chunk,
        samples,
        noise_chunk_size,
        x,
        (zeros, zeros, jnp.zeros(batch, jnp.int32)),
        dependency=lambda state: state[2].reshape((batch,) + (1,) * (x.ndim - 1)),
        # the method's memory is its own: a loop keeps one chunk of copies alive
        unroll=False,
    )
    largest, total, count = state
    none = count == 0  # no copy counted: the quantity is undefined
    return (
        jnp.where(none, jnp.nan, largest),
        jnp.where(none, jnp.nan, total / jnp.where(none, 1, count)),
        count,
    )


class _Run(NamedTuple):
    """A metric's checked arguments."""

    method: Callable
    arrays: dict
    static: tuple
    takes_key: bool
    x: jax.Array
    targets: Targets
    key: object
    given: jax.Array | None
    samples: int


def _prepare(method, model, x, target, key, perturbations, samples, method_options) -> _Run:
    """Checks for a metric on random (or explicit) perturbations."""
    method, arrays, static, takes_key = _common.bind(method, method_options)
    x, targets = _common.prepare(model, x, target)
    given = _common.perturbations(perturbations, x)
    key = _common.key_or_perturbations(key, given, needed=takes_key)
    samples = _checks.positive_int("samples", samples) if given is None else given.shape[0]
    return _Run(method, arrays, static, takes_key, x, targets, key, given, samples)


def _run(
    run: _Run,
    model,
    *,
    score,
    noise,
    noise_chunk_size,
    scale=0.0,
    eps=0.0,
    forward=False,
    representation=None,
    axis=0,
):
    noise = "given" if run.given is not None and noise != "translate" else noise
    chunk = _checks.noise_chunk_size(noise_chunk_size, model, run.x, run.samples, mapped=run.takes_key)
    return _robustness(
        model,
        run.x,
        run.targets,
        run.key,
        scale,
        eps,
        run.given,
        run.arrays,
        representation,
        method=run.method,
        static=run.static,
        takes_key=run.takes_key,
        score=score,
        noise=noise,
        samples=run.samples,
        noise_chunk_size=chunk,
        forward=forward,
        axis=axis,
    )


# --- sensitivity (Yeh et al. 2019) --------------------------------------------------------


def _sensitivities(
    method, model, x, target, key, radius, samples, normalize, noise_chunk_size, perturbations, options
):
    """(largest, mean, count) of the explanation's (relative) change over uniform noise."""
    run = _prepare(method, model, x, target, key, perturbations, samples, options)
    radius = _checks.number("radius", radius)
    score = _sensitivity if _checks.flag("normalize", normalize) else _change
    return _run(run, model, score=score, noise="uniform", scale=radius, noise_chunk_size=noise_chunk_size)


def max_sensitivity(
    method: Callable,
    model: Model,
    x,
    *,
    target,
    key,
    radius: float = 0.02,
    samples: int = 10,
    normalize: bool = True,
    noise_chunk_size=None,
    perturbations=None,
    **method_options,
) -> jax.Array:
    """Max-sensitivity: the largest relative change of an explanation in a small L-inf ball.

    .. math::

        \\mathrm{SENS}_{max}(\\phi, x) = \\max_{\\|\\delta\\|_\\infty \\le r}
            \\frac{\\|\\phi(x + \\delta) - \\phi(x)\\|_2}{\\|\\phi(x)\\|_2}

    estimated as Captum's `sensitivity_max` and Quantus' `MaxSensitivity` do: the
    maximum over `samples` perturbations delta drawn uniformly from [-radius, radius]
    per feature, Frobenius norms over all features of an example (an all-zero phi(x)
    divides by 1). Yeh et al. define it without the division: `normalize=False`.
    `sensitivity_max` is this function under Captum's name. The explainer is re-run on
    every perturbed copy inside one compiled program (see the module's docstring).

    Args:
      method: any jaxplain method or its name, e.g. `jaxplain.saliency` or
        "integrated_gradients"; a noise method takes the method it wraps as `wrap=`.
      model: a `jaxplain.Model`.
      x: a batch of inputs, `(batch, ...)`.
      target: an int, `(batch,)` ints or "predicted" (resolved at x).
      key: a `jax.random.key`; same key, same perturbations. None with explicit
        `perturbations`, unless the method is randomized.
      radius: the half-width of the uniform perturbations (Captum: 0.02; Quantus: 0.2).
      samples: perturbations per example (Captum: 10; Quantus: 200).
      normalize: divide by ||phi(x)|| (Captum, Quantus) or not (the paper).
      noise_chunk_size: perturbed copies explained at once: by default as many as the
        engine's memory budget allows (`jaxplain.engine.default_chunk_size`), one at a
        time for a randomized method. The answer does not depend on it.
      perturbations: explicit perturbations delta, `(samples, *x.shape)`, instead of
        random ones (then `radius` and `samples` are not used).
      **method_options: passed to `method` (e.g. steps=16); an array option shaped
        like x is taken per example.

    Returns:
      `(batch,)` sensitivities (>= 0; lower is better, 0: the explanation does not move).

    Example:
      >>> import jax, jax.numpy as jnp, jaxplain
      >>> model = jaxplain.Model.from_callable(lambda x: x @ jnp.ones((3, 2)))
      >>> x = jnp.ones((2, 3))
      >>> max_sensitivity(jaxplain.saliency, model, x, target=0, key=jax.random.key(0)).tolist()
      [0.0, 0.0]

    References:
      Yeh, Hsieh, Suggala, Inouye, Ravikumar. On the (In)fidelity and Sensitivity of
      Explanations. NeurIPS 2019, arXiv:1901.09392.
    """
    largest, _, _ = _sensitivities(
        method,
        model,
        x,
        target,
        key,
        radius,
        samples,
        normalize,
        noise_chunk_size,
        perturbations,
        method_options,
    )
    return largest


sensitivity_max = max_sensitivity


def avg_sensitivity(
    method: Callable,
    model: Model,
    x,
    *,
    target,
    key,
    radius: float = 0.02,
    samples: int = 10,
    normalize: bool = True,
    noise_chunk_size=None,
    perturbations=None,
    **method_options,
) -> jax.Array:
    """Avg-sensitivity: the mean relative change of an explanation in a small L-inf ball.

    .. math::

        \\mathrm{SENS}_{avg}(\\phi, x) = \\mathbb{E}_{\\delta \\sim U[-r, r]^d}
            \\frac{\\|\\phi(x + \\delta) - \\phi(x)\\|_2}{\\|\\phi(x)\\|_2}

    the Monte-Carlo mean over `samples` perturbations drawn as in `max_sensitivity`
    (Yeh et al. 2019; Bhatt et al. 2020; Quantus' `AvgSensitivity`), with the same
    norms and division (an all-zero phi(x) divides by 1); `normalize=False` drops the
    division, as the papers define it.

    Args:
      method: any jaxplain method or its name, e.g. `jaxplain.saliency`.
      model: a `jaxplain.Model`.
      x: a batch of inputs, `(batch, ...)`.
      target: an int, `(batch,)` ints or "predicted" (resolved at x).
      key: a `jax.random.key`; same key, same perturbations. None with explicit
        `perturbations`, unless the method is randomized.
      radius: the half-width of the uniform perturbations (Quantus: 0.2).
      samples: perturbations per example (Quantus: 200).
      normalize: divide by ||phi(x)|| (Quantus) or not (the papers).
      noise_chunk_size: perturbed copies explained at once (see `max_sensitivity`);
        the answer does not depend on it.
      perturbations: explicit perturbations delta, `(samples, *x.shape)`.
      **method_options: passed to `method`.

    Returns:
      `(batch,)` mean sensitivities (>= 0; lower is better).

    Example:
      >>> import jax, jax.numpy as jnp, jaxplain
      >>> model = jaxplain.Model.from_callable(lambda x: x @ jnp.ones((3, 2)))
      >>> x = jnp.ones((2, 3))
      >>> avg_sensitivity(jaxplain.saliency, model, x, target=0, key=jax.random.key(0)).tolist()
      [0.0, 0.0]

    References:
      Yeh, Hsieh, Suggala, Inouye, Ravikumar. On the (In)fidelity and Sensitivity of
      Explanations. NeurIPS 2019, arXiv:1901.09392.
      Bhatt, Weller, Moura. Evaluating and Aggregating Feature-based Model
      Explanations. IJCAI 2020, arXiv:2005.00631.
    """
    _, mean, _ = _sensitivities(
        method,
        model,
        x,
        target,
        key,
        radius,
        samples,
        normalize,
        noise_chunk_size,
        perturbations,
        method_options,
    )
    return mean


# --- local Lipschitz estimate (Alvarez-Melis & Jaakkola 2018) ------------------------------


def local_lipschitz_estimate(
    method: Callable,
    model: Model,
    x,
    *,
    target,
    key,
    sigma: float = 0.1,
    samples: int = 200,
    noise_chunk_size=None,
    perturbations=None,
    **method_options,
) -> jax.Array:
    """Local Lipschitz estimate: the steepest change of the explanation near x.

    .. math::

        L(x) = \\max_{x' \\in N(x),\\ x' \\ne x}
            \\frac{\\|\\phi(x) - \\phi(x')\\|_2}{\\|x - x'\\|_2}

    (Alvarez-Melis & Jaakkola 2018), estimated as Quantus' `LocalLipschitzEstimate`
    does: the maximum over `samples` copies x' = x + delta with Gaussian noise
    delta ~ N(0, sigma^2) per feature. Copies equal to x (possible only with explicit
    perturbations) are left out; Quantus adds 1e-10 to the denominator instead.

    Args:
      method: any jaxplain method or its name, e.g. `jaxplain.saliency`.
      model: a `jaxplain.Model`.
      x: a batch of inputs, `(batch, ...)`.
      target: an int, `(batch,)` ints or "predicted" (resolved at x); every copy
        explains the class resolved at the clean input.
      key: a `jax.random.key`; same key, same perturbations. None with explicit
        `perturbations`, unless the method is randomized.
      sigma: the standard deviation of the Gaussian noise (Quantus: 0.1).
      samples: perturbations per example (Quantus: 200).
      noise_chunk_size: perturbed copies explained at once (see `max_sensitivity`);
        the answer does not depend on it.
      perturbations: explicit perturbations delta, `(samples, *x.shape)`, instead of
        random ones (then `sigma` and `samples` are not used).
      **method_options: passed to `method`.

    Returns:
      `(batch,)` Lipschitz estimates (>= 0; lower is better); NaN where no copy
      differs from x.

    Example:
      >>> import jax, jax.numpy as jnp, jaxplain
      >>> model = jaxplain.Model.from_callable(lambda x: x @ jnp.ones((3, 2)))
      >>> d = jnp.zeros((1, 1, 3)).at[..., 0].set(0.5)  # gradient x input moves 0.5 on feature 0
      >>> local_lipschitz_estimate(jaxplain.input_x_gradient, model, jnp.ones((1, 3)),
      ...                          target=0, key=None, perturbations=d).tolist()
      [1.0]

    References:
      Alvarez-Melis, Jaakkola. On the Robustness of Interpretability Methods. ICML
      Workshop on Human Interpretability 2018, arXiv:1806.08049.
      Alvarez-Melis, Jaakkola. Towards Robust Interpretability with Self-Explaining
      Neural Networks. NeurIPS 2018, arXiv:1806.07538.
    """
    run = _prepare(method, model, x, target, key, perturbations, samples, method_options)
    sigma = _checks.number("sigma", sigma)
    largest, _, _ = _run(
        run, model, score=_lipschitz, noise="normal", scale=sigma, noise_chunk_size=noise_chunk_size
    )
    return largest


# --- continuity (Montavon et al. 2018) -----------------------------------------------------


def _shifts(shifts, steps, size: int):
    """The translations: explicit ints, or Quantus' path -size + k * ((2 size + 1) // steps),
    k = 1..steps, without 0 (by default 28 steps, at most 2 size + 1); each clipped to
    [-size, size]."""
    if shifts is None:
        steps = min(28, 2 * size + 1) if steps is None else _checks.positive_int("steps", steps)
        stride = (2 * size + 1) // steps
        if stride == 0:
            raise ValueError(
                f"steps must be <= {2 * size + 1} (2 x the {size} positions of the translated axis + 1), "
                f"got {steps}"
            )
        shifts = [-size + stride * k for k in range(1, steps + 1)]
        shifts = [s for s in shifts if s != 0] or [size]
    elif (
        not isinstance(shifts, (tuple, list))
        or not shifts
        or not all(isinstance(s, (int, np.integer)) and not isinstance(s, bool) for s in shifts)
    ):
        raise TypeError(
            f"shifts must be a non-empty tuple of ints (positions to translate by), got {shifts!r}"
        )
    return np.clip(np.asarray(shifts, np.int32), -size, size)


def continuity(
    method: Callable,
    model: Model,
    x,
    *,
    target,
    key=None,
    steps: int | None = None,
    shifts: Sequence[int] | None = None,
    axis: int | None = None,
    noise_chunk_size=None,
    **method_options,
) -> jax.Array:
    """Continuity: the steepest change of the explanation along a translation of the input.

    .. math::

        C(x) = \\max_{s \\in S,\\ \\tau_s x \\ne x}
            \\frac{\\|\\phi(x) - \\phi(\\tau_s x)\\|_1}{\\|x - \\tau_s x\\|_2}

    where tau_s x is x shifted by s positions along `axis`, the vacated positions set to
    the example's minimum (a black border for images). Montavon et al. 2018 define
    explanation continuity as this quotient maximised over nearby pairs and illustrate
    it on translated digits; the shifts S follow Quantus 0.6.0's `Continuity`: `steps`
    shifts -W + k (2W + 1) // steps, k = 1..steps, over the W positions of `axis`
    (shift 0 left out). Lower is better. (Quantus before 0.6 correlated patch sums
    instead; 0.6 implements the paper's quotient, as here.)

    Args:
      method: any jaxplain method or its name, e.g. `jaxplain.saliency`.
      model: a `jaxplain.Model`.
      x: a batch of inputs, `(batch, ...)` with at least one non-batch axis.
      target: an int, `(batch,)` ints or "predicted" (resolved at x); every translated
        copy explains the class resolved at the clean input.
      key: a `jax.random.key` for a randomized method (it gets the same key for every
        copy); not used otherwise.
      steps: the number of shifts on Quantus' path, at most 2W + 1; by default 28
        (Quantus'), or 2W + 1 if fewer.
      shifts: explicit shifts, a tuple of ints (instead of `steps`), each clipped to
        [-W, W].
      axis: the axis of x to translate along: by default the width of images
        (batch, H, W, C) (axis 2), otherwise axis 1.
      noise_chunk_size: translated copies explained at once; the answer does not
        depend on it.
      **method_options: passed to `method`.

    Returns:
      `(batch,)` continuity quotients (>= 0; lower is better); NaN where no shift
      changes x (a constant input).

    Example:
      >>> import jax.numpy as jnp, jaxplain
      >>> model = jaxplain.Model.from_callable(lambda x: x @ jnp.ones((4, 2)))
      >>> x = jnp.array([[0.0, 1.0, 0.0, 0.0]])  # saliency of a linear model: constant
      >>> continuity(jaxplain.saliency, model, x, target=0, shifts=(1, 2)).tolist()
      [0.0]

    References:
      Montavon, Samek, Mueller. Methods for Interpreting and Understanding Deep Neural
      Networks. Digital Signal Processing 73, 2018, arXiv:1706.07979.
    """
    method, arrays, static, takes_key = _common.bind(method, method_options)
    x, targets = _common.prepare(model, x, target)
    if x.ndim < 2:
        raise ValueError(f"continuity translates x along a non-batch axis; x has shape {tuple(x.shape)}")
    if axis is None:
        axis = 2 if x.ndim == 4 else 1
    if isinstance(axis, bool) or not isinstance(axis, (int, np.integer)) or not 1 <= axis < x.ndim:
        raise ValueError(f"axis must be a non-batch axis of x, 1..{x.ndim - 1}, got {axis!r}")
    given = _shifts(shifts, steps, x.shape[axis])
    key = _checks.key(key) if takes_key else None
    run = _Run(method, arrays, static, takes_key, x, targets, key, jnp.asarray(given), len(given))
    largest, _, _ = _run(
        run, model, score=_continuity, noise="translate", axis=int(axis), noise_chunk_size=noise_chunk_size
    )
    return largest


# --- relative stability (Agarwal et al. 2022) ----------------------------------------------

_STABILITY = """
    over copies x' = x + delta, delta uniform in [-radius, radius] per feature, that keep
    the clean input's predicted class (Agarwal et al. 2022: the maximum is over the
    neighbours with the same prediction; Quantus 0.6.0 makes the whole example NaN
    when any copy changes it). Divisions by zero entries are divisions by `eps`, and
    the denominator is at least `eps` (the paper's eps_min). L2 norms over all
    features of an example. Lower is better.
"""


def _stabilities(
    method,
    model,
    x,
    target,
    key,
    radius,
    samples,
    eps,
    noise_chunk_size,
    perturbations,
    options,
    score,
    representation=None,
):
    run = _prepare(method, model, x, target, key, perturbations, samples, options)
    radius = _checks.number("radius", radius)
    eps = _checks.number("eps", eps, above=True)
    largest, _, _ = _run(
        run,
        model,
        score=score,
        noise="uniform",
        scale=radius,
        eps=eps,
        forward=True,
        representation=representation,
        noise_chunk_size=noise_chunk_size,
    )
    return largest


def relative_input_stability(
    method: Callable,
    model: Model,
    x,
    *,
    target,
    key,
    radius: float = 0.2,
    samples: int = 200,
    eps: float = 1e-6,
    noise_chunk_size=None,
    perturbations=None,
    **method_options,
) -> jax.Array:
    """Relative input stability (RIS): explanation change relative to the input's change.

    .. math::

        \\mathrm{RIS}(x) = \\max_{x':\\ \\hat y(x') = \\hat y(x)}
            \\frac{\\|(\\phi(x) - \\phi(x')) / \\phi(x)\\|_2}
                 {\\max(\\|(x - x') / x\\|_2, \\epsilon)}

    (divisions inside the norms elementwise),{stability}
    Args:
      method: any jaxplain method or its name, e.g. `jaxplain.saliency`.
      model: a `jaxplain.Model`.
      x: a batch of inputs, `(batch, ...)`.
      target: an int, `(batch,)` ints or "predicted" (resolved at x); every copy
        explains the class resolved at the clean input.
      key: a `jax.random.key`; same key, same perturbations. None with explicit
        `perturbations`, unless the method is randomized.
      radius: the half-width of the uniform perturbations (Quantus draws from
        [0.02, 0.2], a positive shift only).
      samples: perturbations per example (Quantus: 200).
      eps: the paper's eps_min (Quantus: 1e-6), > 0.
      noise_chunk_size: perturbed copies explained at once; the answer does not
        depend on it.
      perturbations: explicit perturbations delta, `(samples, *x.shape)`, instead of
        random ones (then `radius` and `samples` are not used).
      **method_options: passed to `method`.

    Returns:
      `(batch,)` stabilities (>= 0; lower is better); NaN where every copy changes the
      predicted class.

    Example:
      >>> import jax.numpy as jnp, jaxplain
      >>> model = jaxplain.Model.from_callable(lambda x: jnp.stack([x.sum(-1), 0 * x[:, 0]], -1))
      >>> x, d = jnp.array([[1.0, 0.5]]), jnp.array([[[0.1, 0.0]], [[0.0, 0.05]]])
      >>> relative_input_stability(jaxplain.input_x_gradient, model, x, target=0, key=None,
      ...                          perturbations=d).tolist()  # phi = x moves as x does
      [1.0]

    References:
      Agarwal, Johnson, Pawelczyk, Krishna, Saxena, Zitnik, Lakkaraju. Rethinking
      Stability for Attribution-based Explanations. arXiv:2203.06877, 2022.
    """
    return _stabilities(
        method,
        model,
        x,
        target,
        key,
        radius,
        samples,
        eps,
        noise_chunk_size,
        perturbations,
        method_options,
        _input_stability,
    )


def relative_output_stability(
    method: Callable,
    model: Model,
    x,
    *,
    target,
    key,
    radius: float = 0.2,
    samples: int = 200,
    eps: float = 1e-6,
    noise_chunk_size=None,
    perturbations=None,
    **method_options,
) -> jax.Array:
    """Relative output stability (ROS): explanation change relative to the output's change.

    .. math::

        \\mathrm{ROS}(x) = \\max_{x':\\ \\hat y(x') = \\hat y(x)}
            \\frac{\\|(\\phi(x) - \\phi(x')) / \\phi(x)\\|_2}
                 {\\max(\\|h(x) - h(x')\\|_2, \\epsilon)}

    where h is the model's output vector (every class, as the `Model`'s output
    selection gives it: logits by default, as Quantus),{stability}
    Args:
      method: any jaxplain method or its name, e.g. `jaxplain.saliency`.
      model: a `jaxplain.Model`.
      x: a batch of inputs, `(batch, ...)`.
      target: an int, `(batch,)` ints or "predicted" (resolved at x).
      key: a `jax.random.key`; same key, same perturbations. None with explicit
        `perturbations`, unless the method is randomized.
      radius: the half-width of the uniform perturbations.
      samples: perturbations per example (Quantus: 200).
      eps: the paper's eps_min (Quantus: 1e-6), > 0.
      noise_chunk_size: perturbed copies explained at once; the answer does not
        depend on it.
      perturbations: explicit perturbations delta, `(samples, *x.shape)`.
      **method_options: passed to `method`.

    Returns:
      `(batch,)` stabilities (>= 0; lower is better); NaN where every copy changes the
      predicted class.

    Example:
      >>> import jax.numpy as jnp, jaxplain
      >>> model = jaxplain.Model.from_callable(lambda x: jnp.stack([x.sum(-1), 0 * x[:, 0]], -1))
      >>> x, d = jnp.array([[1.0, 0.5]]), jnp.array([[[0.05, 0.05]]])
      >>> value = relative_output_stability(jaxplain.input_x_gradient, model, x, target=0, key=None,
      ...                                   perturbations=d)  # ||(0.05, 0.1)|| / 0.1
      >>> round(float(value[0]), 4)
      1.118

    References:
      Agarwal, Johnson, Pawelczyk, Krishna, Saxena, Zitnik, Lakkaraju. Rethinking
      Stability for Attribution-based Explanations. arXiv:2203.06877, 2022.
    """
    return _stabilities(
        method,
        model,
        x,
        target,
        key,
        radius,
        samples,
        eps,
        noise_chunk_size,
        perturbations,
        method_options,
        _output_stability,
    )


def relative_representation_stability(
    method: Callable,
    model: Model,
    x,
    *,
    target,
    key,
    layer: str,
    radius: float = 0.2,
    samples: int = 200,
    eps: float = 1e-6,
    noise_chunk_size=None,
    perturbations=None,
    **method_options,
) -> jax.Array:
    """Relative representation stability (RRS): explanation change relative to a layer's.

    .. math::

        \\mathrm{RRS}(x) = \\max_{x':\\ \\hat y(x') = \\hat y(x)}
            \\frac{\\|(\\phi(x) - \\phi(x')) / \\phi(x)\\|_2}
                 {\\max(\\|(L(x) - L(x')) / L(x)\\|_2, \\epsilon)}

    where L(x) is the output of the named `layer` (captured as the layer methods
    capture it, for Linen and NNX models; see `jaxplain.layer_names`),{stability}
    Args:
      method: any jaxplain method or its name, e.g. `jaxplain.saliency`; a method
        with its own `layer` option is bound first (`functools.partial`).
      model: a Flax Linen or NNX `jaxplain.Model`, whose layers have names.
      x: a batch of inputs, `(batch, ...)`.
      target: an int, `(batch,)` ints or "predicted" (resolved at x).
      key: a `jax.random.key`; same key, same perturbations. None with explicit
        `perturbations`, unless the method is randomized.
      layer: the representation: a layer name such as "Dense_0" (Quantus uses every
        layer's output, concatenated, by default).
      radius: the half-width of the uniform perturbations.
      samples: perturbations per example (Quantus: 200).
      eps: the paper's eps_min (Quantus: 1e-6), > 0.
      noise_chunk_size: perturbed copies explained at once; the answer does not
        depend on it.
      perturbations: explicit perturbations delta, `(samples, *x.shape)`.
      **method_options: passed to `method`.

    Returns:
      `(batch,)` stabilities (>= 0; lower is better); NaN where every copy changes the
      predicted class.

    Example:
      >>> import flax.linen as nn, jax.numpy as jnp, jaxplain
      >>> module = nn.Sequential([nn.Dense(2, use_bias=False), lambda h: jnp.stack([h.sum(-1), 0 * h[:, 0]], -1)])
      >>> model = jaxplain.Model.from_linen(module, {"params": {"layers_0": {"kernel": jnp.eye(2)}}})
      >>> x, d = jnp.array([[1.0, 0.5]]), jnp.array([[[0.1, 0.0]], [[0.0, 0.05]]])
      >>> relative_representation_stability(jaxplain.input_x_gradient, model, x, target=0, key=None,
      ...                                   layer="layers_0", perturbations=d).tolist()  # L(x) = x
      [1.0]

    References:
      Agarwal, Johnson, Pawelczyk, Krishna, Saxena, Zitnik, Lakkaraju. Rethinking
      Stability for Attribution-based Explanations. arXiv:2203.06877, 2022.
    """
    representation = neuron_model(model, x, layer)
    return _stabilities(
        method,
        model,
        x,
        target,
        key,
        radius,
        samples,
        eps,
        noise_chunk_size,
        perturbations,
        method_options,
        _representation_stability,
        representation,
    )


for _function in (relative_input_stability, relative_output_stability, relative_representation_stability):
    _function.__doc__ = _function.__doc__.replace("{stability}", _STABILITY.rstrip(" "))


# --- consistency (Dasgupta et al. 2022) ----------------------------------------------------


@engine.program(static_argnames=("discretisation", "k"))
def _consistency(model, x, values, *, discretisation, k):
    batch = x.shape[0]
    predicted = engine.forward(model, x).argmax(axis=-1)
    flat = values.reshape(batch, -1)
    if discretisation == "top_k":  # the set of the k largest |phi|: sorted indices
        codes = jnp.sort(jnp.argsort(-jnp.abs(flat), axis=-1, stable=True)[:, :k], axis=-1)
    else:
        codes = jnp.sign(flat).astype(jnp.int8)
    # (B, B): same explanation, one row at a time (memory B x code length)
    same = jax.lax.map(lambda code: (codes == code).all(axis=-1), codes)
    same = same & ~jnp.eye(batch, dtype=bool)
    agree = (same & (predicted[:, None] == predicted[None, :])).sum(axis=1)
    others = same.sum(axis=1)
    acc = engine.accumulation_dtype(values)
    return jnp.where(others > 0, agree.astype(acc) / jnp.where(others > 0, others, 1), jnp.nan)


def consistency(model: Model, x, attribution, *, discretisation: str = "top_k", k: int = 5) -> jax.Array:
    """Consistency: do examples with the same (discretised) explanation get the same class?

    For each example x_i of the batch,

    .. math::

        m(x_i) = \\frac{|\\{j \\ne i : e(x_j) = e(x_i),\\ \\hat y(x_j) = \\hat y(x_i)\\}|}
                      {|\\{j \\ne i : e(x_j) = e(x_i)\\}|}

    the empirical probability that another example with the same discretised
    explanation e is predicted the same class (Dasgupta et al. 2022's local
    consistency, estimated on the batch; Quantus' `Consistency`). It is a property of
    the batch, not of each example alone: the batch is the sample of the data
    distribution, so an example's score depends on the others (no batch-equals-loop
    identity; pass the whole evaluation set at once). The discretisation:

    * "top_k": the set of the k features with the largest |phi| (ties to the lower
      index), their order ignored;
    * "sign": the sign (-1, 0, +1) of every feature.

    Args:
      model: a `jaxplain.Model`; its predicted class is the argmax of its outputs.
      x: a batch of inputs, `(batch, ...)`.
      attribution: an `Attribution` or array shaped like x.
      discretisation: "top_k" or "sign".
      k: the number of features of "top_k", 1..features (not used by "sign").

    Returns:
      `(batch,)` consistencies in [0, 1] (higher is better); NaN where no other example
      of the batch has the same explanation.

    Example:
      >>> import jax.numpy as jnp, jaxplain
      >>> model = jaxplain.Model.from_callable(lambda x: x)  # predicts the largest feature
      >>> x = jnp.array([[1.0, 0.0], [2.0, 0.0], [0.0, 1.0]])
      >>> consistency(model, x, x, k=1).tolist()
      [1.0, 1.0, nan]

    References:
      Dasgupta, Frost, Moshkovitz. Framework for Evaluating Faithfulness of Local
      Explanations. ICML 2022, arXiv:2202.00734.
    """
    _checks.check_model(model)
    x, _ = _checks.check_x(model, x)
    values = _common.attribution_values(attribution, x)
    discretisation = _checks.choice("discretisation", discretisation, DISCRETISATIONS)
    if discretisation == "top_k":
        k = _checks.count("k", k, high=int(np.prod(x.shape[1:])), what="the number of features of an example")
    else:
        k = 0  # not used
    return _consistency(model, x, values, discretisation=discretisation, k=k)
