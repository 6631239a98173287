"""`jaxplain evaluate`: several methods judged by the metrics, as a table and a comparison grid."""

from __future__ import annotations

import json
import os

import numpy as np

from jaxplain.cli import _common
from jaxplain.cli._common import UsageError

EXAMPLES = """examples:
  jaxplain evaluate --model checkpoints/digits_cnn --data digits --n 16 --out out/compare
  jaxplain evaluate --model checkpoints/digits_cnn --data digits --methods saliency,integrated_gradients,lrp --rule epsilon --out out/lrp
  jaxplain evaluate --model checkpoints/wine_mlp --data wine --methods integrated_gradients,kernel_shap --metrics infidelity,deletion_auc
  jaxplain evaluate --model checkpoints/digits_cnn --data digits --methods saliency,xrai --metrics all --n 8

Writes OUT/table.md and OUT/table.json (methods x metrics, see jaxplain.metrics) and the
methods side by side on the first examples: OUT/grid.png (images, tables) or OUT/grid.html (text).
"""

WRITTEN = ("table.json", "table.md", "grid.png", "grid.html")  # what evaluate writes into OUT
DEFAULT_METHODS = ("saliency", "integrated_gradients", "smoothgrad", "deeplift", "guided_backprop")
GRID = 6  # examples drawn in the comparison grid


def add_parser(commands) -> None:
    from jaxplain.metrics.evaluate import DEFAULT_METRICS, METRICS

    parser = _common.add_command(
        commands,
        "evaluate",
        help="compare methods on a dataset by faithfulness and robustness metrics",
        description="Run several methods on the first N examples of a split, judge each by the "
        "metrics, print the table and draw the methods side by side.",
        examples=EXAMPLES,
        model="checkpoint folder, or with --module an orbax checkpoint (see jaxplain explain --help)",
        data="dataset name (see jaxplain explain --help)",
    )
    parser.add_argument(
        "--methods",
        type=_common.names,
        default=DEFAULT_METHODS,
        help=f"comma-separated method names (default {','.join(DEFAULT_METHODS)})",
    )
    parser.add_argument(
        "--metrics",
        type=_common.names,
        default=DEFAULT_METRICS,
        help=f"comma-separated metrics, or 'all' for all {len(METRICS)} (default {','.join(DEFAULT_METRICS)})",
    )
    parser.add_argument("--split", choices=("test", "train"), default="test")
    parser.add_argument("--n", type=_common.positive_int, default=16, help="examples (default 16)")
    parser.add_argument("--target", default="predicted", help="'predicted', 'label' or a class index")
    parser.add_argument(
        "--metric-samples",
        type=_common.positive_int,
        default=32,
        help="random draws of the sampling metrics (default 32)",
    )
    parser.add_argument("--data-dir", default=None, help="TFDS data folder")
    parser.add_argument(
        "--out",
        default="jaxplain_eval",
        help="output folder: new, empty, or an earlier evaluate's (default ./jaxplain_eval)",
    )
    _common.add_module_arguments(parser)
    _common.add_method_arguments(parser)


