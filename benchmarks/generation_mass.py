"""Where `generation_attributions` puts its mass on a model whose answer has a known source.

The shipped `copy_lm` (jaxplain/checkpoints/copy_lm) was trained on the copy task of
`jaxplain.data.sequences`: the prompt is 8 content tokens and a separator, and generated
token j repeats prompt token j, so its one source is prompt position j
(`task.sources[:, j]`). The shipped `key_value_lm` was trained on the key-value task: the
prompt lists 4 (key, value) pairs and then a queried key, and the one generated token is
the queried key's value, whose source is that value's position. For each method this script explains every generated token of
held-out examples in one call and reports, with |values| normalised over the P + j
sources each generated token can see,

  * `mass_on_source`: the mean share of a generated token's |attribution| on its source
    (and the lowest, `min_mass_on_source`);
  * `top1`: how often the source has the largest |attribution|;
  * `over_chance`: mass_on_source / chance, chance being the mean of 1 / (P + j), the
    share of a uniform attribution.

Two scores are explained: log p(token) (`plain`) and, as the model is near certain
(log p ~ 0, where gradients vanish), log p(token) - log p(runner-up) (`contrast`, the
foil being the model's second most likely token at each position).

    python benchmarks/generation_mass.py [--examples 64] [--quick] [--out DIR]

--quick (4 examples, IG at 8 steps, the plain score only) checks that the script works. Writes
generation_mass.json into --out (default benchmarks/results) and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import jax
import numpy as np

import jaxplain
from jaxplain.data import sequences

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import RESULTS, machine, write  # noqa: E402

METHODS = ("saliency", "input_x_gradient", "integrated_gradients", "lrp", "occlusion")
# each method with its defaults, and LRP with AttnLRP's attention rules as well
VARIANTS = tuple((method, {}) for method in METHODS) + (("lrp", {"attention": "attnlrp"}),)
# Held-out prompts: the checkpoint's metadata records its own held-out seed (1); 7 is
# neither it nor the training seed.
SEED = 7


def runner_up(model: jaxplain.Model, task: sequences.Sequences) -> np.ndarray:
    """The model's second most likely token at each generated position, (n, G)."""
    logits = np.asarray(model.apply_fn(model.params, task.sequences()))
    prompt = task.prompts.shape[1]
    return np.argsort(logits[:, prompt - 1 : -1], axis=-1)[..., -2].astype(np.int32)


def mass(values: np.ndarray, sources: np.ndarray, prompt: int) -> dict:
    """The share of |values| (n, G, T) on each generated token's source, over its sources."""
    magnitude = np.abs(values)
    share = magnitude / np.maximum(magnitude.sum(-1, keepdims=True), np.finfo(np.float64).tiny)
    on_source = np.take_along_axis(share, sources[..., None], -1)[..., 0]
    chance = float(np.mean(1.0 / (prompt + np.arange(values.shape[1]))))
    return {
        "mass_on_source": float(on_source.mean()),
        "min_mass_on_source": float(on_source.min()),
        "top1": float((magnitude.argmax(-1) == sources).mean()),
        "chance": chance,
        "over_chance": float(on_source.mean()) / chance,
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--examples", type=int, default=64)
    parser.add_argument("--quick", action="store_true", help="4 examples, IG at 8 steps, plain scores")
    parser.add_argument("--out", default=RESULTS, help="results folder (default benchmarks/results)")
    args = parser.parse_args(argv)
    examples, steps = (4, 8) if args.quick else (args.examples, 50)

    rows, tasks = [], {}
    for checkpoint, make in (("copy_lm", sequences.copy_task), ("key_value_lm", sequences.key_value_task)):
        model = jaxplain.load_model(checkpoint)
        task = tasks[checkpoint] = make(examples, seed=SEED)
        prompt = task.prompts.shape[1]
        foils = runner_up(model, task)
        scores = (("plain", None),) if args.quick else (("plain", None), ("contrast", foils))
        for score, contrast in scores:
            for method, variant in VARIANTS:
                options = {"steps": steps} if method == "integrated_gradients" else dict(variant)
                start = time.perf_counter()
                result = jaxplain.generation_attributions(
                    model, task.prompts, task.generated, method=method, contrast=contrast, **options
                )
                values = np.asarray(jax.block_until_ready(result.values), np.float64)
                seconds = time.perf_counter() - start
                rows.append(
                    {
                        "checkpoint": checkpoint,
                        "method": method,
                        "options": variant,
                        "score": score,
                        "first_call_s": seconds,
                        **mass(values, task.sources, prompt),
                    }
                )

    payload = {
        "machine": machine(),
        "tasks": {
            checkpoint: {
                "examples": examples,
                "seed": SEED,
                "prompt_length": int(task.prompts.shape[1]),
                "generated_length": int(task.generated.shape[1]),
            }
            for checkpoint, task in tasks.items()
        },
        "integrated_gradients_steps": steps,
        "quick": args.quick,
        "rows": rows,
    }
    path = write("generation_mass.json", payload, args.out)
    print(f"{examples} held-out examples of each task")
    print("| checkpoint | method | score | mass on source | min | top-1 | chance | x chance |")
    print("|---|---|---|---|---|---|---|---|")
    for row in rows:
        print(
            f"| {row['checkpoint']} | {row['method']}{' (attnlrp)' if row['options'].get('attention') else ''} | "
            f"{row['score']} | {row['mass_on_source']:.3f} | "
            f"{row['min_mass_on_source']:.3f} | {row['top1']:.3f} | {row['chance']:.3f} | "
            f"{row['over_chance']:.1f} |"
        )
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
