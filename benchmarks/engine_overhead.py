"""How close is `integrated_gradients` to the cost of its gradients alone?

The floor an IG implementation cannot beat is one jitted input-gradient call over the
same B x m points, already materialised in memory. This script times, in one run and
interleaved, `jaxplain.integrated_gradients` (B inputs, m steps, default chunking,
including input checks, point generation, the endpoint pass for `delta` and the
weighted reduction) against that floor, and reports median(IG) / median(floor).

    python benchmarks/engine_overhead.py [--repeats 15] [--steps 64]

Writes benchmarks/results/engine_overhead.json.
"""

from __future__ import annotations

import argparse
import functools
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

import jaxplain

sys.path.insert(0, __import__("os").path.dirname(__file__))
from _common import interleaved_medians, machine, write  # noqa: E402


class TabularMLP(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Dense(128)(x))
        x = nn.relu(nn.Dense(128)(x))
        return nn.Dense(2)(x)


class SmallCNN(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Conv(16, (3, 3))(x))
        x = nn.max_pool(x, (2, 2), strides=(2, 2))
        x = nn.relu(nn.Conv(32, (3, 3))(x))
        x = nn.max_pool(x, (2, 2), strides=(2, 2))
        x = x.reshape((x.shape[0], -1))
        x = nn.relu(nn.Dense(64)(x))
        return nn.Dense(10)(x)


def floor_gradients(model):
    """One jitted call: gradients of the target outputs at already-built points."""

    @functools.partial(jaxplain.engine.jit, model=model)  # jaxplain's options for this model
    def gradients(params, points, targets):
        def total(p):
            outputs = model.replace(params=params)(p)
            return jnp.take_along_axis(outputs, targets[:, None], axis=1).sum()

        return jax.grad(total)(points)

    return gradients


def case(name, module, shape, steps, repeats):
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=shape), jnp.float32)
    variables = module.init(jax.random.PRNGKey(0), x[:1])
    model = jaxplain.Model.from_linen(module, variables)
    targets = jnp.asarray(rng.integers(0, model(x[:1]).shape[1], size=shape[0]), jnp.int32)

    alphas, _ = jaxplain.schedules.gauss_legendre(steps)
    points = jnp.asarray(alphas, jnp.float32)[None, :, None] * x.reshape(shape[0], 1, -1)
    points = points.reshape((shape[0] * steps,) + shape[1:])
    point_targets = jnp.repeat(targets, steps)
    floor = floor_gradients(model)

    timings = interleaved_medians(
        {
            "integrated_gradients": lambda: (
                jaxplain.integrated_gradients(model, x, target=targets, steps=steps).values
            ),
            "floor": lambda: floor(model.params, points, point_targets),
        },
        repeats=repeats,
    )
    ratio = timings["integrated_gradients"]["median_s"] / timings["floor"]["median_s"]
    chunk = jaxplain.engine.default_chunk_size(model, x, steps)
    return {
        "case": name,
        "batch": shape[0],
        "input_shape": list(shape[1:]),
        "steps": steps,
        "default_chunk_size": chunk,
        "timings": timings,
        "ratio_ig_over_floor": ratio,
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--out", default=None, help="folder for the JSON (default: benchmarks/results)")
    args = parser.parse_args(argv)

    rows = [
        case("mlp", TabularMLP(), (256, 30), args.steps, args.repeats),
        case("cnn", SmallCNN(), (16, 32, 32, 3), args.steps, args.repeats),
    ]
    payload = {"benchmark": "engine_overhead", "machine": machine(), "target_ratio": 1.10, "cases": rows}
    path = write("engine_overhead.json", payload, *([args.out] if args.out else []))
    print(f"{'case':6} {'B':>4} {'steps':>5} {'chunk':>5} {'IG ms':>9} {'floor ms':>9} {'ratio':>6}")
    for row in rows:
        t = row["timings"]
        print(
            f"{row['case']:6} {row['batch']:>4} {row['steps']:>5} {row['default_chunk_size']:>5} "
            f"{1e3 * t['integrated_gradients']['median_s']:>9.2f} {1e3 * t['floor']['median_s']:>9.2f} "
            f"{row['ratio_ig_over_floor']:>6.3f}"
        )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
