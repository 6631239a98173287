"""How many gradient evaluations does each IG schedule need for the same answer?

For every model and output (logits and softmax probabilities), every schedule is run at a
grid of step counts on the same inputs, and for each input we find the fewest gradient
evaluations from which on (for every larger count of the grid) it reaches

  (a) |delta| <= 1% and <= 5% of |F(x) - F(baseline)|  (completeness), and
  (b) <= 1% relative L2 error to a reference IG with 2048 Gauss-Legendre points.

A pilot schedule's forward-only evaluations count at their measured cost relative to one
forward + backward evaluation of the same model. `steps="auto"` is run at a grid of
tolerances instead of step counts, and an input's count is the evaluations it used.
The reference is checked against 4096 points on a subset. Medians and 90th percentiles
over the inputs, and speed-ups of the medians over uniform Riemann sums (the paper's
baseline) and over gauss_legendre, go to benchmarks/results/iso_convergence.json; a plot
of median L2 error against evaluations to iso_convergence.png; the digits CNN is also
timed at iso-convergence (one batch of inputs, every schedule in the same run).

    python benchmarks/iso_convergence.py [--inputs 200] [--models digits_cnn,...] [--resume] [--quick]

Each finished (model, output) case is written to the JSON at once; --resume skips them.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

import jaxplain
from jaxplain import engine, schedules, viz

sys.path.insert(0, os.path.dirname(__file__))
from _common import RESULTS, interleaved_medians, machine, write  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXED = ["riemann_left", "riemann_right", "riemann_middle", "trapezoid", "gauss_legendre"]
PILOT = sorted(schedules.PILOT_SCHEDULES)
UNIFORM_RIEMANN = ["riemann_left", "riemann_right", "riemann_middle", "trapezoid"]
GRID = [2, 3, 4, 6, 8, 11, 16, 23, 32, 45, 64, 91, 128, 181, 256, 362, 512]
TOLERANCES = [0.2, 0.1, 0.05, 0.03, 0.02, 0.01, 0.007, 0.005, 0.003, 0.002, 0.001, 0.0005, 0.0002]
CRITERIA = {"delta_5pct": ("delta", 0.05), "delta_1pct": ("delta", 0.01), "l2_1pct": ("l2", 0.01)}


def models(count: int):
    """(name, Model with logits, inputs, baseline) for every shipped checkpoint.

    Baselines: zeros (black images; the mean of the standardized tabular features) and,
    for the text model, the embedding of the padding token at every position.
    """
    found = []
    shipped = (
        ("digits_cnn", "digits"),
        ("digits_resnet18", "digits"),
        ("wine_mlp", "wine"),
        ("breast_cancer_mlp", "breast_cancer"),
    )
    for name, data in shipped:
        dataset = jaxplain.data.load(data)
        # wine and breast_cancer have fewer test examples than `count`: their train split follows.
        x = np.concatenate([dataset.x_test, dataset.x_train])[:count]
        found.append((name, jaxplain.load_model(os.path.join(ROOT, "checkpoints", name)), x, 0.0))
    checkpoint = jaxplain.io.load_checkpoint(os.path.join(ROOT, "checkpoints", "synthetic_text"))
    dataset = jaxplain.data.load("synthetic_text")
    tokens = np.concatenate([dataset.x_test, dataset.x_train])[:count]
    embed = lambda t: np.asarray(
        checkpoint.module.apply(checkpoint.variables, jnp.asarray(t), method="embed")
    )  # noqa: E731
    pad = np.full_like(tokens, getattr(checkpoint.module, "pad_id", 0))
    found.append(
        ("synthetic_text", checkpoint.model(method="logits_from_embeddings"), embed(tokens), embed(pad))
    )
    return found


def errors(attribution, reference):
    values = np.asarray(attribution.values, np.float64).reshape(len(reference), -1)
    l2 = np.linalg.norm(values - reference, axis=1) / np.linalg.norm(reference, axis=1)
    return np.asarray(attribution.relative_delta, np.float64), l2


def needed(costs, delta, l2):
    """Per input and criterion: the smallest cost from which on the criterion always holds.

    `costs` (G, N) per grid point and input, sorted along the grid; delta, l2 (G, N).
    Inputs that never settle get inf.
    """
    result = {}
    for name, (kind, bound) in CRITERIA.items():
        ok = (delta if kind == "delta" else l2) <= bound
        settled = np.flip(np.logical_and.accumulate(np.flip(ok, 0), 0), 0)  # holds here and after
        first = np.where(settled.any(0), settled.argmax(0), -1)
        result[name] = np.where(first >= 0, costs[np.maximum(first, 0), np.arange(costs.shape[1])], np.inf)
    return result


def forward_cost(model, x, points: int = 64) -> float:
    """Time of a forward-only evaluation relative to a forward + backward one, same points."""
    rows = jnp.asarray(np.resize(x, (points,) + x.shape[1:]))
    targets = jnp.zeros((points, 1), jnp.int32)
    forward = jax.jit(lambda m, r: engine.forward(m, r))
    both = jax.jit(lambda m, r: engine.gradients(m, r, lambda _: targets)[2])
    times = interleaved_medians(
        {"forward": lambda: forward(model, rows), "both": lambda: both(model, rows)}, repeats=30, warmup=3
    )
    return times["forward"]["median_s"] / times["both"]["median_s"]


def study(model, x, baseline, grid, tolerances, ratio, reference_steps):
    batch = len(x)
    reference = jaxplain.integrated_gradients(
        model, x, target="predicted", baseline=baseline, steps=reference_steps
    )
    target = np.asarray(reference.target)
    subset = min(16, batch)
    check = jaxplain.integrated_gradients(
        model,
        x[:subset],
        target=target[:subset],
        steps=2 * reference_steps,
        baseline=baseline if np.ndim(baseline) == 0 else baseline[:subset],
    )
    reference = np.asarray(reference.values, np.float64).reshape(batch, -1)
    reference_error = np.linalg.norm(
        np.asarray(check.values, np.float64).reshape(subset, -1) - reference[:subset], axis=1
    )
    reference_error /= np.linalg.norm(reference[:subset], axis=1)
    curves, per_input = {}, {}
    for name in FIXED + PILOT:
        costs, deltas, l2s = [], [], []
        for n in grid:
            if name == "trapezoid" and n < 2:
                continue
            a = jaxplain.integrated_gradients(
                model, x, target=target, baseline=baseline, steps=n, schedule=name
            )
            delta, l2 = errors(a, reference)
            forward = len(schedules.pilot_alphas(schedules.default_pilot_steps(n))) - 2
            pilot = forward if name in PILOT else 0
            costs.append(np.full(batch, n + ratio * pilot))
            deltas.append(delta)
            l2s.append(l2)
        per_input[name] = needed(np.array(costs), np.array(deltas), np.array(l2s))
        curves[name] = {
            "cost": [float(c[0]) for c in costs],
            "median_l2": [float(np.median(e)) for e in l2s],
            "median_delta": [float(np.median(d)) for d in deltas],
        }
    costs, deltas, l2s = [], [], []
    for tolerance in tolerances:
        a = jaxplain.integrated_gradients(
            model, x, target=target, baseline=baseline, steps="auto", tolerance=tolerance
        )
        delta, l2 = errors(a, reference)
        costs.append(np.asarray(a.extras["steps"]) + ratio * np.asarray(a.extras["forward_steps"]))
        deltas.append(delta)
        l2s.append(l2)
    per_input["auto"] = needed(np.array(costs), np.array(deltas), np.array(l2s))
    curves["auto"] = {
        "cost": [float(np.median(c)) for c in costs],
        "median_l2": [float(np.median(e)) for e in l2s],
        "median_delta": [float(np.median(d)) for d in deltas],
        "tolerance": list(tolerances),
    }
    return per_input, curves, float(np.max(reference_error))


def summarize(per_input):
    table = {}
    for name, results in per_input.items():
        table[name] = {}
        for criterion, counts in results.items():
            table[name][criterion] = {
                "median": float(np.percentile(counts, 50, method="nearest")),
                "p90": float(np.percentile(counts, 90, method="nearest")),
                "unsettled_fraction": float(np.mean(~np.isfinite(counts))),
            }
    for criterion in CRITERIA:
        riemann = min(table[name][criterion]["median"] for name in UNIFORM_RIEMANN)
        gauss = table["gauss_legendre"][criterion]["median"]
        for name in table:
            median = table[name][criterion]["median"]
            table[name][criterion]["speedup_vs_best_uniform_riemann"] = riemann / median
            table[name][criterion]["speedup_vs_riemann_left"] = (
                table["riemann_left"][criterion]["median"] / median
            )
            table[name][criterion]["speedup_vs_gauss_legendre"] = gauss / median
    return table


def time_at_iso_convergence(model, x, table, curves, grid, repeats):
    """Milliseconds per explanation with each schedule where its median input reaches 1%
    L2 error (its median step count; for auto, the first tolerance whose median error
    is <= 1%), all timed interleaved in this run; and each pilot pass alone."""
    x = jnp.asarray(x[:64])
    target = jnp.asarray(np.asarray(model(x)).argmax(-1))
    runs, settings = {}, {}
    for name in FIXED + PILOT:
        steps = table[name]["l2_1pct"]["median"]
        reached = bool(np.isfinite(steps))  # else: timed at the grid's largest step count
        steps = int(steps) if reached else max(grid)
        settings[name] = {"steps": steps, "reached_1pct": reached}
        runs[name] = functools.partial(
            jaxplain.integrated_gradients, model, x, target=target, steps=steps, schedule=name
        )
    for name in PILOT:
        pilot = schedules.default_pilot_steps(settings[name]["steps"])
        settings[name]["pilot_steps"] = pilot
        if pilot > 1:  # one pilot interval needs no evaluation
            runs[f"{name} pilot only"] = functools.partial(
                _pilot_pass, model, x, target[:, None], pilot=pilot
            )
    curve = curves["auto"]
    reached = [t for t, e in zip(curve["tolerance"], curve["median_l2"]) if e <= 0.01]
    tolerance = reached[0] if reached else curve["tolerance"][-1]
    settings["auto"] = {"tolerance": tolerance, "reached_1pct": bool(reached)}
    runs["auto"] = functools.partial(
        jaxplain.integrated_gradients, model, x, target=target, steps="auto", tolerance=tolerance
    )
    times = interleaved_medians(runs, repeats=repeats, warmup=2)
    result = {
        name: {**settings.get(name, {}), "ms_per_explanation": 1e3 * t["median_s"] / len(x)}
        for name, t in times.items()
        if not name.endswith("pilot only")
    }
    for name in PILOT:
        pilot = times.get(f"{name} pilot only", {"median_s": 0.0})
        result[name]["pilot_share"] = pilot["median_s"] / times[name]["median_s"]
    return result


@functools.partial(jax.jit, static_argnames=("pilot",))
def _pilot_pass(model, x, targets, *, pilot):
    """The forward-only pilot of a pilot schedule, as integrated_gradients runs it."""
    point = lambda alpha, x: alpha * x  # noqa: E731  (zero baseline)
    return engine.path_outputs(
        model, x, targets, point, jnp.arange(1, pilot, dtype=x.dtype) / pilot, chunk_size=max(1, pilot - 1)
    )


def markdown(payload) -> str:
    """The study's tables: median (p90) evaluations per input, speed-ups of the medians."""
    lines = []
    for case, result in payload["cases"].items():
        lines += [
            f"#### {case}",
            "",
            "| schedule | "
            + " | ".join(f"{c}: median (p90)" for c in CRITERIA)
            + " | l2_1pct: x riemann_left | x best uniform Riemann | x gauss_legendre |",
            "|---|" + "---|" * (len(CRITERIA) + 3),
        ]
        for schedule, row in result["table"].items():
            cells = [f"{row[c]['median']:.0f} ({row[c]['p90']:.0f})" for c in CRITERIA]
            l2 = row["l2_1pct"]
            cells += [
                f"{l2['speedup_vs_riemann_left']:.2f}",
                f"{l2['speedup_vs_best_uniform_riemann']:.2f}",
                f"{l2['speedup_vs_gauss_legendre']:.2f}",
            ]
            lines.append(f"| {schedule} | " + " | ".join(cells) + " |")
        timing = result.get("timing")
        if timing:
            lines += [
                "",
                "| schedule at iso-convergence (1% L2, median input) | setting | ms per explanation | pilot share |",
                "|---|---|---|---|",
            ]
            for schedule, cell in timing.items():
                setting = (
                    f"tolerance {cell['tolerance']}" if "tolerance" in cell else f"{cell['steps']} steps"
                )
                share = f"{100 * cell['pilot_share']:.1f}%" if "pilot_share" in cell else "-"
                lines.append(f"| {schedule} | {setting} | {cell['ms_per_explanation']:.2f} | {share} |")
        lines.append("")
    return "\n".join(lines)


