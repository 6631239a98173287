"""jaxplain against Captum, side by side in one run: time ratios, agreement and peak memory.

The same architectures with the same weights (copied from jaxplain's Flax models into
PyTorch by benchmarks/_torch_models.py), the same inputs, targets, steps and quadrature
rule. For each (model, method) both run in turn, A/B interleaved, and the median of
`--repeats` timed calls after warm-up is kept; the ratio is Captum's median over
jaxplain's (> 1: jaxplain is faster). Deterministic methods also report the largest
difference of the two attributions relative to Captum's largest |value|; the sampling
methods (SmoothGrad, GradientSHAP, KernelSHAP) draw differently and are timed only.

Memory: Integrated Gradients at 32, 128, 512 and 1024 steps, each configuration in its
own subprocess, peak resident set size from the OS (`getrusage`), minus the resident size
after loading the model and inputs: Captum without `internal_batch_size` (all steps of the
batch in one forward pass), Captum with it, and jaxplain with its default chunking.

  python benchmarks/vs_captum.py                 # everything, about 15 minutes on 2 cores
  python benchmarks/vs_captum.py --quick         # tiny sizes, a few seconds (the test)
  python benchmarks/vs_captum.py --cases mlp,cnn --skip-memory

Needs the `bench` extra (CPU torch, captum). Results: benchmarks/results/vs_captum.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import torch
from captum.attr import (
    DeepLift,
    GradientShap,
    IntegratedGradients,
    KernelShap,
    NoiseTunnel,
    Occlusion,
    Saliency,
)

import jaxplain

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _torch_models  # noqa: E402
from _common import RESULTS, interleaved_medians, machine, max_rel_diff, write  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MEMORY_NOTE = (
    "peak RSS (VmHWM, reset after one warm-up call) minus RSS before the measured call, each "
    "configuration in a fresh process; seconds of the measured (second) call"
)
CAPTUM_RULES = {"riemann_middle": "riemann_middle", "gauss_legendre": "gausslegendre"}


@dataclasses.dataclass
class Case:
    """One model: both twins, the inputs (NHWC for jaxplain), and the method settings."""

    name: str
    model: jaxplain.Model
    torch_model: torch.nn.Module
    x: np.ndarray  # NHWC / flat, float32
    nchw: bool  # whether the torch twin takes NCHW
    steps: int
    samples: int  # SmoothGrad / GradientSHAP draws
    background: np.ndarray
    window: tuple  # occlusion window (jaxplain layout), stride = window
    groups: np.ndarray  # KernelSHAP feature groups (jaxplain layout)
    shap_samples: int
    methods: tuple
    deeplift_twin: torch.nn.Module | None = None  # a twin whose max-pools Captum's DeepLift reads right

    def to_torch(self, array) -> torch.Tensor:
        tensor = torch.tensor(np.asarray(array, np.float32))
        return tensor.permute(0, 3, 1, 2).contiguous() if self.nchw and tensor.ndim == 4 else tensor

    def from_torch(self, tensor) -> np.ndarray:
        array = tensor.detach().numpy()
        return np.transpose(array, (0, 2, 3, 1)) if self.nchw and array.ndim == 4 else array

    def torch_layout(self, shape: tuple) -> tuple:
        return (shape[2], shape[0], shape[1]) if self.nchw and len(shape) == 3 else shape


ALL_METHODS = (
    "saliency",
    "ig_riemann_middle",
    "ig_gauss_legendre",
    "smoothgrad",
    "expected_gradients",
    "deeplift",
    "occlusion",
    "kernel_shap",
)


def _checkpoint_case(name, checkpoint, dataset, batch, steps, samples, window, patch, shap_samples, methods):
    loaded = jaxplain.io.load_checkpoint(os.path.join(ROOT, "checkpoints", checkpoint))
    data = jaxplain.data.load(dataset)
    rows = np.concatenate([data.x_test, data.x_train])[:batch]
    twin = _torch_models.from_checkpoint(loaded, dtype=torch.float32)
    shape = rows.shape[1:]
    groups = (
        jaxplain.patch_mask(shape, patch)
        if patch is not None
        else np.arange(int(np.prod(shape)), dtype=np.int32).reshape(shape)
    )
    # Captum's DeepLift rule for a max-pool module that follows a ReLU in place is inert;
    # pooling a clone gives the Rescale rule both libraries mean (see crosscheck_captum.py).
    deeplift_twin = (
        _torch_models.from_checkpoint(loaded, dtype=torch.float32, pooling="clone_module")
        if loaded.metadata["architecture"] == "small_cnn"
        else twin
    )
    return Case(
        name,
        loaded.model(),
        twin,
        np.asarray(rows, np.float32),
        False,
        steps,
        samples,
        np.asarray(data.x_train[:32], np.float32),
        window,
        groups,
        shap_samples,
        methods,
        deeplift_twin,
    )


def _random_case(name, module, size, batch, steps, samples, window, patch, shap_samples, methods, seed=0):
    x = np.asarray(jax.random.uniform(jax.random.key(seed), (batch, size, size, 3)), np.float32)
    variables = module.init(jax.random.key(seed + 1), jnp.asarray(x[:1]))
    # BatchNorm statistics away from the identity, as after training
    stats = jax.tree_util.tree_map(lambda leaf: leaf, variables.get("batch_stats", {}))
    if stats:
        leaves, tree = jax.tree_util.tree_flatten_with_path(stats)
        keys = jax.random.split(jax.random.key(seed + 2), len(leaves))
        new = [
            0.1 * jax.random.normal(k, leaf.shape)
            if path[-1].key == "mean"
            else jax.random.uniform(k, leaf.shape, minval=0.5, maxval=1.5)
            for k, (path, leaf) in zip(keys, leaves)
        ]
        variables = {**variables, "batch_stats": jax.tree_util.tree_unflatten(tree, new)}
    builder = _torch_models.inception_from_flax if "inception" in name else _torch_models.resnet_from_flax
    twin = builder(module, variables, dtype=torch.float32)
    model = jaxplain.Model.from_linen(module, variables)
    background = np.asarray(jax.random.uniform(jax.random.key(seed + 3), (8, size, size, 3)), np.float32)
    return Case(
        name,
        model,
        twin,
        x,
        True,
        steps,
        samples,
        background,
        window,
        jaxplain.patch_mask((size, size, 3), patch),
        shap_samples,
        methods,
    )


def cases(quick: bool, names) -> list[Case]:
    found = []
    if "mlp" in names:
        found.append(
            _checkpoint_case(
                "mlp (breast cancer, B=256)" if not quick else "mlp",
                "breast_cancer_mlp",
                "breast_cancer",
                8 if quick else 256,
                8 if quick else 64,
                4 if quick else 16,
                (1,),
                None,
                8 if quick else 64,
                ALL_METHODS,
            )
        )
    if "cnn" in names:
        found.append(
            _checkpoint_case(
                "cnn (digits 8x8, B=64)" if not quick else "cnn",
                "digits_cnn",
                "digits",
                4 if quick else 64,
                8 if quick else 64,
                4 if quick else 16,
                (2, 2, 1),
                (2, 2, 1),
                8 if quick else 64,
                ALL_METHODS,
            )
        )
    if "resnet18" in names:
        size = 32 if quick else 64
        found.append(
            _random_case(
                "resnet18 (64x64, B=8)" if not quick else "resnet18",
                jaxplain.models.ResNet18(num_classes=10),
                size,
                2 if quick else 8,
                4 if quick else 32,
                2 if quick else 8,
                (8, 8, 3),
                (8, 8, 3),
                8 if quick else 64,
                ALL_METHODS,
            )
        )
    if "inception" in names:
        size = 75 if quick else 299
        found.append(
            _random_case(
                "inception_v3 (299x299, B=2)" if not quick else "inception_v3",
                jaxplain.models.InceptionV3(num_classes=1000),
                size,
                1 if quick else 2,
                2 if quick else 8,
                2,
                (size, size, 3),
                (size, size, 3),
                2,
                ("saliency", "ig_riemann_middle", "ig_gauss_legendre"),
            )
        )
    return found


def contenders(case: Case, method: str, target: np.ndarray):
    """(jaxplain call, Captum call, deterministic) for one method."""
    model, twin = case.model, case.torch_model
    x, xt = jnp.asarray(case.x), case.to_torch(case.x)
    tt = torch.as_tensor(target, dtype=torch.long)
    key = jax.random.key(0)
    spread = float(np.mean(case.x.reshape(len(case.x), -1).max(1) - case.x.reshape(len(case.x), -1).min(1)))
    if method == "saliency":
        return (
            lambda: jaxplain.saliency(model, x, target=target).values,
            lambda: Saliency(twin).attribute(xt, target=tt, abs=False),
            True,
        )
    if method.startswith("ig_"):
        rule = method[3:]
        return (
            lambda: (
                jaxplain.integrated_gradients(model, x, target=target, steps=case.steps, schedule=rule).values
            ),
            lambda: IntegratedGradients(twin).attribute(
                xt, baselines=0.0, target=tt, n_steps=case.steps, method=CAPTUM_RULES[rule]
            ),
            True,
        )
    if method == "smoothgrad":
        return (
            lambda: (
                jaxplain.smoothgrad(
                    model,
                    x,
                    method=jaxplain.saliency,
                    target=target,
                    key=key,
                    samples=case.samples,
                    noise_scale=0.15,
                ).values
            ),
            lambda: NoiseTunnel(Saliency(twin)).attribute(
                xt, nt_type="smoothgrad", nt_samples=case.samples, stdevs=0.15 * spread, target=tt, abs=False
            ),
            False,
        )
    if method == "expected_gradients":
        background = jnp.asarray(case.background)
        return (
            lambda: (
                jaxplain.expected_gradients(
                    model, x, target=target, background=background, key=key, samples=case.samples
                ).values
            ),
            lambda: GradientShap(twin).attribute(
                xt, baselines=case.to_torch(case.background), n_samples=case.samples, stdevs=0.0, target=tt
            ),
            False,
        )
    if method == "deeplift":
        return (
            lambda: jaxplain.deeplift(model, x, target=target).values,
            lambda: DeepLift(case.deeplift_twin or twin).attribute(xt, baselines=0.0, target=tt),
            True,
        )
    if method == "occlusion":
        windows = int(np.prod([s // w for s, w in zip(case.x.shape[1:], case.window)]))
        return (
            lambda: (
                jaxplain.occlusion(model, x, target=target, window=case.window, stride=case.window).values
            ),
            lambda: Occlusion(twin).attribute(
                xt,
                sliding_window_shapes=case.torch_layout(case.window),
                strides=case.torch_layout(case.window),
                baselines=0.0,
                target=tt,
                perturbations_per_eval=windows,
            ),
            True,
        )
    if method == "kernel_shap":
        mask_t = case.to_torch(case.groups[None].astype(np.float32)).long()
        return (
            lambda: (
                jaxplain.kernel_shap(
                    model, x, target=target, feature_mask=case.groups, samples=case.shap_samples, key=key
                ).values
            ),
            lambda: KernelShap(twin).attribute(
                xt,
                baselines=0.0,
                target=tt,
                feature_mask=mask_t,
                n_samples=case.shap_samples,
                perturbations_per_eval=case.shap_samples,
            ),
            False,
        )
    raise ValueError(method)


def time_case(case: Case, repeats: int, warmup: int, log) -> list[dict]:
    target = np.asarray(np.argmax(np.asarray(case.model(jnp.asarray(case.x))), axis=-1), np.int32)
    with torch.no_grad():
        logits = case.torch_model(case.to_torch(case.x)).numpy()
    rows = [
        {
            "case": case.name,
            "method": "logits",
            "max_rel_diff": max_rel_diff(case.model(jnp.asarray(case.x)), logits),
        }
    ]
    for method in case.methods:
        ours, theirs, deterministic = contenders(case, method, target)
        row = {"case": case.name, "method": method, "batch": int(len(case.x))}
        try:
            a, b = np.asarray(ours()), case.from_torch(theirs())
            if deterministic:
                row["max_rel_diff"] = max_rel_diff(a, b)
            times = interleaved_medians(
                {"jaxplain": ours, "captum": theirs}, repeats=repeats, warmup=warmup, prime=True
            )
        except Exception as error:  # noqa: BLE001 - a method one side cannot run is reported, not fatal
            row["error"] = f"{type(error).__name__}: {str(error)[:300]}"
            log(f"  {method}: {row['error']}")
            rows.append(row)
            continue
        row.update(
            jaxplain_ms=1e3 * times["jaxplain"]["median_s"],
            captum_ms=1e3 * times["captum"]["median_s"],
            runs=times["jaxplain"]["runs"],
        )
        row["ratio"] = row["captum_ms"] / row["jaxplain_ms"]
        log(
            f"  {method}: jaxplain {row['jaxplain_ms']:.2f} ms, captum {row['captum_ms']:.2f} ms, "
            f"ratio {row['ratio']:.2f}"
            + (f", max rel diff {row['max_rel_diff']:.1e}" if "max_rel_diff" in row else "")
        )
        rows.append(row)
    return rows


# --- memory ---------------------------------------------------------------------------------


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def _reset_peak() -> None:
    """Sets this process's peak RSS (VmHWM) to its current RSS (Linux >= 4.0)."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def memory_child(contender: str, steps: int, batch: int, internal_batch: int) -> dict:
    """Run in a subprocess: IG on the digits CNN at `steps`; peak RSS over the setup RSS."""
    loaded = jaxplain.io.load_checkpoint(os.path.join(ROOT, "checkpoints", "digits_cnn"))
    x = np.asarray(jaxplain.data.load("digits").x_train[:batch], np.float32)
    target = np.zeros(batch, np.int32)
    if contender == "jaxplain":
        model, xj = loaded.model(), jnp.asarray(x)
        run = lambda: jaxplain.integrated_gradients(
            model, xj, target=target, steps=steps
        ).values.block_until_ready()  # noqa: E731
    else:
        twin = _torch_models.from_checkpoint(loaded, dtype=torch.float32)
        xt, tt = torch.tensor(x), torch.as_tensor(target, dtype=torch.long)
        options = {"internal_batch_size": internal_batch} if contender == "captum_internal_batch" else {}
        run = lambda: IntegratedGradients(twin).attribute(
            xt,
            baselines=0.0,
            target=tt,
            n_steps=steps,  # noqa: E731
            method="gausslegendre",
            **options,
        )
    run()  # compiled (jaxplain) and warm (both): the peak below is one call's, not the compiler's
    # getrusage's ru_maxrss survives exec (it would report the parent's peak): read the
    # kernel's high-water mark of this process instead, reset after the setup.
    _reset_peak()
    setup = _status_kib("VmRSS")
    start = time.perf_counter()
    run()
    seconds = time.perf_counter() - start
    peak = _status_kib("VmHWM")
    return {
        "contender": contender,
        "steps": steps,
        "batch": batch,
        "setup_mib": setup / 1024,
        "peak_mib": peak / 1024,
        "increase_mib": (peak - setup) / 1024,
        "seconds": seconds,
    }


