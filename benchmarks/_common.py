"""Shared pieces of the benchmark scripts: timing, machine description, JSON output."""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from collections.abc import Callable

import jax
import numpy as np

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


def block(value):
    return jax.tree_util.tree_map(
        lambda leaf: leaf.block_until_ready() if hasattr(leaf, "block_until_ready") else leaf,
        value,
    )


def interleaved_medians(
    contenders: dict[str, Callable[[], object]],
    *,
    repeats: int,
    warmup: int = 2,
    pause: float = 0.0,
    prime: bool = False,
    counter: Callable[[], float] | None = None,
) -> dict[str, dict]:
    """Runs the contenders in turn, `repeats` rounds after `warmup` rounds; seconds per call.

    Interleaving puts every contender under the same machine conditions, so their ratio
    is fair even when the machine's speed drifts during the run. `pause` seconds are
    slept (untimed) before each timed call. With `prime`, each timed call follows one
    untimed call of the same contender: the thread pools of XLA and of PyTorch's OpenMP
    keep spinning for a while after their work (a call started during the other
    library's spin ran 1.5-2x slower in our measurements) and park when idle (the next
    call pays for waking them), so a primed call measures what a loop of calls costs.
    With `counter` (a cumulative count, e.g. the process's page faults), each result also
    holds `counted_median`, the median of its increase over a timed call.
    """
    for _ in range(warmup):
        for run in contenders.values():
            block(run())
    times: dict[str, list[float]] = {name: [] for name in contenders}
    counts: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(repeats):
        for name, run in contenders.items():
            if pause:
                time.sleep(pause)
            if prime:
                block(run())
            counted = counter() if counter else 0
            start = time.perf_counter()
            block(run())
            times[name].append(time.perf_counter() - start)
            if counter:
                counts[name].append(counter() - counted)
    results = {
        name: {"median_s": statistics.median(ts), "min_s": min(ts), "runs": len(ts)}
        for name, ts in times.items()
    }
    if counter:
        for name, found in counts.items():
            results[name]["counted_median"] = statistics.median(found)
    return results


def max_rel_diff(ours, theirs) -> float:
    """max |ours - theirs| / max |theirs|, in float64 (the absolute gap where theirs is all 0).

    Either side may be a numpy or JAX array or a torch tensor.
    """
    ours, theirs = _float64(ours), _float64(theirs)
    if ours.shape != theirs.shape:
        raise ValueError(f"shapes differ: {ours.shape} against {theirs.shape}")
    scale = float(np.abs(theirs).max())
    gap = float(np.abs(ours - theirs).max())
    return gap / scale if scale > 0 else gap


def _float64(value) -> np.ndarray:
    if hasattr(value, "detach"):  # a torch tensor
        value = value.detach().cpu().numpy()
    return np.asarray(value, dtype=np.float64)


def machine() -> dict:
    device = jax.devices()[0]
    return {
        "platform": device.platform,
        "device": getattr(device, "device_kind", str(device)),
        "device_count": jax.device_count(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "jax": jax.__version__,
        "date": time.strftime("%Y-%m-%d"),
    }


def write(name: str, payload: dict, out_dir: str = RESULTS) -> str:
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, name)
    with open(path, "w") as f:
        json.dump(payload, f, indent=2)
        f.write("\n")
    return path


def cpu_arguments(doc: str, repeats: int, argv=None):
    """`--repeats`, `--quick` and `--out` of a CPU-only benchmark; None (after saying why) off the CPU."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=repeats)
    parser.add_argument("--quick", action="store_true", help="small sizes, 2 timed runs")
    parser.add_argument("--out", default=RESULTS, help="results folder (default benchmarks/results)")
    args = parser.parse_args(argv)
    if jax.default_backend() != "cpu":
        print("this benchmark is about XLA:CPU; the default backend is", jax.default_backend())
        return None
    args.repeats = 2 if args.quick else args.repeats
    return args
