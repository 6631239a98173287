"""What `model_kwargs=` costs: one example at a time against the whole batch at once.

With `model_kwargs`, a method runs once per example inside one compiled program
(`jax.lax.map`, see jaxplain/methods/arguments.py). This script times, in one run and
interleaved, a method on a text model `__call__(tokens, lengths)` given per-example
`lengths` through `model_kwargs`, against the same method on the same model with the
lengths built into it (possible here because every example has the same length, so both
compute the same thing), and reports median(model_kwargs) / median(built in). The two
answers are compared too.

    python benchmarks/model_kwargs.py [--repeats 15] [--quick]

Writes benchmarks/results/model_kwargs.json.
"""

from __future__ import annotations

import argparse
import os
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

import jaxplain

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import interleaved_medians, machine, max_rel_diff, write  # noqa: E402


class PaddedText(nn.Module):
    """Embedding, two dense layers per token, mean over the first `lengths` tokens."""

    @nn.compact
    def __call__(self, tokens, lengths):
        h = nn.Embed(1000, 64)(tokens)
        h = nn.gelu(nn.Dense(128)(h))
        h = nn.gelu(nn.Dense(64)(h))
        valid = (jnp.arange(tokens.shape[1])[None, :] < lengths[:, None]).astype(h.dtype)
        pooled = (h * valid[..., None]).sum(axis=1) / lengths[:, None].astype(h.dtype)
        return nn.Dense(2)(pooled)


class Dense(nn.Module):
    """An MLP on float features times a per-example scale."""

    @nn.compact
    def __call__(self, x, scale):
        x = nn.relu(nn.Dense(128)(x * scale[:, None]))
        return nn.Dense(2)(nn.relu(nn.Dense(128)(x)))


def case(name, module, x, name_arg, value, method, options, repeats):
    batch = x.shape[0]
    values = np.full((batch,), value, np.asarray(value).dtype)
    variables = module.init(jax.random.PRNGKey(0), x[:1], values[:1])
    given = jaxplain.Model.from_linen(module, variables)

    def built_in(module, rows):  # the same argument for every row
        return module(rows, jnp.full((rows.shape[0],), value))

    fixed = jaxplain.Model.from_linen(module, variables, method=built_in)
    function = jaxplain.METHODS[method].function
    contenders = {
        "model_kwargs": lambda: (
            function(given, x, target=1, model_kwargs={name_arg: values}, **options).values
        ),
        "built_in": lambda: function(fixed, x, target=1, **options).values,
    }
    timings = interleaved_medians(contenders, repeats=repeats)
    return {
        "case": name,
        "method": method,
        "options": options,
        "batch": batch,
        "example_shape": list(x.shape[1:]),
        "timings": timings,
        "ratio_model_kwargs_over_built_in": timings["model_kwargs"]["median_s"]
        / timings["built_in"]["median_s"],
        "max_rel_diff": max_rel_diff(contenders["model_kwargs"](), contenders["built_in"]()),
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--quick", action="store_true", help="one timed round, to check the script works")
    parser.add_argument("--out", default=None, help="folder for the JSON (default: benchmarks/results)")
    args = parser.parse_args(argv)
    if args.quick:
        args.repeats = 1
    tokens = np.random.default_rng(0).integers(1, 1000, size=(32, 64)).astype(np.int32)
    features = np.random.default_rng(1).normal(size=(256, 30)).astype(np.float32)
    rows = [
        case(
            "text B=32 T=64",
            PaddedText(),
            tokens,
            "lengths",
            64,
            "token_attributions",
            {"steps": 32},
            args.repeats,
        ),
        case(
            "mlp B=256", Dense(), features, "scale", 1.5, "integrated_gradients", {"steps": 64}, args.repeats
        ),
        case("mlp B=256", Dense(), features, "scale", 1.5, "saliency", {}, args.repeats),
    ]
    payload = {"benchmark": "model_kwargs", "machine": machine(), "cases": rows}
    path = write("model_kwargs.json", payload, *([args.out] if args.out else []))
    print(
        f"{'case':16} {'method':20} {'kwargs ms':>10} {'built-in ms':>11} {'ratio':>6} {'max rel diff':>12}"
    )
    for row in rows:
        t = row["timings"]
        print(
            f"{row['case']:16} {row['method']:20} {1e3 * t['model_kwargs']['median_s']:>10.2f} "
            f"{1e3 * t['built_in']['median_s']:>11.2f} {row['ratio_model_kwargs_over_built_in']:>6.2f} "
            f"{row['max_rel_diff']:>12.2e}"
        )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
