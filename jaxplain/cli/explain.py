"""`jaxplain explain` (a dataset split, resumable) and `jaxplain show` (one example)."""

from __future__ import annotations

import argparse
import os
import shlex

import numpy as np

from jaxplain.cli import _common
from jaxplain.cli._common import UsageError

EXPLAIN_EXAMPLES = """examples:
  jaxplain explain --model checkpoints/digits_cnn --data digits --n 16 --out out/digits
  jaxplain explain --model checkpoints/digits_cnn --data digits --method kernel_shap --patch 2,2,1 --samples 256 --out out/ks
  jaxplain explain --model checkpoints/wine_mlp --data wine --method saliency --split train --out out/wine
  jaxplain explain --model checkpoints/synthetic_text --data synthetic_text --steps 64 --out out/text
  jaxplain explain --model checkpoints/wine_mlp --data wine --steps auto --tolerance 0.001 --out out/auto
  jaxplain explain --model checkpoints/digits_cnn --data digits --method occlusion --option window=[2,2,1] --option stride=[2,2,1]
  jaxplain explain --model my_orbax_ckpt --module mypkg.models:make_cnn --config '{"num_classes": 10}' --data digits

The whole split is explained unless --n is given. Attributions are written batch by batch
(OUT/shards, OUT/index.p0.jsonl); running the same command again resumes where it stopped.
Read them with jaxplain.load_attributions(OUT); draw one with: jaxplain show OUT --index 3

With --module, --model is an orbax checkpoint of your own module's variables (what
orbax.checkpoint.StandardCheckpointer().save(path, variables) writes), restored by
jaxplain.load_model(path, module=FACTORY(**CONFIG)).
"""

SHOW_EXAMPLES = """examples:
  jaxplain show out/digits --index 3
  jaxplain show out/digits --index 0 1 2 3 --mode absolute --overlay --output digits.png
  jaxplain show out/text --index 5            (an HTML page with the tokens highlighted)
"""

SHOWN = 16  # rows of the table and panels of the picture that explain prints and draws


