"""Attributing N generated tokens: jaxplain's one program against Captum's per-token loop.

A causal language model of copy_lm's size (`jaxplain.models.CausalLM`: vocabulary 32,
width 64, 2 blocks of 4 heads, MLP 128) with random weights and 160 positions, and its
PyTorch twin holding the same weights (benchmarks/_torch_models.py). A prompt of 16 random
tokens is followed by N generated tokens (the model's greedy continuation) for N = 1, 8,
32, 128; every generated token's log-probability is attributed to the prompt tokens:

* jaxplain: `jaxplain.generation_attributions(model, prompt, generated, ...)`, all N
  tokens in one compiled program, with the baseline ids of Captum's TextTokenInput (the
  prompt's positions replaced by id 0, the generated tokens kept);
* Captum 0.9: `LLMGradientAttribution(LayerIntegratedGradients(twin, twin.embed),
  tokenizer).attribute(TextTokenInput(...), target=generated)`, which loops over the
  generated tokens in Python, one attribution call each (and the same with
  LayerGradientXActivation for input x gradient).

Both run on CPU in float32, timed interleaved (medians after warm-up, in one run), IG with
`--steps` Gauss-Legendre points on both sides. The agreement is the max relative
difference between the (N, 16) prompt attributions. Captum's LRP is tried on the twin
too: it has no rule for LayerNorm or multi-head attention and refuses the model, which the
JSON records.
"""

from __future__ import annotations

import argparse
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _common  # noqa: E402
import _torch_models  # noqa: E402

import jaxplain  # noqa: E402
from jaxplain.models.lm import CausalLM, generate  # noqa: E402

PROMPT = 16


class Tokenizer:
    """The smallest tokenizer Captum's LLM attribution accepts: tokens "t0", "t1", ..."""

    def encode(self, text, add_special_tokens=False, return_tensors=None):
        ids = [int(token[1:]) for token in text.split()]
        return torch.tensor([ids]) if return_tensors == "pt" else ids

    def decode(self, ids):
        ids = ids.tolist() if hasattr(ids, "tolist") else ids
        return " ".join(f"t{i}" for i in np.atleast_1d(ids))

    def convert_ids_to_tokens(self, ids):
        return [f"t{i}" for i in ids]

    def convert_tokens_to_ids(self, tokens):
        return [int(token[1:]) for token in tokens]

    def __call__(self, text, return_offsets_mapping=False, add_special_tokens=True, **unused):
        ids, offsets, start = [], [], 0
        for token in text.split(" "):
            ids.append(int(token[1:]))
            offsets.append((start, start + len(token)))
            start += len(token) + 1
        return {"input_ids": ids, "offset_mapping": offsets}


def build(max_length: int):
    module = CausalLM(vocab_size=32, max_length=max_length, hidden=64, depth=2, heads=4, mlp_dim=128)
    variables = jax.jit(module.init)(jax.random.key(0), jnp.zeros((1, max_length), jnp.int32))
    twin = _torch_models.causal_lm_from_flax(module, variables, dtype=torch.float32)
    return module, variables, twin


