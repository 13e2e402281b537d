"""Chunk-by-chunk check of a feature store: every chunk's CRC-32C, and missing tap chunks.

Kept apart from :mod:`.core` because it reads the store in its own order (one chunk at a
time, so one bad chunk does not hide the others) and knows zarr's chunk-key layout.
"""

from __future__ import annotations

import logging
import os
import stat
from dataclasses import dataclass, field

import numpy as np

from .format import FIXED_ARRAYS, OK, STORE_FORMAT, Damage, chunk_key
from .io import check_tree, check_zstd
from .shard_format import ShardIndexError, inner_chunk, read_index

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class VerifyReport:
    """What :meth:`FeatureStore.verify` found: damaged chunks and the batches they spoil."""

    damage: tuple[Damage, ...] = ()
    batches: tuple[int, ...] = ()
    checked_chunks: int = 0
    repaired: bool = False
    notes: tuple[str, ...] = field(default=())

    @property
    def ok(self) -> bool:
        return not self.damage


def verify(store, *, repair: bool = False) -> VerifyReport:
    """:meth:`FeatureStore.verify`: scan every chunk, then (``repair``) mark the batches holding
    damage pending, rewriting damaged status and error chunks whole first."""
    if store._io is None:
        check_tree(store.path)  # every chunk is read next: none may be a link or a FIFO
    damage, checked, notes = scan(store)
    batches = tuple(sorted({r // store.batch_size for d in damage if d.array not in FIXED_ARRAYS
                            for r in range(*d.rows)}))
    if repair and batches:
        group = store._group
        for d in damage:  # a damaged row chunk spans batches: rewrite it whole (a partial write reads it)
            if d.array in ("status", "errors"):
                blank = np.zeros(d.rows[1] - d.rows[0], np.uint8) if d.array == "status" else \
                    np.full(d.rows[1] - d.rows[0], "", dtype=object).astype(str)
                group[d.array][d.rows[0]:d.rows[1]] = blank
        for b in batches:
            start, stop = store.batch_rows(b)
            group["status"][start:stop] = np.zeros(stop - start, np.uint8)
        log.info("marked %d damaged batch(es) of %s pending", len(batches), store.path)
    return VerifyReport(tuple(damage), batches, checked, repair and bool(batches), tuple(notes))


def chunk_file(store, name: str, ci: int, ndim: int):
    """The file of chunk ``ci`` along ``image`` (zarr v3 default keys: ``c/i/0/0/0``)."""
    return store.path / chunk_key(name, ci, ndim)


