"""jaxplain's XLA:CPU tuning, in one place.

On the CPU backend jaxplain departs from XLA's defaults in a few places, each measured
on this project's 2-core CPU for one jaxlib (the measurements, and the benchmark that
repeats each, are in docs/performance.md, section "CPU tuning"):

* compiler options for the programs of convolutional models (`compiler_options`);
* a default chunk of fixed work, capped in bytes (`chunk_points`);
* a few chunks laid out in straight-line code instead of a loop (`unrolled_chunks`);
* the zoo's `Conv` and `conv_general_dilated` lowerings (`rewrite_convolutions`) and
  its max-pool derivative (`polyphase_max_pool`).

One switch turns all of it off: JAXPLAIN_CPU_TUNING=off (or 0, false, no) gives XLA's
defaults and the accelerators' choices everywhere; the answers are the same to float
rounding. JAXPLAIN_XLA_CPU_OPTIONS=default turns off only the compiler options, as it
did before this switch existed. Both are read at each call; the zoo's layers read the
switch when a program is traced, so set it before the first call. On GPU and TPU none
of this applies (`tuned()` is False).
"""

from __future__ import annotations

import functools
import os

import jax
import jax.numpy as jnp

SWITCH = "JAXPLAIN_CPU_TUNING"
OPTIONS_SWITCH = "JAXPLAIN_XLA_CPU_OPTIONS"
_OFF = ("off", "0", "false", "no")

# XLA:CPU options for jaxplain's programs of convolutional models: an empty YNNPACK fusion
# list runs convolutions and matmuls on XLA's multi-threaded Eigen kernels. Faster for
# convolutions, slower for dense-only models, which keep XLA's defaults
# (docs/performance.md, "CPU tuning"; benchmarks/cpu_compiler.py).
COMPILER_OPTIONS = {"xla_cpu_experimental_ynn_fusion_type": ""}

# A default chunk on the CPU: at least CHUNK_ROWS rows, or as many as keep CHUNK_BYTES of
# saved activations, and at most CHUNK_MAX_BYTES of them (docs/performance.md, "CPU
# tuning"; benchmarks/cpu_chunks.py, benchmarks/cpu_memory.py).
CHUNK_ROWS = 1024
CHUNK_BYTES = 4 << 20
CHUNK_MAX_BYTES = 256 << 20

# Chunks laid out one after another instead of a `lax.scan` over them.
UNROLLED_CHUNKS = 4

# A strided convolution of at most this many channels per s x s block of its input takes
# `Conv`'s space-to-depth path (a ResNet's 7x7 stride-2 stem over RGB: 3 * 4 = 12).
SPACE_TO_DEPTH_CHANNELS = 16


def _off(variable: str, *values: str) -> bool:
    return os.environ.get(variable, "").strip().lower() in values


def tuned() -> bool:
    """Whether jaxplain tunes for XLA:CPU now: the default backend is the CPU and
    JAXPLAIN_CPU_TUNING is not off. The backend is read at the call, never at import,
    so `jax.distributed.initialize` and XLA_FLAGS set after importing jaxplain apply."""
    return not _off(SWITCH, *_OFF) and jax.default_backend() == "cpu"


def has_convolutions(params) -> bool:
    """Whether a model's parameters hold a convolution kernel (a leaf of rank >= 4): the
    models whose programs take `COMPILER_OPTIONS`."""
    return any(getattr(leaf, "ndim", 0) >= 4 for leaf in jax.tree_util.tree_leaves(params))


def compiler_options(convolutional: bool = True) -> dict:
    """The XLA options for one of jaxplain's programs: `COMPILER_OPTIONS` when `tuned()`,
    for a `convolutional` model, and this jaxlib accepts them; otherwise none (GPU and
    TPU, dense-only models, either switch off, options this jaxlib refuses)."""
    if not convolutional or not tuned() or _off(OPTIONS_SWITCH, "default"):
        return {}
    return dict(_accepted(tuple(sorted(COMPILER_OPTIONS.items()))))


@functools.cache
def _accepted(options: tuple) -> tuple:
    """`options` if this jaxlib compiles with them, else () (an older or newer jaxlib)."""
    try:
        with jax.core.eval_context():
            jax.jit(lambda v: v + 1, compiler_options=dict(options)).lower(
                jnp.zeros((), jnp.float32)
            ).compile()
    except Exception:
        return ()
    return options


def chunk_points(row_bytes: int, batch: int) -> int | None:
    """The most points a default chunk of `batch` examples takes on the CPU, for rows that
    keep `row_bytes` for their backward pass; None where not `tuned()` (no cap)."""
    if not tuned():
        return None
    work = max(-(-CHUNK_ROWS // batch), CHUNK_BYTES // (row_bytes * batch))
    return min(work, CHUNK_MAX_BYTES // (row_bytes * batch))


def unrolled_chunks() -> int:
    """How many chunks a program lays out one after another instead of looping:
    `UNROLLED_CHUNKS` when `tuned()`, else 1 (a loop, whose compile time does not grow
    with the chunks)."""
    return UNROLLED_CHUNKS if tuned() else 1


def rewrite_convolutions() -> bool:
    """Whether the zoo's `Conv` and `conv_general_dilated` take their CPU lowerings
    (shifted matmuls, space to depth, an HWIO input gradient)."""
    return tuned()


def polyphase_max_pool() -> bool:
    """Whether the zoo's `max_pool` takes its own derivative instead of XLA's
    `select_and_scatter`."""
    return tuned()


@functools.cache
def memory_bytes() -> int | None:
    """The machine's memory, where the OS tells (the CPU backend reports no memory stats)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


# Whether a call is being staged by a caller's transformation. XLA options can be given
# only to a top-level `jax.jit`; a caller's `jit`, `grad`, `vmap`, ... stages ours into its
# own program. `jax.extend.core.get_opaque_trace_state` (JAX's extension API) says which
# trace is current; compared with the one inside `jax.core.eval_context()`, it says whether
# any transformation is tracing us. This is jaxplain's only use of it; where a JAX release
# lacks it every call is treated as staged (XLA's defaults, the same answers), and
# tests/test_engine.py fails so that it is noticed.
try:
    from jax.extend.core import get_opaque_trace_state as _trace_state
except ImportError:  # pragma: no cover - a JAX without it
    _trace_state = None

_TOP_LEVEL = []


def top_level(args) -> bool:
    """Whether a call with the pytree `args` runs at top level: no tracer among them and
    no transformation tracing the caller."""
    if _trace_state is None:
        return False
    if any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree_util.tree_leaves(args)):
        return False
    if not _TOP_LEVEL:
        with jax.core.eval_context():
            _TOP_LEVEL.append(_trace_state())
    return _trace_state() == _TOP_LEVEL[0]
