"""The ``featuremaps`` command line. Prints and writes files; the library only computes and draws.

A leaf package: nothing in the library imports it. One module per command, named after it, each
with ``register(subparsers)``; shared options live in :mod:`._args`. User errors (the
:class:`featuremaps.errors.FeaturemapsError` family) become one line and exit status 2 here, in
:func:`main`, and nowhere else; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys

from ..errors import FeaturemapsError, one_line
from .. import __version__
from ._args import (DEFAULT_LAYERS, CLIError, ModelSpec, Parser, add_model_args,  # noqa: F401 - for cmd_ modules
                    cache_root, is_onnx_path, resolve_model)

# Every subcommand, in `featuremaps --help` order: a module with register(subparsers), which adds
# its parser and sets func. Commands added on other branches as featuremaps/cmd_<name>.py join
# this list as they are (one line each) until they move into this package.
COMMAND_MODULES: list[str] = [
    "featuremaps.cli.layers",
    "featuremaps.cli.export",
    "featuremaps.cli.demo",
    "featuremaps.cli.parity",
    "featuremaps.cli.bench",
    "featuremaps.cli.extract",
    "featuremaps.cli.show",
    "featuremaps.cli.verify",
    "featuremaps.cli.info",
    "featuremaps.cli.cache",
    "featuremaps.cli.report",
]


def build_parser() -> Parser:
    parser = Parser(
        prog="featuremaps",
        description="Export CNN intermediate layers as ONNX outputs, extract them with ONNX Runtime, "
                    "check them against PyTorch, draw them.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log what happens (INFO)")
    parser.add_argument("--version", action="version", version=f"featuremaps {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("featuremaps: interrupted", file=sys.stderr)
        return 130
    except FeaturemapsError as e:  # the one place user errors become a line and exit 2
        print(f"featuremaps: error: {one_line(e)}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `featuremaps info X | head`: the reader left; not an error of ours
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        return 141
