"""A store received from someone else cannot make featuremaps touch anything outside it, nor read
without bound: symlinked lock files, chunk folders and metadata, FIFOs, tampered codecs, sizes
and counts are each refused in one line (exit status 2) before anything is written.

The model is tests/models/vgg16-features0-32.onnx (features.0 at 32x32).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from featuremaps.cli import main
from featuremaps.engine import store as store_mod
from featuremaps.engine.store import FeatureStore, StoreError, open_store

MODEL = Path(__file__).parent.parent / "models" / "vgg16-features0-32.onnx"


@pytest.fixture(scope="module")
def images(photo_folder) -> Path:
    root = photo_folder("hostile-imgs", 5, 40, 36)
    (root / "empty.jpg").unlink()
    (root / "text.png").unlink()
    return root


def _extract(images, out, *extra) -> int:
    return main(["extract", str(images), "--model", str(MODEL), "-o", str(out), "--provider", "cpu",
                 "--no-progress", "--batch-size", "2", "--workers", "0", *map(str, extra)])


@pytest.fixture(scope="module")
def reference(tmp_path_factory, images) -> Path:
    out = tmp_path_factory.mktemp("ref") / "ref.zarr"
    assert _extract(images, out) == 0
    return out


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst, symlinks=True)
    (dst / store_mod.LOCK_NAME).unlink(missing_ok=True)
    return dst


def _one_line(capsys) -> str:
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("featuremaps: error:")]
    assert len(err) == 1, err
    return err[0]


def _writers(images, store):
    return {"resume": lambda: _extract(images, store, "--resume"),
            "repair": lambda: main(["verify", "--repair", str(store)])}


# ---------------------------------------------------------------- links out of the store


def test_symlinked_lock_file_leaves_its_target_untouched(reference, images, tmp_path, capsys):
    sentinel = tmp_path / "bashrc"
    sentinel.write_bytes(b"export IMPORTANT=1\n")
    store = _copy(reference, tmp_path / "s.zarr")
    (store / store_mod.LOCK_NAME).symlink_to(sentinel)
    for name, run in _writers(images, store).items():
        assert run() == 2, name
        line = _one_line(capsys)
        assert "status/featuremaps.lock is a symbolic link" in line, line
        assert "may be hostile" in line and "re-create it" in line
        assert sentinel.read_bytes() == b"export IMPORTANT=1\n", name
    with pytest.raises(StoreError, match=r"featuremaps.lock is a symbolic link \(the store's lock file\)"):
        store_mod.StoreLock.acquire(store)  # the lock itself refuses too, whatever checked before
    assert sentinel.read_bytes() == b"export IMPORTANT=1\n"


def test_lock_file_that_is_a_fifo_is_refused(reference, images, tmp_path, capsys):
    store = _copy(reference, tmp_path / "s.zarr")
    os.mkfifo(store / store_mod.LOCK_NAME)
    assert _extract(images, store, "--resume") == 2
    assert "featuremaps.lock is a FIFO" in _one_line(capsys)


@pytest.mark.parametrize("link", ["features.0/c", "features.0/c/1", "features.0", "status/c"],
                         ids=["chunk-root", "chunk-folder", "array-folder", "status-chunks"])
def test_symlinked_folder_is_refused_before_anything_is_written(reference, images, tmp_path, capsys, link):
    store = _copy(reference, tmp_path / "s.zarr")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    shutil.rmtree(store / link)
    (store / link).symlink_to(elsewhere, target_is_directory=True)
    if link == "features.0":  # its zarr.json is read through the link: readers refuse too
        with pytest.raises(StoreError, match="features.0 is a symbolic link"):
            open_store(store)
    else:
        open_store(store)  # opening (metadata) works when the link is below the array's zarr.json
    for name, run in _writers(images, store).items():
        assert run() == 2, name
        assert "is a symbolic link" in _one_line(capsys)
        assert list(elsewhere.iterdir()) == [], name


def test_symlinked_chunk_file_is_never_read(reference, tmp_path, capsys):
    store = _copy(reference, tmp_path / "s.zarr")
    outside = tmp_path / "secret"
    shutil.copy(store / "features.0" / "c" / "0" / "0" / "0" / "0", outside)  # a valid chunk, but not ours
    chunk = store / "features.0" / "c" / "0" / "0" / "0" / "0"
    chunk.unlink()
    chunk.symlink_to(outside)
    with pytest.raises(StoreError, match=r"features.0/c/0/0/0/0 is a symbolic link"):
        open_store(store).read_row("features.0", 0)
    assert main(["show", "--store", str(store), "--index", "0", "-o", str(tmp_path / "fig")]) == 2
    assert "is a symbolic link" in _one_line(capsys)
    assert main(["verify", str(store)]) == 2
    assert "is a symbolic link" in _one_line(capsys)


def test_symlinked_array_metadata_is_refused_by_readers(reference, tmp_path, capsys):
    store = _copy(reference, tmp_path / "s.zarr")
    meta = store / "features.0" / "zarr.json"
    outside = tmp_path / "zarr.json"
    shutil.move(meta, outside)
    meta.symlink_to(outside)
    for argv in (["info", str(store)], ["verify", str(store)]):
        assert main(argv) == 2
        assert "features.0/zarr.json is a symbolic link" in _one_line(capsys)


@pytest.mark.parametrize("kind", ["dangling-link", "fifo"])
def test_dangling_link_or_fifo_inside_a_store_is_one_line(reference, images, tmp_path, capsys, kind):
    store = _copy(reference, tmp_path / "s.zarr")
    odd = store / "features.0" / "c" / "0" / "0" / "0" / "0"
    odd.unlink()
    if kind == "fifo":
        os.mkfifo(odd)
    else:
        odd.symlink_to(tmp_path / "nothing-here")
    what = "a FIFO" if kind == "fifo" else "a symbolic link"
    for argv in (["info", str(store)], ["verify", str(store)]):
        assert main(argv) == 2, argv
        assert f"features.0/c/0/0/0/0 is {what}" in _one_line(capsys)
    assert _extract(images, store, "--resume") == 2
    assert f"is {what}" in _one_line(capsys)
    assert FeatureStore.nbytes_on_disk(open_store(store)) > 0  # sizes never follow it nor open it
