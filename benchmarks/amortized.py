"""Amortized explainers against their teachers: fidelity on held-out data, and speed.

For each shipped model, teacher labels are computed for its train and test splits
(`jaxplain.amortized.make_labels`, cached), and these recipes are trained on the train
split and judged on the test split, for each example's predicted class:

  supervised       regression on 100% of the train labels (Empirical Explainer / RTX)
  cortx_5/10/25    contrastive encoder + head on 5%, 10%, 25% of the train labels
  cortx_10_no_pretraining
                   the same head on 10% of the labels, on the encoder as initialised
                   (random; for text the classifier's own encoder): what pre-training adds
  fastshap         FastSHAP with a surrogate trained by KL on masked inputs (no labels)
  fastshap_model   FastSHAP on the model's own game (absent features at the reference),
                   the game the Shapley teachers solve

Fidelity: median relative l2 error, mean Spearman, mean top-k overlap (by magnitude)
against the teacher. Speed: the explainer call against the teacher call, both through
the public API at batch 256 (target="predicted"), interleaved medians in the same run.
The teacher's own convergence curve: the teacher (or the sampling estimator of an exact
teacher) at growing budgets, judged the same way, and the budget at which it matches the
supervised explainer's error, timed against it.

  python benchmarks/amortized.py                       # the study, writes results/amortized.{json,png}
  python benchmarks/amortized.py --resume              # skip the models already written
  python benchmarks/amortized.py --quick --out /tmp/x  # tiny (tests)
  python benchmarks/amortized.py --train-and-save wine_mlp --recipe supervised
                                                       # the shipped explainer
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable

import flax.linen as nn
import jax
import numpy as np

import jaxplain
from jaxplain import amortized
from jaxplain.amortized import networks

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import RESULTS, block, machine, write  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BATCH = 256
RECIPES = (
    "supervised",
    "cortx_5",
    "cortx_10",
    "cortx_25",
    "cortx_10_no_pretraining",
    "fastshap",
    "fastshap_model",
)
QUICK_RECIPES = ("supervised", "cortx_10", "fastshap")


@dataclasses.dataclass
class Case:
    """One model of the study: its teacher, networks and training budgets."""

    data: str
    teacher: str
    settings: dict
    network: Callable  # (module, num_classes, feature_shape) -> explainer network
    surrogate: Callable  # (module, num_classes) -> surrogate classifier
    curve: tuple  # (method, knob, budgets, fixed settings)
    top_k: int
    epochs: dict
    fastshap_teacher: tuple | None = None  # (method, settings, test rows) if not the teacher
    fastshap_network: Callable | None = None
    batch_size: int = 32


def _mlp(module, classes, shape):
    del module
    return amortized.MLPExplainer(
        classes, shape, features=(64, 64), head_features=(64,), activation=nn.relu, multiplier=True
    )


def _tabular_surrogate(module, classes):
    del module
    return jaxplain.models.MLP(classes, features=(128, 128))


SUPERPIXELS = jaxplain.patch_mask((8, 8, 1), (2, 2, 1))  # 16 groups of 2x2 pixels
TABULAR_EPOCHS = dict(supervised=300, pretrain=100, head=300, fastshap=300, surrogate=200, samples=32)
CASES = {
    "wine_mlp": Case(
        "wine",
        "exact_shapley",
        {},
        _mlp,
        _tabular_surrogate,
        ("kernel_shap", "samples", (16, 32, 64, 128, 256, 512, 1024, 2048), {}),
        3,
        TABULAR_EPOCHS,
    ),
    "breast_cancer_mlp": Case(
        "breast_cancer",
        "kernel_shap",
        {"samples": 8192, "key": jax.random.key(0)},
        _mlp,
        _tabular_surrogate,
        ("kernel_shap", "samples", (16, 32, 64, 128, 256, 512, 1024, 2048), {}),
        5,
        TABULAR_EPOCHS,
    ),
    "digits_cnn": Case(
        "digits",
        "integrated_gradients",
        {"steps": 32},
        lambda module, classes, shape: amortized.ConvExplainer(
            classes, shape, channels=(16, 32), multiplier=True
        ),
        lambda module, classes: jaxplain.models.SmallCNN(classes),
        ("integrated_gradients", "steps", (1, 2, 4, 8, 16), {}),
        10,
        dict(supervised=100, pretrain=30, head=100, fastshap=60, surrogate=30, samples=16),
        fastshap_teacher=(
            "kernel_shap",
            {"feature_mask": SUPERPIXELS, "samples": 1024, "key": jax.random.key(0)},
            128,
        ),
        fastshap_network=lambda module, classes, shape: amortized.ConvExplainer(
            classes, shape, channels=(16, 32), patch=2, multiplier=True
        ),
    ),
    "synthetic_text": Case(
        "synthetic_text",
        "token_attributions",
        {"steps": 50},
        lambda module, classes, shape: networks.token_explainer_for(module, classes, shape[0]),
        lambda module, classes: module,
        ("token_attributions", "steps", (1, 2, 4, 8, 16), {}),
        3,
        dict(supervised=60, pretrain=20, head=60, fastshap=40, surrogate=10, samples=16),
    ),
}


def _quick(case: Case) -> Case:
    epochs = dict(supervised=15, pretrain=2, head=15, fastshap=8, surrogate=5, samples=8)
    method, knob, budgets, fixed = case.curve
    return dataclasses.replace(case, epochs=epochs, curve=(method, knob, budgets[:2], fixed))


# --- labels, training, evaluation --------------------------------------------------------


def load(name: str, cache: str, progress: bool):
    case = CASES[name]
    model = jaxplain.load_model(os.path.join(ROOT, "checkpoints", name))
    data = jaxplain.data.load(case.data)
    method = getattr(jaxplain, case.teacher)
    start = time.perf_counter()
    labels = {
        split: amortized.make_labels(method, model, x, cache_dir=cache, progress=progress, **case.settings)
        for split, x in (("train", data.x_train), ("test", data.x_test))
    }
    seconds = time.perf_counter() - start
    if case.fastshap_teacher is not None:
        fs_method, fs_settings, rows = case.fastshap_teacher
        labels["fastshap_test"] = amortized.make_labels(
            fs_method, model, data.x_test[:rows], cache_dir=cache, progress=progress, **fs_settings
        )
    return model, data, labels, seconds


def train_recipe(name: str, case: Case, recipe: str, model, data, labels, encoders: dict, progress: bool):
    module = model.apply_fn.module
    classes, shape = labels["train"].values.shape[1], data.x_train.shape[1:]
    network = case.network(module, classes, shape)
    epochs, common = case.epochs, dict(batch_size=case.batch_size, progress=progress)
    if recipe == "supervised":
        return amortized.train_supervised(
            network, model, data.x_train, labels["train"], epochs=epochs["supervised"], **common
        )
    if recipe.startswith("cortx"):
        fraction = int(recipe.split("_")[1]) / 100
        if recipe.endswith("no_pretraining"):
            encoder = networks.init(network, data.x_train, model=model)
        else:
            if "cortx" not in encoders:
                facts = amortized.supervised.teacher_facts(labels["train"])
                encoders["cortx"] = amortized.pretrain_encoder(
                    network,
                    model,
                    data.x_train,
                    reference=facts["reference"],
                    feature_mask=facts["feature_mask"],
                    epochs=epochs["pretrain"],
                    progress=progress,
                )
            encoder = encoders["cortx"]
        explainer = amortized.train_cortx(
            network,
            model,
            data.x_train,
            labels["train"],
            label_fraction=fraction,
            encoder_variables=encoder,
            head_epochs=epochs["head"],
            **common,
        )
        return explainer.replace(recipe=recipe if recipe.endswith("no_pretraining") else "cortx")
    # FastSHAP: the groups and reference of its teacher's game.
    mask = None if case.fastshap_teacher is None else case.fastshap_teacher[1].get("feature_mask")
    if case.fastshap_network is not None:
        network = case.fastshap_network(module, classes, shape)
    surrogate = None
    if recipe == "fastshap":
        classifier = case.surrogate(module, classes)
        start = None
        if isinstance(classifier, jaxplain.models.TextClassifier):  # start from the model itself
            start = {"params": {"classifier": model.params["params"]}}
        surrogate = amortized.train_surrogate(
            classifier,
            model,
            data.x_train,
            feature_mask=mask,
            variables=start,
            epochs=epochs["surrogate"],
            **common,
        )
    return amortized.train_fastshap(
        network,
        model,
        data.x_train,
        feature_mask=mask,
        surrogate=surrogate,
        samples=epochs["samples"],
        epochs=epochs["fastshap"],
        **common,
    ).replace(recipe=recipe)


def predicted_rows(labels, chosen):
    """The labels of each example's explained class: `(n, *features)`."""
    return labels.values[np.arange(len(chosen)), np.asarray(chosen)]


