"""A store received from someone else cannot make featuremaps touch anything outside it, nor read
without bound: symlinked lock files, chunk folders and metadata, FIFOs, tampered codecs, sizes
and counts are each refused in one line (exit status 2) before anything is written.

The model is tests/models/vgg16-features0-32.onnx (features.0 at 32x32).
"""

from __future__ import annotations

import os
import sys
import re
import shutil
from pathlib import Path

import pytest

from featuremaps.cli import main
from featuremaps.engine.store import lock as lock_mod
from featuremaps.engine.store import FeatureStore, StoreError, open_store
from featuremaps.engine.unit import write_batch

sys.path.insert(0, str(Path(__file__).parent))
from stores import MODEL, copy_store, extract, reference_store  # noqa: E402


@pytest.fixture(scope="module")
def images(photo_folder) -> Path:
    root = photo_folder("hostile-imgs", 5, 40, 36)
    (root / "empty.jpg").unlink()
    (root / "text.png").unlink()
    return root


@pytest.fixture(scope="module")
def reference(tmp_path_factory, images) -> Path:
    return reference_store(tmp_path_factory, images)


def _one_line(capsys) -> str:
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("featuremaps: error:")]
    assert len(err) == 1, err
    return err[0]


def _writers(images, store):
    return {"resume": lambda: extract(images, store, "--resume"),
            "repair": lambda: main(["verify", "--repair", str(store)])}


# ---------------------------------------------------------------- links out of the store


def test_symlinked_lock_file_leaves_its_target_untouched(reference, images, tmp_path, capsys):
    sentinel = tmp_path / "bashrc"
    sentinel.write_bytes(b"export IMPORTANT=1\n")
    store = copy_store(reference, tmp_path / "s.zarr")
    (store / lock_mod.LOCK_NAME).symlink_to(sentinel)
    for name, run in _writers(images, store).items():
        assert run() == 2, name
        line = _one_line(capsys)
        assert "status/featuremaps.lock is a symbolic link" in line, line
        assert "may be hostile" in line and "re-create it" in line
        assert sentinel.read_bytes() == b"export IMPORTANT=1\n", name
    with pytest.raises(StoreError, match=r"featuremaps.lock is a symbolic link \(the store's lock file\)"):
        lock_mod.StoreLock.acquire(store)  # the lock itself refuses too, whatever checked before
    assert sentinel.read_bytes() == b"export IMPORTANT=1\n"


def test_lock_file_that_is_a_fifo_is_refused(reference, images, tmp_path, capsys):
    store = copy_store(reference, tmp_path / "s.zarr")
    os.mkfifo(store / lock_mod.LOCK_NAME)
    assert extract(images, store, "--resume") == 2
    assert "featuremaps.lock is a FIFO" in _one_line(capsys)


@pytest.mark.parametrize("link", ["features.0/c", "features.0/c/1", "features.0", "status/c"],
                         ids=["chunk-root", "chunk-folder", "array-folder", "status-chunks"])
def test_symlinked_folder_is_refused_before_anything_is_written(reference, images, tmp_path, capsys, link):
    store = copy_store(reference, tmp_path / "s.zarr")
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
    store = copy_store(reference, tmp_path / "s.zarr")
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
    store = copy_store(reference, tmp_path / "s.zarr")
    meta = store / "features.0" / "zarr.json"
    outside = tmp_path / "zarr.json"
    shutil.move(meta, outside)
    meta.symlink_to(outside)
    for argv in (["info", str(store)], ["verify", str(store)]):
        assert main(argv) == 2
        assert "features.0/zarr.json is a symbolic link" in _one_line(capsys)


@pytest.mark.parametrize("kind", ["dangling-link", "fifo"])
def test_dangling_link_or_fifo_inside_a_store_is_one_line(reference, images, tmp_path, capsys, kind):
    store = copy_store(reference, tmp_path / "s.zarr")
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
    assert extract(images, store, "--resume") == 2
    assert f"is {what}" in _one_line(capsys)
    assert FeatureStore.nbytes_on_disk(open_store(store)) > 0  # sizes never follow it nor open it


