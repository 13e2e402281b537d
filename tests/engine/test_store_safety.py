"""The store survives what users and machines do to it: a second writer, a crash or a full disk
while it is created, flipped bytes, damaged metadata, other settings on --resume, odd filenames;
and it reads as a plain, named Zarr v3 dataset (xarray).

The model is tests/models/vgg16-features0-32.onnx (features.0 at 32x32: 256 KB of maps per image).
"""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from featuremaps.cli import main
from featuremaps.engine.store import create as create_mod, sizing as sizing_mod
from featuremaps.engine.store import LOCK_NAME, FeatureStore, StoreError, check_batch_memory, open_store
from featuremaps.engine.unit import write_batch

MODEL = Path(__file__).parent.parent / "models" / "vgg16-features0-32.onnx"
N_IMAGES = 7


@pytest.fixture(scope="module")
def images(tmp_path_factory, sample_paths) -> Path:
    """``N_IMAGES`` small real photos, one of them with a name that is not valid UTF-8."""
    import cv2

    root = tmp_path_factory.mktemp("imgs")
    for i in range(N_IMAGES):
        img = cv2.resize(cv2.imread(str(sample_paths[i % len(sample_paths)])), (40 + i, 36))
        name = b"caf\xe9-%d.png" % i if i == 3 else b"img%d.png" % i  # latin-1 byte: not UTF-8
        ok, data = cv2.imencode(".png", img)
        Path(os.fsdecode(os.path.join(os.fsencode(root), name))).write_bytes(data.tobytes())
    return root


def _extract(images, out, *extra) -> int:
    return main(["extract", str(images), "--model", str(MODEL), "-o", str(out), "--provider", "cpu",
                 "--no-progress", "--batch-size", "3", *map(str, extra)])


@pytest.fixture(scope="module")
def reference(tmp_path_factory, images) -> FeatureStore:
    out = tmp_path_factory.mktemp("ref") / "ref.zarr"
    assert _extract(images, out) == 0
    return open_store(out)


def _same(a: FeatureStore, b: FeatureStore) -> None:
    assert a.paths == b.paths
    np.testing.assert_array_equal(a.status_codes, b.status_codes)
    for name in a.outputs:
        np.testing.assert_array_equal(np.asarray(a[name][:]), np.asarray(b[name][:]), err_msg=name)


def _one_line(capsys) -> str:
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("featuremaps: error:")]
    assert len(err) == 1, err
    return err[0]


def _copy(src: Path, dst: Path) -> Path:
    import shutil

    shutil.copytree(src, dst)
    (dst / LOCK_NAME).unlink(missing_ok=True)
    return dst


def _flip(path: Path, offset: int = 100) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x40
    path.write_bytes(bytes(data))


# ---------------------------------------------------------------- one writer


