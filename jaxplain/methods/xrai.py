"""XRAI: attributions of image regions, grown greedily from over-segmentations.

A base attribution (integrated gradients from a black and a white baseline by default)
runs on the engine, batched, in one compiled program. Its per-pixel map (the maximum over
channels) is then summed over regions on the host, as one `jax.pure_callback` inside that
program, so that `xrai` also runs under a caller's `jax.jit` or `jax.vmap`:

1. segments: Felzenszwalb over-segmentations of the image at several scales, every
   segment a mask, dilated so that it takes in its edges (`xrai_segments`);
2. greedy merging: starting from an empty region R, repeatedly add the segment s whose
   new pixels s \\ R have the highest gain, the mean attribution over s \\ R, until R
   covers `area_threshold` of the image or no segment adds `min_pixel_diff` pixels;
3. the heat map: every pixel holds the gain of the step that added it; pixels no step
   added hold the mean attribution over them (so the map's sum is the base map's sum).

The merge is vectorised over segments: each step updates every segment's count and sum
of uncovered pixels by the pixels just added, so a whole image costs O(segments x pixels)
rather than PAIR's O(segments^2 x pixels).
"""

from __future__ import annotations

import functools
import inspect

import jax
import jax.numpy as jnp
import numpy as np

from jaxplain import _checks, engine
from jaxplain.attribution import Attribution
from jaxplain.methods import registry
from jaxplain.methods.registry import register
from jaxplain.model import Model

ALGORITHMS = ("full", "fast")
# The Felzenszwalb settings of the XRAI paper's code (PAIR saliency).
SCALES = (50, 100, 150, 250, 500, 1200)
SIGMA = 0.8
MIN_SIZE = 150
SEGMENT_SHAPE = (224, 224)
DILATION_RADIUS = 5
# Gains closer than this fraction of the largest |attribution| are a tie: the first
# segment wins, as in PAIR (whose float32 means cannot order them either).
_TIE = 1e-9
# Pixels whose masks the merge weighs at once.
_BLOCK = 1024


def _segment_image(image, *, scales, sigma, min_size, shape, dilation_radius) -> np.ndarray:
    """Masks (S, H, W) of one image (H, W) or (H, W, C): every segment of every scale."""
    from scipy import ndimage
    from skimage import morphology, segmentation, transform

    size = image.shape[:2]
    low, high = np.min(image), np.max(image)
    # values in [-1, 1], the range the scales were tuned for (a flat image: all -1)
    image = (image - low) / (high - low if high > low else 1) * 2 - 1
    if shape is not None:
        image = transform.resize(
            image, shape, order=3, mode="constant", preserve_range=True, anti_aliasing=True
        )
    masks = []
    for scale in scales:
        labels = segmentation.felzenszwalb(image, scale=scale, sigma=sigma, min_size=min_size)
        if shape is not None:
            labels = transform.resize(
                labels, size, order=0, preserve_range=True, mode="constant", anti_aliasing=False
            ).astype(int)
        masks.append(labels[None] == np.arange(labels.min(), labels.max() + 1)[:, None, None])
    masks = np.concatenate(masks)
    if dilation_radius:
        disk = morphology.disk(dilation_radius).astype(bool)
        masks = ndimage.binary_dilation(masks, structure=disk[None])
    return masks


def _padded(masks: list) -> np.ndarray:
    """Per-image masks (S_b, H, W) as one array (B, max S_b, H, W); the padding masks are
    empty, so they never add a pixel."""
    count = max(len(m) for m in masks)
    out = np.zeros((len(masks), count) + masks[0].shape[1:], bool)
    for b, m in enumerate(masks):
        out[b, : len(m)] = m
    return out