# ---------------------------------------------------------------- tampered metadata and chunks

GIB6 = 6 * 2**30


def _rle_bomb(decoded: int) -> bytes:
    """A zstd frame declaring ``decoded`` bytes of zeros made of RLE blocks (4 bytes per 128 KiB):
    6 GiB in 196 KB, as in the sweep that found it."""
    header = b"\x28\xb5\x2f\xfd" + bytes([0xC0 | 0x20]) + decoded.to_bytes(8, "little")  # FCS 8 bytes, single segment
    block, blocks = 128 * 1024, []
    left = decoded
    while left:
        size = min(block, left)
        left -= size
        blocks.append(((size << 3) | (1 << 1) | (left == 0)).to_bytes(3, "little") + b"\0")  # RLE block of zeros
    return header + b"".join(blocks)


def _with_crc(data: bytes) -> bytes:
    import google_crc32c
    import numpy as np

    return data + np.uint32(google_crc32c.value(data)).tobytes()


@pytest.fixture(scope="module")
def zstd_store(tmp_path_factory, images) -> Path:
    out = tmp_path_factory.mktemp("zref") / "z.zarr"
    assert extract(images, out, "--compression", "zstd") == 0
    return out


def _edit_json(path: Path, edit) -> None:
    import json

    doc = json.loads(path.read_text())
    edit(doc)
    path.write_text(json.dumps(doc))


def _attrs(edit):
    return lambda s: _edit_json(s / "zarr.json", lambda d: edit(d["attributes"]["featuremaps"]))


def _tap_json(edit):
    return lambda s: _edit_json(s / "features.0" / "zarr.json", edit)


def _huge_chunks(doc):
    doc["chunk_grid"]["configuration"]["chunk_shape"] = [2, 64, 64, 2**26]


def _bomb_chunk(s: Path):
    (s / "features.0" / "c" / "0" / "0" / "0" / "0").write_bytes(_with_crc(_rle_bomb(GIB6)))


def _frame_without_size(s: Path):
    chunk = s / "features.0" / "c" / "0" / "0" / "0" / "0"
    frame = bytearray(chunk.read_bytes()[:-4])
    frame[4] &= 0x3F  # FCS flag 0, not single segment: size not declared (numcodecs would stream without bound)
    frame[5:5] = b"\x00"  # the window descriptor a non-single-segment frame carries
    chunk.write_bytes(_with_crc(bytes(frame)))


def _sparse_chunk(s: Path):
    with open(s / "features.0" / "c" / "0" / "0" / "0" / "0", "r+b") as f:
        f.truncate(GIB6)  # 6 GiB of holes: never read


TAMPERINGS = {
    # the store's chunks are zstd; attributes saying "none" make that codec one featuremaps did not write
    "zstd-added": (_attrs(lambda a: a.update(compression="none")),
                   "codecs ['bytes', 'zstd', 'crc32c'] is not the ['bytes', 'crc32c'] featuremaps writes"),
    "huge-chunk-shape": (_tap_json(_huge_chunks), "chunk shape [2, 64, 64, 67108864] is not"),
    "huge-image-size": (_attrs(lambda a: a["model"]["preprocessing"].update(size=[200000, 200000])),
                        "preprocessing size is not [H, W] within 1..4096"),
    "huge-row-count": (_attrs(lambda a: a.update(n=2 * 10**10)), "more rows than a store can hold"),
    "row-count-vs-arrays": (_attrs(lambda a: a.update(n=4)), "its shape [5] is not the [4]"),
    "tap-shape-vs-model": (_attrs(lambda a: a["outputs"].update({"features.0": [64, 32, 2**20]})),
                           "but the model's tap says"),
    "batch-vs-chunk-rows": (_attrs(lambda a: a.update(chunk_rows=3)), "do not fit"),
}
CHUNKS = {
    "zstd-bomb": (_bomb_chunk, "does not declare the 262144 decoded bytes of a chunk"),
    "zstd-no-size": (_frame_without_size, "does not declare the 262144 decoded bytes"),
    "sparse-6gib": (_sparse_chunk, "is 6442450944 bytes, more than its array's chunks can be"),
}


