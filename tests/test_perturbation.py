"""Perturbation methods: closed forms, a float64 Shapley reference, convergence, invariances."""

import functools
import itertools
import math
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import TinyCNN, linear_model, mlp_model

import jaxplain
from jaxplain.methods import perturbation
from jaxplain.methods.registry import METHODS

KEY = jax.random.key(0)
MASK = np.array([0, 0, 1, 2, 2])  # 5 features in 3 groups

# Small settings that keep every method's program cheap to compile (x is (4, 5)): 3 to 8
# points per example.
CASES = {
    "occlusion": dict(window=(2,), stride=1),
    "feature_ablation": dict(feature_mask=MASK),
    "exact_shapley": dict(feature_mask=MASK),
    "shapley_sampling": dict(samples=2, feature_mask=MASK),
    "kernel_shap": dict(samples=6),
    "lime": dict(samples=6, feature_mask=MASK),
}
SHAPLEY = ("exact_shapley", "shapley_sampling", "kernel_shap")
MODEL = mlp_model(features=5, num_classes=4)
X = np.random.default_rng(2).normal(size=(4, 5)).astype(np.float32)


def explain(name, model, x, **kwargs):
    settings = {**CASES[name], **kwargs}
    if METHODS[name].randomized:
        settings.setdefault("key", KEY)
    return getattr(perturbation, name)(model, x, **settings)


def contributions(weights, x, baseline, target):
    """w_i (x_i - b_i) of a linear model: its exact attribution per feature."""
    return weights[:, target].T * (x - baseline)


def group_sums(values, mask):
    """Every feature gets the sum of `values` over its group (last axis)."""
    sums = np.stack([values[..., mask == g].sum(axis=-1) for g in range(mask.max() + 1)], -1)
    return sums[..., mask]


def test_all_methods_are_registered():
    registered = {name for name, info in METHODS.items() if info.family == "perturbation"}
    assert set(CASES) <= registered
    assert {name for name in CASES if METHODS[name].randomized} == {"shapley_sampling", "kernel_shap", "lime"}


# --- closed forms on linear and additive models ------------------------------------------


@pytest.mark.parametrize(
    "name", ["feature_ablation", "exact_shapley", "shapley_sampling", "kernel_shap", "lime"]
)
@pytest.mark.parametrize("mask", [None, MASK], ids=["features", "groups"])
def test_linear_model_gives_group_sums_of_weight_times_difference(name, mask, rng):
    # On a linear model every group's marginal contribution is the same in every
    # coalition, so ablation, Shapley values (exact or sampled: every sample is exact)
    # and LIME's unpenalised linear fit (v(z) is exactly linear in z) all equal it, up
    # to float32 rounding.
    weights = rng.normal(size=(5, 3)).astype(np.float32)
    model = linear_model(weights, rng.normal(size=3).astype(np.float32))
    x = rng.normal(size=(4, 5)).astype(np.float32)
    baseline = rng.normal(size=(4, 5)).astype(np.float32)
    target = np.array([0, 2, 1, 2])
    sampled = {"samples": 200} if METHODS[name].randomized else {}
    a = explain(name, model, x, target=target, baseline=baseline, feature_mask=mask, **sampled)
    expected = contributions(weights, x, baseline, target)
    if mask is not None:
        expected = group_sums(expected, mask)
    np.testing.assert_allclose(a.values, expected, rtol=1e-4, atol=1e-5)
    if name != "feature_ablation":
        np.testing.assert_allclose(a.delta, 0.0, atol=1e-5)


def additive_model():
    """The true model of synthetic_additive as a 2-class model: logits (0, f(x))."""

    def logits(x):
        return jnp.stack([jnp.zeros(x.shape[0], x.dtype), jaxplain.data.additive_logit(x)], -1)

    return jaxplain.Model.from_callable(logits)


