"""A damaged store is never read as data: a done row whose chunk file is missing (zarr would
return zeros) or fails its checksum, damaged attributes, and a read-only store each give one
error line, exit 2, naming the fix; ``info`` flags missing chunk files without a full read.

The model is tests/models/vgg16-features0-32.onnx (features.0 at 32x32); 4 images, batches and chunks of 2 rows.
"""

from __future__ import annotations

import errno
import json
import os
import sys
import shutil
from pathlib import Path

import pytest

from featuremaps.cli import main
from featuremaps.engine.store import lock as lock_mod
from featuremaps.engine.store import FeatureStore, StoreError, open_store
from featuremaps.engine.unit import write_batch

sys.path.insert(0, str(Path(__file__).parent))
from stores import copy_store, extract, reference_store  # noqa: E402

CHUNK0 = Path("features.0", "c", "0", "0", "0", "0")


@pytest.fixture(scope="module")
def images(tmp_path_factory, sample_paths) -> Path:
    root = tmp_path_factory.mktemp("imgs")
    for p in sample_paths[:4]:
        shutil.copy(p, root / Path(p).name)
    return root


@pytest.fixture(scope="module")
def reference(tmp_path_factory, images) -> Path:
    return reference_store(tmp_path_factory, images)


def _one_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("featuremaps: error: "), err
    return err[0]


def _pngs(folder: Path) -> list[Path]:
    return list(folder.rglob("*.png")) if folder.exists() else []


def _readers(store: Path, tmp_path: Path) -> list[list[str]]:
    return [["show", "--store", str(store), "--index", "0", "-o", str(tmp_path / "shw")],
            ["report", "--store", str(store), "--rows", "0", "-o", str(tmp_path / "rep"), "--no-parity"]]


# ---------------------------------------------------------------- chunks: missing or corrupt


def _delete_chunk(s: Path) -> None:
    (s / CHUNK0).unlink()


def _chunk_is_dir(s: Path) -> None:
    (s / CHUNK0).unlink()
    (s / CHUNK0).mkdir()


