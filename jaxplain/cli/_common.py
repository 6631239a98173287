"""What the commands share: argument types, loading checkpoints and data, method options."""

from __future__ import annotations

import argparse
import dataclasses
import functools
import os

import numpy as np


class UsageError(Exception):
    """A mistake in the command's arguments: reported in one line, exit code 2."""


class Parser(argparse.ArgumentParser):
    def error(self, message):
        raise UsageError(f"{message} (see {self.prog} --help)")


def output(option: str, path: str, *, folder: bool = True) -> str:
    """`path` checked as where the command writes, before any work is done: an empty path,
    a file where a folder is wanted (or the reverse), a path below a file, and a place that
    cannot be written (a read-only file system, no permission) are usage errors."""
    from jaxplain._store import output_path

    try:
        path = output_path(option, path, folder=folder)
    except ValueError as error:
        raise UsageError(str(error)) from None
    if os.path.exists(path) and not os.access(path, os.W_OK | (os.X_OK if folder else 0)):
        raise UsageError(f"{option}: {path} is not writable (read-only or no permission)")
    return path


def add_command(commands, name: str, *, help: str, description: str, examples: str, model: str, data: str):
    """A command's parser, with its examples after the options as they are written, and
    its --model and --data (both required; `model` and `data` are their help texts)."""
    parser = commands.add_parser(
        name,
        help=help,
        description=description,
        epilog=examples,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--model", required=True, help=model)
    parser.add_argument("--data", required=True, help=data)
    return parser


def sizes(text: str):
    try:
        values = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated sizes such as 2,2,1, got {text!r}"
        ) from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"sizes must be positive, got {text!r}")
    return values


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def names(text: str):
    found = tuple(part.strip() for part in text.split(",") if part.strip())
    if not found:
        raise argparse.ArgumentTypeError(f"expected comma-separated names, got {text!r}")
    return found


def methods():
    import jaxplain

    return jaxplain.METHODS


def check_method(name: str) -> None:
    if name not in methods():
        raise UsageError(f"unknown method {name!r}; choose one of: {', '.join(sorted(methods()))}")


def load_data(name: str, data_dir: str | None):
    from jaxplain import data

    try:
        return data.load(name, data_dir=data_dir)
    except (ValueError, TypeError, RuntimeError, ImportError, FileNotFoundError) as error:
        raise UsageError(f"cannot load dataset {name!r}: {error}") from error


def load_checkpoint(path: str):
    from jaxplain import io

    try:
        return io.load_checkpoint(path)
    except (FileNotFoundError, io.CheckpointError) as error:
        raise UsageError(str(error)) from error


def split(dataset, name: str):
    return (dataset.x_test, dataset.y_test) if name == "test" else (dataset.x_train, dataset.y_train)


def check_shapes(checkpoint, dataset, model_path: str, data_name: str) -> None:
    expected = tuple(checkpoint.metadata["input_shape"])
    if tuple(dataset.x_train.shape[1:]) != expected:
        raise UsageError(
            f"dataset {data_name!r} has examples of shape {tuple(dataset.x_train.shape[1:])} but the "
            f"model {model_path} takes {expected}"
        )


def target(choice: str, num_classes: int):
    """'predicted', 'label' or a class index, checked."""
    if choice in ("predicted", "label"):
        return choice
    try:
        value = int(choice)
    except ValueError:
        raise UsageError(f"--target must be 'predicted', 'label' or a class index, got {choice!r}") from None
    if not 0 <= value < num_classes:
        raise UsageError(f"--target {value} is outside the model's classes 0..{num_classes - 1}")
    return value


def add_method_arguments(parser) -> None:
    """The settings of the methods, shared by explain, evaluate and train-explainer."""
    group = parser.add_argument_group("method settings (each method takes those it knows)")
    group.add_argument(
        "--output",
        choices=("logits", "probs", "log_probs"),
        default="logits",
        help="which model output to explain",
    )
    group.add_argument(
        "--steps", type=positive_int, default=64, help="path points of the path methods (default 64)"
    )
    group.add_argument(
        "--schedule", default="gauss_legendre", help="interpolation schedule of the path methods"
    )
    group.add_argument(
        "--baseline",
        type=float,
        default=0.0,
        help="constant baseline of path and perturbation methods (default 0; padding for text)",
    )
    group.add_argument(
        "--samples",
        type=positive_int,
        default=None,
        help="samples of randomized methods (default: the method's)",
    )
    group.add_argument("--seed", type=int, default=0, help="seed of the key of randomized methods")
    group.add_argument(
        "--background",
        type=positive_int,
        default=64,
        help="training examples used as references by expected_gradients and deeplift_shap (default 64)",
    )
    group.add_argument(
        "--layer", default=None, help="layer path for layer methods, e.g. Conv_1 (see jaxplain.layer_names)"
    )
    group.add_argument(
        "--neuron", type=int, default=None, help="unit index (flattened) of --layer for neuron methods"
    )
    group.add_argument("--window", type=sizes, default=None, help="occlusion window, e.g. 2,2,1")
    group.add_argument(
        "--patch",
        type=sizes,
        default=None,
        help="feature groups of the Shapley, ablation and LIME methods: boxes of this size, e.g. 2,2,1 (default: every feature its own group; every token for text)",
    )
    group.add_argument("--rule", default=None, help="LRP rule (epsilon, gamma, alpha1beta0, composite)")
    group.add_argument(
        "--wrap",
        default="saliency",
        help="the method that smoothgrad, smoothgrad_sq and vargrad run on noisy copies, their method option (default saliency)",
    )
    group.add_argument(
        "--noise-scale",
        type=float,
        default=None,
        help="noise of smoothgrad and kin, as a fraction of the input range",
    )