def case(module, variables, twin, generated_count: int, steps: int, repeats: int) -> dict:
    from captum.attr import (
        LayerGradientXActivation,
        LayerIntegratedGradients,
        LLMGradientAttribution,
        TextTokenInput,
    )

    rng = np.random.default_rng(generated_count)
    prompt = rng.integers(1, module.vocab_size, (1, PROMPT)).astype(np.int32)
    generated = generate(module, variables, prompt, generated_count)
    model = jaxplain.Model.from_linen(module, variables)
    baseline = np.concatenate([np.zeros(PROMPT, np.int32), generated[0]])
    tokenizer = Tokenizer()
    text = tokenizer.decode(prompt[0])
    target = torch.tensor(generated[0], dtype=torch.long)

    def ours(method, **options):
        def run():
            result = jaxplain.generation_attributions(model, prompt, generated, method=method, **options)
            return result.values

        return run

    def theirs(attribution, **options):
        def run():
            inputs = TextTokenInput(text, tokenizer, baselines=0)
            return attribution.attribute(inputs, target=target, **options).token_attr

        return run

    integrated = LLMGradientAttribution(LayerIntegratedGradients(twin, twin.embed), tokenizer)
    times_input = LLMGradientAttribution(LayerGradientXActivation(twin, twin.embed), tokenizer)
    contenders = {
        "jaxplain_ig": ours(
            "integrated_gradients", baseline=baseline, steps=steps, schedule="gauss_legendre"
        ),
        "captum_ig": theirs(integrated, n_steps=steps, method="gausslegendre"),
        "jaxplain_ixg": ours("input_x_gradient"),
        "captum_ixg": theirs(times_input),
    }
    timings = _common.interleaved_medians(contenders, repeats=repeats, warmup=1, prime=True)
    agreement = {}
    for name in ("ig", "ixg"):
        mine = np.asarray(contenders[f"jaxplain_{name}"]())[0, :, :PROMPT]
        agreement[name] = _common.max_rel_diff(mine, contenders[f"captum_{name}"]())
    return {
        "generated_tokens": generated_count,
        "prompt_tokens": PROMPT,
        "steps": steps,
        "timings": timings,
        "ratio_captum_over_jaxplain": {
            name: timings[f"captum_{name}"]["median_s"] / timings[f"jaxplain_{name}"]["median_s"]
            for name in ("ig", "ixg")
        },
        "max_rel_diff": agreement,
    }


def captum_lrp(twin) -> str:
    from captum.attr import LRP

    class LastLogits(torch.nn.Module):  # the twin from the embeddings on
        def __init__(self):
            super().__init__()
            self.position, self.blocks, self.final_norm, self.head = (
                twin.position,
                twin.blocks,
                twin.final_norm,
                twin.head,
            )

        def forward(self, embeddings):
            x = embeddings + self.position[: embeddings.shape[1]]
            for block in self.blocks:
                x = block(x)
            return self.head(self.final_norm(x))[:, -1]

    embeddings = twin.embed(torch.zeros(1, 4, dtype=torch.long)).detach()
    try:
        LRP(LastLogits()).attribute(embeddings, target=0)
    except Exception as error:  # recorded: Captum's LRP has no rule for these layers
        return f"{type(error).__name__}: {str(error).splitlines()[0][:200]}"
    return "ran"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="N = 1 and 4, 8 steps, one timed round")
    parser.add_argument("--out", default=_common.RESULTS, help="results folder (default benchmarks/results)")
    args = parser.parse_args(argv)
    counts = (1, 4) if args.quick else (1, 8, 32, 128)
    steps, repeats = (8, 1) if args.quick else (args.steps, args.repeats)
    torch.set_num_threads(os.cpu_count() or 1)
    module, variables, twin = build(PROMPT + max(counts))
    rows = [case(module, variables, twin, n, steps, repeats) for n in counts]
    payload = {
        "benchmark": "generation_vs_captum",
        "machine": _common.machine(),
        "torch": torch.__version__,
        "model": {
            "vocab_size": 32,
            "hidden": 64,
            "depth": 2,
            "heads": 4,
            "mlp_dim": 128,
            "weights": "random",
        },
        "cases": rows,
        "captum_lrp_on_the_twin": captum_lrp(twin),
    }
    path = _common.write("generation_vs_captum.json", payload, args.out)
    print(
        f"{'N':>4} {'method':6} {'jaxplain ms':>12} {'captum ms':>10} {'captum/jaxplain':>16} {'max rel diff':>12}"
    )
    for row in rows:
        t = row["timings"]
        for name in ("ig", "ixg"):
            print(
                f"{row['generated_tokens']:>4} {name:6} {1e3 * t[f'jaxplain_{name}']['median_s']:>12.1f} "
                f"{1e3 * t[f'captum_{name}']['median_s']:>10.1f} "
                f"{row['ratio_captum_over_jaxplain'][name]:>16.2f} {row['max_rel_diff'][name]:>12.2e}"
            )
    print("captum LRP on the twin:", payload["captum_lrp_on_the_twin"])
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
