"""A store at a URL is read with the bounds a local store has: someone may hand over an ``s3://``
URL whose objects were made to be read without bound (a chunk of gigabytes, a zstd frame declaring
gigabytes, a shard index pointing anywhere). Each such object is refused in one line, the good
store reads as the local one does, and the bounds cost no request per chunk and one per shard."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from featuremaps.cli import main
from featuremaps.engine.store import open_store
from featuremaps.engine.store.io import UnsafeStoreError
from featuremaps.engine.store.shard_format import index_nbytes

sys.path.insert(0, str(Path(__file__).parent))
from stores import extract  # noqa: E402
from test_store_s3 import _photos  # noqa: E402


@pytest.fixture(scope="module")
def photos(tmp_path_factory, sample_paths):
    return _photos(sample_paths, tmp_path_factory.mktemp("photos"), 5)  # 5 good + 1 bad: 6 rows, 3 batches


@pytest.fixture(scope="module")
def local_ref(tmp_path_factory, photos):
    out = tmp_path_factory.mktemp("ref") / "ref.zarr"
    assert extract(photos, out) == 1
    return open_store(out)


@pytest.fixture(scope="module")
def remote_refs(s3_server, photos):
    """One bucket holding ``flat.zarr`` (--shard-rows none) and ``sharded.zarr`` (the default: one
    shard of 3 inner chunks per tap), made once; tests break copies of them."""
    import s3server

    bucket = s3server.Bucket(s3_server, s3_server.new_bucket())
    assert extract(photos, bucket.url("flat.zarr"), "--shard-rows", "none", "--compression", "zstd") == 1
    assert extract(photos, bucket.url("sharded.zarr"), "--compression", "zstd") == 1
    return bucket


def _copy(refs, which: str, dest: str) -> str:
    fs = refs.fs()
    fs.copy(f"{refs.bucket}/{which}", f"{refs.bucket}/{dest}", recursive=True)
    return refs.url(dest)


def _tap(refs, url: str) -> tuple[str, str]:
    """``(first tap's name, bucket path of the object holding row 0 of it)``."""
    name = open_store(url).outputs[0]
    return name, f"{url[len('s3://'):]}/{name}/c/0/0/0/0"


def _crc(body: bytes) -> bytes:
    import google_crc32c

    return np.uint32(google_crc32c.value(body)).astype("<u4").tobytes()


def _lying_chunk(chunk: bytes) -> bytes:
    """``chunk`` (zstd body + CRC-32C) whose frame header declares 4 GiB or more; CRC made to match."""
    body = bytearray(chunk[:-4])
    assert body[:4] == b"\x28\xb5\x2f\xfd" and body[4] >> 6 in (2, 3)  # a 4- or 8-byte declared size (RFC 8878)
    size = 4 if body[4] >> 6 == 2 else 8
    pos = 5 + (0 if body[4] >> 5 & 1 else 1) + (0, 1, 2, 4)[body[4] & 3]
    body[pos:pos + size] = b"\xff" * size
    return bytes(body) + _crc(bytes(body))


def _refused(url: str, tmp_path, capsys, *needles: str) -> str:
    """``show --store URL`` and ``open_store(url)[tap][1]`` both refuse in one line naming ``needles``
    (row 1: in the first chunk; row 0 is the bad image)."""
    capsys.readouterr()
    assert main(["show", "--store", url, "--index", "1", "-o", str(tmp_path / "figs")]) == 2
    err = capsys.readouterr().err.strip()
    assert all(n in err for n in needles) and "\n" not in err, err
    assert not (tmp_path / "figs").exists() or not any((tmp_path / "figs").iterdir())
    st = open_store(url)
    with pytest.raises(UnsafeStoreError) as e:
        st[st.outputs[0]][1]
    assert all(n in str(e.value) for n in needles) and "\n" not in str(e.value)
    return str(e.value)


def test_an_unsharded_chunk_past_its_limit_is_refused_after_limit_plus_one_bytes(remote_refs, tmp_path, capsys,
                                                                                 monkeypatch):
    url = _copy(remote_refs, "flat.zarr", "big.zarr")
    name, key = _tap(remote_refs, url)
    limit = open_store(url).limits[name][0]
    remote_refs.fs().pipe_file(key, b"\0" * (limit + 4096))
    fetched = _count_s3(monkeypatch)
    _refused(url, tmp_path, capsys, f"{name}/c/0/0/0/0 is larger than", f"({limit} bytes)")
    assert fetched["bytes"] <= 2 * (limit + 1) + 2 * 2**20  # the chunk twice (show, then open_store), never whole


def test_an_unsharded_zstd_chunk_declaring_another_size_is_refused(remote_refs, tmp_path, capsys):
    url = _copy(remote_refs, "flat.zarr", "lie.zarr")
    name, key = _tap(remote_refs, url)
    fs = remote_refs.fs()
    fs.pipe_file(key, _lying_chunk(fs.cat_file(key)))
    _refused(url, tmp_path, capsys, f"{name}/c/0/0/0/0 does not declare the")


@pytest.mark.parametrize("entry, message", [
    ("long", "is larger than the"),  # an inner chunk longer than a chunk may be
    ("past", "starts beyond the shard's"),  # an inner chunk past the object's end
])
def test_a_shard_index_pointing_outside_its_bounds_is_refused(remote_refs, tmp_path, capsys, entry, message):
    url = _copy(remote_refs, "sharded.zarr", f"idx-{entry}.zarr")
    st = open_store(url)
    name, key = _tap(remote_refs, url)
    per, inner_limit = st.chunks_per_shard, st.limits[name][0]
    fs = remote_refs.fs()
    data = bytearray(fs.cat_file(key))
    n = index_nbytes(per)
    idx = np.frombuffer(bytes(data[-n:-4]), "<u8").reshape(per, 2).copy()
    if entry == "long":
        idx[0, 1] = inner_limit + 1
    else:
        idx[0, 0] = len(data) + 10**9
    raw = idx.astype("<u8").tobytes()
    data[-n:] = raw + _crc(raw)
    fs.pipe_file(key, bytes(data))
    # show finds the shard unusable before zarr reads it (its own index check); zarr's read refuses it too
    assert f"{name}/c/0/0/0/0: inner chunk 0" in _refused(url, tmp_path, capsys, "inner chunk 0 of the shard", message)


def test_a_sharded_inner_chunk_with_a_lying_zstd_header_is_refused(remote_refs, tmp_path, capsys):
    url = _copy(remote_refs, "sharded.zarr", "inner.zarr")
    st = open_store(url)
    name, key = _tap(remote_refs, url)
    fs = remote_refs.fs()
    data = bytearray(fs.cat_file(key))
    n = index_nbytes(st.chunks_per_shard)
    off, nbytes = (int(x) for x in np.frombuffer(bytes(data[-n:-4]), "<u8").reshape(-1, 2)[0])
    data[off:off + nbytes] = _lying_chunk(bytes(data[off:off + nbytes]))
    fs.pipe_file(key, bytes(data))
    _refused(url, tmp_path, capsys, f"{name}/c/0/0/0/0", "does not declare the")
    # the whole shard read at once (every row of it) is checked as well
    with pytest.raises(UnsafeStoreError, match="inner chunk 0 does not declare the"):
        st[name][:]


def _count_s3(monkeypatch) -> dict:
    """Count the S3 calls (by operation) and the body bytes GETs return, from now on."""
    import s3fs

    counts = {"bytes": 0}
    call = s3fs.S3FileSystem._call_s3

    async def counted(self, method, *args, **kwargs):
        counts[method] = counts.get(method, 0) + 1
        out = await call(self, method, *args, **kwargs)
        if method == "get_object":
            counts["bytes"] += int(out.get("ContentLength") or 0)
        return out

    monkeypatch.setattr(s3fs.S3FileSystem, "_call_s3", counted)
    return counts


@pytest.mark.parametrize("which", ["flat.zarr", "sharded.zarr"])
def test_the_good_store_reads_as_the_local_one_at_the_same_cost(remote_refs, local_ref, which, monkeypatch):
    """Unsharded: one GET per chunk, as zarr alone makes. Sharded: zarr's GET of the index and of
    the inner chunk, plus one HEAD (the object's size) the first time a shard is read."""
    st = open_store(remote_refs.url(which))
    assert st.sharded == (which == "sharded.zarr")
    for name in st.outputs:
        np.testing.assert_array_equal(st[name][:], local_ref[name][:], err_msg=name)
    st = open_store(remote_refs.url(which))
    store = st._group.store
    assert type(store).__name__ == "BoundedFsspecStore" and store.limits == st.limits
    copy = store.with_read_only(True)  # zarr makes such copies: they keep the bounds
    assert (copy.limits, copy.sharded) == (store.limits, store.sharded) and bool(copy.sharded) == st.sharded
    name = st.outputs[0]
    arr = st[name]  # (its metadata read once)
    counts = _count_s3(monkeypatch)
    for row in (1, 3):  # two chunks (two inner chunks of the same shard)
        np.testing.assert_array_equal(arr[row], local_ref[name][row])
    counts.pop("bytes")
    assert counts == ({"get_object": 2} if which == "flat.zarr" else {"head_object": 1, "get_object": 4}), counts
