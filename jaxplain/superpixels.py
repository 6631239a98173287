"""Superpixels: per-image feature groups for the perturbation methods and metrics.

`superpixels(x)` segments each image of a batch with scikit-image and returns the
segments as one int mask per image, the `(batch, H, W)` form that `feature_mask=` of
`feature_ablation`, `shapley_sampling`, `kernel_shap`, `lime`, `exact_shapley` and
`banzhaf` takes (broadcast over the channels). Segmentation is a host-side, per-image
NumPy computation: compute the masks once and pass them to every call that needs them.
"""

from __future__ import annotations

import inspect

import numpy as np

from jaxplain import _checks

METHODS = ("slic", "felzenszwalb", "quickshift")

# Set here for every image (or not meaningful for one mask per image), so refused as options.
_RESERVED = {
    "image": "the images are x",
    "channel_axis": "x's channels are last",
    "mask": "",
    "return_tree": "",
}


def superpixels(x, method: str = "slic", *, value_range=None, **options) -> np.ndarray:
    """Segments every image of a batch into superpixels, numbered 0..G_b-1 per image.

    Each image is scaled to [0, 1], segmented by scikit-image's `method` with
    `options`, and its segment labels renumbered 0..G_b-1 in the order of the labels
    scikit-image gave (which may start at 1 or skip ids). The result is meant for
    `feature_mask=` of the perturbation methods: one mask per image, broadcast over
    the channels (see `jaxplain.methods.perturbation`).

    It runs on the host, in NumPy, one image at a time (scikit-image is not traced by
    JAX): compute the masks once per batch and reuse them across methods and calls.
    Every method here is deterministic (quickshift draws its tie-breaking noise from
    a fixed `rng=42` unless told otherwise), so the same images give the same masks.

    Args:
      x: images `(batch, H, W, C)`, channels last, in any range of real values (a
        NumPy or JAX array); a grayscale batch `(batch, H, W)` needs its channel axis,
        `x[..., None]`.
      method: `"slic"` (Achanta et al., k-means in colour and position),
        `"felzenszwalb"` (graph-based merging) or `"quickshift"` (mode seeking).
      value_range: how images are scaled to [0, 1] before segmenting: None scales each
        image by its own minimum and maximum (a constant image becomes 0); a pair
        `(low, high)` maps low to 0 and high to 1 for every image alike (values outside
        are clipped), so that scale-dependent options such as felzenszwalb's `scale` or
        quickshift's `max_dist` mean the same thing on every image.
      **options: passed to `skimage.segmentation.<method>`, e.g. `n_segments`,
        `compactness`, `sigma` (slic); `scale`, `sigma`, `min_size` (felzenszwalb);
        `kernel_size`, `max_dist`, `ratio`, `sigma` (quickshift). quickshift's
        `convert2lab` defaults to True only for 3-channel images (it needs RGB).

    Returns:
      An int32 NumPy array `(batch, H, W)`; image b's segments are numbered 0..G_b-1,
      each id used.

    Raises:
      ImportError: scikit-image is not installed (`pip install scikit-image`).

    Example:
      >>> import numpy as np
      >>> from jaxplain.superpixels import superpixels
      >>> x = np.zeros((1, 4, 4, 3)); x[0, :, 2:] = 1.0  # two halves
      >>> superpixels(x, "felzenszwalb", min_size=1, sigma=0.0)[0]
      array([[0, 0, 1, 1],
             [0, 0, 1, 1],
             [0, 0, 1, 1],
             [0, 0, 1, 1]], dtype=int32)

    References:
      Achanta, Shaji, Smith, Lucchi, Fua, Susstrunk. SLIC Superpixels Compared to
      State-of-the-Art Superpixel Methods. IEEE TPAMI 34(11), 2012; Felzenszwalb,
      Huttenlocher. Efficient Graph-Based Image Segmentation. IJCV 59(2), 2004;
      Vedaldi, Soatto. Quick Shift and Kernel Methods for Mode Seeking. ECCV 2008.
    """
    method = _checks.choice("method", method, METHODS)
    if _checks.is_traced(x):
        raise TypeError(
            "x must be a concrete array, not a traced value: superpixels are computed on the "
            "host by scikit-image, before (outside) jax.jit"
        )
    x = np.asarray(_checks.as_float_array("x", x), dtype=np.float64)
    if x.ndim != 4 or min(x.shape) < 1:
        hint = "; for grayscale images add the channel axis, x[..., None]" if x.ndim == 3 else ""
        raise ValueError(f"x must be images (batch, H, W, C), channels last, got shape {x.shape}{hint}")
    x = _scaled(x, value_range)
    segment = _segmenter(method)
    options = _options(segment, method, options, channels=x.shape[-1])
    masks = np.empty(x.shape[:3], np.int32)
    for b, image in enumerate(x):
        labels = segment(image, channel_axis=-1, **options)
        masks[b] = np.unique(labels, return_inverse=True)[1].reshape(labels.shape)
    return masks


def _scaled(x: np.ndarray, value_range) -> np.ndarray:
    """Images in [0, 1]: each by its own range (None), or all by `(low, high)`."""
    if value_range is None:
        low = x.min(axis=(1, 2, 3), keepdims=True)
        span = x.max(axis=(1, 2, 3), keepdims=True) - low
        return np.where(span > 0, (x - low) / np.where(span > 0, span, 1.0), 0.0)
    if not isinstance(value_range, (tuple, list)) or len(value_range) != 2:
        raise TypeError(f"value_range must be None or a pair (low, high), got {value_range!r}")
    low = _checks.number("value_range[0]", value_range[0], low=-np.inf)
    high = _checks.number("value_range[1]", value_range[1], low=low, above=True)
    return np.clip((x - low) / (high - low), 0.0, 1.0)


def _segmenter(method: str):
    try:
        from skimage import segmentation
    except ImportError as error:
        raise ImportError("jaxplain.superpixels needs scikit-image: pip install scikit-image") from error
    return getattr(segmentation, method)


def _options(segment, method: str, options: dict, *, channels: int) -> dict:
    """The caller's options, checked against the segmenter's parameters."""
    known = [
        name
        for name, parameter in inspect.signature(segment).parameters.items()
        if name not in _RESERVED and parameter.kind is not parameter.VAR_KEYWORD
    ]
    for name in options:
        if name in _RESERVED:
            why = _RESERVED[name] or "it does not give one mask per image"
            raise TypeError(f"superpixels sets {name} itself ({why}); it is not an option")
        if name not in known:
            raise TypeError(
                f"{name} is not an option of skimage.segmentation.{method}; its options are {known}"
            )
    if method == "quickshift":
        options = {"convert2lab": channels == 3, **options}
    return options
