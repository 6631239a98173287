"""The `jaxplain` command line.

    jaxplain explain --model checkpoints/digits_cnn --data digits --n 16 --out OUT
    jaxplain train --model small_cnn --data digits --epochs 30 --out checkpoints/digits_cnn

Bad arguments end with one line on stderr and exit code 2; nothing prints a traceback
for a user's mistake.
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import shlex
import sys
from typing import List, Optional

import numpy as np

EXPLAIN_EXAMPLES = """examples:
  jaxplain explain --model checkpoints/digits_cnn --data digits --n 16 --out out/digits
  jaxplain explain --model checkpoints/wine_mlp --data wine --method saliency --out out/wine
  jaxplain explain --model checkpoints/synthetic_text --data synthetic_text --steps 64 --out out/text
"""

TRAIN_EXAMPLES = """examples:
  jaxplain train --model small_cnn --data digits --epochs 30 --out checkpoints/digits_cnn
  jaxplain train --model mlp --data wine --config '{"features": [32, 32]}' --out my_wine_mlp
"""


class UsageError(Exception):
    """A mistake in the command's arguments: reported in one line, exit code 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        raise UsageError(f"{message} (see {self.prog} --help)")


def _methods():
    import jaxplain

    return jaxplain.METHODS


def _window(text: str):
    try:
        sizes = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated sizes such as 2,2,1, got {text!r}")
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError(f"window sizes must be positive, got {text!r}")
    return sizes


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="jaxplain", description="Attributions for JAX and Flax classifiers.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    commands.add_parser(
        "methods",
        help="list the attribution methods",
        description="List every attribution method with its family and summary.",
    )

    explain = commands.add_parser(
        "explain",
        help="explain a trained checkpoint on examples of a dataset",
        description="Explain the first N examples of a dataset split with a checkpoint; "
        "writes attributions.npz and attributions.png to --out and prints a table.",
        epilog=EXPLAIN_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    explain.add_argument("--model", required=True, help="checkpoint folder (see checkpoints/README.md)")
    explain.add_argument("--data", required=True, help="dataset name: digits, breast_cancer, wine, synthetic_additive, synthetic_text, or a TFDS name")
    explain.add_argument("--method", default="integrated_gradients", help="a method name (list them with: jaxplain methods)")
    explain.add_argument("--n", type=_positive_int, default=16, help="number of examples (default 16)")
    explain.add_argument("--split", choices=("test", "train"), default="test")
    explain.add_argument("--target", default="predicted", help="'predicted', 'label' (the true class) or a class index")
    explain.add_argument("--output", choices=("logits", "probs", "log_probs"), default="logits", help="which model output to explain")
    explain.add_argument("--steps", type=_positive_int, default=64, help="path points for integrated_gradients")
    explain.add_argument("--schedule", default="gauss_legendre", help="interpolation schedule for integrated_gradients")
    explain.add_argument("--baseline", type=float, default=0.0, help="constant baseline for path and perturbation methods (default 0)")
    explain.add_argument("--samples", type=_positive_int, default=None, help="samples of randomized methods (default: the method's)")
    explain.add_argument("--seed", type=int, default=0, help="seed of the key of randomized methods")
    explain.add_argument("--background", type=_positive_int, default=64, help="training examples used as references by expected_gradients and deeplift_shap (default 64)")
    explain.add_argument("--layer", default=None, help="layer path for layer methods, e.g. Conv_1 (see jaxplain.methods.layers.layer_names)")
    explain.add_argument("--neuron", type=int, default=None, help="unit index (flattened) of --layer for neuron methods")
    explain.add_argument("--window", type=_window, default=None, help="occlusion window, e.g. 2,2,1")
    explain.add_argument("--patch", type=_window, default=None, help="feature groups of the Shapley, ablation and LIME methods: boxes of this size, e.g. 2,2,1 (default: every feature its own group; every token for text)")
    explain.add_argument("--rule", default=None, help="LRP rule (epsilon, gamma, alpha1beta0, composite)")
    explain.add_argument("--wrap", default="saliency", help="the method that smoothgrad, smoothgrad_sq and vargrad wrap (default saliency)")
    explain.add_argument("--noise-scale", type=float, default=None, help="noise of smoothgrad and kin, as a fraction of the input range")
    explain.add_argument("--data-dir", default=None, help="TFDS data folder")
    explain.add_argument("--out", default="jaxplain_out", help="output folder (default ./jaxplain_out)")

    train = commands.add_parser(
        "train",
        help="train a zoo model on a dataset and save a checkpoint",
        description="Train an architecture from jaxplain.models on a dataset and write a checkpoint "
        "folder that records the test accuracy and this exact command.",
        epilog=TRAIN_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    train.add_argument("--model", required=True, help="architecture: mlp, small_cnn, resnet18, ... (jaxplain.models.ARCHITECTURES)")
    train.add_argument("--data", required=True, help="dataset name (see jaxplain explain --help)")
    train.add_argument("--out", required=True, help="checkpoint folder to write")
    train.add_argument("--config", default="{}", help="JSON object of architecture settings, e.g. '{\"features\": [32, 32]}'")
    train.add_argument("--epochs", type=_positive_int, default=20)
    train.add_argument("--batch-size", type=_positive_int, default=64)
    train.add_argument("--learning-rate", type=float, default=1e-3)
    train.add_argument("--weight-decay", type=float, default=1e-4)
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--data-dir", default=None, help="TFDS data folder")
    return parser


def _load_data(name: str, data_dir: Optional[str]):
    from jaxplain import data

    try:
        return data.load(name, data_dir=data_dir)
    except (ValueError, TypeError, RuntimeError, ImportError, FileNotFoundError) as error:
        raise UsageError(f"cannot load dataset {name!r}: {error}") from error


def _load_checkpoint(path: str):
    from jaxplain import io

    try:
        return io.load_checkpoint(path)
    except (FileNotFoundError, io.CheckpointError) as error:
        raise UsageError(str(error)) from error


def _targets(choice: str, labels: np.ndarray, num_classes: int):
    if choice in ("predicted", "label"):
        return "predicted" if choice == "predicted" else labels.astype(np.int32)
    try:
        target = int(choice)
    except ValueError:
        raise UsageError(f"--target must be 'predicted', 'label' or a class index, got {choice!r}")
    if not 0 <= target < num_classes:
        raise UsageError(f"--target {target} is outside the model's classes 0..{num_classes - 1}")
    return target


def explain(args) -> int:
    import jax
    import jax.numpy as jnp

    import jaxplain
    from jaxplain import viz

    methods = _methods()
    for name in (args.method, args.wrap):
        if name not in methods:
            raise UsageError(f"unknown method {name!r}; choose one of: {', '.join(sorted(methods))}")
    checkpoint = _load_checkpoint(args.model)
    dataset = _load_data(args.data, args.data_dir)
    x_all = dataset.x_test if args.split == "test" else dataset.x_train
    y_all = dataset.y_test if args.split == "test" else dataset.y_train
    expected = tuple(checkpoint.metadata["input_shape"])
    if tuple(x_all.shape[1:]) != expected:
        raise UsageError(
            f"dataset {args.data!r} has examples of shape {tuple(x_all.shape[1:])} but the "
            f"model {args.model} takes {expected}"
        )
    n = min(args.n, len(x_all))
    inputs, labels = np.asarray(x_all[:n]), np.asarray(y_all[:n])
    num_classes = int(checkpoint.metadata.get("num_classes", 0)) or int(dataset.num_classes)
    target = _targets(args.target, labels, num_classes)
    info = methods[args.method]
    text = np.issubdtype(np.asarray(inputs).dtype, np.integer)
    if text:
        # Token ids cannot be differentiated: explain the embeddings and sum each
        # token's attribution over its embedding dimensions.
        module, variables = checkpoint.module, checkpoint.variables
        embed = lambda tokens: module.apply(variables, jnp.asarray(tokens), method="embed")  # noqa: E731
        x = embed(inputs)
        model = checkpoint.model(output=args.output, method="logits_from_embeddings")
        baseline = embed(np.full_like(inputs, getattr(module, "pad_id", 0)))
        background = embed(dataset.x_train[: args.background])
    else:
        embed = None
        x = jnp.asarray(inputs)
        model = checkpoint.model(output=args.output)
        baseline = args.baseline
        background = jnp.asarray(dataset.x_train[: args.background])
    if args.patch is not None:
        if len(args.patch) != x.ndim - 1:
            raise UsageError(f"--patch needs one size per axis of an example, shape {tuple(x.shape[1:])}")
        feature_mask = jaxplain.methods.perturbation.patch_mask(x.shape[1:], args.patch)
    elif text:  # one group per token: all its embedding dimensions together
        feature_mask = np.broadcast_to(np.arange(x.shape[1], dtype=np.int32)[:, None], x.shape[1:])
    else:
        feature_mask = None
    candidates = {
        "feature_mask": feature_mask, "steps": args.steps, "schedule": args.schedule, "baseline": baseline, "samples": args.samples,
        "layer": args.layer, "neuron": args.neuron, "window": args.window, "rule": args.rule, "noise_scale": args.noise_scale,
        "key": jax.random.key(args.seed), "background": background,
    }
    if args.rule in ("zbox", "composite"):  # the first layer's input bounds: the data's range
        candidates.update(low=float(np.min(dataset.x_train)), high=float(np.max(dataset.x_train)))

    def accepted(function, exclude=()):
        names = inspect.signature(function).parameters
        return {k: v for k, v in candidates.items() if k in names and k not in exclude and v is not None}

    try:
        if info.family == "noise":
            inner = methods[args.wrap].function
            options = {**accepted(info.function), **accepted(inner, exclude=("key",))}
            attribution = info.function(inner, model, x, target=target, **options)
        elif "target" not in inspect.signature(info.function).parameters:  # neuron methods
            attribution = info.function(model, x, **accepted(info.function))
        else:
            attribution = info.function(model, x, target=target, **accepted(info.function))
    except (ValueError, TypeError) as error:
        raise UsageError(str(error).replace("keyword-only argument: '", "argument: --").rstrip("'")) from error
    values = np.asarray(attribution.values)
    if text and values.ndim == 3:
        values = values.sum(axis=-1)
    explained = np.asarray(attribution.target)
    logits = model.with_output("logits")(x)
    predicted = np.asarray(logits.argmax(axis=-1))
    probabilities = np.asarray(jax.nn.softmax(logits, axis=-1))
    # Neuron methods explain a unit, not a class: their target is no class to score.
    classes = "target" in inspect.signature(info.function).parameters
    chosen = probabilities[np.arange(n), explained if classes else predicted]

    os.makedirs(args.out, exist_ok=True)
    columns = {"values": values, "target": explained, "probability": chosen, "inputs": inputs,
               "labels": labels, "indices": np.arange(n)}
    if attribution.delta is not None:
        columns["delta"] = np.asarray(attribution.delta)
    if attribution.relative_delta is not None:
        columns["relative_delta"] = np.asarray(attribution.relative_delta)
    np.savez_compressed(os.path.join(args.out, "attributions.npz"), **columns)
    picture = os.path.join(args.out, "attributions.png")
    titles = [f"#{i} y={labels[i]} t={explained[i]} p={chosen[i]:.2f}" for i in range(n)]
    if text and values.shape == inputs.shape:
        words = [[str(int(t)) for t in row] for row in inputs]
        viz.token_attributions(words, values, picture, row_labels=titles)
    elif inputs.ndim == 4 and values.ndim in (3, 4):
        viz.image_attributions(inputs, viz.spatial_map(values, inputs.shape[1:3]), picture, titles=titles)
    else:
        names = dataset.feature_names if values.reshape(n, -1).shape[1] == len(dataset.feature_names or ()) else None
        viz.tabular_attributions(values.reshape(n, -1), picture, feature_names=names, row_labels=titles)

    print(f"{args.method} on {n} {args.split} examples of {args.data} with {args.model}")
    shown = [("index", np.arange(n), "d"), ("label", labels, "d"),
             ("target" if classes else "neuron", explained, "d"),
             ("prob" if classes else "p(pred)", chosen, ".3f")]
    shown += [(name, columns[key], ".2e") for name, key in (("delta", "delta"), ("rel.delta", "relative_delta")) if key in columns]
    print(" ".join(f"{name:>9}" for name, _, _ in shown))
    for i in range(n):
        print(" ".join(f"{format(column[i], spec):>9}" for _, column, spec in shown))
    print(f"wrote {os.path.join(args.out, 'attributions.npz')} and {picture}")
    return 0


def train(args, argv: List[str]) -> int:
    from jaxplain import io, models
    from jaxplain.models.train import train as fit

    if args.model not in models.ARCHITECTURES:
        raise UsageError(
            f"unknown architecture {args.model!r}; choose one of: {', '.join(sorted(models.ARCHITECTURES))}"
        )
    try:
        config = json.loads(args.config)
    except json.JSONDecodeError as error:
        raise UsageError(f"--config is not valid JSON: {error}")
    if not isinstance(config, dict):
        raise UsageError("--config must be a JSON object")
    dataset = _load_data(args.data, args.data_dir)
    config.setdefault("num_classes", int(dataset.num_classes))
    if args.model == "text_classifier":
        config.setdefault("vocab_size", int(dataset.extras["vocab_size"]))
        config.setdefault("max_length", int(dataset.extras["max_length"]))
    try:
        module = models.build(args.model, **{k: tuple(v) if isinstance(v, list) else v for k, v in config.items()})
    except (TypeError, ValueError) as error:
        raise UsageError(f"cannot build {args.model!r} with config {config}: {error}")
    result = fit(
        module,
        dataset,
        epochs=args.epochs,
        batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        weight_decay=args.weight_decay,
        seed=args.seed,
    )
    command = "jaxplain " + " ".join(shlex.quote(arg) for arg in argv)
    io.save_checkpoint(
        args.out,
        architecture=args.model,
        config=config,
        variables=result.variables,
        input_shape=dataset.x_train.shape[1:],
        input_dtype=str(dataset.x_train.dtype),
        num_classes=int(dataset.num_classes),
        dataset=args.data,
        test_accuracy=round(result.test_accuracy, 6),
        command=command,
        training={
            "epochs": args.epochs,
            "batch_size": args.batch_size,
            "learning_rate": args.learning_rate,
            "weight_decay": args.weight_decay,
            "seed": args.seed,
        },
    )
    print(f"test accuracy {result.test_accuracy:.4f}; wrote {args.out}")
    return 0


def list_methods() -> int:
    methods = _methods()
    width = max(len(name) for name in methods)
    print(f"{'method':<{width}}  {'family':<12}  {'key':<3}  summary")
    for name, info in sorted(methods.items(), key=lambda item: (item[1].family, item[0])):
        print(f"{name:<{width}}  {info.family:<12}  {'yes' if info.randomized else '':<3}  {info.summary}")
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        if args.command == "methods":
            return list_methods()
        if args.command == "explain":
            return explain(args)
        return train(args, argv)
    except UsageError as error:
        command = f"jaxplain {argv[0]}" if argv and not argv[0].startswith("-") else "jaxplain"
        print(f"{command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
