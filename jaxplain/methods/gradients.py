"""Gradients at the input: saliency and input x gradient."""

from __future__ import annotations

import jax.numpy as jnp

from jaxplain import _checks, engine
from jaxplain.attribution import Attribution
from jaxplain.methods.registry import register
from jaxplain.model import Model, Targets


@engine.program(static_argnames=("times_input", "absolute"))
def _input_gradients(model: Model, x, targets: Targets, *, times_input: bool, absolute: bool):
    _, chosen, grads = engine.gradients(model, x, targets.resolve)
    values = x[:, None] * grads if times_input else grads
    values = jnp.abs(values) if absolute else values
    return engine.attribution(targets, values, chosen)


@register("gradient")
def saliency(model: Model, x, *, target, absolute: bool = False) -> Attribution:
    """The gradient of the target output with respect to the input.

    phi_i(x) = dF_t(x) / dx_i, or its absolute value with `absolute=True` (the
    saliency map of Simonyan et al.).

    Args:
      model: a `jaxplain.Model`.
      x: a batch of inputs, `(batch, ...)`.
      target: an int, an int array `(batch,)` or `(batch, k)`, `"predicted"`, or
        `jaxplain.top_k(k)`.
      absolute: return |gradient|.

    Returns:
      An `Attribution` whose `values` are shaped like `x` (or `(batch, k, ...)`).

    References:
      Simonyan, Vedaldi, Zisserman. Deep Inside Convolutional Networks: Visualising
      Image Classification Models and Saliency Maps. arXiv:1312.6034, 2013.
    """
    x, targets = _checks.prepare(model, x, target)
    return _input_gradients(model, x, targets, times_input=False, absolute=_checks.flag("absolute", absolute))


@register("gradient")
def input_x_gradient(model: Model, x, *, target) -> Attribution:
    """The input times the gradient of the target output: phi_i = x_i dF_t(x)/dx_i.

    Equal to Integrated Gradients with a zero baseline for a model that is linear on
    the segment from zero to x.

    Args:
      model: a `jaxplain.Model`.
      x: a batch of inputs, `(batch, ...)`.
      target: as for `saliency`.

    Returns:
      An `Attribution` whose `values` are shaped like `x` (or `(batch, k, ...)`).

    References:
      Shrikumar, Greenside, Shcherbina, Kundaje. Not Just a Black Box: Learning
      Important Features Through Propagating Activation Differences.
      arXiv:1605.01713, 2016.
    """
    x, targets = _checks.prepare(model, x, target)
    return _input_gradients(model, x, targets, times_input=True, absolute=False)
