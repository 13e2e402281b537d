"""Chunk-by-chunk check of a feature store: every chunk's CRC-32C, and missing tap chunks.

Kept apart from :mod:`.store` because it reads the store in its own order (one chunk at a
time, so one bad chunk does not hide the others) and knows zarr's chunk-key layout.
"""

from __future__ import annotations

import os

import numpy as np

from .store_format import FIXED_ARRAYS, OK, STORE_FORMAT, Damage
from .store_io import UnsafeStoreError


def chunk_file(store, name: str, ci: int, ndim: int):
    """The file of chunk ``ci`` along ``image`` (zarr v3 default keys: ``c/i/0/0/0``)."""
    return store.path / name / "c" / "/".join([str(ci)] + ["0"] * (ndim - 1))


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
        folder, tail = os.fspath(store.path / name / "c"), "/0" * (store._group[name].ndim - 1)
        for ci in np.flatnonzero(has_ok):
            try:
                os.stat(f"{folder}/{ci}{tail}", follow_symlinks=False)
            except FileNotFoundError:
                damage.append(Damage(name, int(ci), (int(ci) * c, min(int(ci) * c + c, n)), "missing chunk"))
    return damage


def _read(arr, rows: tuple[int, int]) -> str | None:
    try:
        np.asarray(arr[rows[0]:rows[1]])
        return None
    except UnsafeStoreError:
        raise
    except ValueError as e:  # zarr: "Stored and computed checksum do not match", or a short chunk
        return "checksum mismatch" if "checksum" in str(e) else f"unreadable ({e})"


def scan(store) -> tuple[list[Damage], int, list[str]]:
    """``(damage, chunks checked, notes)`` for ``store`` (a :class:`~.store.FeatureStore`)."""
    group, n = store._group, len(store)
    codes = np.zeros(n, np.uint8)
    damage: list[Damage] = []
    status = group["status"]
    checked = 0
    for ci, rows in _spans(n, status.chunks[0]):  # status first: a damaged status chunk counts as pending
        reason = _read(status, rows)
        checked += 1
        if reason:
            damage.append(Damage("status", ci, rows, reason))
        else:
            codes[rows[0]:rows[1]] = status[rows[0]:rows[1]]
    names = [a for a in (*FIXED_ARRAYS, "errors") if a in group] + store.outputs
    # format/1 stores skipped all-zero chunks, so only format/2 guarantees a done batch's files
    missing = missing_chunks(store, codes)
    damage += missing
    skip = {(d.array, d.chunk) for d in missing}
    for name in names:
        arr = group[name]
        for ci, rows in _spans(n, arr.chunks[0]):
            if (name, ci) in skip:
                continue
            reason = _read(arr, rows)
            checked += 1
            if reason:
                damage.append(Damage(name, ci, rows, reason))
    order = {a: i for i, a in enumerate(["status", *names])}
    damage.sort(key=lambda d: (order[d.array], d.chunk))
    notes = [f"{d.array} rows {d.rows[0]}-{d.rows[1] - 1} cannot be redone (fixed at creation): re-create the store"
             for d in damage if d.array in FIXED_ARRAYS]
    return damage, checked, notes
