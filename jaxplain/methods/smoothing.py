"""Noise around any method: SmoothGrad, SmoothGrad-squared and VarGrad.

Each wraps any jaxplain method: it explains `samples` noisy copies x + e_s of the input,
e_s ~ N(0, sigma^2) with sigma = noise_scale * (max(x) - min(x)) per example, and reduces
the attributions over the copies: their mean (smoothgrad), the mean of their squares
(smoothgrad_sq) or their variance (vargrad). All copies go through one compiled program:
the engine evaluates them `noise_chunk_size` samples at a time (all at once by default),
each chunk being one batched call of the wrapped method.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from jaxplain import _checks, engine
from jaxplain.attribution import Attribution
from jaxplain.methods.registry import register
from jaxplain.model import Model, Targets

REDUCTIONS = ("mean", "mean_square", "variance")


def _is_array(value) -> bool:
    return isinstance(value, (jax.Array, np.ndarray))


@engine.program(static_argnames=("method", "reduction", "samples", "noise_chunk_size", "static_kwargs"))
def _noisy(model, x, targets: Targets, key, noise_scale, array_kwargs, *, method, reduction,
           samples, noise_chunk_size, static_kwargs):
    batch = x.shape[0]
    chosen = targets.resolve(engine.forward(model, x))  # targets of the clean input
    axes = tuple(range(1, x.ndim))
    spread = (x.max(axis=axes, keepdims=True) - x.min(axis=axes, keepdims=True)) * noise_scale
    # Keyword arrays shaped like x (a baseline per example) follow their example.
    per_example = {k: v for k, v in array_kwargs.items() if v.shape == x.shape}
    shared = {k: v for k, v in array_kwargs.items() if k not in per_example}

    def chunk(keys, _, x):
        size = keys.shape[0]
        noise = jax.vmap(lambda k: jax.random.normal(k, x.shape, x.dtype))(keys)  # (size, B, ...)
        rows = (x[:, None] + spread[:, None] * noise.swapaxes(0, 1)).reshape((batch * size,) + x.shape[1:])
        repeated = {k: jnp.repeat(v, size, axis=0) for k, v in per_example.items()}
        attribution = method(
            model, rows, target=jnp.repeat(chosen, size, axis=0),
            **dict(static_kwargs), **shared, **repeated,
        )
        values = attribution.values.reshape((batch, size) + attribution.values.shape[1:])
        acc = jnp.promote_types(values.dtype, jnp.float32)
        values = values.astype(acc)
        return (values.sum(axis=1), (values**2).sum(axis=1)), jnp.zeros((batch, size), acc)

    keys = jax.random.split(key, samples)
    shape = (batch, chosen.shape[1]) + x.shape[1:]
    acc = jnp.promote_types(x.dtype, jnp.float32)
    (total, squares), _ = engine.over_chunks(
        chunk,
        keys,
        jnp.zeros((batch, samples), acc),
        x,
        noise_chunk_size,
        (jnp.zeros(shape, acc), jnp.zeros(shape, acc)),
        dependency=lambda sums: sums[0][:, 0],
        # the wrapped method's memory is its own: a loop keeps one noise chunk alive
        unroll=False,
    )
    mean, mean_square = total / samples, squares / samples
    values = {"mean": mean, "mean_square": mean_square, "variance": mean_square - mean**2}[reduction]
    return Attribution(targets.squeeze(values), targets.squeeze(chosen))


def _smooth(method, model, x, target, key, samples, noise_scale, noise_chunk_size, reduction, kwargs):
    if not callable(method):
        raise TypeError(f"method must be a jaxplain method such as jaxplain.saliency, got {method!r}")
    if "key" in kwargs or "target" in kwargs:
        raise TypeError("pass target and key to the noise wrapper itself, not as method options")
    x, targets = _checks.prepare(model, x, target)
    key = _checks.key(key)
    samples = _checks.positive_int("samples", samples)
    noise_scale = _checks.fraction("noise_scale", noise_scale, high=float("inf"))
    noise_chunk_size = samples if noise_chunk_size is None else min(
        _checks.positive_int("noise_chunk_size", noise_chunk_size), samples
    )
    arrays = {k: v for k, v in kwargs.items() if _is_array(v)}
    static = tuple(sorted((k, v) for k, v in kwargs.items() if k not in arrays))
    try:
        hash(static)
    except TypeError as error:
        raise TypeError(f"method options must be arrays or hashable values: {error}") from error
    return _noisy(
        model, x, targets, key, noise_scale, arrays, method=method, reduction=reduction,
        samples=samples, noise_chunk_size=noise_chunk_size, static_kwargs=static,
    )


_ARGS = """
    Args:
      method: any jaxplain method, e.g. `jaxplain.saliency` or
        `jaxplain.integrated_gradients`.
      model: a `jaxplain.Model`.
      x: a batch of inputs, `(batch, ...)`.
      target: as for the wrapped method; "predicted" and `top_k` are resolved on the
        clean input, so every noisy copy explains the same class.
      key: a `jax.random.key`; same key, same noise.
      samples: noisy copies per example.
      noise_scale: the noise's standard deviation as a fraction of each example's
        value range, max(x) - min(x); 0.1-0.2 is the range the SmoothGrad paper
        recommends. 0 gives back the wrapped method.
      noise_chunk_size: noisy copies evaluated at once (all by default); lower it to
        bound memory, e.g. around integrated_gradients.
      **method_options: passed to `method` (e.g. steps=32, baseline=0.0, chunk_size).
        An array option shaped like `x` is taken per example.

    Returns:
      An `Attribution` shaped like the wrapped method's.
"""


@register("noise", randomized=True)
def smoothgrad(method: Callable, model: Model, x, *, target, key, samples: int = 50,
               noise_scale: float = 0.15, noise_chunk_size=None, **method_options) -> Attribution:
    """SmoothGrad: the mean attribution over noisy copies of the input.
    {args}
    References:
      Smilkov, Thorat, Kim, Viegas, Wattenberg. SmoothGrad: removing noise by adding
      noise. arXiv:1706.03825, 2017.
    """
    return _smooth(method, model, x, target, key, samples, noise_scale, noise_chunk_size, "mean", method_options)


@register("noise", randomized=True)
def smoothgrad_sq(method: Callable, model: Model, x, *, target, key, samples: int = 50,
                  noise_scale: float = 0.15, noise_chunk_size=None, **method_options) -> Attribution:
    """SmoothGrad-squared: the mean of the squared attributions over noisy copies.
    {args}
    References:
      Hooker, Erhan, Kindermans, Kim. A Benchmark for Interpretability Methods in Deep
      Neural Networks. arXiv:1806.10758, 2019.
    """
    return _smooth(method, model, x, target, key, samples, noise_scale, noise_chunk_size, "mean_square", method_options)


@register("noise", randomized=True)
def vargrad(method: Callable, model: Model, x, *, target, key, samples: int = 50,
            noise_scale: float = 0.15, noise_chunk_size=None, **method_options) -> Attribution:
    """VarGrad: the variance of the attributions over noisy copies of the input.
    {args}
    References:
      Adebayo, Gilmer, Goodfellow, Kim. Local Explanation Methods for Deep Neural
      Networks Lack Sensitivity to Parameter Values. arXiv:1810.03307, 2018.
    """
    return _smooth(method, model, x, target, key, samples, noise_scale, noise_chunk_size, "variance", method_options)


for _function in (smoothgrad, smoothgrad_sq, vargrad):
    _function.__doc__ = _function.__doc__.replace("{args}", _ARGS)
