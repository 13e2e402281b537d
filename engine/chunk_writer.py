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
nearly incompressible in fp16 (zstd saves about 11% on VGG16's conv taps, at 3-5x the CPU cost of
everything else the writer does), while ReLU and pooling outputs are half zeros (zstd saves about
55%). So each tap's chunks are probed at the store's own level (Zarr's default, as its
``zarr.json`` records) every :data:`PROBE_EVERY` chunks; when that saves less than
:data:`MIN_SAVING`, the chunks until the next probe are written at zstd's fastest level
(:data:`FAST_LEVEL`, ~1.5 GB/s). Every chunk is a complete zstd frame declaring its size, which is
all a reader needs: the level is not part of the format.
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
FAST_LEVEL = -5
PROBE_EVERY = 8
MIN_SAVING = 0.10


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

    def level_for(self, name: str) -> int:
        """The zstd level for ``name``'s next chunk (the store's on a probe, else by the last probe)."""
        with self._lock:
            n = self._seen.get(name, 0)
            self._seen[name] = n + 1
            if n % PROBE_EVERY == 0 or self._saving.get(name, 1.0) >= MIN_SAVING:
                return STORE_LEVEL
            return FAST_LEVEL

    def encode(self, name: str, data: np.ndarray) -> tuple[np.ndarray, bytes]:
        """``(payload, checksum)`` of one chunk: what follows ``bytes`` in the codec chain."""
        import google_crc32c

        raw = memoryview(data).toreadonly().cast("B")
        if self.compression == "zstd":
            from numcodecs.zstd import Zstd

            level = self.level_for(name)
            payload = Zstd(level=level, checksum=False).encode(raw)
            if level == STORE_LEVEL:
                with self._lock:
                    self._saving[name] = 1.0 - len(payload) / max(1, raw.nbytes)
        else:
            payload = raw
        payload = np.frombuffer(payload, np.uint8)  # what google_crc32c takes without a copy
        crc = np.uint32(google_crc32c.value(payload)).astype("<u4").tobytes()
        return payload, crc

    def write(self, name: str, index: int, tail_dims: int, data: np.ndarray) -> int:
        """Write chunk ``index`` of array ``name`` (``tail_dims`` dimensions after the row axis)
        from ``data`` (exactly the chunk's rows); returns the raw bytes written."""
        payload, crc = self.encode(name, data)
        parts = [name, "c", str(int(index)), *(["0"] * tail_dims)]
        dfd = open_folder(self.root, parts[:-1], create=True)
        tmp = f".{parts[-1]}.{uuid.uuid4().hex}.partial"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644,
                         dir_fd=dfd)
            try:
                _write_all(fd, [memoryview(payload).cast("B"), memoryview(crc)])
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


def _write_all(fd: int, views: list[memoryview]) -> None:
    """``writev`` until every byte of ``views`` is written (a write may stop short)."""
    while views:
        n = os.writev(fd, views)
        while views and n >= views[0].nbytes:
            n -= views[0].nbytes
            views.pop(0)
        if views and n:
            views[0] = views[0][n:]
