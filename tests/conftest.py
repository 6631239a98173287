"""Small models shared by the tests, and a compilation cache kept between runs."""

import collections
import gc
import os
import shutil

# Most of a test run is XLA compiling small programs that then run for milliseconds: at
# LLVM optimisation level 0 the same programs compile about a third faster and give the
# same values within the tests' tolerances. Set before JAX starts its CPU backend; a
# level in the caller's XLA_FLAGS wins (JAXPLAIN_TEST_XLA_OPT=default keeps XLA's own).
if os.environ.get("JAXPLAIN_TEST_XLA_OPT", "0") != "default" and "optimization_level" not in os.environ.get(
    "XLA_FLAGS", ""
):
    level = os.environ.get("JAXPLAIN_TEST_XLA_OPT", "0")
    os.environ["XLA_FLAGS"] = (
        f"{os.environ.get('XLA_FLAGS', '')} --xla_backend_optimization_level={level}".strip()
    )

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxplain

# The compilation cache starts afresh once it holds more than this.
COMPILATION_CACHE_BYTES = 2 << 30


def pytest_configure(config):
    """Keeps compiled programs between runs, in pytest's cache folder (.pytest_cache).

    Most of a run is XLA compiling small programs: a later run compiles only the programs
    that changed (README.md, "Tests"). JAX keys each program by its HLO, compile options
    and versions, so a cached program is the one a fresh compile would give; a cold run
    pays a little for writing them. `--cache-clear` starts cold; `-p no:cacheprovider`
    turns the cache off (CI does, on a clean clone). JAX's own size limit is not used:
    it locks a file around every read and write, which slowed a cold run by a quarter.
    The test processes of a parallel run (pytest-xdist) share the folder; only the main
    process starts it afresh, before they start.
    """
    cache = getattr(config, "cache", None)
    if cache is None:
        return
    folder = cache.mkdir("jax-compilation-cache")
    worker = hasattr(config, "workerinput")
    if not worker and sum(entry.stat().st_size for entry in folder.iterdir()) > COMPILATION_CACHE_BYTES:
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", str(folder))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)


# The files that took longest in a full run (each a minute or more on two cores, most of
# it in their slow tests), longest first. Each file runs in one test process (--dist
# loadfile): pytest-xdist's own order, by number of tests, would leave the few-test
# benchmark files to the end, one process running alone. When slow tests are selected
# these files go first; the rest (and the whole default tier) go by number of tests.
LONG_FILES = (
    "test_registry.py",
    "test_cli.py",
    "test_model_kwargs.py",
    "test_amortized.py",
    "test_benchmarks.py",
    "test_crosscheck_quantus.py",
    "test_transformer_rules.py",
    "test_generation.py",
    "test_vs_captum.py",
    "test_porting.py",
    "test_docs.py",
    "test_scale.py",
    "test_models.py",
    "test_crosscheck_captum.py",
    "test_evaluate.py",
)


@pytest.hookimpl(trylast=True)  # after -m and -k have deselected
def pytest_collection_modifyitems(config, items):
    """Long files with slow tests first, then by number of tests (stable within a file)."""
    counts = collections.Counter(item.path.name for item in items)
    with_slow = {item.path.name for item in items if item.get_closest_marker("slow")}
    rank = {name: i for i, name in enumerate(LONG_FILES) if name in with_slow}
    items.sort(
        key=lambda item: (rank.get(item.path.name, len(LONG_FILES)), -counts[item.path.name], item.path.name)
    )


class TinyMLP(nn.Module):
    """A smooth MLP: tanh and softplus keep the path integrand smooth."""

    features: tuple = (16, 16)
    num_classes: int = 3

    @nn.compact
    def __call__(self, x):
        x = x.reshape((x.shape[0], -1))
        x = nn.tanh(nn.Dense(self.features[0])(x))
        x = nn.softplus(nn.Dense(self.features[1])(x))
        return nn.Dense(self.num_classes)(x)


class TinyCNN(nn.Module):
    num_classes: int = 4

    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Conv(4, (3, 3))(x))
        x = nn.avg_pool(x, (2, 2), strides=(2, 2))
        x = x.reshape((x.shape[0], -1))
        return nn.Dense(self.num_classes)(x)


def mlp_model(features=5, num_classes=3, seed=0, dtype=jnp.float32):
    module = TinyMLP(num_classes=num_classes)
    variables = module.init(jax.random.PRNGKey(seed), jnp.zeros((1, features)))
    variables = jax.tree_util.tree_map(lambda p: p.astype(dtype), variables)
    return jaxplain.Model.from_linen(module, variables)


def linear_model(weights, bias=None):
    weights = jnp.asarray(weights)
    bias = jnp.zeros(weights.shape[1], weights.dtype) if bias is None else jnp.asarray(bias)
    return jaxplain.Model(lambda p, x: x.reshape(x.shape[0], -1) @ p["w"] + p["b"], {"w": weights, "b": bias})


@pytest.fixture
def rng():
    return np.random.default_rng(0)


# Linux gives a process at most vm.max_map_count (65530 by default) memory maps, and each
# program XLA compiles for the CPU holds about three while JAX caches it. One test process
# of a full run compiles tens of thousands of programs: past the limit XLA cannot map the
# next one and the process dies with a segmentation fault. Between modules, a process that
# holds more maps than this drops JAX's caches (a module's programs are mostly its own).
MAPS_BEFORE_CLEARING = 16384


def _memory_maps():
    try:
        with open("/proc/self/maps", "rb") as maps:
            return sum(1 for _ in maps)
    except OSError:  # not Linux: no such limit to keep under
        return 0


@pytest.fixture(autouse=True, scope="module")
def _bounded_memory_maps():
    yield
    if _memory_maps() > MAPS_BEFORE_CLEARING:
        jax.clear_caches()
        gc.collect()
