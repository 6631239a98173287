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


def add_module_arguments(parser) -> None:
    """--module and --config: the user's own Flax model, whose variables --model holds."""
    parser.add_argument(
        "--module",
        default=None,
        metavar="PKG.MOD:FACTORY",
        help="your own model: FACTORY(**CONFIG) in module PKG.MOD (or a file path/to/file.py:FACTORY) "
        "returns a Linen module or an NNX model; --model is then an orbax checkpoint of its variables",
    )
    parser.add_argument(
        "--config",
        default=None,
        metavar="JSON",
        help="keyword arguments of the --module factory, a JSON object, e.g. '{\"num_classes\": 10}'",
    )


@dataclasses.dataclass
class UserCheckpoint:
    """A user's module and the variables restored from --model, as the commands use a
    jaxplain checkpoint (`module`, `metadata`, `model(output=, method=)`)."""

    module: object
    restored: object  # the jaxplain.Model that load_model gave
    metadata: dict

    def model(self, *, output: str = "logits", method=None):
        if method is None:
            return self.restored.with_output(output)
        import flax.linen as nn

        from jaxplain.model import Model

        if not isinstance(self.module, nn.Module) or not hasattr(self.module, method):
            raise UsageError(
                f"--module: a text model needs a Linen module with the methods embed and "
                f"logits_from_embeddings (as jaxplain.models.TextClassifier); {method} is missing"
            )
        return Model.from_linen(self.module, self.restored.params, method=method, output=output)


def user_module(spec: str, config: str | None):
    """FACTORY(**CONFIG) of --module PKG.MOD:FACTORY (or path/to/file.py:FACTORY)."""
    import importlib
    import importlib.util
    import json
    import sys

    where, colon, attribute = spec.rpartition(":")
    if not colon or not where or not attribute.isidentifier():
        raise UsageError(f"--module must be PKG.MOD:FACTORY or path/to/file.py:FACTORY, got {spec!r}")
    try:
        settings = {} if config is None else json.loads(config)
    except ValueError as error:
        raise UsageError(f"--config is not valid JSON: {error}") from None
    if not isinstance(settings, dict):
        raise UsageError(f"--config must be a JSON object of keyword arguments, got {config!r}")
    try:
        if where.endswith(".py"):
            found = importlib.util.spec_from_file_location(os.path.basename(where)[:-3], where)
            if not os.path.isfile(where) or found is None:
                raise FileNotFoundError(f"no file {where}")
            source = importlib.util.module_from_spec(found)
            found.loader.exec_module(source)
        else:
            if os.getcwd() not in sys.path and "" not in sys.path:  # as `python -m` finds it
                sys.path.insert(0, os.getcwd())
            source = importlib.import_module(where)
    except Exception as error:  # the user's code: any error while importing it
        raise UsageError(f"--module: cannot import {where}: {type(error).__name__}: {error}") from error
    factory = getattr(source, attribute, None)
    if not callable(factory):
        raise UsageError(f"--module: {where} has no callable {attribute!r}")
    try:
        return factory(**settings)
    except Exception as error:  # the user's code, called with the user's --config
        raise UsageError(
            f"--module: {attribute}(**{settings}) failed: {type(error).__name__}: {error}"
        ) from error