def _tampered(zstd_store, tmp_path, tamper) -> Path:
    store = copy_store(zstd_store, tmp_path / "s.zarr")
    tamper(store)
    return store


@pytest.mark.parametrize("case", list(TAMPERINGS), ids=list(TAMPERINGS))
def test_tampered_metadata_is_refused_at_open(zstd_store, images, tmp_path, capsys, case):
    tamper, match = TAMPERINGS[case]
    store = _tampered(zstd_store, tmp_path, tamper)
    with pytest.raises(StoreError, match=re.escape(match)):
        open_store(store)
    for argv in (["info", str(store)], ["verify", str(store)]):
        assert main(argv) == 2, argv
        assert match in _one_line(capsys)
    assert extract(images, store, "--resume", "--compression", "zstd") == 2
    assert match in _one_line(capsys)


@pytest.mark.parametrize("case", list(CHUNKS), ids=list(CHUNKS))
def test_tampered_chunk_is_refused_before_it_is_decoded(zstd_store, images, tmp_path, capsys, case):
    tamper, match = CHUNKS[case]
    assert open_store(zstd_store).read_row("features.0", 0).shape == (64, 32, 32)  # intact zstd chunks read
    store = _tampered(zstd_store, tmp_path, tamper)
    with pytest.raises(StoreError, match=re.escape(match)):
        open_store(store).read_row("features.0", 0)
    assert main(["verify", str(store)]) == 2
    assert match in _one_line(capsys)


_RSS = """
import resource, sys
from featuremaps.cli import main
rc = main(sys.argv[1:])
# VmHWM: this process's own peak (ru_maxrss would include the forking pytest process's RSS, which
# Linux carries across exec)
peak = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:"))
print("RSS", rc, peak // 1024, flush=True)
"""


@pytest.mark.parametrize("case", ["zstd-bomb", "huge-chunk-shape", "huge-row-count"])
def test_tampered_store_keeps_memory_small_in_every_reader(zstd_store, images, tmp_path, case):
    """Each reader in its own process: exit status 2 and peak RSS well under the 6 GiB asked for."""
    import subprocess
    import sys

    tamper = (CHUNKS | TAMPERINGS)[case][0]
    store = _tampered(zstd_store, tmp_path, tamper)
    runs = {"info": ["info", str(store)], "verify": ["verify", str(store)],
            "show": ["show", "--store", str(store), "--index", "0", "-o", str(tmp_path / "show")],
            "report": ["report", "--store", str(store), "--rows", "0", "-o", str(tmp_path / "rep")],
            "resume": ["extract", str(images), "--model", str(MODEL), "-o", str(store), "--resume", "--provider",
                       "cpu", "--no-progress", "--workers", "0"]}
    for name, argv in runs.items():
        out = subprocess.run([sys.executable, "-c", _RSS, *argv], capture_output=True, text=True, timeout=300,
                             env=dict(os.environ, MPLBACKEND="Agg"))
        rc, rss_mb = map(int, out.stdout.split("RSS")[-1].split())
        if case == "zstd-bomb" and name == "info":  # info reads metadata and status, never a tap chunk
            assert rc == 0, out.stderr[-2000:]
        else:
            assert rc == 2, (name, out.stderr[-2000:])
            assert "Traceback" not in out.stderr and out.stderr.count("featuremaps: error:") == 1, (name, out.stderr)
        assert rss_mb < 1024, (name, rss_mb)
        print(f"{case} {name}: peak RSS {rss_mb} MB")


# ---------------------------------------------------------------- error rows cost nothing


def test_list_of_missing_files_writes_no_map_bytes(tmp_path, capsys):
    listing = tmp_path / "missing.txt"
    listing.write_text("".join(f"{tmp_path}/gone/{i:04d}.jpg\n" for i in range(300)))
    out = tmp_path / "s.zarr"
    assert main(["extract", f"@{listing}", "--model", str(MODEL), "-o", str(out), "--provider", "cpu",
                 "--no-progress", "--batch-size", "8", "--workers", "0"]) == 1
    tap_bytes = sum(p.stat().st_size for p in (out / "features.0").rglob("*") if p.is_file())
    assert tap_bytes < 4096, tap_bytes  # was 300 x 256 KB of zeros = 79 MB
    assert main(["verify", str(out)]) == 0
    assert "all intact" in capsys.readouterr().out
    assert main(["info", str(out)]) == 0
    assert "300 images: 0 ok, 300 error, 0 pending" in capsys.readouterr().out


