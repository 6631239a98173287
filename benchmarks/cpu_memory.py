"""glibc's malloc settings and the page faults of XLA:CPU's calls, measured side by side.

By default glibc maps every block above its mmap threshold (at most 32 MiB) afresh and
unmaps it at free; XLA:CPU's scratch space and outputs for a convolutional network are
such blocks, so each call pays one minor page fault per 4 KiB page it touches (about
1.3 us each on this project's 2-core CPU). The arms are settings a user can give a
process before it starts (`GLIBC_TUNABLES`, read by glibc at start-up):

* default: glibc's defaults;
* reuse: one malloc arena for all threads, no mmap for large blocks, freed memory kept
  (`arena_max=1:mmap_max=0:trim_threshold=4 GiB`), so the next call reuses mapped pages;
* hugepages: transparent huge pages for malloc's memory (`hugetlb=1`, 2 MiB pages where
  the kernel's THP mode allows it), 512 times fewer faults.

The settings belong to the whole process, so the arms run in separate processes,
alternated (default, reuse, hugepages, default, ...): each child process times jaxplain
and Captum on the same models and inputs as benchmarks/vs_captum.py, interleaved and
primed, medians after warm-up, and counts minor page faults per timed call. Reported
per contender: the median over rounds of the child medians in each arm, each arm's
speed-up over the default, Captum / jaxplain in each arm, and each arm's peak resident
memory. Processes differ by more than calls within one process do (cores, caches, the
OS): rows whose faults do not change show that noise.

    python benchmarks/cpu_memory.py [--rounds 2] [--repeats 7] [--quick]

Needs the `bench` extra (CPU torch, captum). Writes benchmarks/results/cpu_memory.json.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

ARMS = {
    "default": "",
    "reuse": "glibc.malloc.arena_max=1:glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=4294967296",
    "hugepages": "glibc.malloc.hugetlb=1",
}


def _faults() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


# (label, vs_captum method): the same calls as benchmarks/vs_captum.py makes
METHODS = (("saliency", "saliency"), ("ig", "ig_gauss_legendre"))


def child(arm: str, quick: bool, repeats: int, warmup: int) -> dict:
    """One process: every contender timed with the arm's malloc setting; a JSON-able dict."""
    import jax.numpy as jnp
    import numpy as np
    import vs_captum
    from _common import interleaved_medians

    contenders = {}
    for case in vs_captum.cases(quick, ["cnn", "resnet18"]):
        target = np.asarray(np.argmax(np.asarray(case.model(jnp.asarray(case.x))), axis=-1), np.int32)
        name = case.name.split(" ")[0]
        for label, method in METHODS:
            ours, theirs, _ = vs_captum.contenders(case, method, target)
            contenders[f"{name} {label} jaxplain"], contenders[f"{name} {label} captum"] = ours, theirs
    # several warm-up rounds: malloc's free lists settle only after a few calls
    times = interleaved_medians(contenders, repeats=repeats, warmup=warmup, prime=True, counter=_faults)
    return {
        "arm": arm,
        "tunables": os.environ.get("GLIBC_TUNABLES", ""),
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "median_ms": {n: 1e3 * cell["median_s"] for n, cell in times.items()},
        "faults_per_call": {n: cell["counted_median"] for n, cell in times.items()},
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2, help="processes per arm, alternated")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--warmup", type=int, default=6)
    parser.add_argument("--quick", action="store_true", help="tiny sizes, one round, 2 timed runs")
    parser.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "results"))
    parser.add_argument("--child", choices=ARMS, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds, args.repeats, args.warmup = 1, 2, 3
    if args.child:
        print(json.dumps(child(args.child, args.quick, args.repeats, args.warmup)))
        return 0

    import ctypes

    from _common import machine, write

    if not hasattr(ctypes.CDLL(None), "gnu_get_libc_version"):
        print("not glibc: GLIBC_TUNABLES means nothing here")
        return 0
    runs = {arm: [] for arm in ARMS}
    for round_ in range(args.rounds):
        for arm in ARMS:
            command = [
                sys.executable,
                os.path.abspath(__file__),
                "--child",
                arm,
                "--repeats",
                str(args.repeats),
                "--warmup",
                str(args.warmup),
            ] + (["--quick"] if args.quick else [])
            started = time.perf_counter()
            env = {**os.environ, "JAXPLAIN_PROGRESS": "0", "GLIBC_TUNABLES": ARMS[arm]}
            if not ARMS[arm]:
                env.pop("GLIBC_TUNABLES")
            result = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, env=env)
            if result.returncode != 0:
                print(result.stdout[-2000:], result.stderr[-4000:], file=sys.stderr)
                return 1
            runs[arm].append(json.loads(result.stdout.strip().splitlines()[-1]))
            print(f"round {round_ + 1} {arm}: {time.perf_counter() - started:.0f} s", flush=True)
    names = list(runs["default"][0]["median_ms"])
    rows = []
    for name in names:
        row = {"contender": name}
        for arm in ARMS:
            row[f"{arm}_ms"] = statistics.median(r["median_ms"][name] for r in runs[arm])
            row[f"{arm}_faults"] = statistics.median(r["faults_per_call"][name] for r in runs[arm])
            if arm != "default":
                row[f"speedup_{arm}"] = row["default_ms"] / row[f"{arm}_ms"]
        rows.append(row)
    by_name = {row["contender"]: row for row in rows}
    ratios = []
    for name in names:
        if name.endswith(" jaxplain"):
            theirs = by_name[name[: -len("jaxplain")] + "captum"]
            ours = by_name[name]
            ratios.append(
                {
                    "case": name[: -len(" jaxplain")],
                    **{
                        f"captum_over_jaxplain_{arm}": theirs[f"{arm}_ms"] / ours[f"{arm}_ms"] for arm in ARMS
                    },
                }
            )
    peak = {arm: statistics.median(r["peak_rss_mib"] for r in runs[arm]) for arm in ARMS}
    payload = {
        "machine": machine(),
        "tunables": ARMS,
        "quick": args.quick,
        "rounds": args.rounds,
        "repeats": args.repeats,
        "warmup": args.warmup,
        "rows": rows,
        "captum_over_jaxplain": ratios,
        "peak_rss_mib": peak,
        "note": "each arm in its own processes, alternated; medians over rounds of per-process medians; "
        "faults = minor page faults per timed call",
    }
    path = write("cpu_memory.json", payload, args.out)
    print(path)
    others = [arm for arm in ARMS if arm != "default"]
    print(
        "| contender | "
        + " | ".join(f"{arm} ms (faults)" for arm in ARMS)
        + " | "
        + " | ".join(f"{arm} speed-up" for arm in others)
        + " |"
    )
    print("|---" * (len(ARMS) + len(others) + 1) + "|")
    for row in rows:
        print(
            f"| {row['contender']} | "
            + " | ".join(f"{row[f'{arm}_ms']:.1f} ({row[f'{arm}_faults']:.0f})" for arm in ARMS)
            + " | "
            + " | ".join(f"{row[f'speedup_{arm}']:.2f}x" for arm in others)
            + " |"
        )
    print("| case | " + " | ".join(f"Captum / jaxplain, {arm}" for arm in ARMS) + " |")
    print("|---" * (len(ARMS) + 1) + "|")
    for ratio in ratios:
        print(
            f"| {ratio['case']} | "
            + " | ".join(f"{ratio[f'captum_over_jaxplain_{arm}']:.2f}x" for arm in ARMS)
            + " |"
        )
    print("peak RSS MiB: " + ", ".join(f"{arm} {peak[arm]:.0f}" for arm in ARMS))
    return 0


if __name__ == "__main__":
    sys.exit(main())
