"""XRAI: hand-computed merges, the defaults' closed form, PAIR saliency's XRAI on the same
attributions and segments, batches, several targets, jit and vmap, and the errors."""

import doctest

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxplain
import jaxplain.methods.xrai as xrai_module
from jaxplain.methods.xrai import xrai, xrai_segments

# A 3 x 4 image's attribution and three overlapping segments (see test_hand_computed_merge).
A = np.array([[4, 4, 1, 0], [4, 4, 1, 0], [3, 2, 2, 0]], np.float32)
S0 = np.zeros((3, 4), bool)
S0[:2, :2] = True  # all 4s: gain 4
S1 = np.zeros((3, 4), bool)
S1[:, 1:3] = True  # 4, 1, 4, 1, 2, 2: gain 14/6 alone
S2 = np.zeros((3, 4), bool)
S2[2] = True  # 3, 2, 2, 0: gain 7/4
SEGMENTS = np.stack([S0, S1, S2])[None]


def linear(pixels, classes=2, seed=0):
    weights = jax.random.normal(jax.random.key(seed), (pixels, classes))
    return jaxplain.Model(lambda w, x: x.reshape(len(x), -1) @ w, weights)


def run(segments=SEGMENTS, attribution=A, **options):
    x = np.zeros((1,) + attribution.shape, np.float32)
    found = xrai(
        linear(attribution.size),
        x,
        target=0,
        base_attribution=attribution[None],
        segments=segments,
        **{"min_pixel_diff": 1, **options},
    )
    return np.asarray(found.values[0]), np.asarray(found.extras["ranks"][0])


def test_hand_computed_merge():
    """Step 1 takes S0 (gain 4). S1 alone (14/6) beats S2 (7/4), but what S1 still adds,
    1, 1, 2, 2, has mean 3/2 < 7/4: step 2 takes S2, step 3 the rest of S1 (1, 1: gain 1);
    the pixels no segment holds get their mean, 0."""
    heat, ranks = run()
    np.testing.assert_array_equal(heat, [[4, 4, 1, 0], [4, 4, 1, 0], [1.75, 1.75, 1.75, 1.75]])
    np.testing.assert_array_equal(ranks, [[1, 1, 3, 4], [1, 1, 3, 4], [2, 2, 2, 2]])
    assert heat.sum() == A.sum()  # the map keeps the attribution's total


def test_hand_computed_stops():
    # area_threshold: S0 covers 4/12 > 0.3, the rest is one region of mean 9/8
    heat, ranks = run(area_threshold=0.3)
    np.testing.assert_array_equal(heat, np.where(S0, 4.0, 9 / 8))
    np.testing.assert_array_equal(ranks, np.where(S0, 1, 2))
    # min_pixel_diff: S1's last 2 pixels are too few, they join the left-out ones (1, 1, 0, 0)
    heat, ranks = run(min_pixel_diff=3)
    np.testing.assert_array_equal(heat, [[4, 4, 0.5, 0.5], [4, 4, 0.5, 0.5], [1.75] * 4])
    np.testing.assert_array_equal(ranks, [[1, 1, 3, 3], [1, 1, 3, 3], [2, 2, 2, 2]])


def test_hand_computed_fast():
    """fast: by gain over all pixels, S0 (4), S1 (14/6), S2 (7/4); S1 adds 1, 1, 2, 2 (3/2)
    and S2 then 3, 0 (3/2): equal gains rank in the order taken."""
    heat, ranks = run(algorithm="fast")
    np.testing.assert_array_equal(heat, [[4, 4, 1.5, 0], [4, 4, 1.5, 0], [1.5] * 4])
    np.testing.assert_array_equal(ranks, [[1, 1, 2, 4], [1, 1, 2, 4], [3, 2, 2, 3]])


def test_ties_go_to_the_first_segment():
    # after S0, both add 4 pixels of mean 3/2: the first listed wins, as in PAIR
    tied = A.copy()
    tied[2, 0] = 2
    for order, first in (([0, 1, 2], 1), ([0, 2, 1], 2)):
        _, ranks = run(segments=SEGMENTS[:, order], attribution=tied)
        second = np.stack([S0, S1, S2])[first] & ~S0
        assert (ranks[second] == 2).all(), (order, ranks)


def test_channels_take_the_maximum_and_the_heat_map_fills_them():
    channels = np.stack([A, A - 5], axis=-1)[None]
    x = np.zeros_like(channels)
    found = xrai(
        linear(channels.size), x, target=0, base_attribution=channels, segments=SEGMENTS, min_pixel_diff=1
    )
    heat, _ = run()
    assert found.values.shape == x.shape and found.extras["ranks"].shape == (1, 3, 4)
    np.testing.assert_array_equal(found.values[0], np.repeat(heat[..., None], 2, axis=-1))