def agreement(values, reference, k: int) -> dict:
    l2 = np.asarray(jaxplain.metrics.relative_l2_error(values, reference))
    rho = np.asarray(jaxplain.metrics.spearman(values, reference))
    top = np.asarray(jaxplain.metrics.top_k_overlap(np.abs(values), np.abs(reference), k))
    return {
        "relative_l2": float(np.median(l2)),
        "relative_l2_mean": float(np.mean(l2)),
        "spearman": float(np.nanmean(rho)),
        "top_k_overlap": float(np.mean(top)),
        "k": k,
    }


def planted_recovery(values, planted) -> float:
    """The share of each sequence's planted positions among its top-|planted| tokens."""
    values = np.asarray(values)
    shares = []
    for row, mask in zip(values, planted):
        count = int(mask.sum())
        top = np.argsort(-row, kind="stable")[:count]
        shares.append(mask[top].mean())
    return float(np.mean(shares))


def evaluate(explainer, model, x, labels, k: int) -> dict:
    result = explainer(model, x, target="predicted")
    reference = predicted_rows(labels, result.target)
    row = agreement(result.values, reference, k)
    if explainer.metadata["completeness"]:
        raw = explainer(model, x, target="predicted", efficiency=False)
        row["relative_l2_raw"] = agreement(raw.values, reference, k)["relative_l2"]
        row["max_abs_delta"] = float(np.max(np.abs(np.asarray(result.delta))))
    return row


