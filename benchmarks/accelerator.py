"""Integrated Gradients on an accelerator: throughput, the engine's floor, schedules, Captum.

One self-contained run (under 5 minutes on one modern GPU) that prints a table last and
writes JSON to --out:

* models: InceptionV3 at 299x299 (the setting of the non-uniform IG paper) and ResNet-50
  at 224x224, random weights (no pretrained weights are shipped), in float32 and bfloat16;
* steps at iso-convergence: for the uniform rule (riemann_middle) and jaxplain's default
  (gauss_legendre), the fewest steps of a grid whose median relative L2 error against a
  512-step reference is <= 1% (float32, on the batch being timed);
* throughput: explanations per second of `integrated_gradients` at those steps, and of
  the floor it cannot beat: one jitted forward + backward over the same B x steps points
  already in device memory (ratio IG / floor: 1.0 is no overhead);
* Captum: the same models with the same weights in PyTorch (benchmarks/_torch_models.py)
  on the same GPU, when torch with CUDA is installed.

  python benchmarks/accelerator.py --out benchmarks/results/accelerator     # on a GPU / TPU
  python benchmarks/accelerator.py --tiny --out /tmp/acc                     # CPU smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

import jaxplain

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import interleaved_medians, machine, write  # noqa: E402

GRID = (4, 8, 16, 32, 64, 128, 256)


def _models(tiny: bool):
    if tiny:
        # a two-stage ResNet (one basic block per stage): the smoke run's compile time is most of it
        return [
            (
                "resnet6_16px",
                jaxplain.models.ResNet(
                    num_classes=10, stage_sizes=(1, 1), block="basic", stem="small", num_filters=8
                ),
                16,
                2,
            )
        ]
    return [
        ("inception_v3_299px", jaxplain.models.InceptionV3(num_classes=1000), 299, 16),
        ("resnet50_224px", jaxplain.models.ResNet50(num_classes=1000), 224, 32),
    ]


def _relative_l2(values, reference):
    flat = lambda a: np.asarray(a, np.float64).reshape(len(a), -1)  # noqa: E731
    return np.linalg.norm(flat(values) - flat(reference), axis=1) / np.maximum(
        np.linalg.norm(flat(reference), axis=1), 1e-30
    )


def iso_steps(model, x, target, grid, reference_steps, tolerance=0.01):
    """The fewest steps of `grid` at which each schedule's median relative L2 <= tolerance."""
    reference = jaxplain.integrated_gradients(model, x, target=target, steps=reference_steps).values
    found = {}
    for schedule in ("riemann_middle", "gauss_legendre"):
        errors = {}
        for steps in grid:
            values = jaxplain.integrated_gradients(
                model, x, target=target, steps=steps, schedule=schedule
            ).values
            errors[steps] = float(np.median(_relative_l2(values, reference)))
            if errors[steps] <= tolerance:
                break
        reached = [s for s, e in errors.items() if e <= tolerance]
        found[schedule] = {
            "steps": reached[0] if reached else max(errors),
            "errors": errors,
            "reached": bool(reached),
        }
    return found


def floor_call(model, x, target, steps):
    """One jitted forward + backward over B x steps points already on the device."""
    alphas = (jnp.arange(steps, dtype=jnp.float32) + 0.5) / steps
    points = (alphas[None, :, None, None, None] * x[:, None]).reshape(-1, *x.shape[1:]).astype(x.dtype)
    rows = jnp.repeat(target, steps)

    @jaxplain.engine.jit  # the options jaxplain compiles with (none on GPU and TPU)
    def gradient(params, points):
        def total(p):
            scores = model.apply_fn(params, p)
            return jnp.take_along_axis(scores, rows[:, None], axis=1).sum()

        return jax.grad(total)(points)

    points = jax.block_until_ready(points)
    return lambda: gradient(model.params, points)


def captum_calls(name, module, variables, x, target, steps_by_schedule):
    try:
        import _torch_models
        import torch
        from captum.attr import IntegratedGradients
    except ImportError as error:
        return {}, f"no torch/captum: {error}"
    if not torch.cuda.is_available() and jax.default_backend() != "cpu":
        return {}, "torch has no CUDA device"
    device = "cuda" if torch.cuda.is_available() else "cpu"
    builder = _torch_models.inception_from_flax if "inception" in name else _torch_models.resnet_from_flax
    twin = builder(module, variables, dtype=torch.float32).to(device)
    xt = torch.tensor(np.asarray(x, np.float32)).permute(0, 3, 1, 2).contiguous().to(device)
    tt = torch.as_tensor(np.asarray(target), dtype=torch.long, device=device)
    rules = {"riemann_middle": "riemann_middle", "gauss_legendre": "gausslegendre"}

    def call(schedule, steps):
        def run():
            out = IntegratedGradients(twin).attribute(
                xt,
                baselines=0.0,
                target=tt,
                n_steps=steps,
                method=rules[schedule],
                internal_batch_size=len(xt) * steps,
            )
            if device == "cuda":
                torch.cuda.synchronize()
            return out

        return run

    return {f"captum {s}": call(s, cell["steps"]) for s, cell in steps_by_schedule.items()}, device


