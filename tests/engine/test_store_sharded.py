"""Sharded stores (``--shard-rows``; the default on object storage): many batches per object, the
same maps as an unsharded store, read back by plain zarr and xarray, and resume / verify / repair
per batch inside a shard."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from featuremaps.cli import main
from featuremaps.engine.store.shard_format import index_nbytes
from featuremaps.engine.store import FeatureStore, open_store

sys.path.insert(0, str(Path(__file__).parent))
from stores import extract  # noqa: E402
from test_store_s3 import _photos, _same  # noqa: E402


@pytest.fixture(scope="module")
def photos(tmp_path_factory, sample_paths):
    return _photos(sample_paths, tmp_path_factory.mktemp("photos"), 9)  # 9 good + 1 bad: 10 rows, 5 batches of 2


@pytest.fixture(scope="module")
def ref(tmp_path_factory, photos):
    out = tmp_path_factory.mktemp("ref") / "ref.zarr"
    assert extract(photos, out) == 1
    return open_store(out)


def _tap_objects(root: Path, name: str) -> list[Path]:
    return sorted(p for p in (root / name / "c").rglob("*") if p.is_file())


def test_a_sharded_store_holds_the_same_maps_in_fewer_objects(photos, ref, tmp_path, capsys):
    out = tmp_path / "s.zarr"
    assert extract(photos, out, "--shard-rows", "4") == 1
    capsys.readouterr()
    assert main(["info", str(out)]) == 0
    files = sum(1 for p in out.rglob("*") if p.is_file())
    assert f"sharded: 4 rows per object; {files} objects" in capsys.readouterr().out
    st = open_store(out)
    assert st.sharded and st.info["shard_rows"] == 4
    _same(st, ref)
    name = st.outputs[0]
    assert len(_tap_objects(Path(ref.path), name)) == 5  # one per batch
    assert len(_tap_objects(out, name)) == 3  # rows 0-3, 4-7, 8-9
    # plain zarr reads it (its own sharding codec), and so does xarray
    import xarray as xr
    import zarr

    arr = zarr.open_group(str(out), mode="r")[name]
    assert arr.shards[0] == 4 and arr.chunks[0] == 2
    np.testing.assert_array_equal(arr[:], ref[name][:])
    ds = xr.open_zarr(out, consolidated=False)
    np.testing.assert_array_equal(ds[name].values, ref[name][:])
    assert ds[name].dims[0] == "image"


def test_auto_puts_every_batch_of_a_small_run_in_one_shard(photos, ref, tmp_path):
    out = tmp_path / "a.zarr"
    assert extract(photos, out, "--shard-rows", "auto") == 1
    st = open_store(out)
    assert st.info["shard_rows"] == 10  # 5 batches of 2; 10 rows of 64x32x32 fp32 fit in 64 MiB
    assert len(_tap_objects(out, st.outputs[0])) == 1
    _same(st, ref)


def test_interrupted_sharded_run_resumes_identically(photos, ref, tmp_path):
    from featuremaps.engine.extractor import Extractor
    from featuremaps.engine.pipeline import run_extraction
    from stores import MODEL

    out = tmp_path / "i.zarr"
    with Extractor(MODEL, provider="cpu") as ex:
        st = FeatureStore.create(out, paths=list(ref.paths), metadata=ref.metadata, shapes=dict(
            (k, tuple(v)) for k, v in ref.info["outputs"].items()), batch_size=2, shard_rows=4)
        calls = []

        def flaky(batch):
            calls.append(len(batch))
            if len(calls) == 4:  # batches 0-2 ran: shard 0 (batches 0, 1) is written, batch 2's shard is not
                raise KeyboardInterrupt
            return ex.run(batch)

        s = run_extraction(st, flaky, ex.preprocessing)
        st.close()
        assert s.interrupted
        codes = open_store(out).status_codes
        assert (codes[:4] != 0).all() and (codes[6:] == 0).all()
        s = run_extraction(FeatureStore.open(out, "r+", lock=True), ex.run, ex.preprocessing)
        assert s.pending == 0
    _same(open_store(out), ref)


def test_verify_names_the_inner_chunk_and_repair_redoes_only_its_batch(photos, ref, tmp_path, capsys):
    out = tmp_path / "v.zarr"
    assert extract(photos, out, "--shard-rows", "4") == 1
    name = ref.outputs[0]
    shard = out / name / "c" / "1" / "0" / "0" / "0"  # rows 4-7: inner chunks 2 (rows 4-5) and 3 (rows 6-7)
    data = bytearray(shard.read_bytes())
    per = 2
    index = np.frombuffer(bytes(data[-index_nbytes(per):-4]), "<u8").reshape(per, 2)
    off, nbytes = (int(x) for x in index[1])
    data[off + nbytes // 2] ^= 0xFF  # inside inner chunk 3's body
    shard.write_bytes(bytes(data))
    capsys.readouterr()
    assert main(["verify", str(out)]) == 1
    printed = capsys.readouterr().out
    assert f"damaged: {name} chunk 3 (rows 6-7): checksum mismatch" in printed
    assert "chunk 2 " not in printed
    assert main(["verify", str(out), "--repair"]) == 1
    codes = open_store(out).status_codes
    assert (codes[6:8] == 0).all() and (codes[:6] != 0).all()
    assert extract(photos, out, "--resume") == 1
    _same(open_store(out), ref)
    assert main(["verify", str(out)]) == 0


def test_a_hostile_shard_index_is_refused_in_one_line(photos, tmp_path, capsys):
    out = tmp_path / "h.zarr"
    assert extract(photos, out, "--shard-rows", "4") == 1
    name = open_store(out).outputs[0]
    shard = out / name / "c" / "0" / "0" / "0" / "0"
    data = bytearray(shard.read_bytes())
    import google_crc32c

    idx = np.frombuffer(bytes(data[-36:-4]), "<u8").reshape(2, 2).copy()
    idx[1, 0] = idx[0, 0]  # chunk 1 claims chunk 0's bytes: overlapping entries
    raw = idx.astype("<u8").tobytes()
    data[-36:] = raw + np.uint32(google_crc32c.value(raw)).astype("<u4").tobytes()
    shard.write_bytes(bytes(data))
    capsys.readouterr()
    assert main(["show", "--store", str(out), "--index", "1", "-o", str(tmp_path / "figs")]) == 2
    err = capsys.readouterr().err.strip()
    assert "overlaps another" in err and "\n" not in err
    assert main(["verify", str(out)]) == 1
    assert "shard index unreadable" in capsys.readouterr().out


@pytest.mark.parametrize("extra, message", [
    (["--shard-rows", "3"], "not a positive multiple of the batch size 2"),
    (["--shard-rows", "0"], "not auto, none or a positive number"),
    (["--shard-rows", "4", "--engine", "ray"], "--shard-rows applies to --engine local"),
])
def test_bad_shard_rows_are_one_line(photos, tmp_path, capsys, extra, message):
    try:
        code = extract(photos, tmp_path / "x.zarr", *extra)
    except SystemExit as e:  # refused by the parser
        code = e.code
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err
    assert not (tmp_path / "x.zarr").exists()


def test_resume_keeps_the_stores_sharding(photos, ref, tmp_path, capsys):
    out = tmp_path / "r.zarr"
    assert extract(photos, out, "--shard-rows", "4") == 1
    capsys.readouterr()
    assert extract(photos, out, "--resume", "--shard-rows", "none") == 2
    assert "written with --shard-rows 4, not none" in capsys.readouterr().err
    assert extract(photos, out, "--resume", "--shard-rows", "auto") == 1  # nothing left to do (one bad image)
    assert "0 images this run" in capsys.readouterr().out


def test_s3_stores_are_sharded_one_object_per_shard_per_tap(s3, photos, ref):
    url = s3.url("sh.zarr")
    assert extract(photos, url) == 1
    st = open_store(url)
    assert st.sharded
    _same(st, ref)
    keys = s3.keys("sh.zarr")
    for name in st.outputs:
        tap_objects = [k for k in keys if k.startswith(f"sh.zarr/{name}/c/")]
        assert len(tap_objects) == -(-len(st) // st.info["shard_rows"])
    import xarray as xr

    ds = xr.open_zarr(url, consolidated=False)
    np.testing.assert_array_equal(ds[st.outputs[0]].values, ref[st.outputs[0]][:])


def test_an_inner_zstd_chunk_declaring_another_size_is_refused_by_verify(photos, tmp_path, capsys):
    """numcodecs allocates what a zstd header declares: verify refuses a lying inner chunk as it
    refuses a lying unsharded chunk (one line, exit 2), even when its CRC-32C was made to match."""
    import google_crc32c

    out = tmp_path / "z.zarr"
    assert extract(photos, out, "--shard-rows", "4", "--compression", "zstd") == 1
    name = open_store(out).outputs[0]
    shard = out / name / "c" / "0" / "0" / "0" / "0"
    data = bytearray(shard.read_bytes())
    index = np.frombuffer(bytes(data[-index_nbytes(2):-4]), "<u8").reshape(2, 2)
    off, nbytes = (int(x) for x in index[1])
    body = bytearray(data[off:off + nbytes - 4])
    assert body[:4] == b"\x28\xb5\x2f\xfd" and body[4] >> 6 in (2, 3)  # a 4- or 8-byte declared size (RFC 8878)
    size = 4 if body[4] >> 6 == 2 else 8
    pos = 5 + (0 if body[4] >> 5 & 1 else 1) + (0, 1, 2, 4)[body[4] & 3]
    body[pos:pos + size] = b"\xff" * size  # declares 4 GiB or more
    data[off:off + nbytes] = bytes(body) + np.uint32(google_crc32c.value(bytes(body))).astype("<u4").tobytes()
    shard.write_bytes(bytes(data))
    capsys.readouterr()
    assert main(["verify", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert "inner chunk 1 does not declare the" in err and "\n" not in err
    assert main(["show", "--store", str(out), "--index", "3", "-o", str(tmp_path / "figs")]) == 2  # reads refuse it too
    err = capsys.readouterr().err.strip()
    assert "inner chunk 1 does not declare the" in err and "\n" not in err
