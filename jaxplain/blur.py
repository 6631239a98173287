"""Gaussian blur of images, as two small matmuls: Blur IG's path and the blurred
references of the perturbation curves."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np


def _matrix(size: int, sigma, radius: int):
    """The (size, size) matrix of a Gaussian blur with `sigma` along one axis.

    Truncated at `radius` (< size) and normalised; the border reflects (as numpy's
    "reflect" padding: the edge sample is not repeated). Built in closed form, so the
    blur of an image is two small matmuls.
    """
    i = jnp.arange(size)[:, None]
    j = jnp.arange(size)[None, :]
    sigma = jnp.maximum(sigma, 1e-3)  # sigma -> 0 is the identity
    offsets = jnp.arange(-radius, radius + 1)
    norm = jnp.exp(-(offsets**2) / (2 * sigma**2)).sum()

    def kernel(t):
        return jnp.where(jnp.abs(t) <= radius, jnp.exp(-(t**2) / (2 * sigma**2)), 0.0) / norm

    mirror_low = jnp.where(j >= 1, kernel(-j - i), 0.0)
    mirror_high = jnp.where(j <= size - 2, kernel(2 * (size - 1) - j - i), 0.0)
    return kernel(j - i) + mirror_low + mirror_high


def gaussian(x, sigma, max_sigma: float):
    """Gaussian blur of NHWC-like inputs over their spatial axes (1 .. ndim - 2)."""
    for axis in range(1, x.ndim - 1):
        size = x.shape[axis]
        radius = max(0, min(size - 1, int(np.ceil(3 * max_sigma))))
        matrix = _matrix(size, sigma, radius).astype(x.dtype)
        x = jnp.moveaxis(jnp.tensordot(matrix, jnp.moveaxis(x, axis, 0), axes=1), 0, axis)
    return x
