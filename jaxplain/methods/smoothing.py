"""Noise around any method: SmoothGrad, SmoothGrad-squared and VarGrad.

Each runs a jaxplain method, its `method` option (saliency by default), on `samples`
noisy copies x + e_s of the input, e_s ~ N(0, sigma^2) with sigma = noise_scale *
(max(x) - min(x)) per example, and reduces the attributions over the copies: their mean
(smoothgrad), the mean of their squares (smoothgrad_sq) or their variance (vargrad). They
are ordinary registered methods: any caller runs them as it runs any other (the method
they wrap is one of their options). All copies go through one compiled program:
the engine evaluates them `noise_chunk_size` copies at a time (by default as many as
the engine's memory budget allows, see `jaxplain.engine.default_chunk_size`), and only
the running mean and spread are kept (`jaxplain.engine.merge_moments`), so memory does
not grow with `samples`. Copy s draws its noise
from `fold_in(key, s)`, so the answer does not depend on the chunk size.

A deterministic method explains a chunk's copies in one batched call. A randomized
method (one that takes a `key`: kernel_shap, expected_gradients, ...) gets its own key
for every copy, split from that copy's key, and is mapped over the chunk's copies with
`jax.vmap`, so its draws for a copy do not depend on the chunk either.
"""

from __future__ import annotations

import functools
import inspect
import warnings
from collections.abc import Callable

import jax
import jax.numpy as jnp

from jaxplain import _checks, _random, engine
from jaxplain.attribution import Attribution
from jaxplain.methods import registry
from jaxplain.methods.registry import register
from jaxplain.model import Model, Targets

REDUCTIONS = ("mean", "mean_square", "variance")


def _copy_keys(key, indices):
    """(noise key, method key) of each copy: both from `fold_in(key, copy index)`."""
    keys = jax.vmap(jax.random.split)(_random.point_keys(key, indices))
    return keys[:, 0], keys[:, 1]


@engine.program(
    static_argnames=("method", "reduction", "samples", "noise_chunk_size", "static_kwargs", "randomized")
)
def _noisy(
    model,
    x,
    targets: Targets,
    key,
    noise_scale,
    array_kwargs,
    *,
    method,
    reduction,
    samples,
    noise_chunk_size,
    static_kwargs,
    randomized,
):
    batch = x.shape[0]
    chosen = targets.resolve(engine.forward(model, x))  # targets of the clean input
    axes = tuple(range(1, x.ndim))
    spread = (x.max(axis=axes, keepdims=True) - x.min(axis=axes, keepdims=True)) * noise_scale
    acc = engine.accumulation_dtype(x)

    def explain(rows, targets, arrays, method_key):
        extra = {} if method_key is None else {"key": method_key}
        return method(model, rows, target=targets, **dict(static_kwargs), **arrays, **extra).values

    def chunk(moments, start, size, x):
        noise_keys, method_keys = _copy_keys(key, start + jnp.arange(size, dtype=jnp.int32))
        noise = jax.vmap(lambda k: jax.random.normal(k, x.shape, x.dtype))(noise_keys)  # (size, B, ...)
        values = engine.explain_copies(
            explain, x[None] + spread[None] * noise, chosen, array_kwargs, method_keys if randomized else None
        ).astype(acc)
        return engine.merge_moments(moments, values), None

    shape = (batch, chosen.shape[1]) + x.shape[1:]
    zeros = jnp.zeros(shape, acc)
    (_, mean, squares), _ = engine.fold_chunks(
        chunk,
        samples,
        noise_chunk_size,
        x,
        (jnp.zeros((), acc), zeros, zeros),
        dependency=lambda moments: moments[1][:, 0],
        # the wrapped method's memory is its own: a loop keeps one noise chunk alive
        unroll=False,
    )
    variance = squares / samples
    values = {"mean": mean, "mean_square": variance + mean**2, "variance": variance}[reduction]
    return engine.attribution(targets, values, chosen)


