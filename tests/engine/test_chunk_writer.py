"""Map chunks written straight to their files: Zarr's own bytes where the store's level is used,
readable and checksummed everywhere, stored (uncompressed) zstd frames only for taps that do not
compress; any zstd decoder reads those."""

from __future__ import annotations

import os

import numpy as np
import pytest

import featuremaps
from featuremaps.engine.store import chunk_writer
from featuremaps.engine.store import FeatureStore
from featuremaps.engine.store.io import UnsafeStoreError

SHAPES = {"relu": (4, 16, 16), "conv": (8, 8, 8)}
TAPS = [{"name": k, "index": i, "alias": k, "kind": "module", "shape": list(s), "macs": 0, "total_macs": 0}
        for i, (k, s) in enumerate(SHAPES.items())]
N, BATCH = 48, 4


def _metadata():
    return {"featuremaps_version": "test", "model": "stand-in", "input": "input", "outputs": list(SHAPES),
            "taps": TAPS, "preprocessing": {"size": [16, 16], "mean": [0.0, 0.0, 0.0], "std": [1.0, 1.0, 1.0],
                                            "input_layout": "uint8_nhwc"}}


def _maps(seed=0):
    rng = np.random.default_rng(seed)
    relu = np.maximum(rng.standard_normal((N, *SHAPES["relu"])), 0).round(1).astype(np.float16)  # compresses
    conv = rng.standard_normal((N, *SHAPES["conv"])).astype(np.float16)  # random mantissas: does not
    return {"relu": relu, "conv": conv}


def _store(path, compression):
    return FeatureStore.create(path, paths=[f"/x/{i}.jpg" for i in range(N)], metadata=_metadata(),
                               shapes=SHAPES, batch_size=BATCH, dtype="fp16", compression=compression)


def _chunk(root, name, i):
    return (root / name / "c" / str(i) / "0" / "0" / "0").read_bytes()


@pytest.fixture(autouse=True)
def small_sample(monkeypatch):
    """Decide on 1 KiB samples, so that this file's small chunks (2-4 KiB) are judged too."""
    monkeypatch.setattr(chunk_writer, "SAMPLE", 512)


@pytest.mark.parametrize("compression", ["zstd", "none"])
def test_direct_chunks_read_back_verify_and_match_zarrs_bytes_at_the_stores_level(tmp_path, compression):
    maps = _maps()
    direct, via_zarr = _store(tmp_path / "d.zarr", compression), _store(tmp_path / "z.zarr", compression)
    for b in range(N // BATCH):
        rows = slice(b * BATCH, (b + 1) * BATCH)
        for name in SHAPES:
            assert direct.write_output(name, b, maps[name][rows]) == maps[name][rows].nbytes
            via_zarr._group[name].with_config({"write_empty_chunks": True})[rows] = maps[name][rows]
        direct.commit_batch(b, {})
    direct.close()
    via_zarr.close()
    assert not list((tmp_path / "d.zarr").rglob("*.partial"))
    got = featuremaps.open_store(tmp_path / "d.zarr")
    for name in SHAPES:
        np.testing.assert_array_equal(np.asarray(got[name][:]).view(np.uint16), maps[name].view(np.uint16))
    assert FeatureStore.open(tmp_path / "d.zarr").verify().damage == ()
    chunks = N // direct.chunk_rows
    same = {name: [_chunk(tmp_path / "d.zarr", name, i) == _chunk(tmp_path / "z.zarr", name, i) for i in range(chunks)]
            for name in SHAPES}
    assert all(same["relu"])  # compresses: the store's own level, so Zarr's very bytes
    # does not compress: stored zstd frames (with zstd), not Zarr's compressed bytes
    assert same["conv"] == [compression == "none"] * chunks


def test_an_incompressible_chunk_is_stored_uncompressed_a_compressible_one_compressed(tmp_path):
    maps = _maps()
    writer = chunk_writer.ChunkWriter(tmp_path, "zstd")
    conv, relu = maps["conv"][:BATCH], maps["relu"][:BATCH]
    assert conv.nbytes > 4 * chunk_writer.SAMPLE and relu.nbytes > 4 * chunk_writer.SAMPLE
    stored, _ = writer.encode(conv)
    assert len(stored) > 2 and sum(p.nbytes for p in stored) <= conv.nbytes + 13 + 3 * len(stored)
    assert any(np.shares_memory(p, maps["conv"]) for p in stored)  # views of the maps, no copy
    packed, _ = writer.encode(relu)
    assert len(packed) == 1 and packed[0].nbytes < 0.75 * relu.nbytes


def test_a_failed_write_leaves_neither_chunk_nor_partial(tmp_path, monkeypatch):
    st = _store(tmp_path / "s.zarr", "zstd")

    def disk_full(fd, views):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "writev", disk_full)
    with pytest.raises(OSError, match="No space left"):
        st.write_output("relu", 0, _maps()["relu"][:BATCH])
    st.close()
    folder = tmp_path / "s.zarr" / "relu" / "c" / "0" / "0" / "0"
    assert sorted(p.name for p in folder.iterdir()) == []


