"""Shard objects without zarr: what zarr writes, our reader parses; what we assemble, zarr reads;
where the same inner chunks are stored, the bytes are zarr's; hostile indexes are refused."""

from __future__ import annotations

import google_crc32c
import numpy as np
import pytest
import zarr
from numcodecs.zstd import Zstd
from zarr.storage import LocalStore, MemoryStore

from featuremaps.engine.store import chunk_writer
from featuremaps.engine.store.chunk_writer import ChunkWriter
from featuremaps.engine.store.shard_format import (
    EMPTY,
    ShardIndexError,
    encode_shard,
    index_nbytes,
    inner_chunk,
    read_index,
    shard_bytes,
    shard_rows_for,
    shard_spec,
    shards_per_tap,
)

TAP = (4, 8, 16)  # 1 KiB per fp16 row
C, S = 4, 16  # rows per inner chunk, rows per shard: 4 inner chunks per shard
N = 42  # 3 shards, the last partial (rows 32-41: inner chunks 8, 9, 10 (padded), 11 past the end)
ZERO_CHUNKS = (1, 5)  # all-zero inner chunks (zarr does not store them)
LIMIT = C * 1024 + C * 1024 // 128 + 2**17 + 4  # chunk_limits' bound for one zstd chunk


def _crc(buf) -> bytes:
    return np.uint32(google_crc32c.value(bytes(buf))).astype("<u4").tobytes()


def _data(seed=0):
    """Half the rows ReLU-like (compress), half random fp16 (do not), some inner chunks all zero."""
    rng = np.random.default_rng(seed)
    data = rng.standard_normal((N, *TAP)).astype(np.float16)
    data[::2] = np.maximum(data[::2], 0).round(1)
    for ci in ZERO_CHUNKS:
        data[ci * C:(ci + 1) * C] = 0
    return data


def _zarr_array(root, compression, data=None):
    arr = zarr.create_array(LocalStore(root), name="tap", shape=(N, *TAP), **shard_spec(C, S, TAP, "float16", compression))
    if data is not None:
        arr[...] = data
    return arr


def _shard_file(root, s):
    return root / "tap" / "c" / str(s) / "0" / "0" / "0"


def _padded(data, ci):
    rows = np.zeros((C, *TAP), data.dtype)
    part = data[ci * C:(ci + 1) * C]
    rows[:len(part)] = part
    return rows


def test_shard_spec_makes_the_sharded_codec_chain():
    for compression, inner in (("zstd", ["bytes", "zstd", "crc32c"]), ("none", ["bytes", "crc32c"])):
        meta = zarr.create_array(MemoryStore(), shape=(N, *TAP), **shard_spec(C, S, TAP, "float16", compression)).metadata
        (codec,) = meta.to_dict()["codecs"]
        assert codec["name"] == "sharding_indexed"
        cfg = codec["configuration"]
        assert tuple(cfg["chunk_shape"]) == (C, *TAP) and tuple(meta.chunk_grid.chunk_shape) == (S, *TAP)
        assert [c["name"] for c in cfg["codecs"]] == inner and cfg["codecs"][0]["configuration"]["endian"] == "little"
        assert [c["name"] for c in cfg["index_codecs"]] == ["bytes", "crc32c"]
        assert cfg["index_codecs"][0]["configuration"]["endian"] == "little" and cfg["index_location"] == "end"
        assert meta.fill_value == 0
    with pytest.raises(ValueError, match="not a multiple"):
        shard_spec(4, 6, TAP, "float16", "none")