def memory_study(steps_list, batch: int, internal_batch: int, log) -> list[dict]:
    rows = []
    for steps in steps_list:
        for contender in ("captum", "captum_internal_batch", "jaxplain"):
            command = [
                sys.executable,
                os.path.abspath(__file__),
                "--memory-child",
                contender,
                "--steps",
                str(steps),
                "--batch",
                str(batch),
                "--internal-batch",
                str(internal_batch),
            ]
            result = subprocess.run(
                command,
                capture_output=True,
                text=True,
                timeout=900,
                env={**os.environ, "JAXPLAIN_PROGRESS": "0"},
            )
            if result.returncode != 0:
                rows.append(
                    {"contender": contender, "steps": steps, "error": result.stderr.strip().splitlines()[-1:]}
                )
                log(f"  {contender} {steps} steps: failed {rows[-1]['error']}")
                continue
            rows.append(json.loads(result.stdout.strip().splitlines()[-1]))
            log(
                f"  {contender:>22} {steps:>5} steps: peak {rows[-1]['peak_mib']:.0f} MiB, "
                f"+{rows[-1]['increase_mib']:.0f} MiB over setup, {rows[-1]['seconds']:.2f} s"
            )
    return rows


def markdown(timing: list[dict], memory: list[dict]) -> str:
    lines = [
        "| model | method | jaxplain ms | Captum ms | Captum / jaxplain | max rel. diff |",
        "|---|---|---|---|---|---|",
    ]
    for row in timing:
        if row["method"] == "logits":
            continue
        if "error" in row:
            lines.append(f"| {row['case']} | {row['method']} | - | - | {row['error'][:60]} | - |")
            continue
        diff = f"{row['max_rel_diff']:.1e}" if "max_rel_diff" in row else "sampling"
        lines.append(
            f"| {row['case']} | {row['method']} | {row['jaxplain_ms']:.2f} | {row['captum_ms']:.2f} | "
            f"{row['ratio']:.2f}x | {diff} |"
        )
    if memory:
        lines += [
            "",
            "| IG steps | Captum (no internal_batch_size) | Captum internal_batch_size | jaxplain default |",
            "|---|---|---|---|",
        ]
        for steps in sorted({row["steps"] for row in memory}):
            cells = []
            for contender in ("captum", "captum_internal_batch", "jaxplain"):
                found = [r for r in memory if r["steps"] == steps and r["contender"] == contender]
                cells.append(
                    "-"
                    if not found or "error" in found[0]
                    else f"{found[0]['increase_mib']:.0f} MiB ({found[0]['seconds']:.2f} s)"
                )
            lines.append(f"| {steps} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes, one timed run")
    parser.add_argument("--cases", default="mlp,cnn,resnet18,inception")
    parser.add_argument(
        "--repeats", type=int, default=None, help="timed runs per contender (default 7; quick 1)"
    )
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument(
        "--memory-only", action="store_true", help="rerun the memory study into an existing JSON"
    )
    parser.add_argument("--out", default=RESULTS)
    parser.add_argument("--memory-child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--steps", type=int, default=32, help=argparse.SUPPRESS)
    parser.add_argument("--batch", type=int, default=64, help=argparse.SUPPRESS)
    parser.add_argument("--internal-batch", type=int, default=512, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.memory_child:
        print(json.dumps(memory_child(args.memory_child, args.steps, args.batch, args.internal_batch)))
        return 0

    def log(message):
        print(message, flush=True)

    if args.memory_only:
        path = os.path.join(args.out, "vs_captum.json")
        with open(path) as f:
            payload = json.load(f)
        payload["memory"] = memory_study(
            (4, 8) if args.quick else (32, 128, 512, 1024),
            4 if args.quick else 64,
            256 if args.quick else 512,
            log,
        )
        payload["notes"]["memory"] = MEMORY_NOTE
        write("vs_captum.json", payload, args.out)
        log("\n" + markdown(payload["timing"], payload["memory"]))
        return 0
    repeats = args.repeats or (1 if args.quick else 7)
    warmup = 1 if args.quick else 2
    torch.manual_seed(0)
    timing = []
    for case in cases(args.quick, args.cases.split(",")):
        log(f"{case.name}: {len(case.x)} inputs, {case.steps} IG steps")
        timing += time_case(
            case, repeats if "inception" not in case.name else max(1, min(repeats, 5)), warmup, log
        )
    memory = []
    if not args.skip_memory:
        steps_list = (4,) if args.quick else (32, 128, 512, 1024)  # quick: one child per contender
        log("memory: IG on the digits CNN, 64 inputs, Gauss-Legendre (each in its own process)")
        memory = memory_study(steps_list, 4 if args.quick else 64, 256 if args.quick else 512, log)
    payload = {
        "machine": {
            **machine(),
            "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(),
            "captum": __import__("captum").__version__,
        },
        "repeats": repeats,
        "warmup": warmup,
        "notes": {
            "ratio": "Captum median / jaxplain median, A/B interleaved in this process (> 1: jaxplain faster); "
            "each timed call follows an untimed call of the same library (primed: its own threads awake, "
            "the other library's threads no longer spinning)",
            "max_rel_diff": "max |jaxplain - Captum| / max |Captum|, float32, same weights, inputs, targets",
            "sampling": "SmoothGrad, GradientSHAP and KernelSHAP draw different random numbers: timed only",
            "memory": MEMORY_NOTE,
        },
        "timing": timing,
        "memory": memory,
    }
    path = write("vs_captum.json", payload, args.out)
    log("\n" + markdown(timing, memory))
    log(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