# ---------------------------------------------------------------- many rows


def test_one_row_of_a_large_store_reads_a_few_chunks(tmp_path, monkeypatch):
    """20,000 rows in batches of 8: one row's path, status, error and maps read one chunk each, not
    the 2,500 chunks per array of the old layout (500,000 rows took 96 s for `info`)."""
    import numpy as np

    from featuremaps.engine.store import io as store_io

    n = 20_000
    st = FeatureStore.create(tmp_path / "s.zarr", paths=[f"/x/{i}.jpg" for i in range(n)], metadata={},
                             shapes={"t": (2,)}, batch_size=8, check_memory=False)
    write_batch(st, n // 8 - 1, {}, [], {r: "not a decodable image" for r in range(8)})
    st.close()
    reads: list[str] = []
    real = store_io.read_key
    monkeypatch.setattr(store_io, "read_key", lambda root, key, limit: reads.append(key) or real(root, key, limit))
    st = open_store(tmp_path / "s.zarr")
    assert (st.paths[n - 1], st.error_message(n - 1)) == (f"/x/{n - 1}.jpg", "not a decodable image")
    np.testing.assert_array_equal(st.read_row("t", n - 1), 0)
    chunks = [k for k in reads if "/c/" in k]
    assert sorted(chunks) == ["errors/c/1", "path_bytes/c/1", "status/c/1", "t/c/2499/0"], chunks
    assert st.counts() == {"pending": n - 8, "ok": 0, "error": 8}
    assert len([k for k in reads if k.startswith("status/c/")]) == 1 + -(-n // st._group["status"].chunks[0])


# ---------------------------------------------------------------- values the store cannot hold


def test_nan_and_fp16_overflow_become_error_rows_naming_the_tap(photo_folder, tmp_path):
    import numpy as np

    from featuremaps.engine.pipeline import run_extraction
    from featuremaps.engine.unit import ExtractSettings
    from featuremaps.engine.preprocess import Preprocessing

    files = sorted(str(p) for p in photo_folder("nan-imgs", 4, 40, 36).glob("img*.jpg"))
    st = FeatureStore.create(tmp_path / "s.zarr", paths=files, metadata={}, shapes={"a": (2, 2), "b": (3,)},
                             batch_size=4, dtype="fp16", compression="none")

    def model(batch):
        a, b = np.ones((len(batch), 2, 2), np.float32), np.ones((len(batch), 3), np.float32)
        a[1, 0, 0] = np.nan  # the model's own NaN
        b[2, 1] = 7.1e4  # finite in fp32, inf in fp16
        b[3, 0] = 6.5e4  # within fp16's range
        return {"a": a, "b": b}

    summary = run_extraction(st, model, Preprocessing(size=(16, 16)), ExtractSettings(workers=0))
    assert (summary.ok, summary.errors, summary.images) == (2, 2, 4)
    errors = {e.index: e.message for e in st.errors}
    assert errors[1].startswith("the model produced NaN or inf in tap a for this image")
    assert errors[2] == ("tap b overflows fp16 storage (max |x| 7.1e+04 > 65504); re-run with --dtype fp32 into a "
                         "new -o path")
    assert st.verify().ok and np.isfinite(st.read_row("b", 3)).all()
    st.close()


def test_fp16_store_resumes_without_repeating_its_settings(images, tmp_path, capsys):
    out = tmp_path / "s.zarr"
    assert extract(images, out, "--dtype", "fp16", "--compression", "zstd") == 0
    assert extract(images, out, "--resume") == 0  # dtype and compression from the store
    assert open_store(out).dtype == "fp16"
    assert extract(images, out, "--resume", "--dtype", "fp32") == 2
    assert "written with --dtype fp16, not fp32" in _one_line(capsys)
