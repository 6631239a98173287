"""Peak memory and time from a few to a million steps or samples, each count in a fresh process.

jaxplain promises memory bounded by a chunk, never by the number of steps or samples.
This script checks the promise where a user would see it: the process's peak resident
memory. For each row (a method, or Integrated Gradients with one schedule) and each count
it starts a fresh Python process that imports jaxplain, loads the wine MLP
(checkpoints/wine_mlp, 13 features, 3 classes) and 4 test examples, and calls the method
twice at that count. The process reports

* setup: resident memory after the import and the loading, before any call;
* peak: the kernel's high-water mark of the whole process (VmHWM, /proc/self/status),
  the larger of the mark after the first call (import, loading, tracing, compiling and
  running) and the mark of the second call alone (reset by /proc/self/clear_refs before it);
* the seconds of the first call (with tracing and compiling) and of the second.

The table also shows the peak over setup at the smallest and the largest count: the
ratio is of whole processes (the user's view), and about 300 MiB of each is JAX's import.

The peak at the smallest count is the reference: a process that imports jaxplain, loads
the model and runs the method at a few steps or samples. The acceptance line is: the peak
at the largest count within 1.5x of the peak at the smallest, in fresh processes. Rows
are compared within this one run, on one machine.

  python benchmarks/memory_scaling.py               # all rows, 48 processes, 3.5-4.5 minutes on 2 cores
  python benchmarks/memory_scaling.py --quick       # 3 processes, about 10 seconds (the test)
  python benchmarks/memory_scaling.py --rows lime,kernel_shap --update  # rerun some rows

Results: benchmarks/results/memory_scaling.json (with --update, the rows run replace
theirs in the existing file and the others are kept). The JSON names the jaxplain the
children imported, its commit and its uncommitted files. The children import jaxplain
afresh, one after another: in a working tree others are editing, run from a clean clone
(`git clone --shared . /tmp/snap`, the script copied in, `PYTHONPATH=/tmp/snap`).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

# The parent stays a small process that never imports JAX: only the children measure.
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HERE = os.path.dirname(os.path.abspath(__file__))
LIMIT = 1.5  # the acceptance line: peak(largest) <= 1.5 peak(smallest)
EXAMPLES = 4
BACKGROUND = 64  # training examples expected_gradients draws references from
SCHEDULES = (
    "gauss_legendre",
    "riemann_middle",
    "riemann_left",
    "riemann_right",
    "trapezoid",
    "nonuniform",
    "pilot_gauss",
)
STEPS = (32, 1024, 32768, 10**6)
PAIRED = (64, 2048, 65536, 10**6)  # kernel_shap pairs every coalition with its complement: even counts

# row -> counts; the order is the table's
ROWS = {
    **{f"integrated_gradients {schedule}": STEPS for schedule in SCHEDULES},
    "smoothgrad (saliency)": STEPS,
    "kernel_shap": PAIRED,
    "lime": PAIRED,
    "shapley_sampling": STEPS,
    "expected_gradients": STEPS,
}
QUICK_ROWS = {"integrated_gradients pilot_gauss": (32, 1024), "kernel_shap": (64,)}


def _call(row: str, count: int):
    """The call a child process measures: a thunk running `row` at `count` to the end."""
    import jax
    import numpy as np

    import jaxplain

    model = jaxplain.load_model(os.path.join(ROOT, "checkpoints", "wine_mlp"))
    data = jaxplain.data.load("wine")
    x = np.asarray(data.x_test[:EXAMPLES], np.float32)
    key = jax.random.key(0)
    if row.startswith("integrated_gradients "):
        schedule = row.split(" ", 1)[1]
        run = lambda: jaxplain.integrated_gradients(
            model,
            x,
            target="predicted",
            steps=count,  # noqa: E731
            schedule=schedule,
        )
    elif row == "smoothgrad (saliency)":
        run = lambda: jaxplain.smoothgrad(
            model,
            x,
            method=jaxplain.saliency,
            target="predicted",
            key=key,  # noqa: E731
            samples=count,
        )
    elif row == "expected_gradients":
        background = np.asarray(data.x_train[:BACKGROUND], np.float32)
        run = lambda: jaxplain.expected_gradients(
            model,
            x,
            target="predicted",
            background=background,  # noqa: E731
            key=key,
            samples=count,
        )
    elif row in ("kernel_shap", "lime", "shapley_sampling"):
        method = getattr(jaxplain, row)
        run = lambda: method(model, x, target="predicted", key=key, samples=count)  # noqa: E731
    else:
        raise ValueError(f"unknown row {row!r}")

    def finished():
        values = run().values
        values.block_until_ready()
        if not bool(np.isfinite(np.asarray(values)).all()):
            raise FloatingPointError(f"{row} at {count}: non-finite attributions")

    return finished


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def child(row: str, count: int) -> dict:
    """Run in a fresh process: setup, a first and a second call; memory in MiB, times in s."""
    import resource

    started = time.perf_counter()
    run = _call(row, count)  # imports jaxplain, loads the model and the data
    setup_s = time.perf_counter() - started
    setup = _status_kib("VmRSS")
    start = time.perf_counter()
    run()  # traces, compiles and runs
    first_s = time.perf_counter() - start
    first_peak = _status_kib("VmHWM")  # everything so far: import, loading, compile, first call
    after_first = _status_kib("VmRSS")
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # VmHWM := VmRSS (Linux >= 4.0)
    start = time.perf_counter()
    run()
    second_s = time.perf_counter() - start
    second_peak = _status_kib("VmHWM")  # the second call alone, on top of what the process holds
    sys.path.insert(0, HERE)
    from _common import machine

    mib = 1 / 1024
    peak = max(first_peak, second_peak)
    return {
        "machine": machine(),
        "row": row,
        "count": count,
        "setup_mib": setup * mib,
        "peak_mib": peak * mib,
        "increase_mib": (peak - setup) * mib,
        "after_first_call_mib": after_first * mib,
        "first_call_peak_mib": first_peak * mib,
        "second_call_peak_mib": second_peak * mib,
        "second_call_increase_mib": (second_peak - after_first) * mib,
        "ru_maxrss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "setup_s": setup_s,
        "first_call_s": first_s,
        "second_call_s": second_s,
    }


def measure(row: str, count: int, timeout: float) -> dict:
    command = [sys.executable, os.path.abspath(__file__), "--child", row, "--count", str(count)]
    started = time.perf_counter()
    try:
        result = subprocess.run(
            command,
            capture_output=True,
            text=True,
            cwd=ROOT,
            timeout=timeout,
            env={**os.environ, "JAXPLAIN_PROGRESS": "0"},
        )
    except subprocess.TimeoutExpired:
        return {"row": row, "count": count, "error": f"timed out after {timeout:.0f} s"}
    if result.returncode != 0:
        lines = result.stderr.strip().splitlines() or [f"exit status {result.returncode}"]
        return {"row": row, "count": count, "error": lines[-1][:300]}
    found = json.loads(result.stdout.strip().splitlines()[-1])
    found["process_s"] = time.perf_counter() - started
    return found


def _checkout() -> dict:
    """Where the children import jaxplain from, its commit, and its files that differ from it."""
    import importlib.util

    package = os.path.dirname(importlib.util.find_spec("jaxplain").origin)  # found, not imported

    def git(*command):
        found = subprocess.run(
            ["git", "-C", os.path.dirname(package), *command], capture_output=True, text=True
        )
        return found.stdout.rstrip("\n") if found.returncode == 0 else None

    commit, changed = git("rev-parse", "HEAD"), git("status", "--porcelain", "--", package)
    return {
        "jaxplain": package,
        "commit": commit.strip() if commit else None,
        "jaxplain_uncommitted": [line[3:] for line in changed.splitlines()] if changed else [],
    }


def summarise(row: str, cells: list) -> dict:
    """One table row: peaks per count, largest / smallest, time at the largest, the 1.5x line."""
    summary = {"row": row, "counts": [c["count"] for c in cells], "cells": cells}
    if any("error" in c for c in cells):
        summary.update(
            passed=False, error="; ".join(f"{c['count']}: {c['error']}" for c in cells if "error" in c)
        )
        return summary
    small, large = cells[0], cells[-1]
    summary.update(
        peak_mib=[c["peak_mib"] for c in cells],
        increase_mib=[c["increase_mib"] for c in cells],
        ratio=large["peak_mib"] / small["peak_mib"],
        second_call_ratio=large["second_call_peak_mib"] / small["second_call_peak_mib"],
        largest_first_call_s=large["first_call_s"],
        largest_second_call_s=large["second_call_s"],
    )
    summary["passed"] = summary["ratio"] <= LIMIT
    return summary


def _count(n: int) -> str:
    for power in (6, 5):
        if n == 10**power:
            return f"1e{power}"
    return str(n)


def _seconds(s: float) -> str:
    return f"{s:.2f} s" if s >= 0.1 else f"{1e3 * s:.1f} ms"


def table(rows: list) -> str:
    lines = [
        "| method | counts | setup MiB | peak RSS MiB at each count | over setup, smallest -> largest | "
        "largest / smallest | largest count: first call (second) | within 1.5x |",
        "|---" * 8 + "|",
    ]
    for s in rows:
        counts = ", ".join(_count(n) for n in s["counts"])
        if "error" in s:
            peaks = ", ".join("-" if "error" in c else f"{c['peak_mib']:.0f}" for c in s["cells"])
            lines.append(
                f"| {s['row']} | {counts} | - | {peaks} | - | - | - | **FAIL** ({s['error'][:80]}) |"
            )
            continue
        peaks = ", ".join(f"{p:.0f}" for p in s["peak_mib"])
        verdict = "pass" if s["passed"] else "**FAIL**"
        growth = f"+{s['increase_mib'][0]:.0f} -> +{s['increase_mib'][-1]:.0f} MiB"
        lines.append(
            f"| {s['row']} | {counts} | {s['cells'][0]['setup_mib']:.0f} | {peaks} | {growth} | "
            f"{s['ratio']:.2f}x | {_seconds(s['largest_first_call_s'])} "
            f"({_seconds(s['largest_second_call_s'])}) | {verdict} |"
        )
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 processes at small counts (the smoke test)")
    parser.add_argument("--rows", help="comma-separated rows to run (default: all); see ROWS")
    parser.add_argument(
        "--update",
        action="store_true",
        help="replace only the rows run in an existing memory_scaling.json, keep the others",
    )
    parser.add_argument("--timeout", type=float, default=600, help="seconds per process")
    parser.add_argument("--out", default=os.path.join(HERE, "results"))
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--count", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child, args.count)))
        return 0
    if not os.path.exists("/proc/self/clear_refs"):
        print("needs Linux's /proc/self/status and clear_refs")
        return 0
    plan = dict(QUICK_ROWS if args.quick else ROWS)
    if args.rows:
        wanted = [name.strip() for name in args.rows.split(",")]
        unknown = [name for name in wanted if name not in plan]
        if unknown:
            parser.error(f"unknown rows {unknown}; known: {list(plan)}")
        plan = {name: plan[name] for name in wanted}

    checkout = _checkout()
    started = time.perf_counter()
    summaries = []
    for row, counts in plan.items():
        cells = []
        for count in counts:
            cells.append(measure(row, count, args.timeout))
            cell = cells[-1]
            print(
                f"{row} {_count(count)}: "
                + (
                    f"FAILED {cell['error']}"
                    if "error" in cell
                    else f"peak {cell['peak_mib']:.0f} MiB (setup {cell['setup_mib']:.0f}), first call "
                    f"{cell['first_call_s']:.2f} s, second {cell['second_call_s']:.2f} s"
                ),
                flush=True,
            )
        summaries.append(summarise(row, cells))
    elapsed = time.perf_counter() - started

    # the machine as the children saw it (JAX's device, versions): the parent never imports JAX
    described = [c.pop("machine") for s in summaries for c in s["cells"] if "machine" in c]
    path = os.path.join(args.out, "memory_scaling.json")
    if args.update and os.path.exists(path):
        with open(path) as f:
            previous = json.load(f)
        ran = {s["row"]: s for s in summaries}
        kept = [ran.pop(s["row"], s) for s in previous["rows"]]
        summaries = kept + list(ran.values())
    payload = {
        "machine": described[0] if described else None,
        **checkout,
        "quick": args.quick,
        "model": "checkpoints/wine_mlp (13 features, 3 classes)",
        "examples": EXAMPLES,
        "target": "predicted",
        "limit": LIMIT,
        "seconds": elapsed,
        "note": "each (row, count) in a fresh process; peak = the process's VmHWM: max(after the first call, "
        "the second call alone after clear_refs); ratio = peak at the largest count / at the smallest; "
        "first call includes tracing and compiling",
        "rows": summaries,
    }
    os.makedirs(args.out, exist_ok=True)
    with open(path, "w") as f:  # as _common.write, which would import JAX here
        json.dump(payload, f, indent=2)
        f.write("\n")
    print(path)
    print(table(summaries))
    failed = [s["row"] for s in summaries if not s["passed"]]
    print(
        f"{len(summaries) - len(failed)} of {len(summaries)} rows within {LIMIT}x"
        + (f"; over: {', '.join(failed)}" if failed else "")
        + f" ({elapsed:.0f} s)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
