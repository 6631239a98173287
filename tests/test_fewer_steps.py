"""Pilot schedules and steps="auto": exact rules, reductions to uniform rules, convergence,
the tolerance and the cap. The engine's guarantees (several targets, chunks, no retrace)
are checked for these schedules with every method in test_registry.py (its VARIANTS)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import linear_model, mlp_model

import jaxplain
from jaxplain import schedules
from jaxplain.methods import auto_steps

PILOTS = sorted(schedules.PILOT_SCHEDULES)
# In a program, as integrated_gradients calls it (op by op it compiled dozens of small programs).
pilot_schedule = jax.jit(schedules.pilot_schedule, static_argnums=(0, 2, 3))


def random_pilots(rng, rows=5, intervals=6):
    """Pilot outputs of every kind: rising, falling, flat stretches, one sharp jump, constant."""
    pilots = np.cumsum(rng.normal(size=(rows, intervals + 1)), axis=1)
    pilots[1, :3] = pilots[1, 0]  # flat start
    pilots[2] = np.where(np.arange(intervals + 1) > 3, 1.0, 0.0)  # a sigmoid saturating in one interval
    pilots[3] = 2.0  # constant
    return jnp.asarray(pilots, jnp.float32)


@pytest.mark.parametrize("name", PILOTS)
@pytest.mark.parametrize("points", [6, 7, 13, 40])
def test_pilot_weights_integrate_constants_and_linear_functions_exactly(name, points, rng):
    alphas, weights = map(np.asarray, pilot_schedule(name, random_pilots(rng), points))
    assert alphas.shape == weights.shape == (5, points)
    assert np.all((alphas > 0) & (alphas < 1)) and np.all(weights > 0)
    np.testing.assert_allclose(weights.sum(axis=1), 1.0, rtol=1e-6)
    np.testing.assert_allclose((weights * alphas).sum(axis=1), 0.5, rtol=1e-6)


def test_nonuniform_gives_every_interval_a_point_and_the_rest_by_change(rng):
    pilot = jnp.asarray([[0.0, 0.0, 3.0, 4.0, 4.0]])  # changes 0, 3, 1, 0
    alphas, weights = map(np.asarray, pilot_schedule("nonuniform", pilot, 8))
    counts = np.histogram(alphas[0], bins=np.linspace(0, 1, 5))[0]
    np.testing.assert_array_equal(counts, [1, 4, 2, 1])  # 1 each, then 4 more split 3 : 1
    # equal sub-intervals of each pilot interval, at their midpoints
    np.testing.assert_allclose(alphas[0, 1:5], 0.25 + (np.arange(4) + 0.5) / 16)
    np.testing.assert_allclose(weights[0, 1:5], 1 / 16)


def test_constant_pilot_gives_back_the_uniform_rules():
    constant = jnp.full((1, 5), 0.7)
    alphas, weights = pilot_schedule("nonuniform", constant, 12)
    expected = schedules.riemann_middle(12)
    np.testing.assert_allclose(alphas[0], expected[0], atol=1e-7)
    np.testing.assert_allclose(weights[0], expected[1], atol=1e-7)
    # pilot_gauss: equal panels, each with the same Gauss-Legendre rule
    alphas, weights = pilot_schedule("pilot_gauss", constant, 12)
    size = schedules.PANEL_POINTS
    nodes, node_weights = schedules.gauss_legendre(size)
    panels = 12 // size
    np.testing.assert_allclose(alphas[0], (np.arange(panels)[:, None] + nodes).ravel() / panels, atol=1e-6)
    np.testing.assert_allclose(weights[0], np.tile(node_weights / panels, panels), atol=1e-7)


def test_pilot_gauss_panels_are_exact_for_polynomials_within_a_panel(rng):
    """On each panel the rule is Gauss-Legendre: exact up to degree 2 * PANEL_POINTS - 1."""
    alphas, weights = map(np.asarray, pilot_schedule("pilot_gauss", random_pilots(rng), 16))
    degree = 2 * schedules.PANEL_POINTS - 1
    np.testing.assert_allclose((weights * alphas**degree).sum(axis=1), 1 / (degree + 1), rtol=1e-5)


def sigmoid_model(sharpness):
    """F(x) = sigmoid(sharpness * (w . x - 2)) for class 0: saturates in a narrow stretch."""
    w = jnp.linspace(0.5, 1.5, 6)

    def apply(params, x):
        z = params["s"] * (x @ params["w"] - 2.0)
        return jnp.stack([jax.nn.sigmoid(z), -z], axis=1)

    return jaxplain.Model(apply, {"w": w, "s": jnp.asarray(sharpness, jnp.float32)}), w


def sigmoid_closed_form(x, w, sharpness):
    """IG from a zero baseline: x_i w_i (F(x) - F(0)) / (w . x), the exact integral."""
    z = x @ np.asarray(w)
    total = jax.nn.sigmoid(sharpness * (z - 2.0)) - jax.nn.sigmoid(-2.0 * sharpness)
    return np.asarray(x * np.asarray(w) * (total / z)[:, None])


# Error to the closed form at 256 points. Uniform midpoints converge very fast on this
# integrand (it vanishes smoothly at both ends); nonuniform's jumps in spacing between
# pilot intervals keep it second order, while pilot_gauss stays spectral.
CONVERGED = {"nonuniform": 3e-3, "pilot_gauss": 1e-5}


@pytest.mark.parametrize("name", PILOTS)
def test_pilot_schedules_beat_uniform_points_on_a_saturating_model(name, rng):
    model, w = sigmoid_model(20.0)
    x = rng.uniform(0.5, 1.5, size=(8, 6)).astype(np.float32)
    exact = sigmoid_closed_form(x, w, 20.0)

    def error(schedule, steps=32):
        a = jaxplain.integrated_gradients(model, x, target=0, steps=steps, schedule=schedule)
        return np.linalg.norm(np.asarray(a.values) - exact) / np.linalg.norm(exact)

    assert error(name) < 0.5 * error("riemann_middle")
    assert error(name, steps=256) < CONVERGED[name]


@pytest.mark.parametrize("name", PILOTS)
def test_pilot_schedules_match_a_slow_float64_transcription(name, rng):
    """Pilot outputs and point placement done by hand in float64, gradients by jax.grad."""
    model = mlp_model(features=4)
    x = rng.normal(size=(3, 4)).astype(np.float32)
    steps, pilot_steps = 10, 3
    a = jaxplain.integrated_gradients(model, x, target=1, steps=steps, schedule=name, pilot_steps=pilot_steps)
    for b in range(3):

        def score(z):
            return model(z[None])[0, 1]

        pilot = jnp.asarray([[float(score(alpha * x[b])) for alpha in schedules.pilot_alphas(pilot_steps)]])
        alphas, weights = map(np.asarray, pilot_schedule(name, pilot, steps, pilot_steps))
        total = sum(
            w * np.asarray(jax.grad(score)(alpha * x[b]), np.float64)
            for alpha, w in zip(alphas[0], weights[0])
        )
        np.testing.assert_allclose(a.values[b], x[b] * total, rtol=2e-5, atol=1e-6)


@pytest.mark.parametrize("name", PILOTS + ["auto"])
def test_linear_model_is_exact(name, rng):
    weights = rng.normal(size=(5, 3)).astype(np.float32)
    model = linear_model(weights)
    x, baseline = rng.normal(size=(4, 5)).astype(np.float32), rng.normal(size=(4, 5)).astype(np.float32)
    options = {"steps": "auto"} if name == "auto" else {"steps": 9, "schedule": name}
    a = jaxplain.integrated_gradients(model, x, target=[0, 2, 1, 2], baseline=baseline, **options)
    np.testing.assert_allclose(a.values, weights[:, [0, 2, 1, 2]].T * (x - baseline), rtol=1e-5, atol=1e-6)


def test_auto_reaches_the_tolerance_and_reports_the_steps(rng):
    model, w = sigmoid_model(20.0)
    x = rng.uniform(0.5, 1.5, size=(8, 6)).astype(np.float32)
    exact = sigmoid_closed_form(x, w, 20.0)
    loose = jaxplain.integrated_gradients(model, x, target=0, steps="auto", tolerance=0.02)
    tight = jaxplain.integrated_gradients(model, x, target=0, steps="auto", tolerance=3e-4)
    for a, tolerance in ((loose, 0.02), (tight, 3e-4)):
        assert np.all(np.asarray(a.relative_delta) <= tolerance)
        assert np.all(np.asarray(a.extras["converged"]))
        assert np.all(np.asarray(a.extras["steps"]) < 1024)
    assert np.all(np.asarray(tight.extras["steps"]) >= np.asarray(loose.extras["steps"]))
    assert np.mean(np.asarray(tight.extras["steps"])) > np.mean(np.asarray(loose.extras["steps"]))
    error = np.linalg.norm(np.asarray(tight.values) - exact) / np.linalg.norm(exact)
    assert error < 1e-3


def test_auto_stops_at_the_cap_and_says_so(rng):
    """A ReLU network's kinks need many points for a tolerance of 1e-7: the cap stops it."""
    model = mlp_model(features=4)
    relu = jaxplain.Model(lambda p, x: model.apply_fn(p, jnp.abs(x - 0.3) * 3.0), model.params)
    x = rng.normal(size=(3, 4)).astype(np.float32)
    a = jaxplain.integrated_gradients(relu, x, target=0, steps="auto", tolerance=1e-7, max_steps=40)
    steps = np.asarray(a.extras["steps"])
    cap = auto_steps.INITIAL_INTERVALS + auto_steps.rounds(40) * 2 * auto_steps.SPLITS
    np.testing.assert_array_equal(steps, cap)
    assert cap <= 40
    assert not np.any(np.asarray(a.extras["converged"]))