def test_inputs(name: str, case: Case, recipe: str, data, labels):
    """The test inputs and labels a recipe is judged on (FastSHAP on digits: its own teacher)."""
    if recipe.startswith("fastshap") and case.fastshap_teacher is not None:
        rows = case.fastshap_teacher[2]
        return data.x_test[:rows], labels["fastshap_test"], case.fastshap_teacher[0] + " (superpixels)"
    return data.x_test, labels["test"], case.teacher


def batch_of(x, size: int = BATCH):
    return np.resize(x, (size, *x.shape[1:])).astype(x.dtype)


def interleaved(teacher, explainers: dict, *, rounds: int, calls: int = 10) -> dict:
    """Median seconds per call: each round times the teacher once, then every explainer
    `calls` times, after one warm-up round; the same machine conditions for all.

    Several explainer calls per round because one call takes a millisecond or less, where
    a single slow call (the first after the teacher's long one) would move a median of
    few rounds.
    """
    contenders = {"teacher": teacher, **explainers}
    times = {name: [] for name in contenders}
    for round_ in range(rounds + 1):
        for name, run in contenders.items():
            for _ in range(1 if name == "teacher" else calls):
                start = time.perf_counter()
                block(run())
                if round_:
                    times[name].append(time.perf_counter() - start)
    return {name: float(np.median(ts)) for name, ts in times.items()}


