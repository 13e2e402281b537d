"""Sharded tap arrays: the bytes of one Zarr v3 shard object, written and read without zarr.

Layout (Zarr v3 ``sharding_indexed`` codec, index at the end:
https://zarr-specs.readthedocs.io/en/latest/v3/codecs/sharding-indexed/v1.0.html). A tap of shape
``tap_shape`` is an array ``(n, *tap_shape)`` whose chunk grid is cut into shards of
``(shard_rows, *tap_shape)``, one object each at ``<array>/c/<shard>/0/0/0``; a shard holds
``shard_rows // chunk_rows`` inner chunks of ``(chunk_rows, *tap_shape)``, so the inner-chunk grid
is 1-D along rows. A shard object is:

* the stored inner chunks, back to back in row order, each exactly what the inner codec chain
  ``bytes`` (little-endian) → ``zstd`` (optional) → ``crc32c`` makes of it (what
  :meth:`.chunk_writer.ChunkWriter.encode` gives: the body, then its CRC-32C, 4 bytes LE); an
  inner chunk is always ``chunk_rows`` full rows (zarr pads an edge chunk with the fill value, 0);
* then the index: per inner chunk, in C order of the inner grid, ``offset`` and ``nbytes`` as
  uint64 LE (offset from the start of the object); an inner chunk not stored (all fill value, or
  past the array's end) is ``(2**64-1, 2**64-1)`` and reads as zeros;
* then the index's own CRC-32C (the index codecs ``bytes`` → ``crc32c``): ``16 * n_inner + 4``
  bytes in all, read with one suffix range request.

Zarr 3.1 writes inner chunks in Morton order, which for a 1-D inner grid is row order, with no
gaps, and skips all-fill inner chunks (``write_empty_chunks`` False, the default), so for the same
stored chunks :func:`encode_shard` gives zarr's very bytes. Differences: zarr deletes a shard with
no stored chunk (``encode_shard`` still gives the bare index, which zarr reads as zeros), and with
``write_empty_chunks`` True zarr also stores the zero chunks past the array's end.

The spec lets chunks lie anywhere before the index; a store may be hostile, so :func:`read_index`
accepts only what a reader can use safely: every entry inside the data part of the object, no
two overlapping, none larger than the caller's bound.
"""

from __future__ import annotations

import numpy as np

EMPTY = 2**64 - 1  # offset and nbytes of an inner chunk that is not stored
TARGET_BYTES = 64 << 20  # raw bytes of one shard of one tap: see shard_rows_for
MAX_BATCHES = 64  # batches per shard at most: what a kill can cost (their commits wait for the shard)


class ShardIndexError(ValueError):
    """A shard object's index is unusable (the store layer reports it as a StoreError)."""


def shard_spec(chunk_rows: int, shard_rows: int, tap_shape: tuple[int, ...], dtype, compression: str) -> dict:
    """``zarr.create_array`` keywords (all but ``shape`` and ``dimension_names``) of a sharded tap array."""
    from zarr.codecs import Crc32cCodec, ZstdCodec

    if chunk_rows < 1 or shard_rows < chunk_rows or shard_rows % chunk_rows:
        raise ValueError(f"shard_rows {shard_rows} is not a multiple of chunk_rows {chunk_rows}")
    tail = tuple(int(s) for s in tap_shape)
    return {"chunks": (chunk_rows, *tail), "shards": {"shape": (shard_rows, *tail), "index_location": "end"},
            "dtype": dtype, "fill_value": 0,
            "compressors": ([ZstdCodec()] if compression == "zstd" else []) + [Crc32cCodec()]}


def index_nbytes(n_inner: int) -> int:
    """Bytes of the index (and its checksum) at the end of a shard of ``n_inner`` inner chunks."""
    return 16 * n_inner + 4


def _crc(buf) -> bytes:
    import google_crc32c

    return np.uint32(google_crc32c.value(np.frombuffer(buf, np.uint8))).astype("<u4").tobytes()


def encode_shard(inner: list[tuple[list, bytes] | None]) -> list[memoryview]:
    """A whole shard object as pieces (byte views, no copy of chunk data) from its inner chunks in
    row order: ``(pieces, crc4)`` as :meth:`.ChunkWriter.encode` gives them, or None (not stored).
    Write them with ``writev`` or join them (:func:`shard_bytes`) for an object PUT."""
    index = np.full((len(inner), 2), EMPTY, dtype="<u8")
    out, offset = [], 0
    for i, chunk in enumerate(inner):
        if chunk is None:
            continue
        views = [memoryview(p).cast("B") for p in chunk[0]] + [memoryview(chunk[1]).cast("B")]
        if views[-1].nbytes != 4:
            raise ValueError(f"inner chunk {i}: its checksum is {views[-1].nbytes} bytes, not 4")
        nbytes = sum(v.nbytes for v in views)
        index[i] = offset, nbytes
        out += views
        offset += nbytes
    raw = index.tobytes()
    return out + [memoryview(raw), memoryview(_crc(raw))]


