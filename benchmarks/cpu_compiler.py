"""XLA's CPU defaults against the options jaxplain compiles its CPU programs with.

`jaxplain.backends.cpu.COMPILER_OPTIONS` turns XLA:CPU's YNNPACK fusions off, so that
convolutions and matmuls run on XLA's multi-threaded Eigen kernels. This script measures
that choice side by side in one process: every contender is the same function, jitted
once with XLA's defaults and once with the options (the explainer's own program is
inlined into both), timed interleaved, medians after warm-up. It also times each
convolution alone pinned to the first core, which shows whether a kernel uses the
second core at all.

    python benchmarks/cpu_compiler.py [--repeats 7] [--quick]

Writes benchmarks/results/cpu_compiler.json.
"""

from __future__ import annotations

import os
import sys

import jax
import jax.numpy as jnp
import numpy as np

import jaxplain
from jaxplain.backends import cpu

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import cpu_arguments, interleaved_medians, machine, write  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _conv(shape, features):
    rng = np.random.default_rng(0)
    kernel = jnp.asarray(rng.normal(size=(3, 3, shape[-1], features)) * 0.1, jnp.float32)
    x = jnp.asarray(rng.normal(size=shape), jnp.float32)

    def f(x):
        return jax.lax.conv_general_dilated(
            x, kernel, (1, 1), ((1, 1), (1, 1)), dimension_numbers=("NHWC", "HWIO", "NHWC")
        )

    return f, x


def _matmul(m, k, n):
    rng = np.random.default_rng(0)
    b = jnp.asarray(rng.normal(size=(k, n)), jnp.float32)
    return (lambda a: jax.nn.relu(a @ b)), jnp.asarray(rng.normal(size=(m, k)), jnp.float32)


def _explainer(method, model, x, **options):
    target = jnp.zeros(x.shape[0], jnp.int32)
    return (lambda x: getattr(jaxplain, method)(model, x, target=target, **options).values), x


def cases(quick: bool):
    digits = jaxplain.data.load("digits")
    cancer = jaxplain.data.load("breast_cancer")
    cnn = jaxplain.load_model(os.path.join(ROOT, "checkpoints", "digits_cnn"))
    mlp = jaxplain.load_model(os.path.join(ROOT, "checkpoints", "breast_cancer_mlp"))
    size, batch = (32, 2) if quick else (64, 8)
    resnet_module = jaxplain.models.ResNet18(num_classes=10)
    images = jnp.asarray(np.random.default_rng(0).uniform(size=(batch, size, size, 3)), jnp.float32)
    resnet = jaxplain.Model.from_linen(resnet_module, resnet_module.init(jax.random.PRNGKey(0), images[:1]))
    steps = 8 if quick else 32
    return {
        "conv 3x3 64->64, 256 x 16x16": _conv((32 if quick else 256, 16, 16, 64), 64),
        "matmul 4096x512 @ 512x256 + relu": _matmul(512 if quick else 4096, 512, 256),
        "mlp IG (breast cancer, B=256, 64 steps)": _explainer(
            "integrated_gradients", mlp, jnp.asarray(cancer.x_test[:256], jnp.float32), steps=64
        ),
        "cnn IG (digits, B=64, 64 steps)": _explainer(
            "integrated_gradients", cnn, jnp.asarray(digits.x_test[:64], jnp.float32), steps=64
        ),
        f"resnet18 saliency ({size}x{size}, B={batch})": _explainer("saliency", resnet, images),
        f"resnet18 IG ({size}x{size}, B={batch}, {steps} steps)": _explainer(
            "integrated_gradients", resnet, images, steps=steps
        ),
    }


def main(argv=None) -> int:
    args = cpu_arguments(__doc__, 7, argv)
    if args is None:
        return 1
    options = dict(cpu.COMPILER_OPTIONS)
    repeats = args.repeats
    rows = []
    for name, (function, x) in cases(args.quick).items():
        default = jax.jit(function)
        tuned = jax.jit(function, compiler_options=options)
        difference = float(jnp.max(jnp.abs(default(x) - tuned(x))) / (jnp.max(jnp.abs(default(x))) + 1e-30))
        timing = interleaved_medians(
            {"default": lambda: default(x), "jaxplain": lambda: tuned(x)}, repeats=repeats, prime=True
        )
        row = {
            "case": name,
            "xla_default_ms": timing["default"]["median_s"] * 1e3,
            "jaxplain_options_ms": timing["jaxplain"]["median_s"] * 1e3,
            "runs": repeats,
            "max_rel_diff": difference,
        }
        row["speedup"] = row["xla_default_ms"] / row["jaxplain_options_ms"]
        rows.append(row)
        print(
            f"{name}: XLA defaults {row['xla_default_ms']:.2f} ms, jaxplain's options "
            f"{row['jaxplain_options_ms']:.2f} ms, {row['speedup']:.2f}x, max rel. diff {difference:.1e}",
            flush=True,
        )
    pinned = _one_core(options, args.quick)
    payload = {
        "machine": machine(),
        "options": options,
        "rows": rows,
        "one_core": pinned,
        "note": "same function jitted with XLA's CPU defaults and with jaxplain.backends.cpu.COMPILER_OPTIONS; "
        "interleaved, primed, medians after warm-up",
    }
    write("cpu_compiler.json", payload, args.out)
    return 0


def _pin(cores):
    """Every thread of this process (XLA's pools included) onto `cores`."""
    for task in os.listdir("/proc/self/task"):
        try:
            os.sched_setaffinity(int(task), cores)
        except OSError:  # a thread that has ended meanwhile
            pass


def _one_core(options, quick):
    """The convolution alone with both settings, on all cores and pinned to the first one."""
    if not hasattr(os, "sched_setaffinity") or not os.path.isdir("/proc/self/task"):
        return None
    function, x = _conv((32 if quick else 256, 16, 16, 64), 64)
    compiled = {"default": jax.jit(function), "jaxplain": jax.jit(function, compiler_options=options)}
    found = {}
    cores = os.sched_getaffinity(0)
    for label, affinity in (("all cores", cores), ("first core", {min(cores)})):
        _pin(affinity)
        try:
            timing = interleaved_medians(
                {k: (lambda f=f: f(x)) for k, f in compiled.items()}, repeats=2 if quick else 7, prime=True
            )
        finally:
            _pin(cores)
        found[label] = {k: v["median_s"] * 1e3 for k, v in timing.items()}
        print(
            f"conv, {label} ({len(affinity)}): XLA defaults {found[label]['default']:.1f} ms, "
            f"jaxplain's options {found[label]['jaxplain']:.1f} ms",
            flush=True,
        )
    return found


if __name__ == "__main__":
    sys.exit(main())
