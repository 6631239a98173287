"""jaxplain.superpixels: per-image segments from scikit-image, numbered 0..G_b-1."""

import doctest
import importlib
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxplain.superpixels import superpixels

# The module, not the function that jaxplain exports under the same name.
MODULE = importlib.import_module("jaxplain.superpixels")

pytest.importorskip("skimage")


def quadrants(batch=2, size=8, channels=3, seed=0, noise=0.01):
    """Images of four flat quadrants of different colours, with a little noise."""
    rng = np.random.default_rng(seed)
    x = np.empty((batch, size, size, channels))
    half = size // 2
    for b in range(batch):
        colours = rng.uniform(size=(4, channels))
        for q, (rows, cols) in enumerate(
            [(slice(0, half), slice(0, half)), (slice(0, half), slice(half, None))]
            + [(slice(half, None), slice(0, half)), (slice(half, None), slice(half, None))]
        ):
            x[b, rows, cols] = colours[q]
    return (x + noise * rng.normal(size=x.shape)).astype(np.float32)


def numbered_from_zero(masks):
    return all(np.array_equal(np.unique(m), np.arange(m.max() + 1)) for m in masks)


@pytest.mark.parametrize(
    "method, options",
    [
        ("slic", {"n_segments": 4, "compactness": 1.0}),
        ("felzenszwalb", {"scale": 10.0, "min_size": 4}),
        ("quickshift", {"kernel_size": 2, "max_dist": 4}),
    ],
)
def test_every_method_gives_int32_masks_numbered_from_zero_per_image(method, options):
    x = quadrants()
    masks = superpixels(x, method, **options)
    assert masks.shape == (2, 8, 8) and masks.dtype == np.int32
    assert numbered_from_zero(masks)  # slic numbers from 1: renumbered
    np.testing.assert_array_equal(superpixels(x, method, **options), masks)  # deterministic
    # Per image: an image's segments do not depend on the rest of the batch.
    np.testing.assert_array_equal(superpixels(x[1:], method, **options)[0], masks[1])


def test_known_segments_of_flat_regions():
    # Felzenszwalb without smoothing separates the quadrants exactly; ids follow the
    # order of scikit-image's labels (row-major first appearance here).
    x = quadrants(batch=1, seed=3, noise=0.0) * 40.0 - 7.0  # any range: each image is scaled to [0, 1]
    masks = superpixels(x, "felzenszwalb", scale=1.0, sigma=0.0, min_size=1)
    top, bottom = [0] * 4 + [1] * 4, [2] * 4 + [3] * 4
    np.testing.assert_array_equal(masks[0], np.array([top] * 4 + [bottom] * 4))
    # A constant image is one segment.
    assert superpixels(np.full((1, 5, 5, 3), 2.5), "felzenszwalb")[0].max() == 0


def test_images_are_scaled_per_image_or_by_the_value_range():
    x = quadrants()
    masks = superpixels(x, "felzenszwalb", scale=10.0, min_size=4)
    np.testing.assert_array_equal(superpixels(100.0 * x + 3.0, "felzenszwalb", scale=10.0, min_size=4), masks)
    low, high = float(x.min()), float(x.max())
    same = superpixels(
        jnp.asarray(5.0 * x), "felzenszwalb", value_range=(5 * low, 5 * high), scale=10.0, min_size=4
    )
    # One range for both images differs from each image's own only by a positive scale.
    assert numbered_from_zero(same) and same.shape == masks.shape


def test_grayscale_and_other_channel_counts():
    x = quadrants(channels=1)
    for method in ("slic", "felzenszwalb", "quickshift"):  # quickshift's convert2lab needs RGB
        masks = superpixels(x, method)
        assert masks.shape == (2, 8, 8) and numbered_from_zero(masks)


@pytest.mark.parametrize(
    "call, error, message",
    [
        (lambda x: superpixels(x, "watershed"), ValueError, "method must be one of"),
        (
            lambda x: superpixels(x[..., 0]),
            ValueError,
            r"x must be images \(batch, H, W, C\).*x\[..., None\]",
        ),
        (lambda x: superpixels(x[0]), ValueError, "x must be images"),
        (lambda x: superpixels(np.where(x > 0.5, np.nan, x)), ValueError, "x contains NaN"),
        (lambda x: superpixels(x.astype(str)), TypeError, "x must hold real numbers"),
        (lambda x: superpixels(x, "slic", segments=4), TypeError, "segments is not an option of .*slic"),
        (lambda x: superpixels(x, "slic", channel_axis=0), TypeError, "superpixels sets channel_axis"),
        (lambda x: superpixels(x, "quickshift", return_tree=True), TypeError, "sets return_tree"),
        (lambda x: superpixels(x, value_range=(1.0, 1.0)), ValueError, r"value_range\[1\] must be"),
        (lambda x: superpixels(x, value_range=1.0), TypeError, "value_range must be None or a pair"),
        (lambda x: jax.jit(superpixels)(x), TypeError, "x must be a concrete array"),
    ],
)
def test_errors_name_the_argument(call, error, message):
    with pytest.raises(error, match=message):
        call(quadrants())


def test_a_missing_scikit_image_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "skimage", None)
    with pytest.raises(ImportError, match="pip install scikit-image"):
        superpixels(quadrants())


def test_docstring_example():
    result = doctest.testmod(MODULE, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0


def test_labels_are_renumbered_in_their_order(monkeypatch):
    # scikit-image may start at 1 (slic) or skip ids; each image is renumbered 0..G_b-1.
    labels = iter([np.array([[5, 5, 9], [2, 9, 9]]), np.array([[1, 1, 1], [1, 1, 1]])])
    monkeypatch.setattr(MODULE, "_segmenter", lambda method: lambda image, **_: next(labels))
    masks = superpixels(np.zeros((2, 2, 3, 1)))
    np.testing.assert_array_equal(masks, [[[1, 1, 2], [0, 2, 2]], [[0, 0, 0], [0, 0, 0]]])
