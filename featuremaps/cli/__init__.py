"""The ``featuremaps`` command line. Prints and writes files; the library only computes and draws.

A leaf package: nothing in the library imports it. One module per command, named after it, each
with ``register(subparsers)``; shared options live in :mod:`._args`. User errors (the
:class:`featuremaps.errors.FeaturemapsError` family) become one line and exit status 2 here, in
:func:`main`, and nowhere else; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import errno
import importlib
import io
import logging
import os
import signal
import sys

from ..errors import FeaturemapsError, one_line, terminal_text
from .. import __version__
from ._args import (DEFAULT_LAYERS, CLIError, ModelSpec, Parser, add_model_args,  # noqa: F401 - for cmd_ modules
                    is_onnx_path)
from .cache import cache_root, resolve_model  # noqa: F401 - for cmd_ modules

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
    "featuremaps.cli.doctor",
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
    """Run one command; returns its exit status. User errors, Ctrl-C and an unwritable stdout are
    one line on stderr here; anything else is a bug and keeps its traceback."""
    _replace_unencodable(sys.stdout)  # PYTHONIOENCODING=ascii, undecodable file names: never a traceback
    interrupts = _catch_interrupts()
    try:
        status = _run(argv)
        sys.stdout.flush()  # a full stdout (>/dev/full) fails here, in our hands, not at interpreter exit
        return status
    except SystemExit:  # argparse: --help, --version, a usage error; their text must reach stdout too
        _flush_or_fail()
        raise
    except BaseException as e:
        if interrupts is not None and interrupts.count:  # Ctrl-C mid-import surfaces as an ImportError
            print("featuremaps: interrupted", file=sys.stderr)
            return 130
        return _error_status(e)
    finally:
        if interrupts is not None:
            interrupts.restore()


class _EscapingFormatter(logging.Formatter):
    """Log messages quote paths and metadata: escaped like every other line printed here."""

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 - logging's name
        return terminal_text(super().formatMessage(record))


class _QuietLibraries(logging.Filter):
    """Without ``-v``, what other libraries log stays one line: a background task of theirs that
    failed (asyncio's "exception was never retrieved", e.g. aiohttp when an object store goes away)
    is dropped, since the failure reaches the user as our own one-line error, and any other record
    of theirs carrying an exception shows it as ``(Type: message)``, not a traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name == "featuremaps" or record.name.startswith("featuremaps."):
            return True
        if record.name == "asyncio" and "never retrieved" in str(record.msg):
            return False
        if record.exc_info and record.exc_info[1] is not None:
            exc = record.exc_info[1]
            record.msg, record.args = f"{record.getMessage()} ({type(exc).__name__}: {exc})", ()
            record.exc_info, record.exc_text, record.stack_info = None, None, None
        return True


def _run(argv: list[str] | None) -> int:
    args = build_parser().parse_args(argv)
    handler = logging.StreamHandler()
    handler.setFormatter(_EscapingFormatter("%(levelname)s %(name)s: %(message)s"))
    if not args.verbose:
        handler.addFilter(_QuietLibraries())
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, handlers=[handler])
    return int(args.func(args) or 0)


def _error_status(e: BaseException) -> int:
    """The exit status (and one stderr line) for an exception that ends a command; re-raises bugs."""
    if isinstance(e, KeyboardInterrupt):
        print("featuremaps: interrupted", file=sys.stderr)
        return 130
    if isinstance(e, FeaturemapsError):  # the one place user errors become a line and exit 2
        print(f"featuremaps: error: {one_line(e)}", file=sys.stderr)
        return 2
    if isinstance(e, BrokenPipeError):  # `featuremaps info X | head`: the reader left; not an error of ours
        _silence_stdout()  # no second error at exit
        return 141
    if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):  # a full disk, or >/dev/full
        _silence_stdout()
        print(f"featuremaps: error: {e.strerror} while writing output; free some space or write elsewhere",
              file=sys.stderr)
        return 2
    raise e


def _flush_or_fail() -> None:
    """Flush stdout after argparse's own output; a full one becomes one line and exit 2."""
    try:
        sys.stdout.flush()
    except OSError as e:
        raise SystemExit(_error_status(e)) from None


def _silence_stdout() -> None:
    """Point stdout at /dev/null so what is left in its buffer cannot fail again at exit."""
    try:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except (OSError, ValueError, io.UnsupportedOperation):  # no real file behind it (a test's capture)
        pass


def _replace_unencodable(stream) -> None:
    """Characters the stream's encoding cannot hold are written as escapes instead of raising."""
    if getattr(stream, "errors", None) == "strict" and hasattr(stream, "reconfigure"):
        stream.reconfigure(errors="backslashreplace")


class _Interrupts:
    """SIGINT and SIGTERM handlers for one command. The first Ctrl-C (or a SIGTERM from a batch
    scheduler or `kill`) raises KeyboardInterrupt and is counted (an import it broke then reads as
    the interrupt it was, not an ImportError): extract commits the batches in flight and prints the
    resume command. The second is ignored so the first one's cleanup (store, shared memory)
    finishes; a third quits at once."""

    def __init__(self, sigint: bool = True):
        self.count = 0
        self.previous = signal.signal(signal.SIGINT, self._on_sigint) if sigint else None
        self.previous_term = signal.signal(signal.SIGTERM, self._on_sigint)

    def _on_sigint(self, signum, frame):
        self.count += 1
        if self.count == 1:
            raise KeyboardInterrupt
        if self.count >= 3:
            print("featuremaps: interrupted", file=sys.stderr)
            os._exit(130)

    def restore(self) -> None:
        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)
        signal.signal(signal.SIGTERM, self.previous_term)


def _catch_interrupts() -> _Interrupts | None:
    """Install :class:`_Interrupts` (SIGTERM only where Ctrl-C is ignored, as in a script's
    background job); None where no handler can be installed (not the main thread)."""
    try:
        return _Interrupts(sigint=signal.getsignal(signal.SIGINT) is not signal.SIG_IGN)
    except ValueError:
        return None
