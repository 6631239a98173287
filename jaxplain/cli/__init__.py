"""The `jaxplain` command line.

    jaxplain explain --model checkpoints/digits_cnn --data digits --out out/digits
    jaxplain explain --model checkpoints/wine_mlp --data wine --steps auto --option max_steps=256
    jaxplain explain --list-options integrated_gradients
    jaxplain explain --model my_orbax_checkpoint --module mypkg.models:make_cnn --data digits
    jaxplain show out/digits --index 3
    jaxplain evaluate --model checkpoints/digits_cnn --data digits --out out/compare
    jaxplain methods
    jaxplain train --model small_cnn --data digits --epochs 30 --out my_digits_cnn
    jaxplain train-explainer --model checkpoints/wine_mlp --data wine --out my_wine_explainer

Each command lives in a small module here (explain.py: explain and show; evaluate.py;
train.py: train and train-explainer); _common.py holds what they share. Every option of
a method is reachable as --option NAME=VALUE (some have a flag of their own too); none is
restated here: an option not given is the method's own default. Bad arguments
end with one line on stderr and exit code 2; nothing prints a traceback for a user's
mistake. Every path a command writes is checked before its work starts (writable, and
holding no file of the user's that it would replace); a file-system error while writing
is one line too, exit code 2 when it is about the path given (no permission, read-only,
not a folder), else 1. Long work (explaining, labelling, training) shows a progress bar
on stderr (JAXPLAIN_PROGRESS=0 silences it).
"""

from __future__ import annotations

import argparse
import errno
import sys

from jaxplain.cli import evaluate, explain, train
from jaxplain.cli._common import Parser, UsageError

__all__ = ["UsageError", "build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="jaxplain",
        description="Attributions for JAX and Flax classifiers.",
        epilog="Run jaxplain COMMAND --help for a command's options and examples.",
    )
    commands = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    explain.add_parsers(commands)
    evaluate.add_parser(commands)
    commands.add_parser(
        "methods",
        help="list the attribution methods",
        description="List every attribution method with its family, whether it takes a key, and its summary. "
        "The noise methods (smoothgrad, smoothgrad_sq, vargrad) run another method on noisy copies: "
        "--wrap names it (default saliency).",
        epilog="example:\n  jaxplain methods",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    train.add_parsers(commands)
    convert = commands.add_parser(
        "convert-checkpoint",
        help="rewrite checkpoint folders of format 1 (variables.msgpack) in the current format",
        description="Rewrite jaxplain checkpoint folders of format 1 (variables.msgpack) as orbax folders "
        "(the current format), in place; the arrays are checked after. A folder already in the current "
        "format is left as it is.",
        epilog="example:\n  jaxplain convert-checkpoint my_checkpoints/cnn",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    convert.add_argument("paths", nargs="+", metavar="PATH", help="a checkpoint folder")
    return parser


def list_methods() -> int:
    from jaxplain.cli._common import methods

    found = methods()
    width = max(len(name) for name in found)
    print(f"{'method':<{width}}  {'family':<12}  {'key':<3}  summary")
    for name, info in sorted(found.items(), key=lambda item: (item[1].family, item[0])):
        print(f"{name:<{width}}  {info.family:<12}  {'yes' if info.randomized else '':<3}  {info.summary}")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args = build_parser().parse_args(argv)
        if args.command == "methods":
            return list_methods()
        if args.command == "convert-checkpoint":
            from jaxplain import io

            return io.main(["convert", *args.paths])
        if args.command == "explain":
            return explain.explain(args, argv)
        if args.command == "show":
            return explain.show(args)
        if args.command == "evaluate":
            return evaluate.evaluate(args)
        if args.command == "train":
            return train.train(args, argv)
        return train.train_explainer(args, argv)
    except (UsageError, OSError) as error:
        command = f"jaxplain {argv[0]}" if argv and not argv[0].startswith("-") else "jaxplain"
        print(f"{command}: error: {error}", file=sys.stderr)
        return 1 if isinstance(error, OSError) and error.errno not in PATH_ERRORS else 2


# OSErrors that say the path given cannot be written: the user's to fix, like a bad argument.
PATH_ERRORS = (
    errno.EACCES,
    errno.EPERM,
    errno.EROFS,
    errno.ENOTDIR,
    errno.EISDIR,
    errno.EEXIST,
    errno.ENOENT,
)
