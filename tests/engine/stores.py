"""Helpers shared by the store damage and hostile-store tests: a small extraction with the 10 KB test
model, a reference store made once per module, and a copy of it each test may break.

A test module defines its own ``images`` (the folder the reference store is made from) and a
module-scoped ``reference`` fixture returning :func:`reference_store`."""

from __future__ import annotations

import shutil
from pathlib import Path

from featuremaps.cli import main
from featuremaps.engine.store import LOCK_NAME

MODEL = Path(__file__).parent.parent / "models" / "vgg16-features0-32.onnx"


def extract(images: Path, out: Path, *extra) -> int:
    """``featuremaps extract`` of ``images`` into ``out`` on the CPU, batches of 2, decoding inline."""
    return main(["extract", str(images), "--model", str(MODEL), "-o", str(out), "--provider", "cpu",
                 "--no-progress", "--batch-size", "2", "--workers", "0", *map(str, extra)])


def reference_store(tmp_path_factory, images: Path) -> Path:
    """A store of ``images``, extracted once per module (from its fixture); copy it to break it."""
    out = tmp_path_factory.mktemp("ref") / "ref.zarr"
    assert extract(images, out) == 0
    return out


def copy_store(src: Path, dst: Path) -> Path:
    """A copy of store ``src`` at ``dst`` without its lock file; links are copied as links, never followed."""
    shutil.copytree(src, dst, symlinks=True)
    (dst / LOCK_NAME).unlink(missing_ok=True)
    return dst