def load_target(args, dataset):
    """The model to explain: the jaxplain checkpoint at --model, or with --module the
    user's module with its variables restored from the orbax checkpoint at --model
    (`jaxplain.load_model(path, module=...)`), checked against the data's examples."""
    if args.module is None:
        if args.config is not None:
            raise UsageError("--config is the --module factory's keyword arguments: give --module too")
        checkpoint = load_checkpoint(args.model)
        check_shapes(checkpoint, dataset, args.model, args.data)
        return checkpoint
    import flax.linen as nn

    import jaxplain
    from jaxplain import io

    module = user_module(args.module, args.config)
    shape = tuple(dataset.x_train.shape[1:])
    # a Linen module makes its variables (the restore target) from an example's shape
    example = {"input_shape": shape, "input_dtype": str(dataset.x_train.dtype)}
    try:
        restored = jaxplain.load_model(
            args.model, module=module, **(example if isinstance(module, nn.Module) else {})
        )
    except (FileNotFoundError, io.CheckpointError, ValueError, TypeError) as error:
        raise UsageError(f"--model {args.model} with --module {args.module}: {error}") from error
    checkpoint = UserCheckpoint(module, restored, {"input_shape": list(shape)})
    try:
        logits = restored(np.asarray(dataset.x_train[:1]))
    except Exception as error:  # the user's model on the data's first example
        raise UsageError(
            f"--module {args.module} cannot take the examples of {args.data!r} (shape {shape}): "
            f"{type(error).__name__}: {error}"
        ) from error
    checkpoint.metadata["num_classes"] = int(np.shape(logits)[-1])
    return checkpoint


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


# The dedicated flags of method options: sugar for --option NAME=VALUE. None, their
# default, means "not given": the method's own default applies (never restated here).
OPTION_FLAGS = {
    "steps": "--steps",
    "schedule": "--schedule",
    "baseline": "--baseline",
    "samples": "--samples",
    "tolerance": "--tolerance",
    "layer": "--layer",
    "neuron": "--neuron",
    "window": "--window",
    "rule": "--rule",
    "noise_scale": "--noise-scale",
}

# Method parameters that the command line fills itself: the flag that gives each.
FILLED = {
    "model": "--model",
    "x": "--data",
    "target": "--target",
    "key": "--seed",
    "background": "--background N (that many training examples)",
    "method": "--wrap",
    "model_kwargs": "jaxplain.explain_dataset: per-example arrays are not given on the command line",
}


def steps(text: str):
    """A positive int, or "auto" (integrated_gradients' adaptive steps, see --tolerance)."""
    return text if text == "auto" else positive_int(text)


def option_value(text: str):
    """A value given on the command line: JSON where it parses (numbers, true, false,
    null, lists as tuples, objects as dicts), else the text itself."""
    import json

    def frozen(value):
        if isinstance(value, list):
            return tuple(frozen(item) for item in value)
        if isinstance(value, dict):
            return {key: frozen(item) for key, item in value.items()}
        return value

    try:
        return frozen(json.loads(text))
    except ValueError:
        return text


def option_pair(text: str):
    """NAME=VALUE as (name, value), the value read by `option_value`."""
    name, equals, value = text.partition("=")
    if not equals or not name.strip().isidentifier():
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE such as steps=32, got {text!r}")
    return name.strip(), option_value(value)


class ListOptions(argparse.Action):
    """--list-options METHOD: prints the method's options and exits, as --help does."""

    def __call__(self, parser, namespace, values, option_string=None):
        try:
            text = describe_options(values)
        except UsageError as error:
            parser.error(str(error))
        print(text, end="")
        parser.exit()