def xrai_segments(
    x,
    *,
    scales=SCALES,
    sigma: float = SIGMA,
    min_size: int = MIN_SIZE,
    segment_shape=SEGMENT_SHAPE,
    dilation_radius: int = DILATION_RADIUS,
) -> np.ndarray:
    """The segments XRAI merges: Felzenszwalb segments at several scales, dilated.

    Each image's values are rescaled to [-1, 1] and resized to `segment_shape` (bicubic),
    segmented by Felzenszwalb and Huttenlocher's graph method at every scale (scikit-image,
    on the host), the labels resized back (nearest) and every segment dilated by a disk of
    `dilation_radius` pixels. The defaults are the XRAI paper's code's (PAIR saliency).

    Args:
      x: images `(batch, H, W, C)` or `(batch, H, W)`.
      scales: Felzenszwalb's `scale` values, one segmentation each (larger: larger segments).
      sigma: the Gaussian smoothing before segmenting.
      min_size: the smallest segment, in pixels of the resized image.
      segment_shape: `(height, width)` the image is segmented at, or None for its own size.
      dilation_radius: the disk each segment mask is dilated by (0: none).

    Returns:
      A bool NumPy array `(batch, S, H, W)`, one mask per segment; images with fewer than
      S segments are padded with empty masks. Pass it as `xrai(..., segments=...)`.

    Example:
      >>> import numpy as np
      >>> x = np.zeros((1, 32, 32, 1), np.float32); x[0, 8:24, 8:24] = 1.0
      >>> masks = xrai_segments(x, scales=(100,), min_size=100, segment_shape=None, dilation_radius=0)
      >>> masks.shape, masks.sum(axis=(2, 3)).tolist()  # the background and the square
      ((1, 2, 32, 32), [[768, 256]])

    References:
      Felzenszwalb, Huttenlocher. Efficient Graph-Based Image Segmentation. IJCV 59, 2004.
    """
    x = _images(x)
    if isinstance(scales, (int, float)) or not len(scales):
        raise TypeError(f"scales must be a non-empty sequence of numbers, got {scales!r}")
    scales = tuple(_checks.number("scales", s, above=True) for s in scales)
    sigma = _checks.number("sigma", sigma)
    min_size = _checks.positive_int("min_size", min_size)
    if segment_shape is not None:
        if len(segment_shape) != 2:
            raise ValueError(f"segment_shape must be (height, width) or None, got {segment_shape!r}")
        segment_shape = tuple(_checks.positive_int("segment_shape", s) for s in segment_shape)
    if dilation_radius != 0:
        dilation_radius = _checks.positive_int("dilation_radius", dilation_radius)
    images = np.asarray(x)
    segment = functools.partial(
        _segment_image,
        scales=scales,
        sigma=sigma,
        min_size=min_size,
        shape=segment_shape,
        dilation_radius=dilation_radius,
    )
    return _padded([segment(image) for image in images])


def _pixel_sums(by_pixel, attribution, pixels):
    """Every segment's count of the pixels `pixels` and its attribution sum over them, from
    the masks by pixel (P, S), a block of pixels at a time. Elementwise sums, not a matrix
    product: BLAS threads would gain nothing on these thin products and fight any other
    work for the cores."""
    counts, sums = np.zeros(by_pixel.shape[1], np.int64), np.zeros(by_pixel.shape[1])
    for start in range(0, len(pixels), _BLOCK):
        block = by_pixel[pixels[start : start + _BLOCK]]
        counts += block.sum(axis=0)
        sums += (block * attribution[pixels[start : start + _BLOCK], None]).sum(axis=0)
    return counts, sums


def _merge(attribution, masks, *, area_threshold, min_pixel_diff, algorithm):
    """XRAI on one image: attribution (H, W), masks (S, H, W) -> (heat map, ranks).

    Ranks: 1 for the region of the highest gain, then down; the pixels no step added
    rank last.
    """
    attribution = np.asarray(attribution, np.float64).reshape(-1)
    masks = np.asarray(masks, bool).reshape(len(masks), -1)
    by_pixel = np.ascontiguousarray(masks.T)
    # every segment's count and sum over the pixels not yet covered
    counts, sums = _pixel_sums(by_pixel, attribution, np.arange(attribution.size))
    tie = _TIE * float(np.abs(attribution).max(initial=0.0))
    covered = np.zeros(attribution.size, bool)
    region = np.zeros(attribution.size, np.int64)
    gains = []

    def add(segment, gain):
        new = np.flatnonzero(masks[segment] & ~covered)
        region[new] = len(gains)
        gains.append(gain)
        covered[new] = True
        taken, taken_sums = _pixel_sums(by_pixel, attribution, new)
        counts[:] -= taken
        sums[:] -= taken_sums

    if algorithm == "full":
        alive = np.ones(len(masks), bool)
        while covered.mean() <= area_threshold:
            alive &= counts >= min_pixel_diff
            if not alive.any():
                break
            gain = np.where(alive, sums / np.maximum(counts, 1), -np.inf)
            best = int(np.argmax(gain >= gain.max() - tie))  # the first of the (tied) best
            add(best, gain[best])
            alive[best] = False
    else:  # each segment once, in the order of its gain over all its pixels
        for segment in np.argsort(-(sums / np.maximum(counts, 1)), kind="stable"):
            if counts[segment] >= min_pixel_diff:
                add(segment, sums[segment] / counts[segment])

    gains = np.asarray(gains, np.float64)
    heat = np.where(covered, gains[region] if len(gains) else 0.0, 0.0)
    if not covered.all():
        heat[~covered] = attribution[~covered].mean()
    rank = np.empty(len(gains), np.int64)
    rank[np.argsort(-gains, kind="stable")] = np.arange(1, len(gains) + 1)
    ranks = np.where(covered, rank[region] if len(gains) else 0, len(gains) + 1)
    return heat, ranks


