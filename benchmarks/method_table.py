"""Every class explainer on the shipped digits CNN and ViT, judged by every metric.

The tables a user reads to choose a method (docs/methods.md, docs/metrics.md): for each
method, its time per example (median of timed runs after a compiling one, all in this
process) and the mean over the test examples of every metric of `jaxplain.metrics`
(`jaxplain.evaluate(..., metrics="all")`) on the shipped digits CNN and digits ViT; the
quick default metrics on the wine MLP; and the localisation and complexity metrics on
synthetic objects at known positions (`jaxplain.data.synthetic_objects`), for a small CNN
trained here first, since digits and wine have no ground-truth masks. Methods whose
values are not shaped like the input (layer attributions, neuron methods, token
attributions) are not class explanations of the input and are left out; the attention
methods run on the ViT only.

    python benchmarks/method_table.py [--n 32] [--quick] [--models digits_cnn,digits_vit,wine_mlp,objects]

Writes benchmarks/results/method_table.json and method_table.md.
"""

from __future__ import annotations

import argparse
import os
import sys

import flax.linen as nn
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
ATTENTION = ("attention_rollout", "attention_flow", "gradient_weighted_attention")
IMAGE_ONLY = ("blur_ig", "grad_cam", "xrai")
MODELS = ("digits_cnn", "digits_vit", "wine_mlp", "objects")


def settings(data, image: bool, quick: bool, vit: bool = False, regions: bool = False):
    """Per-method options: the same budgets on both models (steps 32, samples 32, ...)."""
    steps, samples = (4, 4) if quick else (32, 32)
    background = data.x_train[:64]
    channels = data.x_train.shape[-1]  # a pixel's channels are one feature of its group
    low, high = float(data.x_train.min()), float(data.x_train.max())  # z-box's bounds
    groups = jaxplain.patch_mask(data.x_train.shape[1:], (2, 2, channels) if image else (1,))
    few_groups = jaxplain.patch_mask(data.x_train.shape[1:], (4, 4, channels)) if image else None
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
                "lrp composite": ("lrp", {"rule": "composite", "low": low, "high": high}),
            }
        )
        if vit:  # Grad-CAM's layer is a convolution's; the attention methods read the ViT's maps
            table.update({"lrp attnlrp": ("lrp", {"attention": "attnlrp"})})
            table.update({name: {} for name in ATTENTION})
        else:
            table["grad_cam"] = {"layer": "Conv_1"}
        if regions:
            table["xrai"] = {"steps": steps}
    table.update(
        {name: {"samples": samples} for name in ("smoothgrad", "smoothgrad_sq", "vargrad")}
    )  # around saliency
    methods = {}
    for label, spec in table.items():
        methods[label] = spec if isinstance(spec, tuple) else (label, spec)
    return methods


class PooledCNN(nn.Module):
    """Convolutions, then the mean over positions and one dense layer: it takes images of
    any size, as focus needs (it judges 2x2 mosaics of the test images)."""

    num_classes: int

    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Conv(16, (3, 3))(x))
        x = nn.max_pool(x, (2, 2), strides=(2, 2))
        x = nn.relu(nn.Conv(32, (3, 3))(x))
        x = nn.relu(nn.Conv(64, (3, 3))(x))
        return nn.Dense(self.num_classes)(x.mean(axis=(1, 2)))


def objects_model(quick: bool):
    """A small pooled CNN trained on synthetic objects, and the test data with its masks."""
    data = jaxplain.data.synthetic_objects(600 if quick else 3000, image_size=16, object_size=5, seed=0)
    module = PooledCNN(num_classes=4)
    result = jaxplain.train(module, data, epochs=2 if quick else 8, batch_size=64, learning_rate=3e-3)
    return jaxplain.Model.from_linen(module, result.variables), data, float(result.test_accuracy)


