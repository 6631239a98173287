"""`jaxplain train` (a zoo model) and `jaxplain train-explainer` (an amortized explainer)."""

from __future__ import annotations

import json
import shlex

import numpy as np

from jaxplain.cli import _common
from jaxplain.cli._common import UsageError

TRAIN_EXAMPLES = """examples:
  jaxplain train --model small_cnn --data digits --epochs 30 --out checkpoints/digits_cnn
  jaxplain train --model mlp --data wine --config '{"features": [32, 32]}' --out my_wine_mlp
  jaxplain train --model causal_lm --data copy --epochs 5 --out my_copy_lm

A causal_lm trains on a synthetic task of jaxplain.data.sequences (--data copy or key_value)
and records its greedy accuracy on held-out prompts.
"""

EXPLAINER_EXAMPLES = """examples:
  jaxplain train-explainer --model checkpoints/wine_mlp --data wine --teacher exact_shapley --out my_wine_explainer
  jaxplain train-explainer --model checkpoints/digits_cnn --data digits --teacher integrated_gradients --steps 32 --out my_digits_explainer
  jaxplain train-explainer --model checkpoints/breast_cancer_mlp --data breast_cancer --recipe cortx --label-fraction 0.1 \\
      --teacher kernel_shap --samples 1024 --out my_cortx_explainer
  jaxplain train-explainer --model checkpoints/wine_mlp --data wine --recipe fastshap --out my_fastshap_explainer

The explainer is saved in jaxplain's checkpoint format with its fidelity to the teacher on
the test split; load it with jaxplain.amortized.load(OUT) and call it as explainer(model, x, target=...).
"""


def add_parsers(commands) -> None:
    train = _common.add_command(
        commands,
        "train",
        help="train a zoo model on a dataset and save a checkpoint",
        description="Train an architecture from jaxplain.models on a dataset and write a checkpoint "
        "folder that records the test accuracy and this exact command.",
        examples=TRAIN_EXAMPLES,
        model="architecture: mlp, small_cnn, resnet18, ... (jaxplain.models.ARCHITECTURES)",
        data="dataset name (see jaxplain explain --help)",
    )
    train.add_argument(
        "--out", required=True, help="checkpoint folder to write (new, empty, or a checkpoint to replace)"
    )
    train.add_argument(
        "--config", default="{}", help="JSON object of architecture settings, e.g. '{\"features\": [32, 32]}'"
    )
    train.add_argument("--epochs", type=_common.positive_int, default=20)
    train.add_argument("--batch-size", type=_common.positive_int, default=64)
    train.add_argument("--learning-rate", type=float, default=1e-3)
    train.add_argument("--weight-decay", type=float, default=1e-4)
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--data-dir", default=None, help="TFDS data folder")

    explainer = _common.add_command(
        commands,
        "train-explainer",
        help="train an amortized explainer (supervised, FastSHAP or CoRTX) for a checkpoint",
        description="Train a network that explains a checkpoint in one forward pass: supervised on a "
        "teacher method's attributions of the training split (labels cached and resumable with "
        "--cache), CoRTX (contrastive, a fraction of the labels) or FastSHAP (no teacher labels).",
        examples=EXPLAINER_EXAMPLES,
        model="checkpoint folder of the model to explain",
        data="dataset name",
    )
    explainer.add_argument(
        "--out", required=True, help="explainer folder to write (new, empty, or one to replace)"
    )
    explainer.add_argument("--recipe", choices=("supervised", "cortx", "fastshap"), default="supervised")
    explainer.add_argument(
        "--teacher",
        default=None,
        help="the method to learn (default: exact_shapley for <= 16 features, "
        "kernel_shap for other tables, integrated_gradients for images, token_attributions for text)",
    )
    explainer.add_argument(
        "--label-fraction",
        type=float,
        default=0.1,
        help="CoRTX: share of the training split with teacher labels (default 0.1)",
    )
    explainer.add_argument(
        "--epochs",
        type=_common.positive_int,
        default=100,
        help="most training epochs (early stopping on a validation split)",
    )
    explainer.add_argument(
        "--pretrain-epochs",
        type=_common.positive_int,
        default=30,
        help="CoRTX: epochs of contrastive pre-training",
    )
    explainer.add_argument(
        "--coalitions",
        type=_common.positive_int,
        default=32,
        help="FastSHAP: coalitions per example and step",
    )
    explainer.add_argument("--batch-size", type=_common.positive_int, default=32)
    explainer.add_argument(
        "--check",
        type=_common.positive_int,
        default=128,
        help="test examples on which the fidelity to the teacher is measured (default 128)",
    )
    explainer.add_argument(
        "--cache", default=None, help="folder that caches the teacher's labels (resumable)"
    )
    explainer.add_argument("--data-dir", default=None, help="TFDS data folder")
    _common.add_method_arguments(explainer)