def _host(attribution, source, *, segmented, image_ndim, settings):
    """The merge of every image and target, on the host: attribution (..., k, H, W) and
    the segments (..., S, H, W) or the images (..., H, W[, C]) they are made from, with
    the same leading axes -> heat maps and ranks (..., k, H, W)."""
    attribution, source = np.asarray(attribution), np.asarray(source)
    core = 3 if segmented else image_ndim
    flat = attribution.reshape((-1,) + attribution.shape[-3:])
    sources = source.reshape((-1,) + source.shape[source.ndim - core :])
    heat, ranks = np.empty(flat.shape, attribution.dtype), np.empty(flat.shape, np.int32)
    for i, (maps, found) in enumerate(zip(flat, sources)):
        masks = found if segmented else _segment_image(found, **_DEFAULT_SEGMENTS)
        for j, attribution_map in enumerate(maps):
            heat[i, j], ranks[i, j] = (
                a.reshape(attribution_map.shape) for a in _merge(attribution_map, masks, **settings)
            )
    return heat.reshape(attribution.shape), ranks.reshape(attribution.shape)


_DEFAULT_SEGMENTS = {
    "scales": SCALES,
    "sigma": SIGMA,
    "min_size": MIN_SIZE,
    "shape": SEGMENT_SHAPE,
    "dilation_radius": DILATION_RADIUS,
}


@engine.program(
    static_argnames=("method", "static_kwargs", "runs", "area_threshold", "min_pixel_diff", "algorithm")
)
def _xrai(
    model,
    x,
    targets,
    base,
    baselines,
    segments,
    array_kwargs,
    *,
    method,
    static_kwargs,
    runs,
    area_threshold,
    min_pixel_diff,
    algorithm,
):
    chosen = targets.resolve(engine.forward(model, x))
    if base is not None:
        values = base[:, None]
    else:
        if runs == "min_max":  # constant images at each example's darkest and brightest value
            axes = tuple(range(1, x.ndim))
            baselines = [
                jnp.broadcast_to(f(x, axis=axes, keepdims=True), x.shape) for f in (jnp.min, jnp.max)
            ]
        elif baselines is None:
            baselines = [None]
        values = sum(
            method(
                model,
                x,
                target=chosen,
                **dict(static_kwargs),
                **array_kwargs,
                **({} if baseline is None else {"baseline": baseline}),
            ).values
            for baseline in baselines
        ) / len(baselines)
    pixel_map = values.max(axis=-1) if x.ndim == 4 else values  # (B, k, H, W)
    heat, ranks = jax.pure_callback(
        functools.partial(
            _host,
            segmented=segments is not None,
            image_ndim=x.ndim - 1,
            settings={
                "area_threshold": area_threshold,
                "min_pixel_diff": min_pixel_diff,
                "algorithm": algorithm,
            },
        ),
        (
            jax.ShapeDtypeStruct(pixel_map.shape, pixel_map.dtype),
            jax.ShapeDtypeStruct(pixel_map.shape, jnp.int32),
        ),
        pixel_map,
        x if segments is None else segments,
        vmap_method="broadcast_all",
    )
    if x.ndim == 4:
        heat = jnp.broadcast_to(heat[..., None], values.shape)
    return engine.attribution(
        targets, heat.astype(values.dtype), chosen, extras={"ranks": ranks, "base_attribution": values}
    )


def _images(x):
    x = _checks.as_float_array("x", x)
    if x.ndim not in (3, 4):
        raise ValueError(f"x must be images, (batch, H, W, C) or (batch, H, W), got shape {tuple(x.shape)}")
    return x


