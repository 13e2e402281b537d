"""Tap chunks written straight to their files, in the bytes Zarr itself would write.

A featuremaps store's map arrays have one codec chain (``bytes`` little-endian, then ``zstd`` or
nothing, then ``crc32c``; see :func:`.store.array_specs`) and one chunk per ``chunk_rows`` rows at
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
from the model), while ReLU and pooling outputs are half zeros (zstd saves about 55%). So each
tap's chunks are probed at the store's own level (Zarr's default, as its ``zarr.json`` records)
every :data:`PROBE_EVERY` chunks; when that saves less than :data:`MIN_SAVING`, the chunks until
the next probe are *stored* zstd frames (:func:`stored_frame`: the frame header, then the data
as raw blocks, written from the array itself; no compression work, no copy). Every chunk is a
complete zstd frame declaring its decoded size, which is all a reader needs (any zstd decoder
reads raw blocks): how a frame was made is not part of the format.
"""

from __future__ import annotations

import os
import sys
import threading
import uuid
from pathlib import Path

import numpy as np

from .store_io import open_folder

STORE_LEVEL = 0  # what array_specs' ZstdCodec() records: zstd's default level (3)
STORED = None  # "level" of a stored frame: raw blocks, no compression
PROBE_EVERY = 8
MIN_SAVING = 0.25  # VGG16 conv taps save ~11%, ReLU/pool taps ~55%
_BLOCK = 128 << 10  # zstd's largest block
_IOV_MAX = 1024


class ChunkWriter:
    """Writes whole map chunks of one store (``root``, ``compression`` ``zstd`` or ``none``).
    Safe from several threads at once (each (array, chunk) is written by one of them)."""

    def __init__(self, root: Path, compression: str):
        self.root = Path(root)
        self.compression = compression
        self._lock = threading.Lock()
        self._seen: dict[str, int] = {}  # array -> chunks written
        self._saving: dict[str, float] = {}  # array -> what the last probe saved (fraction of the raw bytes)

    @staticmethod
    def can_write(data: np.ndarray) -> bool:
        """Whether ``data`` can go out as is: C-contiguous, little-endian (the ``bytes`` codec's)."""
        order = data.dtype.byteorder
        little = order == "<" or (order in "=|" and sys.byteorder == "little")
        return data.flags.c_contiguous and little

    def level_for(self, name: str) -> int | None:
        """How ``name``'s next chunk is compressed: :data:`STORE_LEVEL` on a probe or while the
        last probe saved at least :data:`MIN_SAVING`, else :data:`STORED`."""
        with self._lock:
            n = self._seen.get(name, 0)
            self._seen[name] = n + 1
            if n % PROBE_EVERY == 0 or self._saving.get(name, 1.0) >= MIN_SAVING:
                return STORE_LEVEL
            return STORED

    def encode(self, name: str, data: np.ndarray) -> tuple[list[np.ndarray], bytes]:
        """``(pieces, checksum)`` of one chunk: the bytes that follow the ``bytes`` codec in the
        chain, in pieces (views of ``data`` where possible), and their CRC-32C (4 bytes)."""
        import google_crc32c

        raw = np.frombuffer(memoryview(data).cast("B"), np.uint8)  # what google_crc32c takes without a copy
        if self.compression != "zstd":
            pieces = [raw]
        elif (level := self.level_for(name)) is STORED:
            pieces = stored_frame(raw)
        else:
            from numcodecs.zstd import Zstd

            pieces = [np.frombuffer(Zstd(level=level, checksum=False).encode(raw), np.uint8)]
            with self._lock:
                self._saving[name] = 1.0 - pieces[0].nbytes / max(1, raw.nbytes)
        crc = 0
        for piece in pieces:
            crc = google_crc32c.extend(crc, piece)
        return pieces, np.uint32(crc).astype("<u4").tobytes()

    def write(self, name: str, index: int, tail_dims: int, data: np.ndarray) -> int:
        """Write chunk ``index`` of array ``name`` (``tail_dims`` dimensions after the row axis)
        from ``data`` (exactly the chunk's rows); returns the raw bytes written."""
        pieces, crc = self.encode(name, data)
        parts = [name, "c", str(int(index)), *(["0"] * tail_dims)]
        dfd = open_folder(self.root, parts[:-1], create=True)
        tmp = f".{parts[-1]}.{uuid.uuid4().hex}.partial"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644,
                         dir_fd=dfd)
            try:
                _write_all(fd, [memoryview(p) for p in pieces] + [memoryview(crc)])
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
        return data.nbytes


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