def train(args, argv: list[str]) -> int:
    from jaxplain import io, models
    from jaxplain.models.train import train as fit

    _check_out(args.out)
    if args.model not in models.ARCHITECTURES:
        raise UsageError(
            f"unknown architecture {args.model!r}; choose one of: {', '.join(sorted(models.ARCHITECTURES))}"
        )
    try:
        config = json.loads(args.config)
    except json.JSONDecodeError as error:
        raise UsageError(f"--config is not valid JSON: {error}") from None
    if not isinstance(config, dict):
        raise UsageError("--config must be a JSON object")
    if args.model == "causal_lm":
        return _train_language_model(args, argv, config)
    dataset = _common.load_data(args.data, args.data_dir)
    config.setdefault("num_classes", int(dataset.num_classes))
    if args.model == "text_classifier":
        config.setdefault("vocab_size", int(dataset.extras["vocab_size"]))
        config.setdefault("max_length", int(dataset.extras["max_length"]))
    try:
        module = models.build(
            args.model, **{k: tuple(v) if isinstance(v, list) else v for k, v in config.items()}
        )
    except (TypeError, ValueError) as error:
        raise UsageError(f"cannot build {args.model!r} with config {config}: {error}") from None
    result = fit(
        module,
        dataset,
        epochs=args.epochs,
        batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        weight_decay=args.weight_decay,
        seed=args.seed,
    )
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
        command="jaxplain " + " ".join(shlex.quote(arg) for arg in argv),
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


def _train_language_model(args, argv: list[str], config: dict) -> int:
    """`--model causal_lm`: --data names a synthetic task of jaxplain.data.sequences."""
    from jaxplain.models import lm

    if args.data not in lm.TASKS:
        raise UsageError(f"--data: a causal_lm trains on a task, one of {', '.join(sorted(lm.TASKS))}")
    try:
        lm.CausalLM(**{"vocab_size": 16, "max_length": 1, **config})
    except TypeError as error:
        raise UsageError(f"cannot build 'causal_lm' with config {config}: {error}") from None
    measured = lm.train_checkpoint(
        args.out,
        task=args.data,
        config=config,
        command="jaxplain " + " ".join(shlex.quote(arg) for arg in argv),
        epochs=args.epochs,
        batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        weight_decay=args.weight_decay,
        seed=args.seed,
    )
    print(
        f"held-out greedy accuracy: tokens {measured['token_accuracy']:.4f}, "
        f"answers {measured['sequence_accuracy']:.4f}; wrote {args.out}"
    )
    return 0


def _check_out(out: str) -> None:
    """--out checked before training (which may take hours): a folder that can be written
    and that holds nothing of the user's (a path to create, an empty folder, a checkpoint)."""
    from jaxplain import io

    _common.output("--out", out)
    try:
        io.check_destination(out, name="--out")
    except (ValueError, FileExistsError) as error:
        raise UsageError(str(error)) from None


def _network(kind: str, module, classes: int, shape, baseline: dict):
    """The explainer network for the data kind; `baseline`: {"reference": value} or {} (its default)."""
    import flax.linen as nn

    from jaxplain import amortized

    if kind == "text":
        return amortized.networks.token_explainer_for(module, classes, shape[0])
    if kind == "image":
        if shape[0] % 2 or shape[1] % 2:
            raise UsageError(f"the image explainer needs even height and width, the data has {tuple(shape)}")
        return amortized.ConvExplainer(classes, tuple(shape), channels=(16, 32), multiplier=True, **baseline)
    return amortized.MLPExplainer(
        classes,
        tuple(shape),
        features=(64, 64),
        head_features=(64,),
        activation=nn.relu,
        multiplier=True,
        **baseline,
    )