def test_auto_converges_on_a_model_with_a_single_kink(rng):
    """Only one interval has a gap: the other cuts must not pick empty slots and stall."""
    w = jnp.linspace(0.5, 1.5, 4)
    model = jaxplain.Model(lambda p, x: jnp.stack([jax.nn.relu(x @ p - 1.0), x @ p], 1), w)
    x = rng.uniform(0.5, 1.0, size=(3, 4)).astype(np.float32)
    a = jaxplain.integrated_gradients(model, x, target=0, steps="auto", tolerance=1e-5)
    assert np.all(np.asarray(a.extras["converged"]))
    assert np.all(np.asarray(a.relative_delta) <= 1e-5)
    z = x @ np.asarray(w)  # exact: w_i x_i (z - 1) / z for z > 1
    np.testing.assert_allclose(a.values, x * np.asarray(w) * ((z - 1) / z)[:, None], rtol=1e-4, atol=1e-6)


def test_auto_examples_stop_separately(rng):
    """A linear example converges at once while a saturating one keeps refining."""
    model, _ = sigmoid_model(30.0)
    x = np.stack([np.full(6, 1e-3), rng.uniform(0.5, 1.5, size=6)]).astype(np.float32)
    a = jaxplain.integrated_gradients(model, x, target=0, steps="auto", tolerance=1e-3)
    steps = np.asarray(a.extras["steps"])
    assert steps[0] == auto_steps.INITIAL_INTERVALS < steps[1]


@pytest.mark.parametrize(
    "options, error, match",
    [
        (
            {"schedule": "nonuniform", "steps": 4, "pilot_steps": 5},
            ValueError,
            "pilot_steps must be <= steps",
        ),
        ({"schedule": "nonuniform", "pilot_steps": 0}, ValueError, "pilot_steps must be >= 1"),
        (
            {"schedule": "gauss_legendre", "pilot_steps": 4},
            ValueError,
            "pilot_steps is used by the pilot schedules",
        ),
        ({"steps": "auto", "schedule": "riemann_left"}, ValueError, "steps='auto' chooses its own points"),
        ({"steps": "auto", "tolerance": 1.5}, ValueError, "tolerance must be in"),
        ({"steps": "auto", "max_steps": 0}, ValueError, "max_steps must be >= 1"),
        ({"steps": "many"}, ValueError, "steps must be a positive int or 'auto'"),
        ({"schedule": "magic"}, ValueError, "schedule must be one of"),
    ],
)
def test_bad_settings_are_named(options, error, match, rng):
    with pytest.raises(error, match=match):
        jaxplain.integrated_gradients(
            mlp_model(features=5), rng.normal(size=(2, 5)).astype(np.float32), target=0, **options
        )