def teacher_call(method: str, settings: dict, model, x):
    function = getattr(jaxplain, method)
    return lambda: function(model, x, target="predicted", **settings).values


# --- the study -----------------------------------------------------------------------------


def run_case(name: str, args) -> dict:
    case = CASES[name] if not args.quick else _quick(CASES[name])
    recipes = QUICK_RECIPES if args.quick else RECIPES
    progress = not args.quiet
    model, data, labels, label_seconds = load(name, args.cache, progress)
    explainers, rows, encoders = {}, {}, {}
    for recipe in recipes:
        start = time.perf_counter()
        explainer = train_recipe(name, case, recipe, model, data, labels, encoders, progress)
        seconds = time.perf_counter() - start
        x_test, test_labels, teacher = test_inputs(name, case, recipe, data, labels)
        rows[recipe] = {
            **evaluate(explainer, model, x_test, test_labels, case.top_k),
            "teacher": teacher,
            "train_seconds": seconds,
            "epochs": explainer.metadata["history"]["epochs"],
            "labelled_examples": explainer.metadata.get("labelled_examples", 0),
        }
        if case.data == "synthetic_text":
            values = explainer(model, data.x_test, target="predicted").values
            rows[recipe]["planted_recovery"] = planted_recovery(values, data.extras["planted_test"])
        explainers[recipe] = explainer
        print(
            f"{name} {recipe}: "
            + ", ".join(f"{k} {v:.4g}" for k, v in rows[recipe].items() if isinstance(v, float))
        )
    payload = {
        "teacher": {"method": case.teacher, "settings": amortized.labels.teacher_settings(case.settings)},
        "label_seconds": label_seconds,
        "train_examples": len(data.x_train),
        "test_examples": len(data.x_test),
        "recipes": rows,
    }
    if case.data == "synthetic_text":
        teacher_values = predicted_rows(labels["test"], np.argmax(np.asarray(model(data.x_test)), 1))
        payload["teacher_planted_recovery"] = planted_recovery(teacher_values, data.extras["planted_test"])
    payload["speed"] = speed(case, model, data, explainers, args)
    for recipe, row in rows.items():
        row.update(payload["speed"]["recipes"][recipe])
    payload["teacher_curve"], payload["equal_fidelity"] = teacher_curve(
        case, model, data, labels, rows, explainers, args
    )
    payload["targets"] = targets(name, rows)
    if args.save_explainers:
        save(name, explainers["supervised"], rows["supervised"])
    return payload


def speed(case: Case, model, data, explainers: dict, args) -> dict:
    """Per-example time of every explainer and of its teacher at batch 256, interleaved."""
    x = batch_of(data.x_test)
    calls = {recipe: (lambda e=e: e(model, x, target="predicted").values) for recipe, e in explainers.items()}
    rounds = 2 if args.quick else 3
    own = {r: c for r, c in calls.items() if not (r.startswith("fastshap") and case.fastshap_teacher)}
    times = interleaved(teacher_call(case.teacher, case.settings, model, x), own, rounds=rounds)
    result = {"batch": BATCH, "rounds": rounds, "teacher_ms_per_example": 1e3 * times["teacher"] / BATCH}
    ratios = {recipe: (times, recipe) for recipe in own}
    others = {r: c for r, c in calls.items() if r not in own}
    if others:  # FastSHAP on digits: against its own teacher, kernel SHAP on superpixels
        method, settings, _ = case.fastshap_teacher
        fast = interleaved(teacher_call(method, settings, model, x), others, rounds=rounds)
        result["fastshap_teacher_ms_per_example"] = 1e3 * fast["teacher"] / BATCH
        ratios.update({recipe: (fast, recipe) for recipe in others})
    result["recipes"] = {
        recipe: {
            "ms_per_example": 1e3 * measured[key] / BATCH,
            "speedup": measured["teacher"] / measured[key],
        }
        for recipe, (measured, key) in ratios.items()
    }
    return result