def train_explainer(args, argv: list[str]) -> int:
    import jax

    from jaxplain import amortized, metrics

    _check_out(args.out)
    if args.cache is not None:
        _common.output("--cache", args.cache)
    checkpoint = _common.load_checkpoint(args.model)
    dataset = _common.load_data(args.data, args.data_dir)
    _common.check_shapes(checkpoint, dataset, args.model, args.data)
    shape = dataset.x_train.shape[1:]
    kind = (
        "text"
        if np.issubdtype(dataset.x_train.dtype, np.integer)
        else ("image" if len(shape) == 3 else "table")
    )
    features = int(np.prod(shape))
    teacher = args.teacher or {"text": "token_attributions", "image": "integrated_gradients"}.get(
        kind, "exact_shapley" if features <= 16 else "kernel_shap"
    )
    _common.check_method(teacher)
    if args.wrap is not None:
        _common.check_method(args.wrap)
    given = _common.given_options(args, [teacher])
    if kind == "text" and teacher != "token_attributions":
        raise UsageError(
            "--teacher: a text model's explainer learns token_attributions (the methods on token ids)"
        )
    if not 0 < args.label_fraction <= 1:
        raise UsageError(f"--label-fraction must be in (0, 1], got {args.label_fraction}")
    model = checkpoint.model(output=args.output)
    candidates = dict(_common.inputs(checkpoint, dataset, args, shape, given).candidates)
    if kind == "text":
        candidates["feature_mask"] = None
    settings = _common.method_options(teacher, args.wrap, candidates)
    if _common.methods()[teacher].randomized:
        settings["key"] = jax.random.key(args.seed)
    classes = int(checkpoint.metadata.get("num_classes", 0)) or int(dataset.num_classes)
    # the explainer's reference is the teacher's baseline as given, else the networks' own default
    baseline = {} if given.get("baseline") is None else {"reference": given["baseline"]}
    network = _network(kind, checkpoint.module, classes, shape, baseline)
    common = {"batch_size": args.batch_size, "seed": args.seed}
    x_train, x_test = dataset.x_train, dataset.x_test[: args.check]
    try:
        if args.recipe == "fastshap":
            explainer = amortized.train_fastshap(
                network,
                model,
                x_train,
                **baseline,
                feature_mask=candidates["feature_mask"],
                samples=args.coalitions,
                epochs=args.epochs,
                **common,
            )
        else:
            rows = np.arange(len(x_train))
            if args.recipe == "cortx":  # only the labelled rows are explained by the teacher
                rows = amortized.labelled_rows(len(x_train), args.label_fraction, args.seed)
            labels = amortized.make_labels(teacher, model, x_train[rows], cache_dir=args.cache, **settings)
            if args.recipe == "supervised":
                explainer = amortized.train_supervised(
                    network, model, x_train, labels, epochs=args.epochs, **common
                )
            else:
                full = _scatter(labels, rows, len(x_train))
                explainer = amortized.train_cortx(
                    network,
                    model,
                    x_train,
                    full,
                    label_fraction=args.label_fraction,
                    head_epochs=args.epochs,
                    epochs=args.pretrain_epochs,
                    **common,
                )
    except (ValueError, TypeError) as error:
        raise _common.usage_from(error) from error

    from jaxplain.methods import registry

    method = registry.resolve(teacher)
    reference = method(model, x_test, target="predicted", **registry.options_of(method, settings))
    learned = explainer(model, x_test, target=reference.target)
    fidelity = {
        "relative_l2": float(np.median(metrics.relative_l2_error(learned.values, reference.values))),
        "spearman": float(np.mean(metrics.spearman(learned.values, reference.values))),
        "examples": int(len(x_test)),
        "teacher": teacher,
    }
    explainer.replace(
        model=args.model,
        dataset=args.data,
        fidelity=fidelity,
        fidelity_on=f"the first {len(x_test)} test examples, each one's predicted class",
        command="jaxplain " + " ".join(shlex.quote(arg) for arg in argv),
    ).save(args.out)
    print(
        f"{args.recipe} explainer of {args.model} (teacher {teacher}): on {len(x_test)} test examples "
        f"relative L2 {fidelity['relative_l2']:.3f} (median), Spearman {fidelity['spearman']:.3f} (mean)"
    )
    print(f"wrote {args.out}; load it with jaxplain.amortized.load({args.out!r})")
    return 0


def _scatter(labels, rows, n):
    """Labels of `rows` placed in a full-length set (CoRTX reads only those rows)."""
    from jaxplain.amortized import Labels

    def full(array):
        out = np.zeros((n, *array.shape[1:]), array.dtype)
        out[rows] = array
        return out

    return Labels(full(labels.values), full(labels.output_difference), full(labels.delta), labels.teacher)