def plot(curves_by_case, path):
    """Median L2 error against gradient evaluations, one subplot per case (`jaxplain.viz.convergence`)."""
    return viz.convergence(curves_by_case, path)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--inputs", type=int, default=200)
    parser.add_argument("--quick", action="store_true", help="a tiny run that checks the script works")
    parser.add_argument("--models", default=None, help="comma-separated subset, e.g. digits_cnn,wine_mlp")
    parser.add_argument("--out", default=RESULTS)
    parser.add_argument(
        "--resume", action="store_true", help="keep the cases an earlier run with the same settings finished"
    )
    args = parser.parse_args(argv)
    grid, tolerances, count, reference_steps = (
        (GRID, TOLERANCES, args.inputs, 2048) if not args.quick else ([2, 4, 8], [0.1, 0.01], 8, 128)
    )
    settings = {
        "inputs": count,
        "grid": grid,
        "tolerances": tolerances,
        "reference_steps": reference_steps,
        "criteria": {k: list(v) for k, v in CRITERIA.items()},
    }
    path = os.path.join(args.out, "iso_convergence.json")
    payload = {"machine": machine(), **settings, "cases": {}}
    if args.resume and os.path.exists(path):
        with open(path) as f:
            previous = json.load(f)
        if {k: previous.get(k) for k in settings} != json.loads(json.dumps(settings)):
            raise SystemExit(f"{path} was written with other settings; remove it or drop --resume")
        payload["cases"] = previous["cases"]
    chosen = args.models.split(",") if args.models else None
    for name, model, x, baseline in models(count)[: (1 if args.quick else None)]:
        if chosen and name not in chosen:
            continue
        ratio = None
        for output in ("logits",) if args.quick else ("logits", "probs"):
            case = f"{name} {output}"
            if case in payload["cases"]:
                print(f"{case}: done in an earlier run", flush=True)
                continue
            start = time.perf_counter()
            ratio = forward_cost(model, x) if ratio is None else ratio
            per_input, curves, reference_error = study(
                model.with_output(output), x, baseline, grid, tolerances, ratio, reference_steps
            )
            table = summarize(per_input)
            payload["cases"][case] = {
                "forward_cost": ratio,
                "reference_max_l2_vs_double": reference_error,
                "table": table,
                "curves": curves,
                "seconds": time.perf_counter() - start,
            }
            if name == "digits_cnn":
                payload["cases"][case]["timing"] = time_at_iso_convergence(
                    model.with_output(output), x, table, curves, grid, repeats=3 if args.quick else 15
                )
            write("iso_convergence.json", payload, args.out)  # each finished case is kept
            # hundreds of compiled programs per case: free them before the next one
            jax.clear_caches()
            print(
                f"{case}: reference vs {2 * reference_steps} points max L2 {reference_error:.1e}, forward cost {ratio:.2f}, "
                f"{time.perf_counter() - start:.0f} s",
                flush=True,
            )
    os.makedirs(args.out, exist_ok=True)
    plot(
        {case: result["curves"] for case, result in payload["cases"].items()},
        os.path.join(args.out, "iso_convergence.png"),
    )
    path = write("iso_convergence.json", payload, args.out)
    with open(os.path.join(args.out, "iso_convergence.md"), "w") as f:
        f.write(markdown(payload))
    print("\nmedian gradient evaluations per input (p90), speed-up over the best uniform Riemann rule")
    for case, result in payload["cases"].items():
        print(f"\n{case}")
        print(f"{'schedule':<16}" + "".join(f"{c:>26}" for c in CRITERIA))
        for schedule, row in result["table"].items():
            cells = [
                f"{row[c]['median']:>7.0f} ({row[c]['p90']:>5.0f}) x{row[c]['speedup_vs_best_uniform_riemann']:>5.2f}"
                for c in CRITERIA
            ]
            print(f"{schedule:<16}" + "".join(f"{cell:>26}" for cell in cells))
    print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