def teacher_curve(case: Case, model, data, labels, rows: dict, explainers: dict, args):
    """The teacher at growing budgets against the converged labels; the budget matching the explainer."""
    method, knob, budgets, fixed = case.curve
    subset = min(128, len(data.x_test))
    x = data.x_test[:subset]
    chosen = np.argmax(np.asarray(model(x)), 1)
    reference = predicted_rows(labels["test"], chosen)
    randomized = jaxplain.METHODS[method].randomized
    settings = {k: v for k, v in case.settings.items() if k not in (knob, "key")}
    curve = []
    for budget in budgets:
        extra = {knob: budget, **fixed, **settings, **({"key": jax.random.key(1)} if randomized else {})}
        start = time.perf_counter()
        values = getattr(jaxplain, method)(model, x, target="predicted", **extra).values
        values.block_until_ready()
        curve.append(
            {
                knob: budget,
                "seconds_first_call": time.perf_counter() - start,
                **agreement(values, reference, case.top_k),
            }
        )
    goal = rows["supervised"]["relative_l2"]
    reached = [point for point in curve if point["relative_l2"] <= goal]
    equal = {"goal_relative_l2": goal, "method": method, "knob": knob}
    if reached:
        budget = reached[0][knob]
        extra = {knob: budget, **fixed, **settings, **({"key": jax.random.key(1)} if randomized else {})}
        xb = batch_of(data.x_test)
        times = interleaved(
            teacher_call(method, extra, model, xb),
            {"supervised": lambda: explainers["supervised"](model, xb, target="predicted").values},
            rounds=2 if args.quick else 3,
        )
        equal.update(
            {
                "budget": budget,
                "teacher_ms_per_example": 1e3 * times["teacher"] / BATCH,
                "speedup": times["teacher"] / times["supervised"],
            }
        )
    else:
        equal.update({"budget": None, "note": f"not reached by {knob} <= {budgets[-1]}"})
    return curve, equal


def targets(name: str, rows: dict) -> dict:
    tabular = name in ("wine_mlp", "breast_cancer_mlp")
    result = {
        "speedup_1000x": {recipe: row["speedup"] >= 1000 for recipe, row in rows.items()},
    }
    if tabular:
        result["spearman_0.9"] = {recipe: row["spearman"] >= 0.9 for recipe, row in rows.items()}
    if "cortx_10" in rows:
        share = rows["cortx_10"]["spearman"] / rows["supervised"]["spearman"]
        result["cortx_10_share_of_supervised_spearman"] = share
        result["cortx_10_reaches_90pct"] = share >= 0.9
    return result


def save(name: str, explainer, row: dict) -> str:
    path = os.path.join(ROOT, "checkpoints", f"{name}_explainer_supervised")
    fidelity = {
        key: row[key] for key in ("relative_l2", "relative_l2_mean", "spearman", "top_k_overlap", "k")
    }
    if "planted_recovery" in row:
        fidelity["planted_recovery"] = row["planted_recovery"]
    explainer.replace(
        model=f"checkpoints/{name}",
        dataset=CASES[name].data,
        fidelity=fidelity,
        fidelity_on="test split, each example's predicted class",
        command=f"python benchmarks/amortized.py --train-and-save {name} --recipe supervised",
    ).save(path)
    return path


def train_and_save(name: str, args) -> None:
    case = CASES[name]
    model, data, labels, _ = load(name, args.cache, not args.quiet)
    explainer = train_recipe(name, case, "supervised", model, data, labels, {}, not args.quiet)
    row = evaluate(explainer, model, data.x_test, labels["test"], case.top_k)
    if case.data == "synthetic_text":
        values = explainer(model, data.x_test, target="predicted").values
        row["planted_recovery"] = planted_recovery(values, data.extras["planted_test"])
    print(f"saved {save(name, explainer, row)}: {row}")