def test_default_base_is_integrated_gradients_from_the_darkest_and_brightest_value():
    """For a linear model IG is exact, (x - b) w, and the mean over b = min(x), max(x) is
    (x - (min + max) / 2) w; the merge of it equals the merge of that closed form."""
    rng = np.random.default_rng(0)
    x = rng.uniform(size=(2, 3, 4, 2)).astype(np.float32)
    model = linear(24)
    found = xrai(model, x, target=1, segments=np.repeat(SEGMENTS, 2, axis=0), min_pixel_diff=1, steps=2)
    w = np.asarray(model.params)[:, 1].reshape(3, 4, 2)
    middle = (x.min(axis=(1, 2, 3)) + x.max(axis=(1, 2, 3)))[:, None, None, None] / 2
    expected = (x - middle) * w
    np.testing.assert_allclose(found.extras["base_attribution"], expected, rtol=1e-5, atol=1e-6)
    again = xrai(
        model,
        x,
        target=1,
        base_attribution=expected,
        segments=np.repeat(SEGMENTS, 2, axis=0),
        min_pixel_diff=1,
    )
    np.testing.assert_allclose(found.values, again.values, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(found.extras["ranks"], again.extras["ranks"])
    # explicit baselines and other base methods
    zero = xrai(model, x, target=1, segments=np.repeat(SEGMENTS, 2, axis=0), baselines=[0.0], steps=2)
    np.testing.assert_allclose(zero.extras["base_attribution"], x * w, rtol=1e-5, atol=1e-6)
    saliency = xrai(model, x, target=1, segments=np.repeat(SEGMENTS, 2, axis=0), method="saliency")
    np.testing.assert_allclose(saliency.extras["base_attribution"], np.broadcast_to(w, x.shape), rtol=1e-6)


def test_default_segments_are_xrai_segments():
    x = np.random.default_rng(1).uniform(size=(1, 16, 16, 3)).astype(np.float32)
    default = xrai(linear(x[0].size), x, target=0, steps=2)
    base = np.asarray(default.extras["base_attribution"][0]).max(axis=-1)
    heat, ranks = xrai_module._merge(
        base, xrai_segments(x)[0], area_threshold=1.0, min_pixel_diff=50, algorithm="full"
    )
    np.testing.assert_allclose(default.values[0, ..., 0], heat.reshape(16, 16), rtol=1e-6)
    np.testing.assert_array_equal(default.extras["ranks"][0], ranks.reshape(16, 16))
    assert ranks.max() > 2  # several regions


def images(batch, size=24, seed=0):
    """Images with a bright square and noise, and attributions with structure."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(size=(batch, size, size, 3)).astype(np.float32) * 0.3
    for b in range(batch):
        corner = rng.integers(0, size // 2, 2)
        x[b, corner[0] : corner[0] + size // 3, corner[1] : corner[1] + size // 2] += 0.7
    attribution = (rng.normal(size=x.shape) + 2 * x).astype(np.float32)
    return x, attribution


SMALL = {"scales": (20, 60), "min_size": 10, "segment_shape": None, "dilation_radius": 1}


def test_a_batch_equals_each_image_alone():
    x, attribution = images(3)
    segments = [xrai_segments(x[b : b + 1], **SMALL)[0] for b in range(3)]
    assert len({len(s) for s in segments}) > 1  # ragged: the batch pads with empty masks
    model = linear(x[0].size)
    both = xrai(model, x, target=0, base_attribution=attribution, segments=segments, min_pixel_diff=5)
    for b in range(3):
        one = xrai(
            model,
            x[b : b + 1],
            target=0,
            base_attribution=attribution[b : b + 1],
            segments=segments[b : b + 1],
            min_pixel_diff=5,
        )
        np.testing.assert_array_equal(both.values[b], one.values[0])
        np.testing.assert_array_equal(both.extras["ranks"][b], one.extras["ranks"][0])


def test_several_targets_chunks_jit_and_vmap():
    x, _ = images(2)
    segments = xrai_segments(x, **SMALL)
    model = linear(x[0].size, classes=3)
    settings = {"segments": segments, "steps": 4, "min_pixel_diff": 5}
    both = xrai(model, x, target=np.array([[0, 2], [1, 0]]), **settings)
    for j, column in enumerate(([0, 1], [2, 0])):
        one = xrai(model, x, target=np.array(column), **settings)
        np.testing.assert_allclose(both.values[:, j], one.values, rtol=1e-6, atol=1e-7)
        np.testing.assert_array_equal(both.extras["ranks"][:, j], one.extras["ranks"])
    one = xrai(model, x, target=np.array([0, 1]), **settings)
    chunked = xrai(model, x, target=np.array([0, 1]), chunk_size=3, **settings)
    np.testing.assert_allclose(chunked.values, one.values, rtol=1e-5, atol=1e-6)
    jitted = jax.jit(
        lambda x, s: xrai(model, x, target=np.array([0, 1]), segments=s, steps=4, min_pixel_diff=5)
    )
    np.testing.assert_allclose(jitted(x, segments).values, one.values, rtol=1e-5, atol=1e-6)
    mapped = jax.vmap(
        lambda x, s: xrai(model, x[None], target=0, segments=s[None], steps=4, min_pixel_diff=5).values[0]
    )(jnp.asarray(x), segments)
    np.testing.assert_allclose(
        mapped[1],
        xrai(model, x[1:], target=0, **{**settings, "segments": segments[1:]}).values[0],
        rtol=1e-5,
        atol=1e-6,
    )


def test_registered_and_documented():
    info = jaxplain.methods.registry.METHODS["xrai"]
    assert info.function is xrai and info.wraps and not info.randomized
    result = doctest.testmod(xrai_module, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0


def test_errors_name_the_argument():
    x = np.zeros((1, 3, 4), np.float32)
    model = linear(12)
    ok = {"target": 0, "base_attribution": A[None], "segments": SEGMENTS}
    cases = [
        (
            {"x": np.zeros((1, 12), np.float32), "model": linear(12), "base_attribution": np.zeros((1, 12))},
            ValueError,
            "x must be images",
        ),
        ({"segments": SEGMENTS[:, :, :2]}, ValueError, "segments must be masks of shape"),
        ({"segments": [SEGMENTS[0], SEGMENTS[0]]}, ValueError, "segments: 2 images"),
        ({"segments": "slic"}, TypeError, "segments must be a bool array"),
        ({"segments": SEGMENTS.astype(np.float32)}, TypeError, "segments must be bool"),
        ({"base_attribution": A}, ValueError, "base_attribution must be shaped like x"),
        ({"base_attribution": A[None] * np.nan}, ValueError, "base_attribution contains NaN"),
        ({"area_threshold": 1.5}, ValueError, "area_threshold"),
        ({"min_pixel_diff": 0}, ValueError, "min_pixel_diff"),
        ({"algorithm": "quick"}, ValueError, "algorithm must be one of"),
        ({"steps": 4}, TypeError, "with base_attribution none runs"),
        ({"target": np.array([[0, 1]])}, ValueError, "target: one class per example"),
        (
            {"base_attribution": None, "method": "kernel_shap"},
            TypeError,
            "method: xrai takes a deterministic",
        ),
        (
            {"base_attribution": None, "method": "saliency", "baselines": [0.0]},
            TypeError,
            "baselines: the base",
        ),
        ({"base_attribution": None, "baselines": "white"}, ValueError, "baselines must be one of"),
        ({"base_attribution": None, "baselines": [0.0], "baseline": 0.0}, TypeError, "once"),
        ({"base_attribution": None, "baselines": [np.zeros((2, 2))]}, ValueError, "baselines of shape"),
    ]
    for change, error, message in cases:
        arguments = {"model": model, "x": x, **ok, **change}
        with pytest.raises(error, match=message):
            xrai(arguments.pop("model"), arguments.pop("x"), **arguments)
    with pytest.raises(TypeError, match="scales must be"):
        xrai_segments(x, scales=50)
    with pytest.raises(ValueError, match="segment_shape"):
        xrai_segments(x, segment_shape=(8,))


def test_same_heat_map_as_pair_saliency_on_the_same_attribution_and_segments():
    """PAIR's XRAI (saliency.core.XRAI) given our segments and base attribution: the same
    heat map to float32 rounding (PAIR's gains are float32 means, ours float64 sums) and
    the same ranks, for both algorithms and a stop before the whole image."""
    core = pytest.importorskip("saliency.core")  # PAIR saliency is optional
    x, attribution = images(2, size=32, seed=3)
    segments = xrai_segments(x, scales=(20, 60, 150), min_size=10, segment_shape=None, dilation_radius=2)
    model = linear(x[0].size)
    for algorithm, area_threshold in (("full", 1.0), ("full", 0.4), ("fast", 1.0)):
        ours = xrai(
            model,
            x,
            target=0,
            base_attribution=attribution,
            segments=segments,
            min_pixel_diff=10,
            algorithm=algorithm,
            area_threshold=area_threshold,
        )
        for b in range(2):
            parameters = core.XRAIParameters(
                area_threshold=area_threshold, algorithm=algorithm, return_xrai_segments=True
            )
            parameters.experimental_params["min_pixel_diff"] = 10
            theirs = core.XRAI().GetMaskWithDetails(
                x[b],
                None,
                base_attribution=attribution[b],
                segments=list(segments[b]),
                extra_parameters=parameters,
            )
            scale = np.abs(theirs.attribution_mask).max()
            np.testing.assert_allclose(
                ours.values[b, ..., 0], theirs.attribution_mask, atol=1e-6 * scale, rtol=0
            )
            np.testing.assert_array_equal(ours.extras["ranks"][b], theirs.segments)
            assert theirs.segments.max() > 5  # many regions: the check is not vacuous


def test_same_segments_as_pair_saliency():
    """xrai_segments' defaults are PAIR's Felzenszwalb settings: the same masks (PAIR also
    lists the empty labels the resizing leaves; they never add a pixel)."""
    xrai_pair = pytest.importorskip("saliency.core.xrai")
    x, _ = images(1, size=32, seed=4)
    ours = xrai_segments(x)[0]
    theirs = np.array(xrai_pair._get_segments_felzenszwalb(x[0]))
    np.testing.assert_array_equal(ours[ours.any(axis=(1, 2))], theirs[theirs.any(axis=(1, 2))])