def test_exact_shapley_of_the_additive_model_is_known():
    data = jaxplain.data.load("synthetic_additive")
    x, baseline = data.x_test[:8], data.x_train[:8]
    a = perturbation.exact_shapley(additive_model(), x, target=1, baseline=baseline)
    expected = jaxplain.data.additive_shapley(x, baseline)
    np.testing.assert_allclose(a.values, expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(a.delta, 0.0, atol=1e-5)


def test_exact_shapley_is_efficient_on_an_mlp():
    a = perturbation.exact_shapley(MODEL, X, target="predicted", baseline=0.5)
    outputs_x, outputs_b = MODEL(jnp.asarray(X)), MODEL(jnp.full_like(X, 0.5))
    rows = np.arange(len(X))
    difference = outputs_x[rows, a.target] - outputs_b[rows, a.target]
    np.testing.assert_allclose(a.output_difference, difference, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(a.values.sum(axis=1), difference, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(a.delta, 0.0, atol=1e-5)


def slow_shapley(model, x, baseline, target, mask):
    """Independent reference: loops over groups and coalitions with the Shapley formula."""
    groups = mask.max() + 1
    outputs = jax.jit(model)

    @functools.cache
    def value(coalition):
        present = np.isin(mask, coalition)
        return np.asarray(outputs(jnp.asarray(np.where(present, x, baseline))))[np.arange(len(x)), target]

    phi = np.zeros((len(x), groups))
    for g in range(groups):
        others = [h for h in range(groups) if h != g]
        for size in range(groups):
            weight = math.factorial(size) * math.factorial(groups - size - 1) / math.factorial(groups)
            for coalition in itertools.combinations(others, size):
                phi[:, g] += weight * (value(tuple(sorted(coalition + (g,)))) - value(coalition))
    return phi[:, mask]


def test_exact_shapley_agrees_with_slow_float64_loop(rng):
    mask = np.array([0, 1, 1, 2, 3, 3])
    with jax.enable_x64(True):
        model = mlp_model(features=6, dtype=jnp.float64)
        x = rng.normal(size=(3, 6))
        baseline = rng.normal(size=(3, 6))
        target = np.array([2, 0, 1])
        a = perturbation.exact_shapley(
            model, x, target=target, baseline=baseline, feature_mask=mask, chunk_size=5
        )
        assert a.values.dtype == jnp.float64
        expected = slow_shapley(model, x, baseline, target, mask)
    np.testing.assert_allclose(a.values, expected, rtol=1e-6, atol=1e-9)


def test_occlusion_window_one_is_weight_times_difference(rng):
    weights = rng.normal(size=(5, 2)).astype(np.float32)
    x = rng.normal(size=(3, 5)).astype(np.float32)
    a = perturbation.occlusion(linear_model(weights), x, target=1, window=(1,), baseline=0.25)
    np.testing.assert_allclose(a.values, contributions(weights, x, 0.25, 1), rtol=1e-5, atol=1e-6)


def test_occlusion_overlapping_windows_average_their_differences(rng):
    # Window 2, stride 1 on a linear model: window s drops c_s + c_{s+1}, so inner
    # features get c_i + (c_{i-1} + c_{i+1}) / 2 and each end gets its one window.
    weights = rng.normal(size=(6, 2)).astype(np.float32)
    x = rng.normal(size=(3, 6)).astype(np.float32)
    c = contributions(weights, x, 0.0, 0)
    a = perturbation.occlusion(linear_model(weights), x, target=0, window=(2,), stride=1)
    expected = c.copy()
    expected[:, 1:-1] += (c[:, :-2] + c[:, 2:]) / 2
    expected[:, 0] += c[:, 1]
    expected[:, -1] += c[:, -2]
    np.testing.assert_allclose(a.values, expected, rtol=1e-5, atol=1e-6)


def test_occlusion_leaves_features_no_window_covers_at_zero(rng):
    weights = rng.normal(size=(5, 2)).astype(np.float32)
    x = rng.normal(size=(3, 5)).astype(np.float32)
    c = contributions(weights, x, 0.0, 0)
    a = perturbation.occlusion(linear_model(weights), x, target=0, window=(2,))  # starts 0, 2
    expected = np.concatenate(
        [
            np.repeat(c[:, 0:2].sum(1, keepdims=True), 2, 1),
            np.repeat(c[:, 2:4].sum(1, keepdims=True), 2, 1),
            np.zeros((3, 1)),
        ],
        axis=1,
    )
    np.testing.assert_allclose(a.values, expected, rtol=1e-5, atol=1e-6)


def test_occlusion_of_nhwc_images_sums_each_block_per_channel(rng):
    weights = rng.normal(size=(4 * 4 * 2, 3)).astype(np.float32)
    x = rng.normal(size=(2, 4, 4, 2)).astype(np.float32)
    a = perturbation.occlusion(linear_model(weights), x, target=2, window=(2, 2, 1))
    c = (weights[:, 2].reshape(4, 4, 2) * x).reshape(2, 2, 2, 2, 2, 2)  # (b, i, di, j, dj, ch)
    blocks = c.sum(axis=(2, 4), keepdims=True)
    expected = np.broadcast_to(blocks, c.shape).reshape(2, 4, 4, 2)
    np.testing.assert_allclose(a.values, expected, rtol=1e-5, atol=1e-5)


def slow_occlusion(model, x, target, window, stride):
    """Independent reference: a Python loop over window positions."""
    outputs = jax.jit(model)
    total, count = np.zeros(x.shape), np.zeros(x.shape[1:])
    at_x = np.asarray(outputs(jnp.asarray(x)))[:, target]
    ranges = [range(0, n - w + 1, s) for n, w, s in zip(x.shape[1:], window, stride)]
    for start in itertools.product(*ranges):
        box = tuple(slice(s, s + w) for s, w in zip(start, window))
        occluded = x.copy()
        occluded[(slice(None),) + box] = 0.0
        drop = at_x - np.asarray(outputs(jnp.asarray(occluded)))[:, target]
        total[(slice(None),) + box] += drop.reshape((-1,) + (1,) * len(window))
        count[box] += 1
    return np.where(count > 0, total / np.maximum(count, 1), 0.0)


def test_occlusion_agrees_with_slow_loop_on_a_cnn(rng):
    module = TinyCNN()
    model = jaxplain.Model.from_linen(module, module.init(jax.random.PRNGKey(1), jnp.zeros((1, 6, 6, 2))))
    x = rng.normal(size=(2, 6, 6, 2)).astype(np.float32)
    a = perturbation.occlusion(model, x, target=3, window=(3, 2, 1), stride=(1, 2, 1))
    expected = slow_occlusion(model, x, 3, (3, 2, 1), (1, 2, 1))
    np.testing.assert_allclose(a.values, expected, rtol=1e-4, atol=1e-5)


def test_feature_mask_broadcasts_over_an_axis(rng):
    # Images (3 rows, 4 columns): a mask of shape (1, 4) makes each column a group.
    weights = rng.normal(size=(12, 2)).astype(np.float32)
    x = rng.normal(size=(2, 3, 4)).astype(np.float32)
    a = perturbation.feature_ablation(
        linear_model(weights), x, target=1, feature_mask=np.array([[0, 1, 2, 3]])
    )
    columns = (weights[:, 1].reshape(3, 4) * x).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(a.values, np.broadcast_to(columns, x.shape), rtol=1e-5, atol=1e-6)


def test_lime_intercept_is_the_output_at_the_baseline(rng):
    weights = rng.normal(size=(5, 2)).astype(np.float32)
    model = linear_model(weights, np.array([0.5, -1.0], np.float32))
    x = rng.normal(size=(3, 5)).astype(np.float32)
    a = perturbation.lime(model, x, target=1, baseline=0.5, samples=100, key=KEY)
    np.testing.assert_allclose(a.extras["intercept"], model(jnp.full_like(x, 0.5))[:, 1], atol=1e-5)


# --- sampling estimators converge to the exact values ------------------------------------


@pytest.fixture(scope="module")
def nonlinear():
    """An MLP, inputs whose Shapley values are far from linear, and the exact values."""
    model = mlp_model(features=6)
    x = 2.0 * np.random.default_rng(1).normal(size=(32, 6)).astype(np.float32)
    return model, x, np.asarray(perturbation.exact_shapley(model, x, target=0).values)


def mean_error(values, exact):
    return float(np.linalg.norm(np.asarray(values) - exact, axis=1).mean())


@pytest.mark.parametrize("name, many", [("shapley_sampling", 512), ("kernel_shap", 2048)])
def test_sampling_estimators_converge_to_exact_shapley(name, many, nonlinear):
    model, x, exact = nonlinear
    scale = float(np.linalg.norm(exact, axis=1).mean())
    method = getattr(perturbation, name)
    rough = mean_error(method(model, x, target=0, samples=16, key=KEY).values, exact)
    fine = method(model, x, target=0, samples=many, key=KEY)
    assert mean_error(fine.values, exact) < rough / 4
    assert mean_error(fine.values, exact) < 0.03 * scale
    np.testing.assert_allclose(fine.delta, 0.0, atol=1e-5)


@pytest.mark.parametrize("name, flag", [("shapley_sampling", "antithetic"), ("kernel_shap", "paired")])
def test_mirrored_draws_beat_plain_draws_at_equal_samples(name, flag, nonlinear):
    model, x, exact = nonlinear
    method = getattr(perturbation, name)

    def error(mirrored):
        keys = [jax.random.key(seed) for seed in range(3)]
        return np.mean(
            [
                mean_error(method(model, x, target=0, samples=16, key=k, **{flag: mirrored}).values, exact)
                for k in keys
            ]
        )

    assert error(True) < 0.8 * error(False)


def test_shapley_sampling_standard_error_matches_its_error(nonlinear):
    model, x, exact = nonlinear
    # Plain orders (no reverses): the standard error then comes from 16 independent draws.
    a = perturbation.shapley_sampling(model, x, target=0, samples=16, antithetic=False, key=KEY)
    standardized = (np.asarray(a.values) - exact) / np.asarray(a.extras["standard_error"])
    assert 0.7 < np.sqrt(np.mean(standardized**2)) < 1.5


# --- efficiency --------------------------------------------------------------------------
# Chunk-size invariance, several targets, no retrace and same key same result are checked
# for every method in test_registry.py.


@pytest.mark.parametrize("name", SHAPLEY)
def test_shapley_estimates_are_efficient_even_with_a_few_samples(name):
    a = explain(name, MODEL, X, target=[[0, 3]])
    assert a.values.shape == (4, 2, 5)
    np.testing.assert_allclose(a.delta, 0.0, atol=1e-5)


# --- bad arguments ------------------------------------------------------------------------

LINEAR = linear_model(np.ones((4, 2), np.float32))
X4 = np.ones((3, 4), np.float32)
P = perturbation


@pytest.mark.parametrize(
    "error, match, call",
    [
        (TypeError, "window must be a tuple of ints", lambda: P.occlusion(LINEAR, X4, target=0, window=2)),
        (
            ValueError,
            "window has 2 sizes but x of shape \\(3, 4\\) has 1",
            lambda: P.occlusion(LINEAR, X4, target=0, window=(2, 2)),
        ),
        (
            ValueError,
            "window \\(5,\\) is larger than one example",
            lambda: P.occlusion(LINEAR, X4, target=0, window=(5,)),
        ),
        (ValueError, "window must be >= 1", lambda: P.occlusion(LINEAR, X4, target=0, window=(0,))),
        (
            ValueError,
            "stride must be >= 1 on every axis, got \\(0,\\)",
            lambda: P.occlusion(LINEAR, X4, target=0, window=(2,), stride=0),
        ),
        (
            ValueError,
            "stride has 2 sizes",
            lambda: P.occlusion(LINEAR, X4, target=0, window=(2,), stride=(1, 1)),
        ),
        (
            ValueError,
            "baseline of shape \\(5,\\)",
            lambda: P.occlusion(LINEAR, X4, target=0, window=(2,), baseline=np.zeros(5)),
        ),
        (ValueError, "target holds 2", lambda: P.feature_ablation(LINEAR, X4, target=2)),
        (
            TypeError,
            "feature_mask must hold integer group ids, got dtype float",
            lambda: P.feature_ablation(LINEAR, X4, target=0, feature_mask=np.zeros(4)),
        ),
        (
            ValueError,
            "feature_mask of shape \\(3,\\) cannot be broadcast to one example of x, shape \\(4,\\)",
            lambda: P.lime(LINEAR, X4, target=0, feature_mask=np.arange(3), key=KEY),
        ),
        (
            ValueError,
            "feature_mask must number its groups 0..G-1.*got the ids 0, 2",
            lambda: P.exact_shapley(LINEAR, X4, target=0, feature_mask=np.array([0, 2, 2, 0])),
        ),
        (
            ValueError,
            "feature_mask must number its groups 0..G-1.*got the ids -1, 0, 1",
            lambda: P.kernel_shap(LINEAR, X4, target=0, feature_mask=np.array([-1, 0, 1, 1]), key=KEY),
        ),
        (
            ValueError,
            "exact_shapley .* at most 16 groups, but feature_mask=None makes each of the 17 features of x",
            lambda: P.exact_shapley(
                linear_model(np.ones((17, 2), np.float32)), np.ones((1, 17), np.float32), target=0
            ),
        ),
        (
            ValueError,
            "at most 16 groups, but feature_mask has 20 groups",
            lambda: P.exact_shapley(
                linear_model(np.ones((20, 2), np.float32)),
                np.ones((1, 20), np.float32),
                target=0,
                feature_mask=np.arange(20),
            ),
        ),
        (ValueError, "samples must be >= 1, got 0", lambda: P.lime(LINEAR, X4, target=0, samples=0, key=KEY)),
        (
            TypeError,
            "samples must be an int",
            lambda: P.kernel_shap(LINEAR, X4, target=0, samples=10.0, key=KEY),
        ),
        (
            ValueError,
            "samples must be even with antithetic=True",
            lambda: P.shapley_sampling(LINEAR, X4, target=0, samples=3, key=KEY),
        ),
        (
            ValueError,
            "samples must be even with paired=True",
            lambda: P.kernel_shap(LINEAR, X4, target=0, samples=5, key=KEY),
        ),
        (
            TypeError,
            "antithetic must be True or False",
            lambda: P.shapley_sampling(LINEAR, X4, target=0, antithetic="yes", key=KEY),
        ),
        (
            ValueError,
            "kernel_shap needs at least 2 groups",
            lambda: P.kernel_shap(LINEAR, X4, target=0, feature_mask=np.zeros(4, int), key=KEY),
        ),
        (
            ValueError,
            "kernel_width must be a finite number > 0.0, got 0",
            lambda: P.lime(LINEAR, X4, target=0, kernel_width=0, key=KEY),
        ),
        (TypeError, "key is required", lambda: P.shapley_sampling(LINEAR, X4, target=0, key=None)),
        (TypeError, "key must be a single", lambda: P.lime(LINEAR, X4, target=0, key=0)),
        (
            ValueError,
            "chunk_size must be >= 1, got 0",
            lambda: P.exact_shapley(LINEAR, X4, target=0, chunk_size=0),
        ),
        (
            ValueError,
            "x contains NaN",
            lambda: P.occlusion(LINEAR, np.full((3, 4), np.nan), target=0, window=(1,)),
        ),
    ],
)
def test_bad_input_is_named(error, match, call):
    with pytest.raises(error, match=match):
        call()


def test_docstring_examples():
    import doctest

    result = doctest.testmod(perturbation, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0


@pytest.mark.slow  # end to end: a race, in a subprocess at the size that hit it
def test_two_least_squares_fits_in_one_program_do_not_deadlock():
    """sensitivity_max of lime / kernel_shap: the clean and the perturbed fits run at once.

    Batched LAPACK SVDs that ran concurrently deadlocked XLA's CPU thread pool on a
    2-core machine (a race: about one run in two at this size). Run in a subprocess so
    that a hang fails the test instead of stalling the suite.
    """
    import subprocess
    import sys
    import textwrap

    script = textwrap.dedent("""
        import functools, jax, jaxplain
        model = jaxplain.load_model("checkpoints/digits_cnn")
        x = jaxplain.data.load("digits").x_test[:32]
        groups = jaxplain.patch_mask((8, 8, 1), (2, 2, 1))
        for name in ("lime", "kernel_shap"):
            method = functools.partial(getattr(jaxplain, name), feature_mask=groups, samples=512)
            for i in range(4):
                jaxplain.metrics.sensitivity_max(method, model, x, target="predicted",
                                                 key=jax.random.key(i), samples=2).block_until_ready()
    """)
    root = pathlib.Path(__file__).resolve().parents[1]
    try:
        subprocess.run([sys.executable, "-c", script], cwd=root, check=True, timeout=180, capture_output=True)
    except subprocess.TimeoutExpired:
        pytest.fail("two least-squares fits in one program hung")
