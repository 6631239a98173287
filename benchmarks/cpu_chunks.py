"""Does splitting the path into a few chunks pay on the CPU? One chunk vs jaxplain's default.

On the CPU, `default_chunk_size` caps a chunk at a fixed amount of work
(`jaxplain.backends.cpu.CHUNK_ROWS` rows or `cpu.CHUNK_BYTES` of saved activations). This script times, interleaved in one run, `integrated_gradients` with
that default against the same call with all points in one chunk, for the shipped digits
CNN and a small-stem ResNet18, and reports median(default) / median(one chunk).

    python benchmarks/cpu_chunks.py [--repeats 10]

Writes benchmarks/results/cpu_chunks.json.
"""

from __future__ import annotations

import argparse
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np

import jaxplain
from jaxplain.models import ResNet18

sys.path.insert(0, os.path.dirname(__file__))
from _common import interleaved_medians, machine, write  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def cases():
    digits = jaxplain.data.load("digits").x_test
    model = jaxplain.load_model(os.path.join(ROOT, "checkpoints", "digits_cnn"))
    yield "digits_cnn", model, jnp.asarray(digits[:16])
    yield "digits_cnn", model, jnp.asarray(digits[:128])
    module = ResNet18(num_classes=10, stem="small")
    x = jnp.asarray(np.random.default_rng(0).normal(size=(16, 32, 32, 3)), jnp.float32)
    yield (
        "resnet18_small_32px",
        jaxplain.Model.from_linen(module, module.init(jax.random.PRNGKey(0), x[:1])),
        x,
    )


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    rows = []
    for name, model, x in cases():
        default = jaxplain.engine.default_chunk_size(model, x, args.steps)
        timings = interleaved_medians(
            {
                "default": lambda: jaxplain.integrated_gradients(model, x, target=0, steps=args.steps).values,
                "one_chunk": lambda: (
                    jaxplain.integrated_gradients(
                        model, x, target=0, steps=args.steps, chunk_size=args.steps
                    ).values
                ),
            },
            repeats=args.repeats,
            warmup=1,
        )
        ratio = timings["default"]["median_s"] / timings["one_chunk"]["median_s"]
        rows.append(
            {
                "case": name,
                "batch": int(x.shape[0]),
                "steps": args.steps,
                "default_chunk_size": default,
                "timings": timings,
                "ratio_default_over_one_chunk": ratio,
            }
        )
        print(
            f"{name:22} B={x.shape[0]:<4} default chunk {default:>3}: "
            f"{1e3 * timings['default']['median_s']:9.1f} ms vs one chunk "
            f"{1e3 * timings['one_chunk']['median_s']:9.1f} ms  ratio {ratio:.3f}"
        )
    path = write(
        "cpu_chunks.json",
        {"benchmark": "cpu_chunks", "machine": machine(), "cases": rows},
        *([args.out] if args.out else []),
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
