"""Making a new store: its attributes from the run's settings (:func:`new_info`), then its arrays,
built where no reader can see them half made: a temporary sibling folder renamed into place
(:func:`create_local`), or memory uploaded root last under a lease (:func:`create_remote`)."""

from __future__ import annotations

import datetime as _dt
import json
import os
import shutil
import uuid
from pathlib import Path

from ... import __version__
from ...errors import FeaturemapsError, StoreError
from ..names import unsafe_name_reason
from .format import COMPRESSIONS, DTYPES, LOCK_NAME, STORE_FORMAT
from .io import confined_store
from .layout import write_layout
from .lock import TMP_MARK, StoreLock, clean_stale_temps
from .remote import Lease, RemoteIO
from .sizing import check_batch_memory, chunk_rows_for, per_image_bytes, row_chunk_for, shard_rows


_ROOT_META_LIMIT = 16 << 20  # bytes of a folder's zarr.json read to tell whether it is a store's root


def new_info(*, paths: list[str], metadata: dict, shapes: dict[str, tuple[int, ...]], batch_size: int,
             dtype: str, compression: str, model_path, model_sha256: str | None, check_memory: bool,
             shard_rows_asked) -> dict:
    """The attributes (``zarr.json``) of a new store, after refusing settings it cannot hold."""
    if dtype not in DTYPES:
        raise StoreError(f"unknown dtype {dtype!r}; use fp32 or fp16")
    if compression not in COMPRESSIONS:
        raise StoreError(f"unknown compression {compression!r}; use {' or '.join(COMPRESSIONS)}")
    for name in shapes:
        reason = unsafe_name_reason(name)
        if reason:
            raise StoreError(f"cannot store output {reason}; re-export the model with featuremaps export")
    n, b = len(paths), int(batch_size)
    if b < 1:
        raise StoreError("batch size must be >= 1")
    rows = max(1, min(b, n))
    if check_memory:
        check_batch_memory(rows, per_image_bytes(metadata, shapes))

    info = {"format": STORE_FORMAT, "n": n, "batch_size": rows, "requested_batch_size": b,
            "chunk_rows": chunk_rows_for(n, rows), "dtype": dtype, "compression": compression,
            "checksum": "crc32c", "path_encoding": "path_bytes: base64 of os.fsencode(path)",
            "outputs": {k: list(v) for k, v in shapes.items()}, "model": metadata,
            "model_path": str(model_path) if model_path else None, "model_sha256": model_sha256,
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "featuremaps": __version__}
    info["row_chunk"] = row_chunk_for(info["chunk_rows"], n)
    info["shard_rows"] = shard_rows(shard_rows_asked, n, rows, info["chunk_rows"], shapes, dtype)
    return info


def create_remote(io: RemoteIO, info: dict, paths: list[str]):
    """``(group, lease)`` of a new store at ``io``'s URL: built in memory, uploaded root last."""
    import zarr

    lease = Lease.acquire(io)
    try:
        try:
            if io.exists("zarr.json"):
                raise StoreError(f"{io.url} already exists; add --resume to complete it, or choose a new -o path")
            memory = zarr.storage.MemoryStore()
            write_layout(zarr.open_group(memory, mode="w-", zarr_format=3), info, paths)
            io.upload_layout(memory)
            return zarr.open_group(io.zarr_store(read_only=False), mode="r+", zarr_format=3), lease
        except FeaturemapsError:
            raise
        except Exception as e:  # noqa: BLE001 - network, permissions, quota: one line
            raise io.error("creating the store", e) from None
    except BaseException:
        lease.release()
        raise


def store_around(path: Path) -> Path | None:
    """The featuremaps store that ``path`` would sit inside (a folder above it whose ``zarr.json``
    names the store format, its lock file or not: a copied store may lack it), or None."""
    for parent in Path(os.path.abspath(path)).parents:
        if (parent / LOCK_NAME).is_file() or _names_our_format(parent / "zarr.json"):
            return parent
    return None


def _names_our_format(meta: Path) -> bool:
    try:
        with open(meta, "rb") as f:
            attrs = json.loads(f.read(_ROOT_META_LIMIT)).get("attributes")
    except (OSError, ValueError, AttributeError):  # absent, not JSON, cut by the limit, not an object
        return False
    ours = attrs.get("featuremaps") if isinstance(attrs, dict) else None
    return isinstance(ours, dict) and str(ours.get("format", "")).startswith("featuremaps-store/")


def create_local(path: Path, info: dict, paths: list[str]):
    """``(group, lock)`` of a new store at ``path``: built in a temporary sibling folder, locked,
    then renamed into place; a failure leaves nothing behind."""
    import zarr

    around = store_around(path)
    if around is not None:  # its files would be counted, listed and walked as the outer store's
        raise StoreError(f"{path} is inside the store {around}; choose an -o path outside any store")
    path.parent.mkdir(parents=True, exist_ok=True)
    clean_stale_temps(path)
    tmp = path.parent / f".{path.name}{TMP_MARK}{os.getpid()}-{uuid.uuid4().hex[:8]}"
    lock = None
    try:
        tmp.mkdir()
        write_layout(zarr.open_group(confined_store(tmp, read_only=False), mode="w-", zarr_format=3), info, paths)
        lock = StoreLock.acquire(tmp)
        if path.exists():
            raise StoreError(f"{path} already exists; add --resume to complete it, or choose a new -o path")
        os.rename(tmp, path)
    except BaseException as e:
        if lock is not None:
            lock.release()
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(e, OSError):
            raise StoreError(f"creating {path} failed ({e.strerror or e}); nothing was left behind: "
                             "fix that and re-run") from None
        raise
    return zarr.open_group(confined_store(path, read_only=False), mode="r+", zarr_format=3), lock
