"""Small models shared by the tests."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxplain


def pytest_configure(config):
    """Keeps compiled programs between runs, in pytest's cache folder (.pytest_cache).

    Most of a run is XLA compiling small programs; a later run compiles only the programs
    that changed. JAX keys each program by its HLO, compile options and jax version, so
    a cached program is the one a fresh compile would give. `--cache-clear` starts cold;
    `-p no:cacheprovider` turns the cache off.
    """
    cache = getattr(config, "cache", None)
    if cache is None:
        return
    jax.config.update("jax_compilation_cache_dir", str(cache.mkdir("jax-compilation-cache")))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_compilation_cache_max_size", 2 << 30)  # least recently used go beyond 2 GiB


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