def _segments(value, x):
    """The caller's segments as (B, S, H, W) bool: one array, or one (S_b, H, W) per image."""
    size = tuple(x.shape[1:3])
    if isinstance(value, (list, tuple)):
        if len(value) != x.shape[0]:
            raise ValueError(f"segments: {len(value)} images' segments for a batch of {x.shape[0]}")
        value = [np.asarray(v) for v in value]
        if any(v.ndim != 3 or v.shape[1:] != size for v in value):
            raise ValueError(f"segments: each image's must be (segments, {size[0]}, {size[1]}) masks")
        value = _padded([v.astype(bool) for v in value])
    elif not isinstance(value, (np.ndarray, jax.Array)) and not _checks.is_traced(value):
        raise TypeError(
            f"segments must be a bool array (batch, S, H, W) or a list of them, got {type(value).__name__}"
        )
    if value.ndim != 4 or value.shape[0] != x.shape[0] or tuple(value.shape[2:]) != size:
        raise ValueError(
            f"segments must be masks of shape (batch, S, H, W) = ({x.shape[0]}, S, {size[0]}, {size[1]}), "
            f"got shape {tuple(value.shape)}"
        )
    if not (value.dtype == bool or jnp.issubdtype(value.dtype, jnp.integer)):
        raise TypeError(f"segments must be bool (or 0/1) masks, got dtype {value.dtype}")
    return value.astype(bool)


def _takes_baseline(function) -> bool:
    found = registry.info(function)
    if found is not None:
        return "baseline" in found.parameters
    try:
        return "baseline" in inspect.signature(function).parameters
    except (TypeError, ValueError):
        return False


