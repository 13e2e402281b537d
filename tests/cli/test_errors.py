"""The error base: every user-facing error is a FeaturemapsError, printed as one line with exit 2."""

from __future__ import annotations

import doctest

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