def _smooth(
    reduction,
    model,
    x,
    target,
    key,
    method,
    samples,
    noise_scale,
    noise_chunk_size,
    method_options,
    method_kwargs,
):
    if method_options is None:
        method_options = {}
    if not isinstance(method_options, dict):
        raise TypeError(
            f"method_options must be a dict of the wrapped method's options, got "
            f"{type(method_options).__name__}"
        )
    both = sorted(set(method_options) & set(method_kwargs))
    if both:
        raise TypeError(
            f"{', '.join(both)} given both in method_options and as a keyword; pass "
            "each option of the wrapped method once"
        )
    # A randomized method gets its own key for every noisy copy, split from `key`.
    method, arrays, static, randomized = registry.bind(
        method, {**method_kwargs, **method_options}, caller="noise method"
    )
    x, targets = _checks.prepare(model, x, target)
    key = _checks.key(key)
    samples = _checks.positive_int("samples", samples)
    noise_scale = _checks.number("noise_scale", noise_scale)
    noise_chunk_size = _checks.noise_chunk_size(noise_chunk_size, model, x, samples, mapped=randomized)
    return _noisy(
        model,
        x,
        targets,
        key,
        noise_scale,
        arrays,
        method=method,
        reduction=reduction,
        samples=samples,
        noise_chunk_size=noise_chunk_size,
        static_kwargs=static,
        randomized=randomized,
    )


def _new_form(name, args, kwargs):
    """The positional arguments of a call in the new form: a method given first, before
    the model (`smoothgrad(jaxplain.saliency, model, x, ...)`, the form before the method
    became the `method` option), moves to `method` with a DeprecationWarning."""
    model_second = (
        len(args) == 3
        or (len(args) == 2 and isinstance(args[1], Model))
        or (len(args) == 1 and "model" in kwargs)
    )
    if not args or isinstance(args[0], Model) or not model_second:
        return args
    if "method" in kwargs:
        raise TypeError(f"{name}() got the wrapped method twice: first and as method=")
    warnings.warn(
        f"{name}(method, model, x, ...) is deprecated and will be removed in the next release: "
        f"pass the method as an option, {name}(model, x, method=jaxplain.saliency, ...) "
        f'(or method="saliency")',
        DeprecationWarning,
        stacklevel=3,
    )
    kwargs["method"] = args[0]
    return args[1:]


def _noise_method(reduction: str):
    """Makes a declared noise method (its name, signature, defaults and docstring) a
    registered method whose body, the same for all three, reduces the attributions of the
    noisy copies by `reduction`."""

    def make(declared: Callable) -> Callable:
        signature = inspect.signature(declared)

        @functools.wraps(declared)
        def method(*args, **kwargs) -> Attribution:
            bound = signature.bind(*_new_form(declared.__name__, args, kwargs), **kwargs)
            bound.apply_defaults()
            return _smooth(reduction, **bound.arguments)

        method.__doc__ = declared.__doc__.replace(
            "{args}", _ARGS.replace("{name}", declared.__name__)
        ).replace("      {model}\n", _EXAMPLE_MODEL)
        return register("noise", randomized=True)(method)

    return make


# The model of the docstrings' examples: a linear model, whose gradient is its weights.
_EXAMPLE_MODEL = """      >>> import jax, jax.numpy as jnp
      >>> import jaxplain
      >>> w = jnp.array([[1.0, -1.0], [2.0, 0.5]])
      >>> model = jaxplain.Model(lambda w, x: x @ w, w)
      >>> x = jnp.array([[1.0, 2.0]])
"""