def run_case(name, module, size, batch, args, log):
    x = jax.random.uniform(jax.random.key(0), (batch, size, size, 3))
    variables = jax.jit(module.init)(jax.random.key(1), x[:1])
    model32 = jaxplain.Model.from_linen(module, variables)
    target = jnp.asarray(np.asarray(model32(x)).argmax(-1), jnp.int32)
    grid = GRID[:1] if args.tiny else GRID
    started = time.perf_counter()
    iso = iso_steps(model32, x, target, grid, 8 if args.tiny else 512)
    log(
        f"{name}: iso-convergence steps { ({k: v['steps'] for k, v in iso.items()}) } ({time.perf_counter() - started:.0f} s)"
    )
    rows = []
    for dtype in ("float32", "bfloat16"):
        cast = jnp.bfloat16 if dtype == "bfloat16" else jnp.float32
        model = (
            model32
            if dtype == "float32"
            else model32.replace(
                params=jax.tree_util.tree_map(
                    lambda p: p.astype(cast) if jnp.issubdtype(p.dtype, jnp.floating) else p, model32.params
                )
            )
        )
        xd = x.astype(cast)
        contenders, floors = {}, {}
        for schedule, cell in iso.items():
            steps = cell["steps"]
            contenders[f"jaxplain {schedule}"] = lambda s=schedule, n=steps: (
                jaxplain.integrated_gradients(model, xd, target=target, steps=n, schedule=s).values
            )
            if steps not in floors:  # the floor depends on the number of points only: one program per count
                floors[steps] = floor_call(model, xd, target, steps)
            contenders[f"floor {schedule}"] = floors[steps]
        note = None
        if dtype == "float32" and not args.no_captum:
            extra, note = captum_calls(name, module, variables, x, target, iso)
            contenders.update(extra)
        times = interleaved_medians(contenders, repeats=args.repeats, warmup=1, pause=0.1)
        for label, cell in times.items():
            schedule = label.split()[-1]
            rows.append(
                {
                    "model": name,
                    "dtype": dtype,
                    "contender": label.split()[0],
                    "schedule": schedule,
                    "steps": iso[schedule]["steps"],
                    "batch": batch,
                    "median_s": cell["median_s"],
                    "explanations_per_s": batch / cell["median_s"],
                }
            )
        for schedule in iso:
            ours = times[f"jaxplain {schedule}"]["median_s"]
            floor = times[f"floor {schedule}"]["median_s"]
            captum = times.get(f"captum {schedule}", {}).get("median_s")
            log(
                f"  {dtype} {schedule} ({iso[schedule]['steps']} steps): {batch / ours:.1f} expl/s, "
                f"IG / floor {ours / floor:.2f}"
                + (f", Captum / jaxplain {captum / ours:.2f}" if captum else "")
                + (f" [{note}]" if note and dtype == "float32" and captum is None else "")
            )
    return {"iso": iso, "rows": rows}


def table(results) -> str:
    lines = [
        "| model | dtype | schedule | steps | jaxplain expl/s | floor expl/s | IG / floor | Captum expl/s | Captum / jaxplain |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, case in results.items():
        rows = case["rows"]
        for dtype in ("float32", "bfloat16"):
            for schedule in ("riemann_middle", "gauss_legendre"):
                get = lambda who: next(
                    (
                        r
                        for r in rows
                        if r["dtype"] == dtype
                        and r["schedule"] == schedule  # noqa: E731
                        and r["contender"] == who
                    ),
                    None,
                )
                ours, floor, captum = get("jaxplain"), get("floor"), get("captum")
                if ours is None:
                    continue
                lines.append(
                    f"| {name} | {dtype} | {schedule} | {ours['steps']} | {ours['explanations_per_s']:.1f} | "
                    f"{floor['explanations_per_s']:.1f} | {ours['median_s'] / floor['median_s']:.2f} | "
                    + (
                        f"{captum['explanations_per_s']:.1f} | {captum['median_s'] / ours['median_s']:.2f} |"
                        if captum
                        else "- | - |"
                    )
                )
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="folder for accelerator.json")
    parser.add_argument("--tiny", action="store_true", help="small models and sizes (a CPU smoke run)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--no-captum", action="store_true")
    args = parser.parse_args(argv)

    def log(message):
        print(message, flush=True)

    log(f"devices: {jax.devices()}")
    results = {
        name: run_case(name, module, size, batch, args, log)
        for name, module, size, batch in _models(args.tiny)
    }
    payload = {
        "machine": machine(),
        "tiny": args.tiny,
        "repeats": args.repeats,
        "notes": {
            "weights": "random (no pretrained weights are shipped); iso-convergence on the timed batch",
            "floor": "one jitted forward + backward over the same B x steps points on the device",
            "captum": "same weights in PyTorch on the same device, internal_batch_size = all points",
        },
        "results": results,
    }
    path = write("accelerator.json", json.loads(json.dumps(payload, default=float)), args.out)
    log("\n" + table(results))
    log(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