def add_method_arguments(parser) -> None:
    """The settings of the methods, shared by explain, evaluate and train-explainer."""
    group = parser.add_argument_group(
        "method settings",
        "Every option of a method: --option NAME=VALUE (repeatable; the value read as JSON, "
        "else as text). The flags below are short forms of some; each method takes those it "
        "knows. An option not given is the method's own default (jaxplain explain "
        "--list-options METHOD lists them).",
    )
    group.add_argument(
        "--option",
        type=option_pair,
        action="append",
        default=None,
        metavar="NAME=VALUE",
        help="any option of the method, e.g. steps=auto, tolerance=0.001, window=[2,2,1], "
        'method_options={"samples": 64}',
    )
    group.add_argument(
        "--list-options",
        action=ListOptions,
        metavar="METHOD",
        help="list METHOD's options with their defaults, and exit",
    )
    group.add_argument(
        "--output",
        choices=("logits", "probs", "log_probs"),
        default="logits",
        help="which model output to explain (default logits)",
    )
    group.add_argument(
        "--steps",
        type=steps,
        default=None,
        help="path points of the path methods, or auto (integrated_gradients refines each "
        "example's path until --tolerance)",
    )
    group.add_argument("--schedule", default=None, help="interpolation schedule of the path methods")
    group.add_argument(
        "--tolerance",
        type=float,
        default=None,
        help="with --steps auto, the bound on integrated_gradients' relative completeness gap",
    )
    group.add_argument(
        "--baseline",
        type=float,
        default=None,
        help="constant baseline of path and perturbation methods (text models: the padding token)",
    )
    group.add_argument("--samples", type=positive_int, default=None, help="samples of randomized methods")
    group.add_argument(
        "--seed", type=int, default=0, help="seed of the key of randomized methods (default 0)"
    )
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
        help="feature groups of the Shapley, ablation and LIME methods: boxes of this size, e.g. 2,2,1 "
        "(default: every feature its own group; every token for text)",
    )
    group.add_argument("--rule", default=None, help="LRP rule (epsilon, gamma, alpha1beta0, zbox, composite)")
    group.add_argument(
        "--wrap",
        default=None,
        help="the method that smoothgrad, smoothgrad_sq and vargrad run on noisy copies, their method option",
    )
    group.add_argument(
        "--noise-scale",
        type=float,
        default=None,
        help="noise of smoothgrad and kin, as a fraction of the input range",
    )


def given_options(args, names) -> dict:
    """The method options the command line gives: its flags (those given) and --option
    pairs, checked against the methods `names` (and the method a noise method wraps).

    A --option name must be an option of one of them; a name given twice (twice by
    --option, or by --option and its flag) with different values is refused.
    """
    given = {name: getattr(args, flag[2:].replace("-", "_")) for name, flag in OPTION_FLAGS.items()}
    given = {name: value for name, value in given.items() if value is not None}
    known = set()
    for name in names:
        known |= set(options_of_method(name, args.wrap))
    told = {}
    for name, value in args.option or ():
        if name in FILLED:
            raise UsageError(f"--option {name}: not an option here: use {FILLED[name]}")
        if name == "feature_mask" and args.patch is not None:
            raise UsageError("--option feature_mask and --patch both give the feature groups: give one")
        if name not in known:
            listed = ", ".join(sorted(known)) or "none"
            raise UsageError(
                f"--option {name}: {' and '.join(names)} {'takes' if len(names) == 1 else 'take'} no "
                f"option {name!r}; options: {listed}"
            )
        if name in told and told[name] != value:
            raise UsageError(f"--option {name} given twice, as {told[name]!r} and {value!r}: give it once")
        if name in given and given[name] != value:
            raise UsageError(
                f"--option {name}={value!r} and {OPTION_FLAGS[name]} {given[name]!r} disagree: give it once"
            )
        told[name] = value
    return {**given, **told}


def default_of(name: str, option: str):
    """The default of method `name`'s `option` (inspect.Parameter.empty if it has none)."""
    import inspect

    return inspect.signature(methods()[name].function).parameters[option].default


def wrapped(name: str, wrap: str | None) -> str | None:
    """The method that noise method `name` runs: `wrap`, else its default; None for others."""
    if not methods()[name].wraps:
        return None
    return wrap if wrap is not None else default_of(name, "method")


def options_of_method(name: str, wrap: str | None) -> dict:
    """{option: default} of method `name` that the command line takes as options (those
    of the method a noise method wraps included), in signature order."""
    import inspect

    found = {}
    for method in (name, wrapped(name, wrap)):
        if method is None:
            continue
        for parameter in inspect.signature(methods()[method].function).parameters.values():
            kind_ok = parameter.kind in (parameter.KEYWORD_ONLY, parameter.POSITIONAL_OR_KEYWORD)
            if kind_ok and parameter.name not in FILLED and parameter.name not in found:
                found[parameter.name] = parameter.default
    return found


