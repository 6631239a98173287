"""Explainers, one short file per family, each built on `jaxplain.engine`.

Every public method is registered in `METHODS` (see `registry.py`) by the decorator
`@register(family, randomized=...)`.
"""

# Importing the family modules registers their methods.
from jaxplain.methods import (  # noqa: F401
    attention,
    gradients,
    integrated,
    layers,
    perturbation,
    rules,
    smoothing,
    xrai,
)
from jaxplain.methods.registry import FAMILIES, METHODS, MethodInfo, register

__all__ = ["FAMILIES", "METHODS", "MethodInfo", "register"]