_ARGS = """
    The form with the method first, `{name}(jaxplain.saliency, model, x, ...)`, still
    works in this release and warns (`DeprecationWarning`).

    Args:
      model: a `jaxplain.Model`.
      x: a batch of inputs, `(batch, ...)`.
      target: as for the wrapped method; "predicted" and `top_k` are resolved on the
        clean input, so every noisy copy explains the same class.
      key: a `jax.random.key`; same key, same noise (and same draws of a randomized
        method).
      method: the method run on the noisy copies: any jaxplain method or its name, e.g.
        `jaxplain.integrated_gradients` or "integrated_gradients" (default saliency); a
        randomized one (e.g. `jaxplain.kernel_shap`) gets its own key for every noisy
        copy, split from `key`. Any callable `method(model, x, *, target, ...)`
        returning an `Attribution` works too.
      samples: noisy copies per example.
      noise_scale: the noise's standard deviation as a fraction of each example's
        value range, max(x) - min(x); 0.1-0.2 is the range the SmoothGrad paper
        recommends. 0 gives back the wrapped method.
      noise_chunk_size: noisy copies evaluated at once: by default as many as the
        engine's memory budget allows (`jaxplain.engine.default_chunk_size`), one at a
        time around a randomized method. The answer does not depend on it.
      method_options: a dict of options for `method`, for names the noise method also
        takes (e.g. `{"samples": 256}` for kernel_shap's own samples).
      **method_kwargs: further options passed to `method` (e.g. steps=32,
        baseline=0.0, chunk_size). An array option shaped like `x` is taken per example.

    Returns:
      An `Attribution` shaped like the wrapped method's.
"""


@_noise_method("mean")
def smoothgrad(
    model: Model,
    x,
    *,
    target,
    key,
    method="saliency",
    samples: int = 50,
    noise_scale: float = 0.15,
    noise_chunk_size=None,
    method_options: dict | None = None,
    **method_kwargs,
) -> Attribution:
    """SmoothGrad: the mean attribution over noisy copies of the input.
    {args}
    Example:
      {model}
      >>> jaxplain.smoothgrad(model, x, target=0, key=jax.random.key(0), samples=8).values
      Array([[1., 2.]], dtype=float32)
      >>> jaxplain.smoothgrad(model, x, target=0, key=jax.random.key(0), method="integrated_gradients",
      ...                     steps=4, noise_scale=0.0).values  # no noise: integrated_gradients itself
      Array([[1., 4.]], dtype=float32)

    References:
      Smilkov, Thorat, Kim, Viegas, Wattenberg. SmoothGrad: removing noise by adding
      noise. arXiv:1706.03825, 2017.
    """


@_noise_method("mean_square")
def smoothgrad_sq(
    model: Model,
    x,
    *,
    target,
    key,
    method="saliency",
    samples: int = 50,
    noise_scale: float = 0.15,
    noise_chunk_size=None,
    method_options: dict | None = None,
    **method_kwargs,
) -> Attribution:
    """SmoothGrad-squared: the mean of the squared attributions over noisy copies.
    {args}
    Example:
      {model}
      >>> jaxplain.smoothgrad_sq(model, x, target=0, key=jax.random.key(0), samples=8).values
      Array([[1., 4.]], dtype=float32)

    References:
      Hooker, Erhan, Kindermans, Kim. A Benchmark for Interpretability Methods in Deep
      Neural Networks. arXiv:1806.10758, 2019.
    """


@_noise_method("variance")
def vargrad(
    model: Model,
    x,
    *,
    target,
    key,
    method="saliency",
    samples: int = 50,
    noise_scale: float = 0.15,
    noise_chunk_size=None,
    method_options: dict | None = None,
    **method_kwargs,
) -> Attribution:
    """VarGrad: the variance of the attributions over noisy copies of the input.
    {args}
    Example:
      {model}
      >>> jaxplain.vargrad(model, x, target=0, key=jax.random.key(0), samples=8).values  # w at every copy
      Array([[0., 0.]], dtype=float32)
      >>> spread = jaxplain.vargrad(model, x, target=0, key=jax.random.key(0), samples=8,
      ...                           method=jaxplain.integrated_gradients, steps=4)  # w (x + e) varies
      >>> bool((spread.values > 0).all())
      True

    References:
      Adebayo, Gilmer, Goodfellow, Kim. Local Explanation Methods for Deep Neural
      Networks Lack Sensitivity to Parameter Values. arXiv:1810.03307, 2018.
    """
