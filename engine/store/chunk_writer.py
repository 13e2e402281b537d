"""Tap chunks written straight to their files, in the bytes Zarr itself would write.

A featuremaps store's map arrays have one codec chain (``bytes`` little-endian, then ``zstd`` or
nothing, then ``crc32c``; see :func:`.layout.array_specs`) and one chunk per ``chunk_rows`` rows at
``<array>/c/<i>/0/0/0``. Going through ``zarr.Array.__setitem__`` for every (tap, batch) chunk
costs thread hops through Zarr's event loop and two extra copies of every chunk (the checksum is
appended to a copy of the compressed bytes); :class:`ChunkWriter` encodes in the calling writer
thread (no copy before compression; the checksum goes out with ``writev``) and writes the file
the way the store writes every file: inside the store (``openat`` + ``O_NOFOLLOW`` per folder), a
``.partial`` file renamed over the chunk (a killed writer leaves a ``.partial`` the lock holder
cleans, never half a chunk).

Compression where it pays: feature maps straight out of a convolution (before its ReLU) are
nearly incompressible in fp16 (zstd saves about 11% of VGG16's conv taps, at about 60 ms of CPU
per image for the five of them: more than everything else the writer does, and on 2 cores taken
from the model), while ReLU and pooling outputs are half zeros (zstd saves about 55%). So before
compressing a chunk, :class:`ChunkWriter` compresses a :data:`SAMPLE`-byte slice of it at the
store's own level (Zarr's default, as its ``zarr.json`` records): when that saves at least
:data:`MIN_SAVING`, the chunk is compressed (Zarr's very bytes); otherwise it is written as a
*stored* zstd frame (:func:`stored_frame`: the frame header, then the data as raw blocks, written
from the array itself: no compression work, no copy). Every chunk is a complete zstd frame
declaring its decoded size, which is all a reader needs (any zstd decoder reads raw blocks): how a
frame was made is not part of the format.
"""

from __future__ import annotations

import os
import sys
import uuid
from pathlib import Path

import numpy as np

from .format import chunk_key
from .io import open_folder

STORE_LEVEL = 0  # what array_specs' ZstdCodec() records: zstd's default level (3)
SAMPLE = 256 << 10  # bytes of a chunk compressed to decide (chunks up to 4x this are just compressed)
MIN_SAVING = 0.25  # VGG16 conv taps save ~11%, ReLU/pool taps ~55%
_BLOCK = 128 << 10  # zstd's largest block
_IOV_MAX = 1024


class ChunkWriter:
    """Writes whole map chunks of one store (``root``, ``compression`` ``zstd`` or ``none``).
    Safe from several threads at once (each (array, chunk) is written by one of them)."""

    def __init__(self, root: Path | None, compression: str, put=None):
        self.root = Path(root) if root is not None else None
        self.compression = compression
        self._put = put  # object storage: put(key, pieces) writes one object (atomic), instead of a file

    @staticmethod
    def can_write(data: np.ndarray) -> bool:
        """Whether ``data`` can go out as is: C-contiguous, little-endian (the ``bytes`` codec's)."""
        order = data.dtype.byteorder
        little = order == "<" or (order in "=|" and sys.byteorder == "little")
        return data.flags.c_contiguous and little

    @staticmethod
    def worth_compressing(raw: np.ndarray) -> bool:
        """Whether zstd at the store's level saves at least :data:`MIN_SAVING` of ``raw`` (uint8),
        judged on a :data:`SAMPLE`-byte slice from its middle (a small chunk: always)."""
        if raw.nbytes <= 4 * SAMPLE:
            return True
        start = (raw.nbytes - SAMPLE) // 2
        return 1.0 - _compressed(raw[start:start + SAMPLE]).nbytes / SAMPLE >= MIN_SAVING

    def encode(self, data: np.ndarray) -> tuple[list[np.ndarray], bytes]:
        """``(pieces, checksum)`` of one chunk: the bytes that follow the ``bytes`` codec in the
        chain, in pieces (views of ``data`` where possible), and their CRC-32C (4 bytes)."""
        import google_crc32c

        raw = np.frombuffer(memoryview(data).cast("B"), np.uint8)  # what google_crc32c takes without a copy
        if self.compression != "zstd":
            pieces = [raw]
        elif self.worth_compressing(raw):
            pieces = [_compressed(raw)]
        else:
            pieces = stored_frame(raw)
        crc = 0
        for piece in pieces:
            crc = google_crc32c.extend(crc, piece)
        return pieces, np.uint32(crc).astype("<u4").tobytes()

    def write(self, name: str, index: int, tail_dims: int, data: np.ndarray) -> int:
        """Write chunk ``index`` of array ``name`` (``tail_dims`` dimensions after the row axis)
        from ``data`` (exactly the chunk's rows); returns the raw bytes written."""
        pieces, crc = self.encode(data)
        self.write_object(chunk_key(name, index, tail_dims + 1), [*pieces, crc])
        return data.nbytes

    def write_object(self, key: str, pieces: list) -> None:
        """Write one whole object (a chunk, or a shard) at ``key`` from ``pieces``: one PUT on object
        storage, else a ``.partial`` file renamed into place inside the store."""
        if self._put is not None:
            self._put(key, pieces)
            return
        parts = key.split("/")
        dfd = open_folder(self.root, parts[:-1], create=True)
        tmp = f".{parts[-1]}.{uuid.uuid4().hex}.partial"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644,
                         dir_fd=dfd)
            try:
                _write_all(fd, [memoryview(p).cast("B") for p in pieces])
            finally:
                os.close(fd)
            os.replace(tmp, parts[-1], src_dir_fd=dfd, dst_dir_fd=dfd)
        except BaseException:
            try:
                os.unlink(tmp, dir_fd=dfd)
            except FileNotFoundError:
                pass
            raise
        finally:
            os.close(dfd)


def _compressed(raw: np.ndarray) -> np.ndarray:
    """``raw`` as one zstd frame at the store's level: what Zarr's ``ZstdCodec`` writes."""
    from numcodecs.zstd import Zstd

    return np.frombuffer(Zstd(level=STORE_LEVEL, checksum=False).encode(raw), np.uint8)


def stored_frame(raw: np.ndarray) -> list[np.ndarray]:
    """A zstd frame holding ``raw`` (uint8) uncompressed, as pieces: the frame header (magic,
    descriptor: single segment, 8-byte content size; the size), then per block of at most 128 KiB a
    3-byte raw-block header and a view of ``raw`` (RFC 8878, section 3.1.1). Any zstd decoder
    reads it; the store's readers find the exact decoded size they require in the header."""
    n = raw.nbytes
    head = np.frombuffer(b"\x28\xb5\x2f\xfd\xe0" + n.to_bytes(8, "little"), np.uint8)
    pieces = [head]
    starts = range(0, n, _BLOCK) if n else [0]
    for start in starts:
        size = min(_BLOCK, n - start)
        last = start + _BLOCK >= n
        pieces.append(np.frombuffer((int(last) | (size << 3)).to_bytes(3, "little"), np.uint8))
        pieces.append(raw[start:start + size])
    return pieces


def _write_all(fd: int, views: list[memoryview]) -> None:
    """``writev`` until every byte of ``views`` is written (a write may stop short; at most
    ``IOV_MAX`` pieces per call)."""
    views = [v for v in views if v.nbytes]
    while views:
        n = os.writev(fd, views[:_IOV_MAX])
        while views and n >= views[0].nbytes:
            n -= views[0].nbytes
            views.pop(0)
        if views and n:
            views[0] = views[0][n:]