@pytest.mark.parametrize("compression", ["zstd", "none"])
def test_zarrs_shards_parse_and_their_inner_chunks_decode_to_the_data(tmp_path, compression):
    data = _data()
    _zarr_array(tmp_path, compression, data)
    n_inner = S // C
    assert sorted(int(p.name) for p in (tmp_path / "tap" / "c").iterdir()) == list(range(shards_per_tap(N, S)))
    for s in range(shards_per_tap(N, S)):
        blob = _shard_file(tmp_path, s).read_bytes()
        entries = read_index(blob[-index_nbytes(n_inner):], n_inner, len(blob), LIMIT)
        for j, entry in enumerate(entries):
            ci = s * n_inner + j
            rows = _padded(data, ci)
            if ci in ZERO_CHUNKS or ci * C >= N:  # all fill value, or past the end: not stored
                assert entry is None, (s, j)
                assert inner_chunk(blob, entry) is None
                continue
            chunk = bytes(inner_chunk(blob, entry))
            assert len(chunk) == entry[1] and _crc(chunk[:-4]) == chunk[-4:]
            body = Zstd().decode(chunk[:-4]) if compression == "zstd" else chunk[:-4]
            np.testing.assert_array_equal(np.frombuffer(body, "<f2").reshape(C, *TAP), rows)  # edge chunk: zero-padded


@pytest.mark.parametrize("compression", ["zstd", "none"])
def test_our_shards_read_back_through_zarr(tmp_path, monkeypatch, compression):
    monkeypatch.setattr(chunk_writer, "SAMPLE", 512)  # 4 KiB chunks are judged: some compressed, some stored frames
    data = _data(1)
    errors = {2, 7}  # inner chunks the writer leaves out (batches of error rows): zarr reads zeros
    arr = _zarr_array(tmp_path, compression)
    writer = ChunkWriter(tmp_path, compression)
    n_inner = S // C
    for s in range(shards_per_tap(N, S)):
        inner = []
        for ci in range(s * n_inner, (s + 1) * n_inner):
            inner.append(None if ci in errors or ci * C >= N else writer.encode(_padded(data, ci)))
        pieces = encode_shard(inner)
        path = _shard_file(tmp_path, s)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(shard_bytes(pieces))
    want = data.copy()
    for ci in errors:
        want[ci * C:(ci + 1) * C] = 0
    got = arr[...]
    np.testing.assert_array_equal(got, want)
    assert not got[2 * C:3 * C].any() and data[2 * C:3 * C].any()


def test_encode_shard_returns_views_of_the_chunks(tmp_path):
    rows = _data()[:C]
    pieces, crc = ChunkWriter(tmp_path, "none").encode(rows)
    out = encode_shard([None, (pieces, crc)])
    assert np.shares_memory(np.frombuffer(out[0], np.uint8), rows)
    index = np.frombuffer(out[-2], "<u8").reshape(2, 2)
    assert index.tolist() == [[EMPTY, EMPTY], [0, rows.nbytes + 4]] and bytes(out[-1]) == _crc(out[-2])


@pytest.mark.parametrize("compression", ["zstd", "none"])
def test_our_shard_bytes_are_zarrs(tmp_path, compression):
    """zarr stores inner chunks in Morton order (row order on a 1-D inner grid), back to back, then
    the index: the same stored chunks give the same object. Small chunks are always compressed at
    zarr's own level (ChunkWriter.SAMPLE), so zstd matches too."""
    data = _data(2)
    _zarr_array(tmp_path, compression, data)
    writer = ChunkWriter(tmp_path, compression)
    n_inner = S // C
    for s in range(shards_per_tap(N, S)):
        inner = [None if ci in ZERO_CHUNKS or ci * C >= N else writer.encode(_padded(data, ci))
                 for ci in range(s * n_inner, (s + 1) * n_inner)]
        assert shard_bytes(encode_shard(inner)) == _shard_file(tmp_path, s).read_bytes(), s


def _index(entries) -> bytes:
    raw = np.asarray(entries, "<u8").tobytes()
    return raw + _crc(raw)


def _refused(tail, n_inner, size, limit=1000):
    with pytest.raises(ShardIndexError) as e:
        read_index(tail, n_inner, size, limit)
    assert "\n" not in str(e.value)
    return str(e.value)