def _spans(n: int, c: int) -> list[tuple[int, tuple[int, int]]]:
    return [(ci, (ci * c, min(ci * c + c, n))) for ci in range(-(-n // c))]


def missing_chunks(store, codes: np.ndarray | None = None) -> list[Damage]:
    """Tap chunks holding an ok row whose file is absent (zarr would read them as the fill value,
    all zeros): one ``stat`` per such chunk, no read. A chunk of error rows only is never written
    (an error row costs no map bytes). Only format/2 stores write every chunk of ok rows."""
    if store.info.get("format") != STORE_FORMAT:
        return []
    n, c = len(store), store.chunk_rows
    codes = store.status_codes if codes is None else codes
    has_ok = np.add.reduceat(codes == OK, np.arange(0, n, c)) > 0 if n else np.zeros(0, bool)
    damage = []
    for name in store.outputs:
        if store.sharded:  # an inner chunk of ok rows must have an entry in its shard's index
            per, shard, stored = store.chunks_per_shard, -1, []
            for ci in map(int, np.flatnonzero(has_ok)):
                if ci // per != shard:  # one index read per shard
                    shard = ci // per
                    stored = store._shards.stored(name, shard)
                if not stored[ci % per]:
                    damage.append(Damage(name, ci, (ci * c, min(ci * c + c, n)), "missing chunk"))
            continue
        if store._io is not None:  # object storage: one listing per array instead of a HEAD per chunk
            present = set(store._io.list_chunks(name, store._group[name].ndim))
            damage += [Damage(name, int(ci), (int(ci) * c, min(int(ci) * c + c, n)), "missing chunk")
                       for ci in np.flatnonzero(has_ok) if int(ci) not in present]
            continue
        folder, tail = os.fspath(store.path / name / "c"), "/0" * (store._group[name].ndim - 1)
        for ci in np.flatnonzero(has_ok):
            try:
                regular = stat.S_ISREG(os.stat(f"{folder}/{ci}{tail}", follow_symlinks=False).st_mode)
            except (FileNotFoundError, NotADirectoryError):
                regular = False
            if not regular:
                damage.append(Damage(name, int(ci), (int(ci) * c, min(int(ci) * c + c, n)), "missing chunk"))
    return damage


def _present(store, name: str, ndim: int) -> list[int]:
    """Chunk indices along ``image`` whose chunk file exists (one listing of ``name/c``)."""
    if store._io is not None:
        return store._io.list_chunks(name, ndim)
    try:
        with os.scandir(store.path / name / "c") as it:
            found = sorted(int(e.name) for e in it if e.name.isdigit())
    except FileNotFoundError:
        return []
    if ndim == 1:
        return found
    tail = "/0" * (ndim - 1)
    folder = os.fspath(store.path / name / "c")
    return [ci for ci in found if os.path.lexists(f"{folder}/{ci}{tail}")]


def _check_body(store, name: str, data: bytes, where: str) -> tuple[str | None, bytes | None]:
    """``(reason or None, body)`` of one encoded chunk ``data`` (body, then its CRC-32C): its
    CRC-32C compared, a zstd chunk's declared size (else :class:`UnsafeStoreError` naming ``where``:
    numcodecs would allocate what a hostile header says) and an uncompressed chunk's length checked."""
    import google_crc32c

    _, zstd_size = store.limits[name]
    body, crc = data[:-4], data[-4:]
    if len(data) < 4 or np.uint32(google_crc32c.value(body)).tobytes() != crc:
        return "checksum mismatch", None
    check_zstd(where, body, zstd_size)
    fixed = store.fixed_chunk_bytes(name)
    if fixed is not None and len(body) != fixed:
        return f"unreadable ({len(body)} bytes, a chunk is {fixed})", None
    return None, body


def _check_shard(store, name: str, shard: int, ndim: int) -> tuple[list[Damage], int]:
    """Damage per inner chunk of one shard object, and how many inner chunks were checked."""
    n, c = len(store), store.chunk_rows
    per = store.chunks_per_shard
    first = shard * per

    def rows(ci: int) -> tuple[int, int]:
        return ci * c, min(ci * c + c, n)

    key = chunk_key(name, shard, ndim)
    blob = store._read_object(key, name)
    if blob is None:
        return [], 0
    try:
        entries = read_index(blob, per, len(blob), store.limits[name][0])
    except ShardIndexError as e:
        last = min(first + per, -(-n // c))
        return [Damage(name, ci, rows(ci), f"shard index unreadable: {e}") for ci in range(first, last)], 1
    damage, checked = [], 0
    for i, entry in enumerate(entries):
        if entry is None or rows(first + i)[0] >= n:
            continue
        reason, _ = _check_body(store, name, bytes(inner_chunk(blob, entry)), f"{store.path}/{key} inner chunk {i}")
        checked += 1
        if reason:
            damage.append(Damage(name, first + i, rows(first + i), reason))
    return damage, checked


def _check(store, name: str, ci: int, ndim: int) -> tuple[str | None, bytes | None]:
    """``(reason or None, the chunk's bytes without its checksum)``: the file read confined and
    bounded, then :func:`_check_body`. No decoding: reading a million small chunks through zarr
    took a millisecond each."""
    key = chunk_key(name, ci, ndim)
    data = store._read_object(key, name)
    if data is None:
        return None, None
    return _check_body(store, name, data, f"{store.path}/{key}")


def scan(store) -> tuple[list[Damage], int, list[str]]:
    """``(damage, chunks checked, notes)`` for ``store`` (a :class:`~.core.FeatureStore`): every
    chunk file that exists, checked by :func:`_check`; then missing tap chunks of ok rows."""
    group, n = store._group, len(store)
    codes = np.zeros(n, np.uint8)  # a missing or damaged status chunk counts as pending
    damage: list[Damage] = []
    names = ["status", *(a for a in (*FIXED_ARRAYS, "errors") if a in group), *store.outputs]
    checked = 0
    for name in names:
        arr = group[name]
        c = arr.chunks[0]
        if store.sharded and name in store.info["outputs"]:
            for shard in _present(store, name, arr.ndim):
                found, k = _check_shard(store, name, shard, arr.ndim)
                damage += found
                checked += k
            continue
        for ci in _present(store, name, arr.ndim):
            rows = (ci * c, min(ci * c + c, n))
            if rows[0] >= n:
                continue
            reason, body = _check(store, name, ci, arr.ndim)
            checked += 1
            if reason:
                damage.append(Damage(name, ci, rows, reason))
            elif name == "status" and body is not None:
                codes[rows[0]:rows[1]] = np.frombuffer(body, np.uint8)[:rows[1] - rows[0]]
    # format/1 stores skipped all-zero chunks, so only format/2 guarantees an ok row's chunk files
    seen = {(d.array, d.chunk) for d in damage}
    damage += [d for d in missing_chunks(store, codes) if (d.array, d.chunk) not in seen]
    order = {a: i for i, a in enumerate(names)}
    damage.sort(key=lambda d: (order[d.array], d.chunk))
    notes = [f"{d.array} rows {d.rows[0]}-{d.rows[1] - 1} cannot be redone (fixed at creation): re-create the store"
             for d in damage if d.array in FIXED_ARRAYS]
    return damage, checked, notes