def note_lines(notes: dict, methods: list) -> list:
    """The table's notes as Markdown items; a note that every method shares is said once."""
    by_text = {}
    for label, text in notes.items():
        method = next((m for m in sorted(methods, key=len, reverse=True) if label.startswith(m + " ")), None)
        metric = label[len(method) + 1 :] if method else label
        by_text.setdefault((metric, text), []).append(method or label)
    lines = []
    for (metric, text), which in by_text.items():
        who = "every method" if len(which) == len(methods) > 1 else ", ".join(which)
        lines.append(f"- {metric} ({who}): {text}")
    return lines + [""] if lines else []


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=32, help="test examples per model")
    parser.add_argument("--quick", action="store_true", help="tiny budgets, to check the script works")
    parser.add_argument(
        "--models", default=",".join(MODELS), help=f"comma-separated, from {','.join(MODELS)}"
    )
    parser.add_argument("--out", default=RESULTS)
    args = parser.parse_args(argv)
    n = 4 if args.quick else args.n
    chosen = [m for m in args.models.split(",") if m]
    unknown = sorted(set(chosen) - set(MODELS))
    if unknown:
        parser.error(f"--models: unknown {unknown}; choose from {list(MODELS)}")
    covered = set(jaxplain.METHODS) - set(LEFT_OUT)
    payload = {"machine": machine(), "examples": n, "tables": {}}
    markdown = []
    for name in chosen:
        masks, metrics, note = None, "all", ""
        if name == "objects":
            model, data, accuracy = objects_model(args.quick)
            masks = data.extras["masks_test"][:n]
            groups = ("localisation", "complexity")
            metrics = [m for m, info in jaxplain.metrics.METRICS.items() if info.group in groups]
            note = f"a pooled CNN trained here on 16x16 synthetic objects (test accuracy {accuracy:.3f}); "
        else:
            data = jaxplain.data.load("wine" if name == "wine_mlp" else "digits")
            model = jaxplain.load_model(os.path.join(ROOT, "checkpoints", name))
            if name == "wine_mlp":
                metrics = jaxplain.metrics.DEFAULT_METRICS
            else:  # every metric; digits have no object masks: localisation is on synthetic objects
                # nor can they judge focus, whose 2x2 mosaics of the inputs are 16x16: both
                # digits models fix their input at 8x8 (a dense layer after flattening,
                # position embeddings); the pooled CNN on synthetic objects takes them
                metrics = [m for m, info in jaxplain.metrics.METRICS.items() if info.group != "localisation"]
        image = data.x_train.ndim == 4
        vit = name == "digits_vit"
        # XRAI segments every image at six Felzenszwalb scales on the host (about 0.2 s per
        # image): the metrics that re-run it on every perturbed copy would take hours, so it
        # is judged where regions matter, by the localisation metrics on synthetic objects
        methods = settings(data, image, args.quick, vit=vit, regions=name == "objects")
        missing = covered - {
            spec[0] if isinstance(spec[0], str) else spec[0].func.__name__ for spec in methods.values()
        }
        missing -= set(ATTENTION) if not vit else {"grad_cam"}
        missing -= set() if image else set(IMAGE_ONLY)
        missing -= set() if name == "objects" else {"xrai"}
        assert not missing, f"method_table.py lacks settings for {sorted(missing)}"
        table = jaxplain.evaluate(
            methods,
            model,
            data.x_test[:n],
            target="predicted",
            key=jax.random.key(0),
            metrics=metrics,
            samples=8 if args.quick else 64,
            repeats=1 if args.quick else 5,
            masks=masks,
            progress=True,
        )
        payload["tables"][name] = {"note": note, **table.as_dict()}
        what = "synthetic objects" if name == "objects" else ("wine" if name == "wine_mlp" else "digits")
        markdown += [f"### {name} ({note}{n} test examples of {what})", "", table.markdown(), ""]
        markdown += note_lines(table.notes, list(methods))
        print(f"{name}\n{table}\n", flush=True)
        # finished tables are kept as they come: a long run never loses them
        os.makedirs(args.out, exist_ok=True)
        with open(os.path.join(args.out, "method_table.md"), "w") as f:
            f.write("\n".join(markdown))
        write("method_table.json", payload, args.out)
    print(f"wrote {os.path.join(args.out, 'method_table.json')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