def test_hostile_indexes_are_refused_with_a_one_line_reason():
    data_end = 100  # bytes of chunks before a 3-entry index
    size = data_end + index_nbytes(3)
    good = [(0, 40), (EMPTY, EMPTY), (40, 60)]
    assert read_index(_index(good), 3, size, 1000) == [(0, 40), None, (40, 60)]
    assert read_index(b"\0" * 7 + _index(good), 3, size, 1000) == [(0, 40), None, (40, 60)]  # longer tail: its end
    bad = bytearray(_index(good))
    bad[3] ^= 1
    assert "checksum" in _refused(bytes(bad), 3, size)
    assert "beyond" in _refused(_index([(0, 40), (EMPTY, EMPTY), (90, 20)]), 3, size)
    assert "beyond" in _refused(_index([(0, 40), (EMPTY, EMPTY), (2**63, 8)]), 3, size)
    assert "beyond" in _refused(_index([(0, 40), (EMPTY, EMPTY), (2**64 - 8, 20)]), 3, size)  # wraps around in uint64
    assert "beyond" in _refused(_index([(0, 40), (EMPTY, EMPTY), (40, 2**64 - 30)]), 3, size, limit=2**64 - 2)
    assert "overlaps" in _refused(_index([(0, 40), (EMPTY, EMPTY), (30, 20)]), 3, size)
    assert "overlaps" in _refused(_index([(50, 40), (EMPTY, EMPTY), (10, 41)]), 3, size)  # out of order
    assert "half-empty" in _refused(_index([(0, 40), (EMPTY, 8), (40, 60)]), 3, size)
    assert "half-empty" in _refused(_index([(0, 40), (8, EMPTY), (40, 60)]), 3, size)
    assert "larger than" in _refused(_index([(0, 40), (EMPTY, EMPTY), (40, 60)]), 3, size, limit=50)
    assert "shorter than its 4-byte" in _refused(_index([(0, 3), (EMPTY, EMPTY), (40, 60)]), 3, size)
    assert "shorter than its" in _refused(_index(good), 3, index_nbytes(3) - 1)
    assert "were read" in _refused(_index(good)[1:], 3, size)


def test_shard_rows_for():
    # tiny maps: many batches per shard, capped by the whole store rounded up to a batch
    big = {"max_batches": 10**6}
    assert shard_rows_for(1001, 8, 4, 64, **big) == 1008 and shard_rows_for(1000, 8, 4, 64, **big) == 1000
    # ... and by 64 batches: a batch is committed only once its shard is written
    assert shard_rows_for(10**6, 64, 64, 128) == 64 * 64
    assert shard_rows_for(10**6, 8, 8, 128, max_batches=1000) == 8000
    assert shard_rows_for(0, 8, 8, 64) == 8
    # a mid-size tap: as many whole batches as fit in the target
    rows = shard_rows_for(10**6, 8, 4, 200_704, target_bytes=64 << 20)
    assert rows % 8 == 0 and rows * 200_704 <= 64 << 20 < (rows + 8) * 200_704
    # huge maps: one batch per shard even above the target
    assert shard_rows_for(10**6, 8, 8, 64 * 224 * 224 * 2, target_bytes=32 << 20) == 8
    for n in (1, 7, 8, 9, 500):
        for batch, chunk in ((8, 8), (8, 2), (6, 3), (1, 1)):
            for per_row in (1, 1000, 10**7):
                r = shard_rows_for(n, batch, chunk, per_row, target_bytes=1 << 20, max_batches=10**6)
                assert r % batch == 0 and batch <= r <= max(batch, -(-n // batch) * batch)
                assert r == batch or r * per_row <= 1 << 20
                assert shards_per_tap(n, r) * r >= n > (shards_per_tap(n, r) - 1) * r
    with pytest.raises(ValueError, match="multiple"):
        shard_rows_for(100, 6, 4, 10)