def test_a_linked_chunk_folder_is_refused_and_nothing_lands_outside(tmp_path):
    st = _store(tmp_path / "s.zarr", "none")
    outside = tmp_path / "outside"
    outside.mkdir()
    (tmp_path / "s.zarr" / "relu" / "c").mkdir(parents=True, exist_ok=True)
    os.symlink(outside, tmp_path / "s.zarr" / "relu" / "c" / "0")
    with pytest.raises(UnsafeStoreError, match="symbolic link"):
        st.write_output("relu", 0, _maps()["relu"][:BATCH])
    st.close()
    assert list(outside.rglob("*")) == []


def test_partial_edge_and_strided_rows_go_through_zarr_and_read_back(tmp_path):
    st = FeatureStore.create(tmp_path / "s.zarr", paths=[f"/x/{i}.jpg" for i in range(7)], metadata=_metadata(),
                             shapes=SHAPES, batch_size=4, dtype="fp16", compression="zstd")
    maps = _maps()["conv"][:7]
    strided = np.asfortranarray(maps[:4])
    assert not chunk_writer.ChunkWriter.can_write(strided)
    st.write_output("conv", 0, strided)
    st.write_output("conv", 1, maps[4:7])
    st.commit_batch(0, {})
    st.commit_batch(1, {})
    st.close()
    np.testing.assert_array_equal(np.asarray(featuremaps.open_store(tmp_path / "s.zarr")["conv"][:]), maps)


@pytest.mark.parametrize("n", [1, 7, 128 << 10, (128 << 10) + 1, 3 * (128 << 10) + 5])
def test_a_stored_frame_is_zstd_that_zarrs_codec_decodes_and_declares_its_size(n):
    from numcodecs.zstd import Zstd

    from featuremaps.engine.store.io import zstd_content_size

    raw = np.random.default_rng(n).integers(0, 256, n, dtype=np.uint8)
    frame = b"".join(p.tobytes() for p in chunk_writer.stored_frame(raw))
    assert bytes(Zstd().decode(frame)) == raw.tobytes()
    assert zstd_content_size(frame) == n
    assert len(frame) == n + 13 + 3 * -(-n // (128 << 10))


def test_write_all_writes_more_pieces_than_one_writev_takes_and_resumes_short_writes(tmp_path, monkeypatch):
    pieces = [memoryview(bytes([i % 251]) * (1 + i % 5)) for i in range(3000)]  # > IOV_MAX (1024)
    real, calls = os.writev, []

    def short(fd, views):  # the kernel may write less than asked: at most 1000 bytes a call here
        calls.append(len(views))
        assert len(views) <= chunk_writer._IOV_MAX
        left, cut = 1000, []
        for v in views:
            cut.append(v[:left])
            left -= len(cut[-1])
            if not left:
                break
        return real(fd, cut)

    monkeypatch.setattr(os, "writev", short)
    fd = os.open(tmp_path / "f", os.O_WRONLY | os.O_CREAT)
    chunk_writer._write_all(fd, list(pieces))
    os.close(fd)
    assert (tmp_path / "f").read_bytes() == b"".join(bytes(p) for p in pieces)
    assert len(calls) > 3