@register("path")
def xrai(
    model: Model,
    x,
    *,
    target,
    method="integrated_gradients",
    baselines=None,
    base_attribution=None,
    segments=None,
    area_threshold: float = 1.0,
    min_pixel_diff: int = 50,
    algorithm: str = "full",
    method_options: dict | None = None,
    **method_kwargs,
) -> Attribution:
    """XRAI: a base attribution summed over image regions grown greedily, best gain first.

    With A the base attribution's per-pixel map (its maximum over channels) and segments
    s_1..s_S (`xrai_segments`), the region R grows from the empty set: each step adds the
    segment s that maximises the gain

        g(s) = sum_{p in s \\ R} A_p / |s \\ R|

    over the segments that still add at least `min_pixel_diff` pixels (the others are
    dropped for good), and every pixel of s \\ R gets the value g(s). It stops when R
    covers more than `area_threshold` of the image or no segment is left; the pixels left
    out get their mean attribution. Ties (gains within 1e-9 of the largest |A_p|) go to the
    first segment, as in the paper's code. `algorithm="fast"` instead takes every segment
    once, in the order of its gain over all its pixels, and ignores `area_threshold`.

    The base attribution is computed in one compiled program, batched; segmenting and
    merging run on the host inside it (`jax.pure_callback`, one image and target at a
    time, vectorised over segments), so `xrai` also runs under a caller's `jax.jit`. Its
    default, integrated gradients averaged over a black and a white baseline (constant
    images at each example's minimum and maximum) and Felzenszwalb segments at six scales,
    is the paper's code's (PAIR saliency), with the same heat map for the same base
    attribution and segments (tests/test_xrai.py).

    Args:
      model: a `jaxplain.Model`.
      x: images, `(batch, H, W, C)` or `(batch, H, W)`.
      target: as for `method`; with `base_attribution`, one class per example.
      method: the base attribution: any deterministic jaxplain method or its name
        (default "integrated_gradients"), or a callable `method(model, x, *, target, ...)`.
        A randomized one: compute it yourself and pass `base_attribution`.
      baselines: for a method with a `baseline` option, the baselines whose attributions
        are averaged: "min_max" (each example's minimum and maximum value, the default
        unless a `baseline` option is given) or a list of baselines, each a scalar, one
        example or one per example.
      base_attribution: a precomputed attribution shaped like x (or an `Attribution`); the
        model then only resolves `target`.
      segments: the masks to merge, bool `(batch, S, H, W)` or a list of `(S_b, H, W)` per
        image (empty masks are ignored); by default `xrai_segments(x)`, computed on the
        host in the program.
      area_threshold: the fraction of the image after which merging stops (1: all of it).
      min_pixel_diff: the fewest new pixels a segment must add to be taken.
      algorithm: "full" (gains recomputed after every step) or "fast" (see above).
      method_options: a dict of options for `method`, for names `xrai` also takes.
      **method_kwargs: further options for `method` (e.g. steps=32, chunk_size).

    Returns:
      An `Attribution` whose values are the heat map, shaped like x (the same value in
      every channel), with `extras["ranks"]` (`(batch, H, W)`, int32: 1 for the region of
      the highest gain, then down, the left-out pixels last) and
      `extras["base_attribution"]` (the base attribution, shaped like the values); with k
      targets per example each has a target axis after the batch axis.

    Example:
      >>> import jax.numpy as jnp, numpy as np
      >>> import jaxplain
      >>> from jaxplain.methods.xrai import xrai
      >>> model = jaxplain.Model(lambda w, x: x.reshape(len(x), -1) @ w, jnp.ones((4, 1)))
      >>> x = jnp.ones((1, 2, 2))
      >>> halves = np.array([[[[1, 1], [0, 0]], [[0, 0], [1, 1]]]], bool)
      >>> base = jnp.array([[[1.0, 3.0], [0.0, 1.0]]])
      >>> found = xrai(model, x, target=0, base_attribution=base, segments=halves, min_pixel_diff=1)
      >>> found.values
      Array([[[2. , 2. ],
              [0.5, 0.5]]], dtype=float32)
      >>> found.extras["ranks"]
      Array([[[1, 1],
              [2, 2]]], dtype=int32)

    References:
      Kapishnikov, Bolukbasi, Viegas, Terry. XRAI: Better Attributions Through Regions.
      ICCV 2019, arXiv:1906.02825.
    """
    if method_options is None:
        method_options = {}
    if not isinstance(method_options, dict):
        raise TypeError(
            f"method_options must be a dict of the base method's options, got {type(method_options).__name__}"
        )
    both = sorted(set(method_options) & set(method_kwargs))
    if both:
        raise TypeError(f"{', '.join(both)} given both in method_options and as a keyword; pass each once")
    options = {**method_kwargs, **method_options}
    x, targets = _checks.prepare(model, x, target)
    x = _images(x)
    area_threshold = _checks.fraction("area_threshold", area_threshold)
    min_pixel_diff = _checks.positive_int("min_pixel_diff", min_pixel_diff)
    algorithm = _checks.choice("algorithm", algorithm, ALGORITHMS)
    if segments is not None:
        segments = _segments(segments, x)
    function, arrays, static, runs = None, {}, (), None
    if base_attribution is not None:
        if options:
            raise TypeError(
                f"options {sorted(options)} are for the base method; with base_attribution none runs"
            )
        if baselines is not None:
            raise TypeError("baselines are for the base method; with base_attribution none runs")
        if isinstance(base_attribution, Attribution):
            base_attribution = base_attribution.values
        base_attribution = _checks.as_float_array("base_attribution", base_attribution)
        if tuple(base_attribution.shape) != tuple(x.shape):
            raise ValueError(
                f"base_attribution must be shaped like x {tuple(x.shape)}, got {tuple(base_attribution.shape)}"
            )
        if targets.count != 1:
            raise ValueError("target: one class per example with base_attribution (it explains one)")
    else:
        randomized = "key" in options or registry.takes_key(registry.resolve(method))
        if randomized:
            raise TypeError(
                "method: xrai takes a deterministic base method; compute a randomized one yourself "
                "and pass its values as base_attribution"
            )
        function, arrays, static, _ = registry.bind(method, options, caller="xrai")
        takes_baseline = _takes_baseline(function)
        if baselines is None:
            runs = "min_max" if takes_baseline and "baseline" not in options else None
        elif not takes_baseline:
            raise TypeError("baselines: the base method takes no baseline; leave baselines=None")
        elif "baseline" in options:
            raise TypeError("give the base method's baselines once, as baselines= or as baseline=")
        elif isinstance(baselines, str):
            runs = _checks.choice("baselines", baselines, ("min_max",))
            baselines = None
        else:
            if not isinstance(baselines, (list, tuple)) or not baselines:
                raise TypeError(
                    f"baselines must be 'min_max' or a non-empty list of baselines, got {baselines!r}"
                )
            baselines = [
                jnp.broadcast_to(
                    _checks.broadcastable("baselines", _checks.as_float_array("baselines", b), x), x.shape
                )
                for b in baselines
            ]
            runs = len(baselines)
    return _xrai(
        model,
        x,
        targets,
        base_attribution,
        baselines,
        segments,
        arrays,
        method=function,
        static_kwargs=static,
        runs=runs,
        area_threshold=area_threshold,
        min_pixel_diff=min_pixel_diff,
        algorithm=algorithm,
    )
