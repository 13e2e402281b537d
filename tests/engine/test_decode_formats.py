"""Only the documented formats are decoded, matched to the content: PostScript named .jpg never
reaches Ghostscript; EPS, FITS, PSD, XPM and DDS files are error rows that name their format."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from hostile import fake_ghostscript, foreign_formats, small_jpeg  # noqa: E402

from featuremaps.engine.preprocess import (IMAGE_FORMATS, ImageDecodeError, Preprocessing, open_image,  # noqa: E402
                                           preprocess_file)

MESSAGE = "{} is not a supported image format; featuremaps reads JPEG, PNG, BMP, TIFF, WebP, GIF"
NAMED = {"XPM": "XBM or XPM"}  # Pillow's XBM check also accepts any file starting "/*"


@pytest.fixture()
def foreign(tmp_path, monkeypatch):
    """``(folder of foreign-format files, {name: format}, gs record)`` with the stand-in ``gs``
    first on PATH (for this process and the processes it starts)."""
    record = fake_ghostscript(tmp_path / "bin")
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    from PIL import EpsImagePlugin

    monkeypatch.setattr(EpsImagePlugin, "gs_binary", None)  # Pillow looks gs up again, on this PATH
    folder = tmp_path / "in"
    folder.mkdir()
    files = foreign_formats()
    for name, (_, data) in files.items():
        (folder / name).write_bytes(data)
    return folder, {n: f for n, (f, _) in files.items()}, record


def test_plain_pillow_opens_them_and_runs_the_stand_in_gs(foreign):
    """The control: each file really is its format to Pillow, and loading the EPS runs ``gs`` (the
    stand-in), so the next tests would see it if featuremaps let Pillow do the same."""
    from PIL import Image

    folder, formats, record = foreign
    for name, fmt in formats.items():
        with Image.open(folder / name) as im:
            assert im.format == fmt
    with Image.open(folder / "postscript.jpg") as im, pytest.raises((OSError, subprocess.CalledProcessError)):  # the stand-in fails
        im.load()
    assert "-dSAFER" in record.read_text()  # Pillow ran "gs" on the file's PostScript


def test_foreign_formats_are_named_errors_and_gs_never_runs(foreign):
    folder, formats, record = foreign
    assert set(formats.values()).isdisjoint(IMAGE_FORMATS)
    for name, fmt in formats.items():
        with pytest.raises(ImageDecodeError, match="^" + MESSAGE.format(NAMED.get(fmt, fmt))):
            preprocess_file(folder / name, Preprocessing(size=(32, 32)))
        with pytest.raises(ImageDecodeError, match="^" + MESSAGE.format(NAMED.get(fmt, fmt))):
            open_image(folder / name)  # the helper for every other Image.open on user data
    assert not record.exists()


def test_extract_cli_makes_error_rows_and_never_runs_gs(foreign, small_model, tmp_path):
    """Through ``extract`` in a fresh process: decode worker processes, the stand-in gs on PATH."""
    from featuremaps.engine.store import open_store

    folder, formats, record = foreign
    (folder / "good.jpg").write_bytes(small_jpeg())
    (folder / "notes.txt").write_text("not an image extension: skipped, and counted")
    out = tmp_path / "o.zarr"
    res = subprocess.run([sys.executable, "-m", "featuremaps", "extract", str(folder), "--model",
                          str(small_model.path), "-o", str(out), "--no-progress", "--workers", "2"],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 1, res.stderr
    assert not record.exists()
    rows = {Path(e.path).name: e.message for e in open_store(out).errors}
    assert set(rows) == set(formats)
    for name, fmt in formats.items():
        assert rows[name].startswith(MESSAGE.format(NAMED.get(fmt, fmt))), rows[name]
        assert f"{name}: {MESSAGE.format(NAMED.get(fmt, fmt))}" in res.stderr
    assert "1 ok, 5 errors" in res.stdout
    assert "1 file skipped: .txt x1 (not image extensions)" in res.stdout