def shard_bytes(pieces: list) -> bytes:
    """The pieces of :func:`encode_shard` as one ``bytes`` (one copy)."""
    return b"".join(pieces)


def read_index(tail, n_inner: int, object_size: int, max_nbytes: int) -> list[tuple[int, int] | None]:
    """``(offset, nbytes)`` or None (not stored) per inner chunk of a shard object of
    ``object_size`` bytes, from ``tail`` (its last :func:`index_nbytes` bytes, or more of it).
    Raises :class:`ShardIndexError` (one line) unless the checksum matches and every stored entry
    lies in the data part of the object, overlaps no other, and is 4 to ``max_nbytes`` bytes."""
    size = index_nbytes(n_inner)
    if object_size < size:
        raise ShardIndexError(f"the shard is {object_size} bytes, shorter than its {size}-byte index")
    tail = memoryview(tail).cast("B")
    if tail.nbytes < size:
        raise ShardIndexError(f"{tail.nbytes} bytes of the shard were read, not its {size}-byte index")
    tail = tail[tail.nbytes - size:]
    if _crc(tail[:-4]) != bytes(tail[-4:]):
        raise ShardIndexError("the shard index's checksum does not match")
    idx = np.frombuffer(tail[:-4], "<u8").reshape(n_inner, 2)
    empty = idx == np.uint64(EMPTY)

    def refuse(mask, what: str):
        if mask.any():
            i = int(np.flatnonzero(mask)[0])
            raise ShardIndexError(f"inner chunk {i} of the shard {what} (offset {idx[i, 0]}, {idx[i, 1]} bytes)")

    refuse(empty[:, 0] != empty[:, 1], "has a half-empty index entry")
    stored = ~empty[:, 0]
    off, nb = idx[:, 0], idx[:, 1]
    end = np.uint64(object_size - size)
    refuse(stored & (nb < 4), "is shorter than its 4-byte checksum")
    refuse(stored & (nb > np.uint64(max_nbytes)), f"is larger than the {max_nbytes} bytes an inner chunk may be")
    refuse(stored & (off > end), f"starts beyond the shard's {int(end)} bytes of chunks")
    refuse(stored & (nb > end - np.minimum(off, end)), f"ends beyond the shard's {int(end)} bytes of chunks")
    order = np.flatnonzero(stored)[np.argsort(off[stored], kind="stable")]
    overlap = np.zeros(n_inner, bool)
    overlap[order[1:]] = off[order[1:]] < off[order[:-1]] + nb[order[:-1]]
    refuse(overlap, "overlaps another")
    return [(int(o), int(n)) if s else None for o, n, s in zip(off.tolist(), nb.tolist(), stored.tolist())]


def inner_chunk(blob, entry: tuple[int, int] | None) -> memoryview | None:
    """The bytes (a view: body, then CRC-32C) of one inner chunk of the shard object ``blob``."""
    if entry is None:
        return None
    offset, nbytes = entry
    return memoryview(blob).cast("B")[offset:offset + nbytes]


def shard_rows_for(n_rows: int, batch_rows: int, chunk_rows: int, bytes_per_row: int,
                   target_bytes: int = TARGET_BYTES, max_batches: int = MAX_BATCHES) -> int:
    """Rows per shard: the most whole batches whose raw (uncompressed) maps of one tap fit in
    ``target_bytes``, at least one batch, at most ``max_batches`` batches and at most all ``n_rows``
    rounded up to a whole batch.

    64 MiB: an object store's per-request cost (tens of ms) is a few percent of a PUT or GET of
    tens of MiB, and bigger objects gain little; the writer holds each tap's shard in memory
    until it is complete (5 VGG16 taps: 320 MiB at 64 MiB, 1.25 GiB at 256 MiB), and redoing one
    batch rewrites its whole shard. Readers fetch the index and inner chunks by range, so shard
    size does not change what one image costs to read. ``max_batches`` (64): a batch is committed
    only once its shard is written, so a kill loses at most that many batches of work (tiny maps
    would otherwise put a whole run in one shard, durable only at its end).

    >>> shard_rows_for(10**6, 8, 8, 512 * 14 * 14 * 2), shard_rows_for(10**6, 8, 8, 64 * 224 * 224 * 2)
    (328, 8)
    """
    if batch_rows < 1 or chunk_rows < 1 or batch_rows % chunk_rows:
        raise ValueError(f"batch_rows {batch_rows} is not a multiple of chunk_rows {chunk_rows}")
    batches = max(1, -(-n_rows // batch_rows))
    fit = target_bytes // max(1, batch_rows * bytes_per_row)
    return batch_rows * max(1, min(fit, batches, max_batches))


def shards_per_tap(n_rows: int, shard_rows: int) -> int:
    """Shard objects of one tap of ``n_rows`` rows (the last may be partial)."""
    return -(-n_rows // shard_rows)