# --- output ---------------------------------------------------------------------------------


def table(cases: dict) -> str:
    lines = [
        "| model | recipe | teacher | rel. l2 (median) | Spearman | top-k | ms / example | speed-up |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, case in cases.items():
        for recipe, row in case["recipes"].items():
            lines.append(
                f"| {name} | {recipe} | {row['teacher']} | {row['relative_l2']:.3f} | {row['spearman']:.3f} | "
                f"{row['top_k_overlap']:.3f} (k={row['k']}) | {row['ms_per_example']:.4f} | {row['speedup']:.0f}x |"
            )
    return "\n".join(lines)


def plot(cases: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, len(cases), figsize=(4.2 * len(cases), 7.5), squeeze=False)
    for column, (name, case) in enumerate(cases.items()):
        ax = axes[0, column]
        knob = case["equal_fidelity"]["knob"]
        budgets = [point[knob] for point in case["teacher_curve"]]
        ax.plot(
            budgets,
            [point["relative_l2"] for point in case["teacher_curve"]],
            "o-k",
            label=f"{case['equal_fidelity']['method']} by {knob}",
        )
        for index, (recipe, row) in enumerate(case["recipes"].items()):
            if row["teacher"] == case["teacher"]["method"]:
                ax.axhline(row["relative_l2"], color=f"C{index}", ls="--", lw=1, label=recipe)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel(knob)
        ax.set_ylabel("median relative l2 to the teacher")
        ax.set_title(name, fontsize=10)
        ax.legend(fontsize=6)
        ax = axes[1, column]
        recipes = list(case["recipes"])
        ax.bar(
            range(len(recipes)),
            [case["recipes"][r]["spearman"] for r in recipes],
            color=[f"C{i}" for i in range(len(recipes))],
        )
        ax.set_xticks(range(len(recipes)), recipes, rotation=60, ha="right", fontsize=7)
        ax.set_ylim(0, 1)
        ax.axhline(0.9, color="k", lw=0.8, ls=":")
        ax.set_ylabel("Spearman with the teacher")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="wine only, tiny budgets (for the tests)")
    parser.add_argument("--cases", default=",".join(CASES), help="comma-separated models")
    parser.add_argument("--out", default=RESULTS, help="folder for amortized.json and amortized.png")
    parser.add_argument("--cache", default=os.path.join(tempfile.gettempdir(), "jaxplain-amortized-labels"))
    parser.add_argument(
        "--save-explainers",
        action="store_true",
        help="also write each model's supervised explainer to checkpoints/",
    )
    parser.add_argument("--train-and-save", metavar="MODEL", help="train and ship one explainer, no study")
    parser.add_argument("--recipe", default="supervised", choices=["supervised"])
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.add_argument("--resume", action="store_true", help="keep the models already in amortized.json")
    args = parser.parse_args(argv)
    if args.train_and_save:
        train_and_save(args.train_and_save, args)
        return
    names = ["wine_mlp"] if args.quick else args.cases.split(",")
    path = os.path.join(args.out, "amortized.json")
    cases = {}
    if args.resume and os.path.isfile(path):
        with open(path) as f:
            cases = json.load(f)["cases"]
    for name in names:
        if name in cases:
            print(f"{name}: done in an earlier run")
            continue
        start = time.perf_counter()
        cases[name] = {**run_case(name, args), "seconds": time.perf_counter() - start}
        # Each finished model is written at once: a later failure loses only its own case.
        write(
            "amortized.json",
            {"machine": machine(), "quick": args.quick, "batch": BATCH, "cases": cases},
            args.out,
        )
    print(path)
    plot(cases, os.path.join(args.out, "amortized.png"))
    print(table(cases))


if __name__ == "__main__":
    main()
