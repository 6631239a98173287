"""Convolutions inside the chunk loop: `jaxplain.models.conv_general_dilated` against `lax`'s.

A long path runs as a `lax.scan` over chunks. XLA:CPU rewrites a convolution's kernel into
the HWIO layout of its fast kernel only outside loops, and JAX writes an input gradient
with the kernel read as HWOI, so inside the scan every input gradient took XLA's slow
generic convolution. `jaxplain.models.Conv` computes its convolutions with
`jaxplain.models.conv_general_dilated`, whose input gradient reads an HWIO kernel.

This script compiles the same IG call twice, once as shipped and once with `Conv`'s
convolutions sent to `jax.lax.conv_general_dilated` (everything else equal: the same
program options, chunks and paths), and times the two interleaved in one run, primed,
medians after warm-up.

    python benchmarks/loop_convolutions.py [--repeats 5] [--quick]

Writes benchmarks/results/loop_convolutions.json.
"""

from __future__ import annotations

import contextlib
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np

import jaxplain
from jaxplain import engine
from jaxplain.backends import cpu
from jaxplain.models import conv as conv_module

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import cpu_arguments, interleaved_medians, machine, max_rel_diff, write  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@contextlib.contextmanager
def lax_convolutions():
    """Conv's convolutions through `jax.lax.conv_general_dilated` while tracing."""
    shipped = conv_module.conv_general_dilated
    conv_module.conv_general_dilated = jax.lax.conv_general_dilated
    try:
        yield
    finally:
        conv_module.conv_general_dilated = shipped


def cases(quick: bool):
    digits = jaxplain.data.load("digits")
    cnn = jaxplain.load_model(os.path.join(ROOT, "checkpoints", "digits_cnn"))
    size, batch = (32, 2) if quick else (64, 8)
    module = jaxplain.models.ResNet18(num_classes=10)
    images = jnp.asarray(np.random.default_rng(0).uniform(size=(batch, size, size, 3)), jnp.float32)
    resnet = jaxplain.Model.from_linen(module, module.init(jax.random.PRNGKey(0), images[:1]))
    cnn_steps, resnet_steps = (64, 16) if quick else (1024, 128)
    return [
        (
            f"digits CNN IG (B=64, {cnn_steps} steps)",
            cnn,
            jnp.asarray(digits.x_test[:64], jnp.float32),
            cnn_steps,
        ),
        (f"ResNet-18 IG ({size}x{size}, B={batch}, {resnet_steps} steps)", resnet, images, resnet_steps),
    ]


def _hwoi(compiled) -> int:
    """Convolutions of the compiled program that read their kernel as HWOI (XLA:CPU's slow path)."""
    return sum(" convolution(" in line and "_01oi->" in line for line in compiled.as_text().splitlines())


def main(argv=None) -> int:
    args = cpu_arguments(__doc__, 5, argv)
    if args is None:
        return 1
    repeats = args.repeats
    rows = []
    for name, model, x, steps in cases(args.quick):
        target = jnp.zeros(x.shape[0], jnp.int32)

        def explain(x, model=model, steps=steps, target=target):
            return jaxplain.integrated_gradients(model, x, target=target, steps=steps).values

        options = cpu.compiler_options()
        # Inner programs' traces are cached: clear them so that each variant is traced anew.
        jax.clear_caches()
        shipped = jax.jit(explain, compiler_options=options).lower(x).compile()
        jax.clear_caches()
        with lax_convolutions():
            plain = jax.jit(explain, compiler_options=options).lower(x).compile()
        jax.clear_caches()
        chunk = engine.default_chunk_size(model, x, steps)
        timing = interleaved_medians(
            {"hwio": lambda: shipped(x), "lax": lambda: plain(x)}, repeats=repeats, prime=True
        )
        row = {
            "case": name,
            "chunk_size": chunk,
            "chunks": -(-steps // chunk),
            "jaxplain_ms": timing["hwio"]["median_s"] * 1e3,
            "lax_ms": timing["lax"]["median_s"] * 1e3,
            "runs": repeats,
            "max_rel_diff": max_rel_diff(shipped(x), plain(x)),
            "hwoi_convolutions": {"jaxplain": _hwoi(shipped), "lax": _hwoi(plain)},
        }
        row["speedup"] = row["lax_ms"] / row["jaxplain_ms"]
        rows.append(row)
        print(
            f"{name}: {row['chunks']} chunks of {chunk} points; shipped {row['jaxplain_ms']:.1f} ms, "
            f"lax convolutions {row['lax_ms']:.1f} ms, {row['speedup']:.2f}x, max rel. diff "
            f"{row['max_rel_diff']:.1e}; convolutions reading an HWOI kernel: {row['hwoi_convolutions']}",
            flush=True,
        )
    payload = {
        "machine": machine(),
        "rows": rows,
        "note": "the same IG call compiled with Conv's convolutions as shipped (HWIO input gradients) "
        "and through jax.lax.conv_general_dilated; interleaved, primed, medians after warm-up",
    }
    write("loop_convolutions.json", payload, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
