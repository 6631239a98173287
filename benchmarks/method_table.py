"""Every class explainer on the shipped digits CNN and wine MLP, judged by every metric.

The table a user reads to choose a method (docs/methods.md): for each method, its time
per example (median of timed runs after a compiling one, all in this process) and the
means over the test examples of completeness, infidelity, faithfulness correlation,
deletion and insertion AUC, sensitivity-max and the similarity after model
randomisation (`jaxplain.evaluate`). Methods whose values are not shaped like the input
(layer attributions, neuron methods, token attributions) are not class explanations of
the input and are left out.

    python benchmarks/method_table.py [--n 32] [--quick]

Writes benchmarks/results/method_table.json and method_table.md.
"""

from __future__ import annotations

import argparse
import os
import sys

import jax

import jaxplain

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import RESULTS, machine, write  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LEFT_OUT = (
    "layer_gradient_x_activation",
    "layer_integrated_gradients",
    "token_attributions",
    "neuron_gradient",
    "neuron_integrated_gradients",
)


def settings(data, image: bool, quick: bool):
    """Per-method options: the same budgets on both models (steps 32, samples 32, ...)."""
    steps, samples = (4, 4) if quick else (32, 32)
    background = data.x_train[:64]
    groups = jaxplain.patch_mask(data.x_train.shape[1:], (2, 2, 1) if image else (1,))
    few_groups = jaxplain.patch_mask(data.x_train.shape[1:], (4, 4, 1)) if image else None
    table = {
        "saliency": {},
        "input_x_gradient": {},
        "integrated_gradients": {"steps": steps},
        "expected_gradients": {"background": background, "samples": samples},
        "guided_ig": {"steps": steps},
        "idgi": {"steps": steps},
        "guided_backprop": {},
        "deconvnet": {},
        "deeplift": {},
        "deeplift_shap": {"background": background[:16]},
        "lrp": {"rule": "epsilon"},
        "occlusion": {"window": (2, 2, 1) if image else (1,)},
        "feature_ablation": {"feature_mask": groups},
        "exact_shapley": {"feature_mask": few_groups},  # 2^13 coalitions on wine, 2^4 on digits
        "shapley_sampling": {"feature_mask": groups, "samples": samples},
        "kernel_shap": {"feature_mask": groups, "samples": 16 * samples},
        "lime": {"feature_mask": groups, "samples": 16 * samples},
        "banzhaf": {"feature_mask": groups, "samples": 16 * samples},
        "fullgrad": {"post_process": image},
    }
    if image:
        table.update(
            {
                "blur_ig": {"steps": steps, "max_sigma": 4.0},
                "grad_cam": {"layer": "Conv_1"},
                "lrp composite": ("lrp", {"rule": "composite", "low": 0.0, "high": 1.0}),
            }
        )
    table.update(
        {name: {"samples": samples} for name in ("smoothgrad", "smoothgrad_sq", "vargrad")}
    )  # around saliency
    methods = {}
    for label, spec in table.items():
        methods[label] = spec if isinstance(spec, tuple) else (label, spec)
    return methods


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=32, help="test examples per model")
    parser.add_argument("--quick", action="store_true", help="tiny budgets, to check the script works")
    parser.add_argument("--out", default=RESULTS)
    args = parser.parse_args(argv)
    n = 4 if args.quick else args.n
    covered = set(jaxplain.METHODS) - set(LEFT_OUT)
    payload = {"machine": machine(), "examples": n, "tables": {}}
    markdown = []
    for checkpoint, dataset in (("digits_cnn", "digits"), ("wine_mlp", "wine")):
        data = jaxplain.data.load(dataset)
        image = data.x_train.ndim == 4
        methods = settings(data, image, args.quick)
        missing = covered - {
            spec[0] if isinstance(spec[0], str) else spec[0].func.__name__ for spec in methods.values()
        }
        missing -= set() if image else {"blur_ig", "grad_cam"}
        assert not missing, f"method_table.py lacks settings for {sorted(missing)}"
        model = jaxplain.load_model(os.path.join(ROOT, "checkpoints", checkpoint))
        table = jaxplain.evaluate(
            methods,
            model,
            data.x_test[:n],
            target="predicted",
            key=jax.random.key(0),
            samples=8 if args.quick else 64,
            repeats=1 if args.quick else 5,
        )
        payload["tables"][checkpoint] = table.as_dict()
        markdown += [f"### {checkpoint} ({n} test examples of {dataset})", "", table.markdown(), ""]
        if table.notes:
            markdown += [f"- {label}: {note}" for label, note in table.notes.items()] + [""]
        print(f"{checkpoint}\n{table}\n", flush=True)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "method_table.md"), "w") as f:
        f.write("\n".join(markdown))
    print(f"wrote {write('method_table.json', payload, args.out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
