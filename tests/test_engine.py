"""The engine on its own: weighted sums over point sets, chunking, the memory budget."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import mlp_model

import jaxplain
from jaxplain import engine
from jaxplain.backends import cpu


def _per_point_reference(model, x, targets, points, weights):
    """sum_k weights[k, b] * grad F_t(points[k, b]), one point at a time."""
    total = 0.0
    for k in range(points.shape[0]):

        def score(p):
            return jnp.take_along_axis(model(p), targets, axis=1).sum()

        total = total + weights[k][:, None] * jax.grad(score)(points[k])
    return total


@pytest.mark.parametrize("chunk_size", [1, 3, 4, 11])
def test_path_gradients_with_per_example_weights(chunk_size, rng):
    model = mlp_model(features=5)
    x = jnp.asarray(rng.normal(size=(3, 5)), jnp.float32)
    offsets = jnp.asarray(rng.normal(size=(11, 5)), jnp.float32)
    weights = jnp.asarray(rng.uniform(size=(11, 3)), jnp.float32)
    targets = jnp.array([[0], [2], [1]], jnp.int32)
    total, outputs = jax.jit(
        lambda x: engine.path_gradients(
            model, x, targets, lambda o, x: x + o, offsets, weights, chunk_size=chunk_size
        )
    )(x)
    points = x[None] + offsets[:, None]
    expected = _per_point_reference(model, x, targets, points, weights)
    np.testing.assert_allclose(total[:, 0], expected, rtol=1e-5, atol=1e-6)
    chosen = jnp.take_along_axis(jax.vmap(model)(points), targets[None], axis=2)[..., 0]
    np.testing.assert_allclose(outputs[..., 0], chosen.T, rtol=1e-6)


def test_default_chunk_size_follows_the_memory_budget(monkeypatch, rng):
    model = mlp_model(features=5)
    x = np.zeros((4, 5), np.float32)
    monkeypatch.setenv("JAXPLAIN_CHUNK_BYTES", "1")
    assert engine.default_chunk_size(model, x, 50) == 1
    monkeypatch.setenv("JAXPLAIN_CHUNK_BYTES", str(1 << 30))
    assert engine.default_chunk_size(model, x, 50) == 50
    # A budget for 40 rows of 4 examples: ten points per chunk.
    per_row = engine.default_chunk_size.__globals__["_bytes_per_row"](model, (5,), jnp.float32)
    monkeypatch.setenv("JAXPLAIN_CHUNK_BYTES", str(40 * per_row))
    assert engine.default_chunk_size(model, x, 50) == 10


def test_cpu_default_chunk_is_a_fixed_amount_of_work_not_a_share_of_the_points(monkeypatch):
    if jax.default_backend() != "cpu":
        pytest.skip("the cap applies on the CPU")
    model = mlp_model(features=5)
    monkeypatch.setenv("JAXPLAIN_CHUNK_BYTES", str(1 << 40))
    per_row = engine._bytes_per_row(model, (5,), jnp.float32)
    for batch in (4, 64, 256):
        x = np.zeros((batch, 5), np.float32)
        rows = max(-(-cpu.CHUNK_ROWS // batch), cpu.CHUNK_BYTES // (per_row * batch))
        # memory flat in the steps: the same chunk for 10x more points
        assert (
            engine.default_chunk_size(model, x, 100_000)
            == engine.default_chunk_size(model, x, 1_000_000)
            == rows
        )
        assert engine.default_chunk_size(model, x, 3) == 3  # never more points than asked for
        assert rows * batch >= cpu.CHUNK_ROWS


def test_cpu_default_chunk_keeps_at_most_its_byte_ceiling_and_one_point(monkeypatch):
    if jax.default_backend() != "cpu":
        pytest.skip("the ceiling applies on the CPU")
    model = mlp_model(features=5)
    monkeypatch.setenv("JAXPLAIN_CHUNK_BYTES", str(1 << 40))
    x = np.zeros((8, 5), np.float32)
    for per_row, points in ((2 << 20, 16), (100 << 20, 1), (1 << 40, 1)):
        monkeypatch.setattr(engine, "_row_bytes", lambda *args, per_row=per_row, **kwargs: per_row)
        size = engine.default_chunk_size(model, x, 1000)
        assert size == points
        assert size == 1 or size * 8 * per_row <= cpu.CHUNK_MAX_BYTES


def test_saved_activations_per_row_are_measured():
    # Two tanh layers of width 16 and a softplus layer: each row keeps at least 16 floats.
    model = mlp_model(features=5)
    per_row = engine._bytes_per_row(model, (5,), jnp.float32)
    assert 16 * 4 <= per_row <= 4096


def test_bfloat16_inputs_accumulate_in_float32(rng):
    x = rng.normal(size=(4, 5))
    low = jaxplain.integrated_gradients(
        mlp_model(features=5, dtype=jnp.bfloat16), jnp.asarray(x, jnp.bfloat16), target=0, steps=32
    )
    full = jaxplain.integrated_gradients(
        mlp_model(features=5), jnp.asarray(x, jnp.float32), target=0, steps=32
    )
    assert low.values.dtype == jnp.float32
    error = jnp.linalg.norm(low.values - full.values) / jnp.linalg.norm(full.values)
    assert float(error) < 0.05  # bfloat16 keeps ~3 significant digits per gradient


def _temp_bytes(model, x, steps, chunk_size):
    from jaxplain import _checks
    from jaxplain.methods.integrated import _integrated_gradients

    x, targets = _checks.prepare(model, x, 0)
    compiled = _integrated_gradients.lower(
        model, x, 0.0, targets, steps=steps, schedule="gauss_legendre", chunk_size=chunk_size
    ).compile()
    analysis = compiled.memory_analysis()
    if analysis is None:
        pytest.skip("this backend reports no memory analysis")
    return analysis.temp_size_in_bytes


def test_peak_memory_is_set_by_the_chunk_not_the_steps():
    model = mlp_model(features=256)
    x = np.ones((8, 256), np.float32)
    small_chunk_many_steps = _temp_bytes(model, x, steps=1024, chunk_size=8)  # a loop
    one_chunk_few_steps = _temp_bytes(model, x, steps=64, chunk_size=64)
    assert small_chunk_many_steps < one_chunk_few_steps / 2
    unrolled = _temp_bytes(model, x, steps=128, chunk_size=8)  # 16 chunks, one after another
    assert engine.max_unrolled_chunks() < 16 or unrolled < one_chunk_few_steps / 2
    # 32x the steps at the same chunk: only the per-point target outputs grow (4 bytes each)
    growth = small_chunk_many_steps - _temp_bytes(model, x, steps=32, chunk_size=8)
    assert growth <= 2 * 4 * 8 * 1024


def test_chunks_that_do_not_fit_together_run_one_at_a_time(monkeypatch):
    """A few chunks are unrolled on the CPU only when all of them fit the budget at once:
    XLA:CPU keeps every unrolled chunk's buffers, so a CNN's memory grew with the steps."""
    module = jaxplain.models.SmallCNN(num_classes=10)  # unrolled: 3.0x one chunk's memory
    model = jaxplain.Model.from_linen(module, module.init(jax.random.PRNGKey(0), jnp.zeros((1, 8, 8, 1))))
    x = np.ones((16, 8, 8, 1), np.float32)
    rows = 16 * 64
    per_row = engine._row_bytes(model, jnp.asarray(x))
    monkeypatch.setenv("JAXPLAIN_CHUNK_BYTES", str(per_row * rows // 2))  # 64 points do not fit
    assert not engine.fits_at_once(model, x, rows)
    one_chunk = _temp_bytes(model, x, steps=16, chunk_size=16)
    four_chunks = _temp_bytes(model, x, steps=64, chunk_size=16)
    assert four_chunks < 1.3 * one_chunk
    monkeypatch.setenv("JAXPLAIN_CHUNK_BYTES", str(per_row * rows * 2))
    assert engine.fits_at_once(model, x, rows)


@pytest.mark.parametrize("chunk_size", [1, 4, 11])
def test_path_outputs_equal_direct_evaluation(chunk_size, rng):
    model = mlp_model(features=5, num_classes=4)
    x = jnp.asarray(rng.normal(size=(3, 5)), jnp.float32)
    offsets = jnp.asarray(rng.normal(size=(11, 5)), jnp.float32)
    targets = jnp.array([[0, 3], [2, 2], [1, 0]], jnp.int32)
    outputs = jax.jit(
        lambda x: engine.path_outputs(model, x, targets, lambda o, x: x + o, offsets, chunk_size=chunk_size)
    )(x)
    direct = jax.vmap(model)(x[None] + offsets[:, None])  # (K, B, C)
    expected = jnp.take_along_axis(direct.transpose(1, 0, 2), targets[:, None, :], axis=2)
    np.testing.assert_allclose(outputs, expected, rtol=1e-6)


def test_contribution_fn_and_context(rng):
    """Expected-gradients-like weighting: each gradient times its own (x - b_k)."""
    model = mlp_model(features=4)
    x = jnp.asarray(rng.normal(size=(2, 4)), jnp.float32)
    baselines = jnp.asarray(rng.normal(size=(5, 4)), jnp.float32)
    targets = jnp.array([[1], [0]], jnp.int32)
    total, _ = jax.jit(
        lambda x: engine.path_gradients(  # in a program, as the methods call it
            model,
            x,
            targets,
            lambda b, x: 0.5 * (x + b),
            baselines,
            jnp.full(5, 0.2),
            chunk_size=2,
            contribution_fn=lambda b, x, g: g * (x[:, None, None] - b[None, :, None]),
        )
    )(x)
    expected = 0.0
    for b in baselines:
        g = jax.grad(lambda p: jnp.take_along_axis(model(p), targets, axis=1).sum())(0.5 * (x + b))
        expected = expected + 0.2 * g * (x - b)
    np.testing.assert_allclose(total[:, 0], expected, rtol=1e-5, atol=1e-7)

    # a model that reads a per-example context it does not differentiate
    weights = jnp.asarray(rng.normal(size=(4, 3)), jnp.float32)
    two_input = jaxplain.Model(lambda w, pc: (pc[0] * pc[1]) @ w, weights)
    scale = jnp.asarray(rng.uniform(1, 2, size=(2, 4)), jnp.float32)
    total, _ = jax.jit(
        lambda x: engine.path_gradients(
            two_input,
            x,
            targets,
            lambda a, x: a * x,
            jnp.array([0.5, 1.0]),
            jnp.ones(2),
            chunk_size=1,
            context=scale,
        )
    )(x)
    np.testing.assert_allclose(total[:, 0], 2 * scale * weights[:, targets[:, 0]].T, rtol=1e-5)


def test_programs_compile_with_the_cpu_options_and_give_the_same_answer(rng):
    """jaxplain's CPU options change XLA's kernels, not the answer; nested calls still work."""
    if jax.default_backend() != "cpu":
        pytest.skip("the options are for XLA:CPU")
    assert cpu.compiler_options() == cpu.COMPILER_OPTIONS
    assert not engine.convolutional(
        jaxplain.load_model("checkpoints/wine_mlp")
    )  # dense models keep the defaults
    assert cpu.compiler_options(convolutional=False) == {}
    model = jaxplain.load_model("checkpoints/digits_cnn")
    assert engine.convolutional(model)
    x = jnp.asarray(jaxplain.data.load("digits").x_test[:3])
    tuned = jaxplain.integrated_gradients(model, x, target=0, steps=16).values
    plain = jax.jit(lambda x: jaxplain.integrated_gradients(model, x, target=0, steps=16).values)(x)
    np.testing.assert_allclose(tuned, plain, rtol=1e-5, atol=1e-6)
    # Under a caller's transformation the body is staged into the caller's program.
    grad = jax.grad(lambda x: jaxplain.saliency(model, x, target=0).values.sum())(x)
    assert grad.shape == x.shape and bool(jnp.all(jnp.isfinite(grad)))


def test_staging_is_detected_through_jax_public_trace_state():
    """`cpu.top_level` reads `jax.extend.core.get_opaque_trace_state`: if a JAX release
    drops it, every program silently loses the CPU options, so fail here instead."""
    from jax.extend.core import get_opaque_trace_state  # noqa: F401 - must exist

    assert cpu._trace_state is not None
    assert cpu.top_level((jnp.ones(2),))
    seen = {}

    def record(name):
        def function(x):
            seen[name] = cpu.top_level(())
            return x

        return function

    jax.jit(record("jit"))(1.0)
    jax.grad(record("grad"))(1.0)
    jax.vmap(record("vmap"))(jnp.ones(2))
    assert seen == {"jit": False, "grad": False, "vmap": False}
    assert cpu.top_level(())


def test_cpu_options_can_be_turned_off(monkeypatch):
    monkeypatch.setenv("JAXPLAIN_XLA_CPU_OPTIONS", "default")
    assert cpu.compiler_options() == {}
    assert cpu.tuned() == (jax.default_backend() == "cpu")  # the other tuning stays
    monkeypatch.delenv("JAXPLAIN_XLA_CPU_OPTIONS")
    if jax.default_backend() == "cpu":
        assert cpu.compiler_options() != {}


def test_one_switch_turns_all_cpu_tuning_off(monkeypatch):
    """JAXPLAIN_CPU_TUNING=off: no compiler options, no CPU chunk caps or unrolling, no
    CPU lowerings in the zoo; the same answer."""
    model = jaxplain.load_model("checkpoints/digits_cnn")
    x = jnp.asarray(jaxplain.data.load("digits").x_test[:2])
    budget_only = int(max(1, min(256, engine.chunk_budget_bytes() // engine._row_bytes(model, x) // 2)))
    tuned = jaxplain.integrated_gradients(model, x, target=0, steps=256).values
    monkeypatch.setenv("JAXPLAIN_CPU_TUNING", "off")
    assert not cpu.tuned()
    assert cpu.compiler_options() == {}
    assert cpu.chunk_points(1000, 2) is None
    assert engine.max_unrolled_chunks() == 1
    assert not cpu.rewrite_convolutions() and not cpu.polyphase_max_pool()
    assert engine.default_chunk_size(model, x, 256) == budget_only
    plain = jaxplain.integrated_gradients(model, x, target=0, steps=256).values
    np.testing.assert_allclose(plain, tuned, rtol=1e-4, atol=1e-5)
    monkeypatch.delenv("JAXPLAIN_CPU_TUNING")
    assert cpu.tuned() == (jax.default_backend() == "cpu")


def test_unknown_options_fall_back_to_xla_defaults(monkeypatch):
    monkeypatch.setattr(cpu, "COMPILER_OPTIONS", {"xla_cpu_no_such_option_anywhere": ""})
    assert cpu.compiler_options() == {}


def test_model_facts_are_found_once_per_model_and_not_kept_for_traced_models():
    small, wide = mlp_model(features=5), mlp_model(features=7)
    assert engine._model_facts(small) is engine._model_facts(small)
    assert engine._model_facts(small)[1] != engine._model_facts(wide)[1]
    cached = len(engine._MODEL_FACTS)

    @jax.jit
    def traced(model):
        engine._model_facts(model)
        return model(jnp.zeros((1, 5)))

    traced(small)
    assert len(engine._MODEL_FACTS) == cached
    del wide
    import gc

    gc.collect()
    assert len(engine._MODEL_FACTS) == cached - 1  # weakly held