def _flip_chunk(s: Path) -> None:
    data = bytearray((s / CHUNK0).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (s / CHUNK0).write_bytes(bytes(data))


def _truncate_chunk(s: Path) -> None:
    with open(s / CHUNK0, "r+b") as f:
        f.truncate(100)


@pytest.mark.parametrize("damage,why", [
    (_delete_chunk, "is missing"), (_chunk_is_dir, "is missing"),
    (_flip_chunk, "fails its checksum"), (_truncate_chunk, "(fails its checksum|is unreadable)"),
], ids=["deleted", "dir", "flipped", "truncated"])
def test_show_and_report_refuse_a_damaged_chunk_instead_of_drawing_zeros(reference, tmp_path, capsys, damage, why):
    import re

    store = copy_store(reference, tmp_path / "s.zarr")
    damage(store)
    for argv in _readers(store, tmp_path):
        assert main(argv) == 2, argv
        line = _one_line(capsys)
        assert re.search(f"features.0 chunk of rows 0-1 {why}", line), line
        assert f"featuremaps verify {store} --repair" in line and "--resume" in line
    assert _pngs(tmp_path / "shw") == [] and not (tmp_path / "rep").exists()
    with pytest.raises(StoreError, match=why):
        open_store(store).maps(1)
    assert open_store(store).maps(2)["features.0"].shape == (64, 32, 32)  # other chunks still read


def test_show_of_an_intact_row_next_to_a_damaged_chunk_still_works(reference, tmp_path, capsys):
    store = copy_store(reference, tmp_path / "s.zarr")
    _delete_chunk(store)
    assert main(["show", "--store", str(store), "--index", "2", "-o", str(tmp_path / "shw")]) == 0
    assert _pngs(tmp_path / "shw")


def test_info_flags_missing_chunk_files(reference, tmp_path, capsys):
    store = copy_store(reference, tmp_path / "s.zarr")
    assert main(["info", "--json", str(store)]) == 0
    assert json.loads(capsys.readouterr().out)["missing_chunks"] == 0
    _delete_chunk(store)
    assert main(["info", "--json", str(store)]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["missing_chunks"] == 1 and d["rows_with_missing_chunks"] == 2
    assert main(["info", str(store)]) == 0
    first = capsys.readouterr().out.splitlines()[0]
    assert "DAMAGED, 1 chunk file(s) missing for 2 done rows" in first and "4 ok" in first
    assert f"featuremaps verify {store} --repair" in first


def test_repair_then_resume_makes_the_row_readable_again(reference, images, tmp_path, capsys):
    store = copy_store(reference, tmp_path / "s.zarr")
    _delete_chunk(store)
    assert main(["verify", "--repair", str(store)]) == 1
    assert extract(images, store, "--resume") == 0
    capsys.readouterr()
    assert main(["show", "--store", str(store), "--index", "0", "-o", str(tmp_path / "shw")]) == 0


# ---------------------------------------------------------------- damaged attributes


def _attr(edit):
    def damage(s: Path):
        p = s / "zarr.json"
        doc = json.loads(p.read_text())
        edit(doc["attributes"]["featuremaps"])
        p.write_text(json.dumps(doc))
    return damage


ATTR_DAMAGE = {
    "model-removed": (_attr(lambda a: a.pop("model")), "the model metadata is missing"),
    "model-str": (_attr(lambda a: a.__setitem__("model", "x")), "the model metadata is not an object"),
    "reductions-str": (_attr(lambda a: a["model"].__setitem__("reductions", "xx")), "the model's reductions"),
    "taps-str": (_attr(lambda a: a["model"].__setitem__("taps", "xx")), "the model's taps"),
    "size-str": (_attr(lambda a: a["model"]["preprocessing"].__setitem__("size", "big")), "preprocessing size"),
    "weights-list": (_attr(lambda a: a["model"].__setitem__("weights", [1])), "the model's weights"),
    # the stored model metadata becomes a typed record at open (FeatureStore.record): a tap without its
    # counts, or no input name, is refused by every command, not only when a figure is drawn
    "tap-without-counts": (_attr(lambda a: a["model"]["taps"][0].pop("macs")), "its model metadata lacks"),
    "input-removed": (_attr(lambda a: a["model"].pop("input")), "its model metadata lacks"),
    "chunk-rows-0": (_attr(lambda a: a.__setitem__("chunk_rows", 0)), "chunk_rows 0 is not an integer >= 1"),
    "batch-size-0": (_attr(lambda a: a.__setitem__("batch_size", 0)), "batch_size 0 is not an integer >= 1"),
    "chunk-rows-str": (_attr(lambda a: a.__setitem__("chunk_rows", "2")), "chunk_rows '2' is not an integer"),
    "dtype-fp64": (_attr(lambda a: a.__setitem__("dtype", "fp64")), "dtype 'fp64' is not one of fp32, fp16"),
    "output-shape-str": (_attr(lambda a: a["outputs"].__setitem__("features.0", "big")), "an output shape"),
}


@pytest.mark.parametrize("case", ATTR_DAMAGE)
def test_damaged_attributes_are_one_line_for_every_command(reference, images, tmp_path, capsys, case):
    damage, what = ATTR_DAMAGE[case]
    store = copy_store(reference, tmp_path / "s.zarr")
    damage(store)
    before = {p: p.read_bytes() for p in store.rglob("*") if p.is_file()}
    with pytest.raises(StoreError, match=what):
        open_store(store)
    for argv in (["info", str(store)], ["verify", str(store)], ["verify", "--repair", str(store)],
                 *_readers(store, tmp_path)):
        assert main(argv) == 2, argv
        line = _one_line(capsys)
        assert str(store) in line and what.split(" ")[0] in line, line
    assert extract(images, store, "--resume") == 2
    assert what.split(" ")[0] in _one_line(capsys)
    assert {p: p.read_bytes() for p in store.rglob("*") if p.is_file() and p.name != "featuremaps.lock"} == \
        {p: b for p, b in before.items() if p.name != "featuremaps.lock"}


def test_store_without_model_metadata_cannot_be_drawn_in_one_line(tmp_path, capsys):
    """The library may create a store with ``metadata={}``; it opens, but show says why it cannot draw it."""
    st = FeatureStore.create(tmp_path / "s.zarr", paths=["a"], metadata={}, shapes={"t": (2, 2, 2)}, batch_size=1)
    write_batch(st, 0, {"t": [[[[1.0] * 2] * 2] * 2]}, [0], {})
    st.close()
    assert main(["show", "--store", str(tmp_path / "s.zarr"), "-o", str(tmp_path / "shw")]) == 2
    assert "records no model taps" in _one_line(capsys)
    assert main(["report", "--store", str(tmp_path / "s.zarr"), "-o", str(tmp_path / "rep"), "--no-parity"]) == 2
    assert "records no model" in _one_line(capsys)


def test_store_without_model_metadata_cannot_be_resumed_in_one_line(tmp_path, images, capsys):
    """``extract --resume`` reads the decode from the store's model record: a library store without
    one is refused in one line (it raised KeyError before), and left as it was."""
    from featuremaps.engine.inputs import collect_inputs

    out = tmp_path / "s.zarr"
    FeatureStore.create(out, paths=collect_inputs([str(images)]), metadata={}, shapes={"t": (2, 2, 2)},
                        batch_size=2).close()
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file() and p.name != "featuremaps.lock"}
    assert extract(images, out, "--resume") == 2
    assert "records no model metadata" in _one_line(capsys)
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file() and p.name != "featuremaps.lock"} == before


# ---------------------------------------------------------------- read-only store


@pytest.mark.parametrize("code", [errno.EROFS, errno.EACCES])
def test_read_only_store_is_called_read_only_not_damaged(reference, images, tmp_path, capsys, monkeypatch, code):
    """A bind-mounted read-only or unwritable store is healthy: never advise re-creating it."""
    store = copy_store(reference, tmp_path / "s.zarr")
    real_open = os.open

    def refuse_lock(path, flags, *a, **kw):
        if str(path).endswith(os.path.basename(lock_mod.LOCK_NAME)):  # opened relative to status/
            raise OSError(code, os.strerror(code), str(path))
        return real_open(path, flags, *a, **kw)

    monkeypatch.setattr(lock_mod.os, "open", refuse_lock)
    for run in (lambda: main(["verify", "--repair", str(store)]), lambda: extract(images, store, "--resume")):
        assert run() == 2
        line = _one_line(capsys)
        assert f"{store} is read-only" in line and "write permission" in line, line
        assert "re-create" not in line and "damaged" not in line
    assert main(["verify", str(store)]) == 0  # reading needs no lock


def test_store_missing_its_status_folder_is_still_called_damaged(reference, tmp_path):
    store = copy_store(reference, tmp_path / "s.zarr")
    shutil.rmtree(store / "status")
    with pytest.raises(StoreError, match=r"its status array is missing\); a damaged store must be re-created"):
        lock_mod.StoreLock.acquire(store)