@dataclasses.dataclass
class Inputs:
    """What a method is run on: the model, the embedder of a text model, the settings."""

    model: object  # explains inputs (float) or embeddings (text)
    embedder: object  # None, or a Model from token ids to embeddings
    pad_id: int
    candidates: dict  # every setting a method may take; key excluded
    text: bool
    token_model: object  # the model on its own inputs (token ids for text)

    def for_method(self, name: str):
        """(model, embedder) for method `name`: layer methods capture layers inside the
        model, so on a text model they take the token ids; the others explain embeddings."""
        if self.text and methods()[name].family == "layer":
            return self.token_model, None
        return self.model, self.embedder


def inputs(checkpoint, dataset, args, example_shape) -> Inputs:
    """The model and the candidate settings of the methods, for float or token inputs."""
    import jaxplain

    text = np.issubdtype(dataset.x_train.dtype, np.integer)
    if text:
        embedder = checkpoint.model(method="embed")
        model = checkpoint.model(output=args.output, method="logits_from_embeddings")
        pad_id = int(getattr(checkpoint.module, "pad_id", 0))
        embedded_shape = tuple(np.shape(embedder(np.zeros((1, *example_shape), dataset.x_train.dtype)))[1:])
    else:
        embedder, model, pad_id, embedded_shape = (
            None,
            checkpoint.model(output=args.output),
            0,
            tuple(example_shape),
        )
    if args.patch is not None:
        if len(args.patch) != len(embedded_shape):
            raise UsageError(f"--patch needs one size per axis of an example, shape {embedded_shape}")
        feature_mask = jaxplain.methods.perturbation.patch_mask(embedded_shape, args.patch)
    elif text:  # one group per token: all its embedding dimensions together
        feature_mask = np.broadcast_to(np.arange(embedded_shape[0], dtype=np.int32)[:, None], embedded_shape)
    else:
        feature_mask = None
    candidates = {
        "feature_mask": feature_mask,
        "steps": args.steps,
        "schedule": args.schedule,
        "baseline": args.baseline,
        "samples": args.samples,
        "layer": args.layer,
        "neuron": args.neuron,
        "window": args.window,
        "rule": args.rule,
        "noise_scale": args.noise_scale,
        "background": np.asarray(dataset.x_train[: args.background]),
    }
    if args.rule in ("zbox", "composite"):  # the first layer's input bounds: the data's range
        candidates.update(low=float(np.min(dataset.x_train)), high=float(np.max(dataset.x_train)))
    return Inputs(model, embedder, pad_id, candidates, bool(text), checkpoint.model(output=args.output))


def accepted(name: str, candidates: dict) -> dict:
    """The settings among `candidates` that method `name` takes (its registered parameters)."""
    parameters = methods()[name].parameters
    return {k: v for k, v in candidates.items() if k in parameters and v is not None}


def method_options(name: str, wrap: str, candidates: dict) -> dict:
    """The settings that method `name` takes. A noise method (one with a `method` option)
    also takes those of the method it wraps, named by `wrap` and passed as `wrap=`, which
    `explain_dataset`, `make_labels`, `evaluate` and `call` read as its `method` option."""
    options = accepted(name, candidates)
    if methods()[name].wraps:
        options.update(accepted(wrap, candidates), wrap=wrap)
    return options


def embedded(embedder, pad_id: int, tokens, options: dict):
    """(embeddings of `tokens`, options): a text model's methods work on the embeddings, so
    a "baseline" option becomes the embedded padding and a "background" the embedded
    background tokens."""
    import jax.numpy as jnp

    tokens = jnp.asarray(tokens)
    options = dict(options)
    if "baseline" in options:
        options["baseline"] = embedder(jnp.full_like(tokens, pad_id))
    if "background" in options:
        options["background"] = embedder(jnp.asarray(options["background"]))
    return embedder(tokens), options


def call(name: str, embedder, pad_id: int, model, x, *, target, **options):
    """Runs method `name` on x (token ids are embedded first and their scores summed per token)."""
    from jaxplain.methods import registry

    function = registry.resolve(name)
    options = registry.options_of(function, options)
    if embedder is not None:
        x, options = embedded(embedder, pad_id, x, options)
    if "target" not in methods()[name].parameters:  # neuron methods
        result = function(model, x, **options)
    else:
        result = function(model, x, target=target, **options)
    if embedder is not None and result.values.ndim == 3:
        result = dataclasses.replace(result, values=result.values.sum(axis=-1))
    return result


def method_call(name: str, inputs: Inputs):
    """(model, `call` with the method bound: a function(model, x, *, target, **options))."""
    model, embedder = inputs.for_method(name)
    return model, functools.partial(call, name, embedder, inputs.pad_id)


def usage_from(error: Exception) -> UsageError:
    """A method's ValueError/TypeError as a usage error naming the command-line option."""
    return UsageError(str(error).replace("keyword-only argument: '", "argument: --").rstrip("'"))


def token_words(dataset, tokens) -> list:
    """Token ids as words when the dataset has a vocabulary, else as ids."""
    vocabulary = dataset.extras.get("vocabulary")
    rows = []
    for row in np.asarray(tokens):
        if vocabulary is not None and hasattr(vocabulary, "tokens"):
            rows.append(
                [
                    vocabulary.tokens[int(t)] if 0 <= int(t) < len(vocabulary.tokens) else str(int(t))
                    for t in row
                ]
            )
        else:
            rows.append([str(int(t)) for t in row])
    return rows
