"""`show` and `report` on what once crashed them: a file named with mathtext (``x$\\foo$.png``)
and a store whose maps hold NaN/+-inf (written before such rows were refused)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from featuremaps.cli import main

GOOD = Path(__file__).parent.parent / "models" / "vgg16-features0-32.onnx"
NAME = "x$\\foo$.png"


@pytest.fixture(scope="module")
def nan_store(tmp_path_factory):
    """A store of two tiny images (row 1 is ``NAME``) whose row 1 holds NaN, +inf and -inf."""
    import cv2
    import zarr

    root = tmp_path_factory.mktemp("nanstore")
    imgs = root / "imgs"
    imgs.mkdir()
    for i, name in enumerate(("a.png", NAME)):
        cv2.imwrite(str(imgs / name), np.random.RandomState(i).randint(0, 255, (20, 20, 3), np.uint8))
    store = root / "s.zarr"
    assert main(["extract", str(imgs), "--model", str(GOOD), "-o", str(store), "--no-progress"]) == 0
    arr = zarr.open_array(store / "features.0", mode="r+")
    row = arr[1]
    row[0, :4, :4] = np.nan
    row[1, 0, 0], row[2, 0, 0] = np.inf, -np.inf
    arr[1] = row
    return store


def test_show_draws_a_mathtext_file_name(nan_store, tmp_path, capsys):
    image = nan_store.parent / "imgs" / NAME
    assert main(["show", str(image), "--model", str(GOOD), "-o", str(tmp_path)]) == 0
    assert (tmp_path / "x$\\foo$-overview.png").stat().st_size > 1000


def test_show_store_with_nonfinite_maps_draws_and_warns(nan_store, tmp_path, capsys):
    from PIL import Image

    capsys.readouterr()
    assert main(["show", "--store", str(nan_store), "--index", "1", "-o", str(tmp_path), "--montage", "0"]) == 0
    err = capsys.readouterr().err
    assert "featuremaps: warning: 18 values are NaN or \u00b1inf (features.0): drawn magenta" in err
    rgb = np.asarray(Image.open(tmp_path / "x$\\foo$-layers-first-channel.png").convert("RGB")).astype(int)
    assert ((rgb[..., 0] > 230) & (rgb[..., 1] < 40) & (rgb[..., 2] > 230)).sum() > 10  # channel 0's corner


def test_report_store_with_nonfinite_maps(nan_store, tmp_path, capsys):
    assert main(["report", "--store", str(nan_store), "--rows", "0-1", "-o", str(tmp_path / "r")]) == 0
    manifest = json.loads((tmp_path / "r" / "report.json").read_text())
    entry = manifest["images"][1]["taps"]["features.0"]
    assert manifest["images"][1]["name"] == f"{NAME} (row 1)"
    assert entry["nonfinite"] == 18 and entry["stats"]["nonfinite"][:3] == [16, 1, 1]
    assert manifest["images"][0]["taps"]["features.0"]["nonfinite"] == 0
