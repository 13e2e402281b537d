"""The error base: every user-facing error is a FeaturemapsError, printed as one line with exit 2."""

from __future__ import annotations

import doctest
import subprocess
import sys
import textwrap

import pytest

import featuremaps.errors as errors
from featuremaps.cli import main
from featuremaps.errors import FeaturemapsError, ModelFileError, StoreError, one_line


@pytest.mark.parametrize("name", [n for n in errors.__all__ if n[0].isupper() and n != "FeaturemapsError"])
def test_every_error_is_a_featuremaps_error(name):
    assert issubclass(getattr(errors, name), FeaturemapsError)


def test_errors_refine_builtins_so_old_except_clauses_still_catch():
    assert issubclass(StoreError, ValueError) and issubclass(ModelFileError, ValueError)
    assert issubclass(errors.ProviderError, RuntimeError) and issubclass(errors.DependencyError, ImportError)


def test_one_line_keeps_the_first_line_and_escapes_control_characters():
    assert one_line(StoreError("store 'a\x1b[2Jb' is locked\nsecond line")) == "store 'a\\x1b[2Jb' is locked"
    assert one_line(StoreError("")) == "StoreError"


def test_module_doctests_pass():
    assert doctest.testmod(errors).failed == 0


def test_cli_prints_one_line_and_exits_2_for_a_missing_model(tmp_path, capsys):
    import cv2
    import numpy as np

    cv2.imwrite(str(tmp_path / "a.png"), np.zeros((8, 8, 3), np.uint8))
    rc = main(["extract", str(tmp_path), "--model", str(tmp_path / "nope.onnx"), "-o", str(tmp_path / "s.zarr")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2
    assert len(err) == 1 and err[0].startswith("featuremaps: error: ") and "nope.onnx" in err[0]


def test_a_library_background_failure_adds_no_traceback_to_the_one_line():
    """An object store going away mid-run: aiohttp's own write task fails too, and asyncio logs it
    at garbage collection ("Task exception was never retrieved", with a traceback). Without -v the
    user sees only our one line; with -v the library's record is kept whole."""
    code = textwrap.dedent('''
        import asyncio, gc, logging, sys
        import featuremaps.cli as cli
        from featuremaps.errors import FeaturemapsError

        def boom(args):
            async def write():
                raise ConnectionResetError("Cannot write to closing transport")
            loop = asyncio.new_event_loop()
            task = loop.create_task(write())
            loop.run_until_complete(asyncio.sleep(0.01))
            del task
            gc.collect()
            try:
                raise OSError("socket closed")
            except OSError:
                logging.getLogger("aiobotocore.x").warning("retrying %s", "PUT", exc_info=True)
            raise FeaturemapsError("s3://b/s.zarr: committing failed; re-run with --resume")

        build = cli.build_parser
        def patched():
            parser = build()
            parser._subparsers._group_actions[0].choices["cache"].set_defaults(func=boom)
            return parser
        cli.build_parser = patched
        sys.exit(cli.main(sys.argv[1:]))
    ''')
    quiet = subprocess.run([sys.executable, "-c", code, "cache"], capture_output=True, text=True, timeout=120)
    assert quiet.returncode == 2, quiet.stderr
    assert "Traceback" not in quiet.stderr and "never retrieved" not in quiet.stderr, quiet.stderr
    assert quiet.stderr.splitlines() == [
        "WARNING aiobotocore.x: retrying PUT (OSError: socket closed)",
        "featuremaps: error: s3://b/s.zarr: committing failed; re-run with --resume"], quiet.stderr
    loud = subprocess.run([sys.executable, "-c", code, "-v", "cache"], capture_output=True, text=True, timeout=120)
    assert loud.returncode == 2 and "never retrieved" in loud.stderr and "Traceback" in loud.stderr, loud.stderr