def evaluate(args) -> int:
    import jax
    import jax.numpy as jnp

    import jaxplain
    from jaxplain.metrics.evaluate import METRICS

    args.out = _check_out(args.out)
    for name in (*args.methods, *([args.wrap] if args.wrap is not None else [])):
        _common.check_method(name)
        if name in args.methods and "target" not in _common.methods()[name].parameters:
            raise UsageError(
                f"{name} explains a neuron, not a class: the metrics need a class (use jaxplain explain)"
            )
    if tuple(args.metrics) == ("all",):
        args.metrics = tuple(METRICS)
    unknown = [m for m in args.metrics if m not in METRICS]
    if unknown:
        raise UsageError(f"unknown metric {unknown[0]!r}; choose from: {', '.join(METRICS)}")
    given = _common.given_options(args, args.methods)
    dataset = _common.load_data(args.data, args.data_dir)
    checkpoint = _common.load_target(args, dataset)
    x_all, y_all = _common.split(dataset, args.split)
    n = min(args.n, len(x_all))
    num_classes = int(checkpoint.metadata.get("num_classes", 0)) or int(dataset.num_classes)
    target = _common.target(args.target, num_classes)
    inputs = _common.inputs(checkpoint, dataset, args, x_all.shape[1:], given)
    tokens, labels = np.asarray(x_all[:n]), np.asarray(y_all[:n])
    candidates = dict(inputs.candidates)
    if inputs.text:  # the methods and metrics work on the embeddings; padding is the baseline
        x, candidates = _common.embedded(inputs.embedder, inputs.pad_id, tokens, candidates)
    else:
        x = jnp.asarray(tokens)
    methods = {}
    for name in args.methods:
        info = _common.methods()[name]
        if inputs.text and info.family == "layer":
            raise UsageError(
                f"{name} on a text model: evaluate judges methods on the embeddings; "
                "use integrated_gradients (which explains the embeddings) instead"
            )
        methods[name] = (name, _common.method_options(name, args.wrap, candidates))
    chosen = labels if target == "label" else target
    try:
        table = jaxplain.evaluate(
            methods,
            inputs.model,
            x,
            target=chosen,
            key=jax.random.key(args.seed),
            metrics=args.metrics,
            samples=args.metric_samples,
            progress=True,
        )
    except (ValueError, TypeError) as error:
        raise _common.usage_from(error) from error

    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "table.json"), "w") as f:  # first: it marks the folder as evaluate's
        json.dump(
            {"model": args.model, "data": args.data, "split": args.split, "examples": n, **table.as_dict()},
            f,
            indent=2,
        )
        f.write("\n")
    with open(os.path.join(args.out, "table.md"), "w") as f:
        f.write(table.markdown() + "\n")
    grid = _grid(table.attributions, tokens, labels, dataset, inputs.text, args.out)
    print(f"{len(methods)} methods on {n} {args.split} examples of {args.data} with {args.model}\n")
    print(table.markdown())
    for label, note in table.notes.items():
        print(f"note: {label}: {note}")
    print(f"\nwrote {os.path.join(args.out, 'table.md')}, table.json and {grid}")
    return 0


def _check_out(out: str) -> str:
    """--out checked before any work: writable, and absent, empty or an earlier evaluate's
    output (its table.json first among its files), so that no file of the user's is replaced."""
    out = _common.output("--out", out)
    entries = sorted(os.listdir(out)) if os.path.isdir(out) else []
    foreign = [name for name in entries if name not in WRITTEN]
    if entries and not foreign:
        try:
            with open(os.path.join(out, "table.json")) as f:
                ours = "rows" in json.load(f)
        except (OSError, ValueError, TypeError):
            ours = False
        foreign = [] if ours else entries
    if foreign:
        raise UsageError(
            f"--out: {out} holds files jaxplain evaluate did not write ({', '.join(foreign[:3])}); "
            "choose another folder"
        )
    return out


def _grid(attributions, x, labels, dataset, text, out) -> str:
    from jaxplain import viz

    shown = min(GRID, len(x))
    if text:
        words = _common.token_words(dataset, x[:shown])
        rows, values, titles = [], [], []
        for i in range(shown):
            for name, array in attributions.items():
                summed = np.asarray(array[i])
                summed = summed.sum(axis=-1) if summed.ndim == 2 else summed
                rows.append(words[i])
                values.append(summed)
                titles.append(f"#{i} y={labels[i]} {name}")
        path = os.path.join(out, "grid.html")
        viz.text_html(rows, values, path, row_labels=titles, title="methods side by side")
        return path
    path = os.path.join(out, "grid.png")
    if x.ndim == 4:
        maps = {name: array[:shown] for name, array in attributions.items() if np.ndim(array) in (3, 4)}
        viz.method_grid(x[:shown], maps, path, titles=[f"#{i} y={labels[i]}" for i in range(shown)])
        return path
    flat = {name: np.asarray(array[:shown]).reshape(shown, -1) for name, array in attributions.items()}
    rows = np.concatenate([flat[name][i : i + 1] for i in range(shown) for name in flat])
    titles = [f"#{i} {name}" for i in range(shown) for name in flat]
    names = dataset.feature_names if rows.shape[1] == len(dataset.feature_names or ()) else None
    viz.tabular_attributions(rows, path, feature_names=names, row_labels=titles)
    return path
