"""The test processes stay under Linux's memory-map limit (tests/conftest.py)."""

import os

import jax
import jax.numpy as jnp
import pytest
from conftest import MAPS_BEFORE_CLEARING, _memory_maps

pytestmark = pytest.mark.skipif(not os.path.exists("/proc/self/maps"), reason="Linux only")


def test_the_threshold_leaves_room_under_the_limit():
    with open("/proc/sys/vm/max_map_count") as f:
        limit = int(f.read())
    # A module compiles at most a few thousand programs (about three maps each) before the
    # check between modules runs again.
    assert MAPS_BEFORE_CLEARING <= limit // 2


def test_compiled_programs_hold_maps_until_jax_drops_its_caches():
    x = jnp.ones((4, 4))
    held = [jax.jit(lambda a, i=i: jnp.tanh(a + i).sum(0)) for i in range(150)]
    before = _memory_maps()
    for f in held:
        f(x).block_until_ready()
    compiled = _memory_maps()
    assert compiled - before >= 150  # at least one map per program while it is cached
    jax.clear_caches()
    assert _memory_maps() - before < (compiled - before) / 3  # still referenced, yet released