def test_second_writer_is_refused_and_its_files_survive(reference, tmp_path, images, capsys):
    store = _copy(reference.path, tmp_path / "s.zarr")
    other = store / "features.0" / "c" / "0" / "0.abc.partial"  # another writer's temporary chunk
    other.parent.mkdir(parents=True, exist_ok=True)
    other.write_bytes(b"in flight")
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys, time
        from featuremaps.engine.store import FeatureStore
        st = FeatureStore.open({str(store)!r}, mode="r+", lock=True)
        print("locked", flush=True)
        time.sleep(60)
        """)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        assert _extract(images, store, "--resume") == 2
        line = _one_line(capsys)
        assert f"being written by another process (pid {holder.pid})" in line
        assert other.read_bytes() == b"in flight"
    finally:
        holder.kill()
        holder.wait()
    assert _extract(images, store, "--resume") == 0  # the lock dies with its holder
    assert not other.exists()  # now the lock holder cleans up


def test_second_writer_in_the_same_process_is_told_to_close_the_first(tmp_path):
    st = FeatureStore.create(tmp_path / "s.zarr", paths=["a"], metadata={}, shapes={"t": (2,)}, batch_size=1)
    with pytest.raises(StoreError, match="already open for writing in this process; close"):
        FeatureStore.open(tmp_path / "s.zarr", mode="r+", lock=True)
    st.close()
    FeatureStore.open(tmp_path / "s.zarr", mode="r+", lock=True).close()


# ---------------------------------------------------------------- atomic creation


@pytest.mark.parametrize("failure", [OSError(errno.ENOSPC, "No space left on device"), RuntimeError("crash")],
                         ids=["disk-full", "crash"])
def test_failed_creation_leaves_nothing_that_blocks_a_rerun(images, tmp_path, monkeypatch, capsys, failure):
    real = create_mod.write_layout

    def half_then_fail(group, info, paths):
        group.create_array("paths", shape=(1,), dtype=str)  # something is on disk already
        raise failure

    monkeypatch.setattr(create_mod, "write_layout", half_then_fail)
    out = tmp_path / "s.zarr"
    if isinstance(failure, OSError):
        assert _extract(images, out) == 2
        assert "No space left on device" in _one_line(capsys)
    else:
        with pytest.raises(RuntimeError, match="crash"):
            _extract(images, out)
    assert os.listdir(tmp_path) == []
    monkeypatch.setattr(create_mod, "write_layout", real)
    assert _extract(images, out) == 0


def test_stale_temporary_folder_of_a_dead_process_is_removed(images, tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / f".s.zarr.creating-{dead.pid}-deadbeef"
    (stale / "features.0").mkdir(parents=True)
    assert _extract(images, tmp_path / "s.zarr") == 0
    assert sorted(os.listdir(tmp_path)) == ["s.zarr"]


def test_unsafe_output_names_are_refused_before_anything_is_created(tmp_path):
    for name in ("../x", "/tmp/x", "zarr.json", "status", "a/b"):
        with pytest.raises(StoreError, match="cannot store output"):
            FeatureStore.create(tmp_path / "s.zarr", paths=["a"], metadata={}, shapes={name: (1,)}, batch_size=1)
    assert os.listdir(tmp_path) == []


# ---------------------------------------------------------------- checksums


def test_flipped_byte_is_found_by_verify_and_redone_by_resume(reference, images, tmp_path, capsys):
    store = _copy(reference.path, tmp_path / "s.zarr")
    chunk = store / "features.0" / "c" / "1" / "0" / "0" / "0"
    _flip(chunk)
    c = open_store(store).chunk_rows
    assert main(["verify", str(store)]) == 1
    out = capsys.readouterr().out
    assert f"features.0 chunk 1 (rows {c}-{2 * c - 1}): checksum mismatch" in out
    assert _extract(images, store, "--resume") == 0
    assert main(["verify", str(store)]) == 0
    _same(open_store(store), reference)


def test_verify_repair_marks_the_batch_pending(reference, tmp_path, capsys):
    store = _copy(reference.path, tmp_path / "s.zarr")
    _flip(store / "features.0" / "c" / "0" / "0" / "0" / "0")
    assert main(["verify", "--repair", str(store)]) == 1
    assert "batch(es) marked pending: #0;" in capsys.readouterr().out  # an index, not a count
    st = open_store(store)
    assert st.pending_batches() == [0]
    assert (st.status[: st.batch_size] == "pending").all() and (st.status[st.batch_size:] == "ok").all()


def test_missing_chunk_of_a_done_batch_is_damage(reference, tmp_path, capsys):
    store = _copy(reference.path, tmp_path / "s.zarr")
    (store / "features.0" / "c" / "0" / "0" / "0" / "0").unlink()
    assert main(["verify", str(store)]) == 1
    assert "features.0 chunk 0" in capsys.readouterr().out


def test_error_batch_writes_no_chunk_and_all_zero_ok_batch_does(tmp_path):
    st = FeatureStore.create(tmp_path / "s.zarr", paths=["a", "b", "c", "d"], metadata={}, shapes={"t.x": (2, 2, 2)},
                             batch_size=2, compression="none")
    st.close()
    st = FeatureStore.open(tmp_path / "s.zarr", mode="r+", lock=True)  # a resumed writer, as in --resume
    chunks = tmp_path / "s.zarr" / "t.x" / "c"
    write_batch(st, 0, {"t.x": np.ones((2, 2, 2, 2))}, [0, 1], {})  # an earlier attempt's chunk...
    write_batch(st, 0, {}, [], {0: "bad", 1: "bad"})  # ...every row an error now: no map bytes, none left
    write_batch(st, 1, {"t.x": np.zeros((2, 2, 2, 2))}, [0, 1], {})  # ok rows that are all zero: written
    assert not (chunks / "0").exists() or not any(p.is_file() for p in (chunks / "0").rglob("*"))
    assert (chunks / "1" / "0" / "0" / "0").is_file()
    assert st.verify().ok
    np.testing.assert_array_equal(st.read_row("t.x", 0), 0)  # an error row reads as zeros, not as damage
    (chunks / "1" / "0" / "0" / "0").unlink()
    assert [d.array for d in st.verify().damage] == ["t.x"]  # an ok row's missing chunk is still damage
    st.close()


def test_error_message_holding_a_non_utf8_path_is_stored_escaped(tmp_path):
    bad = os.fsdecode(b"/x/caf\xe9.png")
    st = FeatureStore.create(tmp_path / "s.zarr", paths=[bad], metadata={}, shapes={"t": (2,)}, batch_size=1)
    write_batch(st, 0, {}, [], {0: f"{bad}: not a decodable image"})
    assert open_store(tmp_path / "s.zarr").errors[0].message == "/x/caf\\xe9.png: not a decodable image"
    assert open_store(tmp_path / "s.zarr").paths == [bad]
    st.close()


# ---------------------------------------------------------------- damaged metadata


def _break_zarr_json(s: Path):
    (s / "zarr.json").write_text('{"zarr_format": 3, "node_type": "gr')


def _delete(name):
    def damage(s: Path):
        import shutil

        shutil.rmtree(s / name)
    return damage


def _break_array_json(name):
    def damage(s: Path):
        (s / name / "zarr.json").write_text("not json")
    return damage


@pytest.mark.parametrize("damage,match", [
    (_break_zarr_json, "zarr.json is damaged"),
    (_delete("status"), "array 'status' is missing or damaged"),
    (_delete("paths"), "array 'paths' is missing or damaged"),
    (_delete("path_bytes"), "array 'path_bytes' is missing or damaged"),
    (_break_array_json("features.0"), "array 'features.0' is missing or damaged"),
], ids=["group-json", "no-status", "no-paths", "no-path-bytes", "tap-json"])
def test_damaged_metadata_is_one_line(reference, tmp_path, images, capsys, damage, match):
    store = _copy(reference.path, tmp_path / "s.zarr")
    damage(store)
    with pytest.raises(StoreError, match=match):
        open_store(store)
    for argv in (["verify", str(store)], ["show", "--store", str(store), "--index", "0", "-o", str(tmp_path)]):
        assert main(argv) == 2
        assert "Traceback" not in _one_line(capsys)
    assert _extract(images, store, "--resume") == 2
    _one_line(capsys)


def test_damaged_status_chunk_is_one_line_and_resume_redoes_it(reference, tmp_path, images, capsys):
    store = _copy(reference.path, tmp_path / "s.zarr")
    _flip(store / "status" / "c" / "0", offset=0)  # one status chunk holds every row (row_chunk)
    with pytest.raises(StoreError, match="status chunk is damaged; run `featuremaps verify --repair"):
        _ = open_store(store).status_codes
    assert main(["verify", str(store)]) == 1
    assert "status chunk 0" in capsys.readouterr().out
    assert _extract(images, store, "--resume") == 0
    _same(open_store(store), reference)


# ---------------------------------------------------------------- resume settings


@pytest.mark.parametrize("extra,match", [
    (["--batch-size", "4"], "written with --batch-size 3, not 4"),
    (["--dtype", "fp16"], "written with --dtype fp32, not fp16"),
    (["--compression", "zstd"], "written with --compression none, not zstd"),
], ids=["batch", "dtype", "compression"])
def test_resume_with_other_settings_is_refused(reference, tmp_path, images, capsys, extra, match):
    store = _copy(reference.path, tmp_path / "s.zarr")
    assert _extract(images, store, "--resume", *extra) == 2
    assert match in _one_line(capsys)


def test_resume_with_another_model_is_refused(reference, tmp_path, images, capsys):
    store = _copy(reference.path, tmp_path / "s.zarr")
    other = tmp_path / "other.onnx"
    import onnx

    proto = onnx.load(str(MODEL))  # same graph and metadata...
    proto.doc_string = "another model"  # ...another file hash
    onnx.save(proto, str(other))
    assert main(["extract", str(images), "--model", str(other), "-o", str(store), "--resume", "--provider", "cpu",
                 "--no-progress"]) == 2
    assert "written with model SHA-256" in _one_line(capsys)


# ---------------------------------------------------------------- sizing


def test_huge_batch_size_on_few_images_allocates_only_what_exists(images, tmp_path):
    out = tmp_path / "s.zarr"
    assert main(["extract", str(images), "--model", str(MODEL), "-o", str(out), "--provider", "cpu",
                 "--no-progress", "--batch-size", "100000"]) == 0
    st = open_store(out)
    assert st.batch_size == N_IMAGES and st["features.0"].chunks[0] <= N_IMAGES
    assert st.info["requested_batch_size"] == 100000


def test_batch_size_beyond_memory_is_one_line():
    # 1000 x 1 MB x 5 batches in flight = 4.66 GiB; 1e9 B = 954 MiB fits 1e9 // 5e6 = 200 images a batch
    with pytest.raises(StoreError, match=r"--batch-size 1000 needs about 4\.7 GiB .* 954 MiB is available; "
                                         r"use --batch-size 200 or less"):
        check_batch_memory(1000, 1_000_000, available=1_000_000_000)


@pytest.mark.parametrize("n", [1, 7, 9, 64, 65])
def test_bytes_on_disk_within_5_percent_of_the_maps(tmp_path, n):
    shapes = {"features.0": (64, 32, 32)}
    st = FeatureStore.create(tmp_path / "s.zarr", paths=[f"/x/{i}.png" for i in range(n)], metadata={},
                             shapes=shapes, batch_size=8, dtype="fp16", compression="none")
    rng = np.random.default_rng(0)
    for b in range(st.n_batches()):
        start, stop = st.batch_rows(b)
        write_batch(st, b, {"features.0": rng.standard_normal((stop - start, *shapes["features.0"]))},
                       range(stop - start), {})
    maps = n * 64 * 32 * 32 * 2
    assert st.nbytes_maps() == maps
    assert st.nbytes_on_disk() <= 1.05 * maps, (st.nbytes_on_disk(), maps, st.chunk_rows)
    st.close()


# ---------------------------------------------------------------- reading without featuremaps


def test_xarray_reads_named_dimensions_and_status_names(reference):
    import xarray as xr

    ds = xr.open_zarr(reference.path, consolidated=False)
    assert ds["features.0"].dims == ("image", "features.0.channel", "features.0.y", "features.0.x")
    assert ds["features.0"].shape == (N_IMAGES, 64, 32, 32)
    assert ds["status"].dims == ds["paths"].dims == ("image",)
    flags = dict(zip(ds["status"].attrs["flag_values"], ds["status"].attrs["flag_meanings"].split()))
    assert [flags[int(c)] for c in ds["status"].values] == ["ok"] * N_IMAGES
    np.testing.assert_array_equal(ds["features.0"].isel(image=2).values, reference["features.0"][2])


def test_plain_zarr_reads_the_store(reference):
    import zarr

    g = zarr.open_group(str(reference.path), mode="r")
    assert g["features.0"].metadata.dimension_names[0] == "image"
    assert [c.to_dict()["name"] for c in g["features.0"].metadata.codecs] == ["bytes", "crc32c"]
    assert g.attrs["featuremaps"]["model"]["outputs"] == ["features.0"]


def test_non_utf8_path_round_trips_losslessly(reference, images):
    raw = os.path.join(os.fsencode(images), b"caf\xe9-3.png")
    i = [os.fsencode(p) for p in reference.paths].index(raw)
    assert reference.status[i] == "ok"
    import base64

    import xarray as xr

    ds = xr.open_zarr(reference.path, consolidated=False)
    assert base64.b64decode(str(ds["path_bytes"].values[i])) == raw
    assert str(ds["paths"].values[i]).endswith("caf\\xe9-3.png")  # display form, escaped


def _readme_blocks() -> list[str]:
    text = (Path(__file__).parents[2] / "docs" / "extraction.md").read_text()
    section = text.split("### Reading a store without featuremaps", 1)[1].split("\n## ", 1)[0].split("\n### ", 1)[0]
    return [b.split("```", 1)[0] for b in section.split("```python\n")[1:]]


def test_readme_reading_examples_run_against_a_store(reference, tmp_path, monkeypatch):
    blocks = _readme_blocks()
    assert len(blocks) == 2
    _copy(reference.path, tmp_path / "feats.zarr")
    monkeypatch.chdir(tmp_path)
    plain, with_xarray = {}, {}
    exec(blocks[0], plain)  # noqa: S102 - the README's own example
    exec(blocks[1], with_xarray)  # noqa: S102
    assert plain["maps"].shape == (2, 64, 32, 32) and plain["status"] == ["ok"] * N_IMAGES
    assert with_xarray["flags"] == {0: "pending", 1: "ok", 2: "error"}
    np.testing.assert_array_equal(with_xarray["first_ok"], reference["features.0"][0])
    assert with_xarray["raw_path"] == os.fsencode(reference.paths[0])


def test_extract_refuses_a_batch_beyond_memory_before_creating_anything(images, tmp_path, monkeypatch, capsys):
    # 3 images of 0.27 MB (input + features.0, fp32) x 5 batches in flight need 4.1 MB
    monkeypatch.setattr(sizing_mod, "available_memory", lambda: 3_000_000)
    out = tmp_path / "s.zarr"
    assert _extract(images, out) == 2
    # per image 4 B x (3x32x32 input + 64x32x32 features.0) = 274,432 B; 3e6 // (5 x 274,432) = 2
    assert "--batch-size 3 needs about 4 MiB" in (line := _one_line(capsys)) and "use --batch-size 2 or less" in line
    assert os.listdir(tmp_path) == []
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("inside", ["x.zarr", "status/y.zarr", "features.0/c/z.zarr"])
def test_a_new_store_inside_an_existing_one_is_refused_and_the_store_is_unchanged(reference, images, tmp_path,
                                                                                  capsys, inside):
    """A careless -o (a path under an existing store) would nest a store in another one's arrays: its
    files then count as the outer store's (info's bytes and objects, verify's walk)."""
    outer = _copy(Path(reference.location), tmp_path / "outer.zarr")
    before = sorted(p.relative_to(outer) for p in outer.rglob("*"))
    assert _extract(images, outer / inside) == 2
    line = _one_line(capsys)
    assert f"is inside the store {outer}; choose an -o path outside any store" in line, line
    assert sorted(p.relative_to(outer) for p in outer.rglob("*")) == before
    assert main(["verify", str(outer)]) == 0
