"""Sensitivity-max: how much an explanation changes under small input perturbations."""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from jaxplain import _checks, _random, engine
from jaxplain.metrics import _common
from jaxplain.model import Model, Targets


@engine.program(static_argnames=("method", "static", "takes_key", "samples", "noise_chunk_size"))
def _sensitivity_max(
    model,
    x,
    targets: Targets,
    key,
    radius,
    given,
    arrays,
    *,
    method,
    static,
    takes_key,
    samples,
    noise_chunk_size,
):
    batch = x.shape[0]
    chosen = targets.resolve(engine.forward(model, x))  # every copy explains the clean input's class
    noise_key, method_key = (None, None) if key is None else jax.random.split(key)
    acc = engine.accumulation_dtype(x)
    clean = _common.explain(method, model, x, chosen, method_key, arrays, static, takes_key)
    clean = clean.reshape(batch, -1).astype(acc)
    norm = jnp.linalg.norm(clean, axis=-1)
    norm = jnp.where(norm == 0, 1, norm)  # as Captum: an all-zero explanation divides by 1

    def shifts(start, size):  # the chunk's perturbations, (size, B, ...): drawn from fold_in(key, i)
        if given is not None:
            return jax.lax.dynamic_slice_in_dim(given, start, size)
        keys = _random.point_keys(noise_key, start + jnp.arange(size, dtype=jnp.int32))
        return jax.vmap(lambda k: jax.random.uniform(k, x.shape, x.dtype, -radius, radius))(keys)

    def explain(rows, targets, arrays, method_key):
        return _common.explain(method, model, rows, targets, method_key, arrays, static, takes_key)

    def chunk(largest, start, size, x):
        # a randomized method: the clean run's key for every copy, the same draws
        values = engine.explain_copies(
            explain, x[None] + shifts(start, size), chosen, arrays, method_key if takes_key else None
        )
        change = values.reshape(batch, size, -1).astype(acc) - clean[:, None]
        ratios = jnp.linalg.norm(change, axis=-1) / norm[:, None]  # (B, size)
        return jnp.maximum(largest, ratios.max(axis=1)), None

    largest, _ = engine.fold_chunks(
        chunk,
        samples,
        noise_chunk_size,
        x,
        jnp.zeros(batch, acc),
        dependency=lambda largest: largest.reshape((batch,) + (1,) * (x.ndim - 1)),
        # the method's memory is its own: a loop keeps one chunk of copies alive
        unroll=False,
    )
    return largest


def sensitivity_max(
    method: Callable,
    model: Model,
    x,
    *,
    target,
    key,
    radius: float = 0.02,
    samples: int = 10,
    noise_chunk_size=None,
    perturbations=None,
    **method_options,
) -> jax.Array:
    """Sensitivity-max: the largest relative change of an explanation in a small L-inf ball.

        SENS_MAX(phi, x) = max_{||d||_inf <= radius} ||phi(x + d) - phi(x)|| / ||phi(x)||,

    estimated as in Yeh et al. 2019 and Captum's `sensitivity_max`: the maximum over
    `samples` perturbations d drawn uniformly from [-radius, radius] per feature,
    Frobenius norms over all features of an example (an all-zero phi(x) divides by 1).
    The explainer is re-run on all perturbed copies inside one compiled program,
    `noise_chunk_size` copies at a time, every copy explaining the class resolved at
    the clean input; only the running maximum is kept, so memory does not grow with
    `samples`. Perturbation i is drawn from `fold_in(key, i)`, so the chunk does not
    change the answer. A randomized method (one with a `key` argument) gets the same
    key, derived from `key`, for the clean and the perturbed runs, and is mapped over
    the copies (`jax.vmap`), so every copy makes the clean run's draws and the ratio
    measures the input's change alone.

    Args:
      method: any jaxplain method or its name, e.g. `jaxplain.saliency` or
        "integrated_gradients"; a noise method takes the method it wraps as `wrap=`.
      model: a `jaxplain.Model`.
      x: a batch of inputs, `(batch, ...)`.
      target: an int, `(batch,)` ints or "predicted" (resolved at x).
      key: a `jax.random.key`; same key, same perturbations. None with explicit
        `perturbations`, unless the method is randomized.
      radius: the half-width of the uniform perturbations (Captum: 0.02).
      samples: perturbations per example (Captum: 10).
      noise_chunk_size: perturbed copies explained at once: by default as many as the
        engine's memory budget allows (`jaxplain.engine.default_chunk_size`), one at a
        time for a randomized method. The answer does not depend on it.
      perturbations: explicit perturbations d, `(samples, *x.shape)`, instead of random
        ones (then `radius` and `samples` are not used).
      **method_options: passed to `method` (e.g. steps=16); an array option shaped
        like x is taken per example.

    Returns:
      `(batch,)` sensitivities (>= 0; 0 means the explanation does not move).

    References:
      Yeh, Hsieh, Suggala, Inouye, Ravikumar. On the (In)fidelity and Sensitivity of
      Explanations. NeurIPS 2019, arXiv:1901.09392.
    """
    method, arrays, static, takes_key = _common.bind(method, method_options)
    x, targets = _common.prepare(model, x, target)
    given = _common.perturbations(perturbations, x)
    key = _common.key_or_perturbations(key, given, needed=takes_key)
    radius = _checks.number("radius", radius)
    samples = _checks.positive_int("samples", samples) if given is None else given.shape[0]
    noise_chunk_size = _checks.noise_chunk_size(noise_chunk_size, model, x, samples, mapped=takes_key)
    return _sensitivity_max(
        model,
        x,
        targets,
        key,
        radius,
        given,
        arrays,
        method=method,
        static=static,
        takes_key=takes_key,
        samples=samples,
        noise_chunk_size=noise_chunk_size,
    )