def add_parsers(commands) -> None:
    explain = _common.add_command(
        commands,
        "explain",
        help="explain a checkpoint on a dataset split (resumable, sharded over the devices)",
        description="Explain the examples of a dataset split with a checkpoint and any jaxplain method. "
        "Writes the attributions to --out batch by batch, a picture of the first examples to "
        "OUT/views/attributions.png, and prints a table of them.",
        examples=EXPLAIN_EXAMPLES + "\n" + _common.options_epilog(),
        model="checkpoint folder (see checkpoints/README.md), or with --module an orbax checkpoint",
        data="dataset name: digits, breast_cancer, wine, synthetic_additive, synthetic_text, or a TFDS name",
    )
    explain.add_argument(
        "--method", default="integrated_gradients", help="a method name (list them with: jaxplain methods)"
    )
    explain.add_argument("--split", choices=("test", "train"), default="test")
    explain.add_argument(
        "--n",
        type=_common.positive_int,
        default=None,
        help="explain only the first N examples (default: all)",
    )
    explain.add_argument(
        "--target", default="predicted", help="'predicted', 'label' (the true class) or a class index"
    )
    explain.add_argument(
        "--batch-size",
        type=_common.positive_int,
        default=None,
        help="examples per batch, a multiple of the number of devices (default 16 per device)",
    )
    explain.add_argument("--data-dir", default=None, help="TFDS data folder")
    explain.add_argument("--out", default="jaxplain_out", help="output folder (default ./jaxplain_out)")
    explain.add_argument(
        "--overwrite", action="store_true", help="replace an output folder that holds another jaxplain run"
    )
    _common.add_module_arguments(explain)
    _common.add_method_arguments(explain)

    show = commands.add_parser(
        "show",
        help="draw the attributions of examples of an explain output folder (PNG or HTML)",
        description="Draw examples of a folder written by `jaxplain explain`: an image beside its "
        "heat-map, a row of feature attributions, or tokens highlighted (HTML).",
        epilog=SHOW_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    show.add_argument("folder", help="an output folder of jaxplain explain")
    show.add_argument(
        "--index", type=int, nargs="+", required=True, help="dataset position(s) of the example(s) to draw"
    )
    show.add_argument(
        "--format",
        choices=("png", "html"),
        default=None,
        help="png (default for images and tables) or html (default for text)",
    )
    show.add_argument(
        "--mode",
        choices=("signed", "absolute"),
        default="signed",
        help="signed (red raises the score, blue lowers it) or absolute heat-maps",
    )
    show.add_argument("--overlay", action="store_true", help="draw the heat-map over the image")
    show.add_argument(
        "--percentile",
        type=float,
        default=99.0,
        help="colour clipping percentile of |attribution| (default 99)",
    )
    show.add_argument(
        "--output", default=None, help="file to write (default FOLDER/views/example-I.png or .html)"
    )


def explain(args, argv) -> int:
    import jax

    import jaxplain
    from jaxplain.runs import OutputFolderError

    args.out = _common.output("--out", args.out)
    for name in (args.method, args.wrap):
        if name is not None:
            _common.check_method(name)
    given = _common.given_options(args, [args.method])
    dataset = _common.load_data(args.data, args.data_dir)
    checkpoint = _common.load_target(args, dataset)
    x_all, y_all = _common.split(dataset, args.split)
    n = len(x_all) if args.n is None else min(args.n, len(x_all))
    num_classes = int(checkpoint.metadata.get("num_classes", 0)) or int(dataset.num_classes)
    target = _common.target(args.target, num_classes)
    inputs = _common.inputs(checkpoint, dataset, args, x_all.shape[1:], given)
    options = _common.method_options(args.method, args.wrap, inputs.candidates)
    if _common.methods()[args.method].randomized:
        options["key"] = jax.random.key(args.seed)
    inner = _common.wrapped(args.method, args.wrap)
    label = args.method if inner is None else f"{args.method}({inner})"
    metadata = {
        "model": args.model,
        **({"module": args.module, "config": args.config} if args.module is not None else {}),
        "data": args.data,
        "split": args.split,
        "data_dir": args.data_dir,
        "command": "jaxplain " + " ".join(shlex.quote(a) for a in argv),
    }
    model, method = _common.method_call(args.method, inputs)
    if model is not inputs.model:  # a layer method on token ids: its baseline is the padding token
        options.pop("feature_mask", None)
        options.pop("baseline", None)
    try:
        summary = jaxplain.explain_dataset(
            method,
            model,
            (x_all[:n], y_all[:n]),
            out=args.out,
            target=target,
            batch_size=args.batch_size,
            overwrite=args.overwrite,
            metadata=metadata,
            label=label,
            **options,
        )
    except OutputFolderError as error:
        raise UsageError(str(error)) from error
    except (ValueError, TypeError) as error:
        raise _common.usage_from(error) from error
    result = jaxplain.load_attributions(args.out, require_complete=True)

    shown = min(SHOWN, n)
    x, labels = x_all[:shown], y_all[:shown]
    explained = np.asarray(result.target[:shown])
    neuron = "target" not in _common.methods()[args.method].parameters
    logits = checkpoint.model()(x)
    predicted = np.asarray(logits.argmax(axis=-1))
    probabilities = np.asarray(jax.nn.softmax(logits, axis=-1))
    # Neuron methods explain a unit, not a class: the probability shown is the predicted one's.
    chosen = probabilities[np.arange(shown), predicted if neuron or explained.ndim != 1 else explained]
    titles = [
        f"#{i} y={labels[i]} t={explained[i] if explained.ndim == 1 else '-'} p={chosen[i]:.2f}"
        for i in range(shown)
    ]
    picture = draw(
        x,
        result.values[:shown],
        dataset,
        inputs.text,
        os.path.join(args.out, "views", "attributions.png"),
        titles=titles,
    )

    print(f"{args.method} on {n} {args.split} examples of {args.data} with {args.model}")
    columns = [
        ("index", np.arange(shown), "d"),
        ("label", labels, "d"),
        ("neuron" if neuron else "target", explained if explained.ndim == 1 else predicted, "d"),
        ("p(pred)" if neuron else "prob", chosen, ".3f"),
    ]
    columns += [
        (title, values[:shown], ".2e")
        for title, values in (("delta", result.delta), ("rel.delta", result.relative_delta))
        if values is not None and values.ndim == 1
    ]
    print(" ".join(f"{title:>9}" for title, _, _ in columns))
    for i in range(shown):
        print(" ".join(f"{format(column[i], spec):>9}" for _, column, spec in columns))
    if shown < n:
        print(f"... {n - shown} more (jaxplain.load_attributions({args.out!r}))")
    if result.relative_delta is not None and result.relative_delta.ndim == 1:
        rel = result.relative_delta
        print(
            f"relative completeness gap over {n} examples: median {np.median(rel):.2e}, max {rel.max():.2e}"
        )
    print(
        f"wrote {args.out} ({summary.batches} batches: {len(summary.computed)} computed, {summary.skipped} already there) "
        f"and {picture}"
    )
    return 0


def draw(
    x,
    values,
    dataset,
    text: bool,
    path: str,
    *,
    titles,
    mode="signed",
    overlay=False,
    percentile=99.0,
    html=False,
) -> str:
    """The picture of some examples: images and heat-maps, token highlights, or a feature table."""
    from jaxplain import viz

    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    n = len(x)
    values = np.asarray(values)
    if text and values.shape == x.shape:
        words = _common.token_words(dataset, x)
        if html:
            viz.text_html(words, values, path, row_labels=titles, percentile=percentile)
        else:
            viz.token_attributions(words, values, path, row_labels=titles, percentile=percentile)
    elif x.ndim == 4 and values.ndim in (3, 4):
        viz.image_attributions(
            x,
            viz.spatial_map(values, x.shape[1:3]),
            path,
            titles=titles,
            mode=mode,
            overlay=overlay,
            percentile=percentile,
        )
    else:
        flat = values.reshape(n, -1)
        feature_names = dataset.feature_names if flat.shape[1] == len(dataset.feature_names or ()) else None
        viz.tabular_attributions(
            flat, path, feature_names=feature_names, row_labels=titles, percentile=percentile
        )
    return path


def show(args) -> int:
    import jaxplain
    from jaxplain.runs import OutputFolderError

    if args.output is not None:
        _common.output("--output", args.output, folder=False)
    else:  # the picture goes to FOLDER/views
        _common.output("folder", os.path.join(args.folder, "views"))
    try:
        result = jaxplain.load_attributions(args.folder)
    except OutputFolderError as error:
        raise UsageError(str(error)) from error
    facts = result.run.get("metadata", {})
    if "data" not in facts:
        raise UsageError(
            f"{args.folder} was not written by jaxplain explain: it does not say which data it explains"
        )
    dataset = _common.load_data(facts["data"], facts.get("data_dir"))
    x_all, y_all = _common.split(dataset, facts.get("split", "test"))
    rows = []
    for index in args.index:
        found = np.flatnonzero(result.index == index)
        if not found.size:
            raise UsageError(
                f"--index {index}: {args.folder} holds no example {index} "
                f"(it holds {len(result)} examples, positions {result.index.min()}..{result.index.max()})"
            )
        rows.append(int(found[0]))
    text = np.issubdtype(x_all.dtype, np.integer)
    html = (args.format or ("html" if text else "png")) == "html"
    if html and not text:
        raise UsageError("--format html is for text models; images and tables are drawn as PNG")
    x = np.asarray(x_all)[np.asarray(args.index)]
    target = result.target[rows]
    titles = [f"#{i} y={y_all[i]} t={t if np.ndim(t) == 0 else '-'}" for i, t in zip(args.index, target)]
    name = "-".join(str(i) for i in args.index[:4]) + ("-more" if len(args.index) > 4 else "")
    path = args.output or os.path.join(args.folder, "views", f"example-{name}.{'html' if html else 'png'}")
    draw(
        x,
        result.values[rows],
        dataset,
        text,
        path,
        titles=titles,
        mode=args.mode,
        overlay=args.overlay,
        percentile=args.percentile,
        html=html,
    )
    print(f"wrote {path}")
    return 0
