"""How big a store's pieces are: rows per chunk and per row chunk, rows per shard, and whether a
batch fits in memory. Pure arithmetic on counts and shapes (and ``/proc/meminfo``)."""

from __future__ import annotations

import math
import os

import numpy as np

from ...errors import StoreError
from .format import DTYPES, ROW_CHUNK, size_text
from .shard_format import shard_rows_for

MAX_PADDING = 0.05  # share of the rows the padded last chunk may add
IN_FLIGHT_BATCHES = 5  # decoded-ahead (2) + in the model (1) + waiting for / in the writer (2)


def chunk_rows_for(n: int, batch_rows: int) -> int:
    """Rows per chunk: the largest divisor of ``batch_rows`` whose padded last chunk adds at
    most 5% of ``n`` rows (zarr stores a partial edge chunk at full size).

    >>> chunk_rows_for(64, 8), chunk_rows_for(7, 7), chunk_rows_for(9, 8), chunk_rows_for(1000, 8)
    (8, 7, 1, 8)
    """
    for d in sorted(_divisors(batch_rows), reverse=True):
        if (-n % d) <= MAX_PADDING * n:
            return d
    return 1


def row_chunk_for(chunk_rows: int, n: int) -> int:
    """Rows per chunk of the per-row arrays (paths, path_bytes, status, errors): a multiple of
    ``chunk_rows`` near ``ROW_CHUNK``, so that reading every status or one path costs a few chunks,
    not one chunk per batch (500,000 rows in chunks of 8 were 62,500 chunks: a minute to read).
    Only the one writer commits, so batches sharing a status chunk rewrite it in turn.

    >>> row_chunk_for(8, 10**6), row_chunk_for(7, 10**6), row_chunk_for(100000, 10**6), row_chunk_for(8, 20)
    (16384, 16380, 100000, 24)
    """
    return chunk_rows * max(1, min(ROW_CHUNK // chunk_rows, -(-n // chunk_rows)))


def _divisors(b: int) -> set[int]:
    small = [d for d in range(1, math.isqrt(b) + 1) if b % d == 0]
    return set(small) | {b // d for d in small}


def available_memory() -> int:
    """Bytes of memory available to a new allocation (``MemAvailable``, else physical memory)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def check_batch_memory(batch_rows: int, per_image_bytes: int, available: int | None = None) -> None:
    """Refuse a batch whose in-flight data (``IN_FLIGHT_BATCHES`` batches of inputs and outputs,
    fp32) would not fit in memory, with the largest batch size that would."""
    available = available_memory() if available is None else available
    need = batch_rows * per_image_bytes * IN_FLIGHT_BATCHES
    if need > available:
        fits = max(1, available // (per_image_bytes * IN_FLIGHT_BATCHES))
        raise StoreError(f"--batch-size {batch_rows} needs about {size_text(need)} ({IN_FLIGHT_BATCHES} batches "
                         f"of {per_image_bytes / 1e6:.2f} MB per image in flight) but {size_text(available)} is "
                         f"available; use --batch-size {fits} or less")


def per_image_bytes(metadata: dict, shapes: dict[str, tuple[int, ...]]) -> int:
    """fp32 bytes one image occupies in flight: its model input plus every output."""
    size = (metadata.get("preprocessing") or {}).get("size") or [224, 224]
    return 4 * (3 * int(size[0]) * int(size[1]) + sum(math.prod(s) for s in shapes.values()))


def shard_rows(asked, n: int, batch: int, chunk_rows: int, shapes: dict, dtype: str) -> int | None:
    """Rows per shard of a new store: None (unsharded), ``"auto"`` (:func:`.shard_format.shard_rows_for`
    on the largest tap), or a positive multiple of the batch size."""
    if asked in (None, "none", 0):
        return None
    itemsize = np.dtype(DTYPES[dtype]).itemsize
    if asked == "auto":
        largest = max((math.prod(s) for s in shapes.values()), default=1) * itemsize
        return shard_rows_for(n, batch, chunk_rows, largest)
    if isinstance(asked, bool) or not isinstance(asked, int) or asked < 1 or asked % batch:
        raise StoreError(f"--shard-rows {asked} is not a positive multiple of the batch size {batch}; use a "
                         f"multiple such as {batch * 8}, auto or none")
    return min(int(asked), batch * max(1, -(-n // batch)))