def option_help(function) -> dict:
    """{parameter: its description} from the Args section of `function`'s docstring."""
    import inspect
    import re

    doc = inspect.getdoc(function) or ""
    section = re.search(r"^Args:\n(.*?)(?:^\S|\Z)", doc, flags=re.M | re.S)
    found, name = {}, None
    for line in (section.group(1) if section else "").splitlines():
        entry = re.match(r"^  (\*{0,2}\w+): ?(.*)$", line)
        if entry:
            name = entry.group(1)
            found[name] = entry.group(2).strip()
        elif name is not None and line.strip():
            found[name] += " " + line.strip()
    return found


def describe_options(name: str) -> str:
    """The text of --list-options: method `name`'s options, defaults and descriptions."""
    import inspect
    import textwrap

    check_method(name)
    lines = [f"{name}: {methods()[name].summary}", "", "options (--option NAME=VALUE):"]
    helps = option_help(methods()[name].function)
    inner = wrapped(name, None)
    for option, default in options_of_method(name, None).items():
        help_text = helps.get(option, "")
        if option not in methods()[name].parameters:
            help_text = f"(of {inner}) " + option_help(methods()[inner].function).get(option, "")
        shown = "required" if default is inspect.Parameter.empty else f"default {default!r}"
        flag = f"; or {OPTION_FLAGS[option]}" if option in OPTION_FLAGS else ""
        if option == "feature_mask":
            flag = "; or --patch"
        lines.append(f"  {option} ({shown}{flag})")
        lines += textwrap.wrap(help_text, width=88, initial_indent=" " * 6, subsequent_indent=" " * 6)
    filled = [
        p for p in methods()[name].parameters if p in FILLED and p not in ("model", "x", "model_kwargs")
    ]
    if filled:
        lines += ["", "given by the command: " + ", ".join(f"{p} ({FILLED[p]})" for p in sorted(filled))]
    if inner is not None:
        lines += [
            "",
            f"it runs --wrap (default {inner}) on noisy copies; that method's options are taken too",
        ]
    return "\n".join(lines) + "\n"


def options_epilog() -> str:
    """Each method with its option names, for a command's --help."""
    lines = ["method options (--option NAME=VALUE; jaxplain explain --list-options METHOD for details):"]
    for name in sorted(methods()):
        own = [o for o in options_of_method(name, None) if o in methods()[name].parameters]
        lines.append(f"  {name}: {', '.join(own) or '(none)'}")
    return "\n".join(lines) + "\n"


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


def inputs(checkpoint, dataset, args, example_shape, given: dict) -> Inputs:
    """The model and the candidate settings of the methods, for float or token inputs:
    the options `given` on the command line (see `given_options`) and those it makes
    from the data (feature groups, background, the bounds of LRP's z-box rule)."""
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
    candidates = {"feature_mask": feature_mask, "background": np.asarray(dataset.x_train[: args.background])}
    if text:  # the baseline of a text model is the padding token (`embedded` embeds it)
        candidates["baseline"] = pad_id
    if given.get("rule") in ("zbox", "composite"):  # the first layer's input bounds: the data's range
        candidates.update(low=float(np.min(dataset.x_train)), high=float(np.max(dataset.x_train)))
    candidates.update(given)
    return Inputs(model, embedder, pad_id, candidates, bool(text), checkpoint.model(output=args.output))


def accepted(name: str, candidates: dict) -> dict:
    """The settings among `candidates` that method `name` takes (its registered parameters)."""
    parameters = methods()[name].parameters
    return {k: v for k, v in candidates.items() if k in parameters and v is not None}


def method_options(name: str, wrap: str | None, candidates: dict) -> dict:
    """The settings that method `name` takes. A noise method (one with a `method` option)
    also takes those of the method it wraps, named by `wrap` (None: its default) and passed
    as `wrap=`, which
    `explain_dataset`, `make_labels`, `evaluate` and `call` read as its `method` option."""
    options = accepted(name, candidates)
    if methods()[name].wraps:
        options.update(accepted(wrapped(name, wrap), candidates))
        if wrap is not None:
            options["wrap"] = wrap
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
    import re

    return UsageError(re.sub(r"keyword-only argument: '(\w+)'", r"argument: --\1", str(error)))


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
