"""The bulk feature store: a Zarr v3 directory with one array per tap, indexed like the input list.

Layout (``OUT.zarr/``), every array with ``dimension_names``::

    zarr.json        group attributes["featuremaps"]: store format, the exported model's metadata,
                     model path and SHA-256, batch size, chunk rows, dtype, compression, output shapes
    paths            (image,) str     input paths for display (bytes that are not UTF-8 as \\xNN)
    path_bytes       (image,) str     base64 of each path's exact bytes (``os.fsencode``): lossless
    status           (image,) uint8   0 pending, 1 ok, 2 error; CF ``flag_values``/``flag_meanings``
    status/featuremaps.lock           the writer's advisory lock (fcntl.flock) holding its pid
    errors           (image,) str     the reason for each error row ("" otherwise)
    features.17      (image, features.17.channel, features.17.y, features.17.x)  fp32 or fp16
                     (reduced taps: (image, T.channel) or pooled (image, T.channel, T.y, T.x))

Every chunk carries a CRC-32C checksum (Zarr v3's ``crc32c`` codec), so a flipped byte is
found when read (:meth:`FeatureStore.verify`). Per-row arrays are chunked along ``image`` by
``chunk_rows`` rows, a divisor of the batch size chosen so that the last, partial chunk (zarr
stores it padded to full size) wastes at most 5% of the store; a batch owns whole chunks.
A batch is *done* when its status rows say so; status is written last, after every tap chunk
and the error rows. Zarr's LocalStore writes each chunk to a temporary file and renames it into
place, so a kill -9 leaves every chunk old or new, never torn: a batch with pending rows is
simply redone, and the rewrite yields the same bytes.

A store is created in a temporary sibling folder and renamed into place, so a crash or a full
disk during creation leaves nothing under the requested name. One writer at a time: the
writer holds ``status/featuremaps.lock`` (non-blocking ``flock``); a second one is refused with the
first one's pid, and only the lock holder removes temporary chunk files.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as _dt
import errno
import functools
import json
import logging
import math
import os
import shutil
import stat
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..contracts import Tap
from ..errors import FeaturemapsError, StoreError
from .chunk_writer import ChunkWriter
from .names import unsafe_name_reason
from .store_format import ERROR, FIXED_ARRAYS, OK, PENDING, STORE_FORMAT, Damage  # noqa: F401 - re-exported
from .store_io import (UnsafeStoreError, check_tree, confined_store, open_folder, read_key, read_tail, tree_bytes,
                       unsafe)
from .store_remote import RESUME, Lease, RemoteIO, is_url, local_path
from .shard_format import index_nbytes, shard_rows_for, shard_spec
from .store_shards import ShardBuffer
from .store_verify import chunk_file, scan
from .. import __version__

log = logging.getLogger(__name__)

READABLE_FORMATS = ("featuremaps-store/1", STORE_FORMAT)
ATTR_KEY = "featuremaps"
STATUS_NAMES = ("pending", "ok", "error")
DTYPES = {"fp32": np.float32, "fp16": np.float16}
COMPRESSIONS = ("zstd", "none")
# Inside the status array's folder: zarr and xarray list the store's top level for members and
# warn about any other file there; nothing lists an array's folder outside ``c/``.
LOCK_NAME = "status/featuremaps.lock"
ROW_ARRAYS = ("paths", "status", "errors")
MAX_PADDING = 0.05  # share of the rows the padded last chunk may add
ROW_CHUNK = 16384  # rows per chunk of paths/status/errors (about: a multiple of chunk_rows); see row_chunk_for
MAX_ROWS = 2**32
MAX_SIDE = 4096  # preprocessing size, as for model files (engine.validate)
MAX_IMAGE_BYTES = 2**31  # stored bytes of one image, all outputs
MAX_PATH_ROW_BYTES = 20 * 1024  # a stored path (PATH_MAX bytes, escaped) or its base64
MAX_ERROR_CHARS = 8192  # a stored error message is cut here
IN_FLIGHT_BATCHES = 5  # decoded-ahead (2) + in the model (1) + waiting for / in the writer (2)
_TMP_MARK = ".creating-"


@dataclass(frozen=True)
class ErrorRow:
    index: int
    path: str
    message: str


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


def _is_count(x, lo: int = 0) -> bool:
    return isinstance(x, int) and not isinstance(x, bool) and x >= lo


def attrs_problem(info: dict) -> str | None:
    """What is wrong with a store's attributes (``zarr.json``), or None: the counts, dtype and
    compression, and the model metadata every reader relies on (taps, preprocessing size,
    reductions, weights)."""
    for key, lo in (("n", 0), ("batch_size", 1), ("chunk_rows", 1), ("row_chunk", 1)):
        if key in info and not _is_count(info[key], lo):
            return f"{key} {info[key]!r} is not an integer >= {lo}"
    problem = _counts_problem(info)
    if problem:
        return problem
    if info.get("dtype") not in DTYPES:
        return f"dtype {info.get('dtype')!r} is not one of {', '.join(DTYPES)}"
    if "compression" in info and info["compression"] not in COMPRESSIONS:
        return f"compression {info['compression']!r} is not one of {', '.join(COMPRESSIONS)}"
    outputs = info["outputs"]
    if not all(isinstance(v, list) and all(_is_count(d, 1) for d in v) for v in outputs.values()):
        return "an output shape is not a list of positive integers"
    model = info.get("model")
    if not isinstance(model, dict):
        return "the model metadata is missing" if model is None else "the model metadata is not an object"
    taps = model.get("taps", [])  # a store made by the library may carry no model metadata ({})
    if not isinstance(taps, list) or not all(isinstance(t, dict) and isinstance(t.get("name"), str)
                                             and isinstance(t.get("shape"), list) for t in taps):
        return "the model's taps are not a list of {name, shape}"
    pre = model.get("preprocessing", {"size": [1, 1]})
    size = pre.get("size") if isinstance(pre, dict) else None
    if not isinstance(size, list) or len(size) != 2 or not all(_is_count(d, 1) and d <= MAX_SIDE for d in size):
        return f"the model's preprocessing size is not [H, W] within 1..{MAX_SIDE}"
    for t in taps:
        if t["name"] in outputs and list(t["shape"]) != outputs[t["name"]]:
            return f"output {t['name']!r} has shape {outputs[t['name']]} but the model's tap says {t['shape']}"
    per_image = np.dtype(DTYPES[info["dtype"]]).itemsize * sum(math.prod(v) for v in outputs.values())
    if per_image > MAX_IMAGE_BYTES:
        return f"one image's outputs would be {_size(per_image)}, more than {_size(MAX_IMAGE_BYTES)}"
    reductions = model.get("reductions")
    if reductions is not None and not (isinstance(reductions, dict)
                                       and all(isinstance(v, dict) for v in reductions.values())):
        return "the model's reductions are not an object of {tap: {op, k, spec}}"
    if model.get("weights") is not None and not isinstance(model["weights"], dict):
        return "the model's weights entry is not an object"
    return None


def _counts_problem(info: dict) -> str | None:
    """Row count, batch size and chunk rows within bounds and consistent with each other."""
    n, batch, rows = info.get("n", 0), info.get("batch_size", 1), info.get("chunk_rows", info.get("batch_size", 1))
    if n > MAX_ROWS:
        return f"n {n} is more rows than a store can hold ({MAX_ROWS})"
    if batch > max(1, n) or batch % rows:
        return f"batch_size {batch} and chunk_rows {rows} do not fit {n} rows"
    row_chunk = info.get("row_chunk", rows)
    if row_chunk % rows or row_chunk > max(ROW_CHUNK, rows):
        return f"row_chunk {row_chunk} is not a multiple of chunk_rows {rows} up to {ROW_CHUNK}"
    return None


def output_shapes(metadata: dict, session=None) -> dict[str, tuple[int, ...]]:
    """Per-image shape of every model output, from the export metadata (reduced taps carry
    their reduced shape there); outputs that are not taps (``logits``) from the session."""
    taps = {d["name"]: tuple(d["shape"]) for d in metadata["taps"]}
    shapes = {}
    for name in metadata["outputs"]:
        if name in taps:
            shapes[name] = taps[name]
        elif session is not None:
            out = next(o for o in session.get_outputs() if o.name == name)
            shapes[name] = tuple(int(d) for d in out.shape[1:])
        else:
            raise StoreError(f"no shape for output {name!r} in the model metadata")
    return shapes


# ---------------------------------------------------------------- sizing


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


def dimension_names(name: str, shape: tuple[int, ...]) -> tuple[str, ...]:
    """``image`` plus the tap's own axes (``features.17.channel``, ``.y``, ``.x``): per tap,
    because xarray needs one size per dimension name and taps differ in channels and size."""
    axes = {1: ("channel",), 3: ("channel", "y", "x")}.get(len(shape), tuple(f"dim{i}" for i in range(len(shape))))
    return ("image",) + tuple(f"{name}.{a}" for a in axes)


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
        raise StoreError(f"--batch-size {batch_rows} needs about {_size(need)} ({IN_FLIGHT_BATCHES} batches of "
                         f"{per_image_bytes / 1e6:.2f} MB per image in flight) but {_size(available)} is available; "
                         f"use --batch-size {fits} or less")


def _size(n: int) -> str:
    return f"{n / 2**30:.1f} GiB" if n >= 2**30 else f"{n / 2**20:.0f} MiB"


def per_image_bytes(metadata: dict, shapes: dict[str, tuple[int, ...]]) -> int:
    """fp32 bytes one image occupies in flight: its model input plus every output."""
    size = (metadata.get("preprocessing") or {}).get("size") or [224, 224]
    return 4 * (3 * int(size[0]) * int(size[1]) + sum(math.prod(s) for s in shapes.values()))


# ---------------------------------------------------------------- paths


def encode_path(p) -> tuple[str, str]:
    """``(display, base64)`` of a path: the exact bytes (``os.fsencode``) in base64, and a
    display string with undecodable bytes as ``\\xNN`` (zarr strings must be valid UTF-8)."""
    raw = os.fsencode(p)
    return raw.decode("utf-8", "backslashreplace"), base64.b64encode(raw).decode("ascii")


def displayable(text: str) -> str:
    """``text`` as valid UTF-8 for a zarr string: a path's undecodable bytes (surrogate-escaped
    by ``os.fsdecode``) become ``\\xNN``."""
    return os.fsencode(text).decode("utf-8", "backslashreplace") if isinstance(text, str) else str(text)


def decode_path(b64: str) -> str:
    """The path as Python's ``os`` functions take it (``os.fsdecode``: surrogate-escaped)."""
    return os.fsdecode(base64.b64decode(b64))


# ---------------------------------------------------------------- lock


class StoreLock:
    """An advisory, non-blocking ``flock`` on ``STORE/status/featuremaps.lock``; the file holds the pid."""

    def __init__(self, fd: int, path: Path):
        self._fd: int | None = fd
        self.path = path

    @classmethod
    def acquire(cls, store_dir: Path) -> "StoreLock":
        import fcntl

        lock_path = Path(store_dir) / LOCK_NAME
        try:
            fd = _open_lock_file(Path(store_dir))
        except UnsafeStoreError:
            raise
        except OSError as e:
            if e.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
                raise StoreError(f"{store_dir} is read-only ({e.strerror or e}); writing to it (--resume, verify "
                                 "--repair) needs write permission: make it writable, or copy it somewhere "
                                 "writable and use the copy") from None
            raise StoreError(f"cannot lock {store_dir} ({e.strerror or e}: its status array is missing); "
                             "a damaged store must be re-created") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            if holder == str(os.getpid()):
                raise StoreError(f"{store_dir} is already open for writing in this process; close() that "
                                 "FeatureStore (or use it as a context manager) first") from None
            raise StoreError(f"{store_dir} is being written by another process (pid {holder}); wait for it to "
                             "finish or stop it, then re-run with --resume") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        return cls(fd, lock_path)

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor releases the flock
            self._fd = None


def _open_lock_file(store_dir: Path) -> int:
    """The lock file's descriptor, opened without following a link (the store may come from someone
    else: a lock file linked to ``~/.bashrc`` would be truncated), and only if it is a regular file
    of this user."""
    folder, name = LOCK_NAME.split("/")
    dfd = open_folder(store_dir, [folder])
    try:
        fd = os.open(name, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, 0o644, dir_fd=dfd)
    except OSError as e:
        if e.errno != errno.ELOOP:
            raise
        raise unsafe(store_dir, LOCK_NAME, "a symbolic link (the store's lock file)") from None
    finally:
        os.close(dfd)
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid():
        os.close(fd)
        what = "owned by another user (the store's lock file)" if stat.S_ISREG(st.st_mode) else \
            "not a regular file (the store's lock file)"
        raise unsafe(store_dir, LOCK_NAME, what)
    return fd


def _clean_stale_temps(path: Path) -> None:
    """Remove temporary creation folders of ``path`` whose creator process is gone."""
    for tmp in path.parent.glob(f".{path.name}{_TMP_MARK}*"):
        try:
            pid = int(tmp.name[len(f".{path.name}{_TMP_MARK}"):].split("-")[0])
            os.kill(pid, 0)
        except ProcessLookupError:
            shutil.rmtree(tmp, ignore_errors=True)
        except (ValueError, PermissionError):
            continue  # not ours, or alive under another user


# ---------------------------------------------------------------- the store


class StoredPaths(Sequence):
    """A store's input paths, read lazily: ``paths[i]`` decodes the one chunk holding row ``i``
    (the last two chunks are kept, so a walk in order reads each chunk once); iterating or
    comparing reads them all once. A store of millions of rows need not decode millions of
    strings to show one row."""

    def __init__(self, store: "FeatureStore"):
        self._store = store
        self._lossless = "path_bytes" in store._group
        self._arr = store._group["path_bytes" if self._lossless else "paths"]
        self._rows = self._arr.chunks[0]
        self._chunks: dict[int, list[str]] = {}
        self._all: list[str] | None = None

    def __len__(self) -> int:
        return len(self._store)

    def _decode(self, values) -> list[str]:
        return [decode_path(str(s)) for s in values] if self._lossless else [str(p) for p in values]

    def _read(self, sel):
        try:
            return self._arr[sel]
        except FeaturemapsError:
            raise
        except Exception as e:  # noqa: BLE001 - checksum or decode failure
            raise StoreError(f"{self._store.path}: the stored paths are damaged ({type(e).__name__}); "
                             "re-create the store") from None

    def _list(self) -> list[str]:
        if self._all is None:
            self._all = self._decode(self._read(slice(None)))
        return self._all

    def __getitem__(self, i):
        if self._all is not None:
            return self._all[i]
        if isinstance(i, slice):  # only the chunks holding the slice
            start, stop, step = i.indices(len(self))
            return self._decode(self._read(slice(start, max(start, stop))))[::step] if step > 0 else self._list()[i]
        i = range(len(self))[i]  # IndexError, negative indices
        ci = i // self._rows
        if ci not in self._chunks:
            if len(self._chunks) >= 2:
                self._chunks.pop(next(iter(self._chunks)))
            start = ci * self._rows
            self._chunks[ci] = self._decode(self._read(slice(start, min(start + self._rows, len(self)))))
        return self._chunks[ci][i - ci * self._rows]

    def __iter__(self):
        return iter(self._list())

    def __eq__(self, other) -> bool:
        return isinstance(other, (list, tuple, Sequence)) and not isinstance(other, str) and \
            len(other) == len(self) and self._list() == list(other)

    __hash__ = None

    def __repr__(self) -> str:
        return f"StoredPaths({len(self)} paths of {str(self._store.path)!r})"



class FeatureStore:
    """A bulk feature store, read or written by row (image) index.

    >>> import featuremaps
    >>> st = featuremaps.open_store("out.zarr")              # doctest: +SKIP
    >>> st.paths[0], st.status[0], st["features.17"][0].shape  # doctest: +SKIP
    ('/data/a.jpg', 'ok', (512, 28, 28))
    """

    def __init__(self, group, path: Path | str, lock: StoreLock | Lease | None = None, io: RemoteIO | None = None):
        self._group = group
        self.path = path  # a Path, or the printable URL of a store on object storage
        self._lock = lock
        self._io = io
        try:
            attrs = dict(group.attrs)
        except FeaturemapsError:
            raise
        except Exception as e:  # noqa: BLE001 - any decode failure of zarr.json is damage
            raise StoreError(f"{path}/zarr.json is damaged ({type(e).__name__}); the store cannot be read, "
                             "re-create it with `featuremaps extract`") from None
        info = attrs.get(ATTR_KEY)
        if not isinstance(info, dict) or info.get("format") not in READABLE_FORMATS:
            raise StoreError(f"{path} is not a featuremaps store (no {STORE_FORMAT} attributes); "
                             "write one with `featuremaps extract -o PATH.zarr`")
        self.info: dict = info
        self._paths: StoredPaths | None = None
        self._check_arrays()

    def _check_arrays(self) -> None:
        """Every array the attributes promise must open (a deleted or broken one is damage)."""
        outputs = self.info.get("outputs")
        if not isinstance(outputs, dict) or not isinstance(self.info.get("n"), int):
            raise StoreError(f"{self.path}/zarr.json is damaged (no outputs or row count); re-create the store")
        problem = attrs_problem(self.info)
        if problem:
            raise StoreError(f"{self.path}/zarr.json is damaged ({problem}); the store cannot be used, "
                             "re-create it with `featuremaps extract`")
        for name, spec in array_specs(self.info).items():
            try:
                problem = _layout_problem(self._group[name], spec)
            except FeaturemapsError:
                raise
            except Exception as e:  # noqa: BLE001 - KeyError, JSON errors, ... are all damage here
                raise StoreError(f"{self.path}: array {name!r} is missing or damaged ({type(e).__name__}); "
                                 "the store cannot be used, re-create it with `featuremaps extract`") from None
            if problem:
                raise StoreError(f"{self.path}: array {name!r} does not match the store's attributes ({problem}); "
                                 "the store may be hostile or damaged, re-create it with `featuremaps extract`")
        self._check_chunk_memory()
        self.limits = chunk_limits(self.info)
        store = getattr(self._group, "store", None)
        if hasattr(store, "limits"):
            store.limits.update(self.limits)
            if self.sharded:  # whole shard objects, read by range (index, then inner chunks)
                store.sharded.update({name: (self.chunks_per_shard, self.object_limit(name))
                                      for name in self.info["outputs"]})

    def fixed_chunk_bytes(self, name: str) -> int | None:
        """Encoded bytes (checksum excluded) every chunk of array ``name`` has, or None where that
        varies (strings, zstd)."""
        if name == "status":
            return self._group["status"].chunks[0]
        if name in self.info["outputs"] and self.info.get("compression") != "zstd":
            return self.limits[name][0] - 4
        return None

    def _check_chunk_memory(self) -> None:
        """One chunk of every output must fit in memory: reading one row reads its whole chunk."""
        itemsize = np.dtype(DTYPES[self.dtype]).itemsize
        largest = max((self.chunk_rows * math.prod(s) * itemsize for s in self.info["outputs"].values()), default=0)
        if largest > available_memory() // 2:
            raise StoreError(f"{self.path}: one chunk of its outputs is {_size(largest)}, more than half the memory "
                             f"available ({_size(available_memory())}); read it on a larger machine, or re-create "
                             "it with a smaller --batch-size")

    # ------------------------------------------------------------ create / open

    @classmethod
    def create(cls, path: str | Path, *, paths: list[str], metadata: dict, shapes: dict[str, tuple[int, ...]],
               batch_size: int, dtype: str = "fp32", compression: str = "zstd",
               model_path: str | Path | None = None, model_sha256: str | None = None,
               check_memory: bool = True, storage_options: dict | None = None,
               shard_rows: int | str | None = None) -> "FeatureStore":
        """Create a new store for ``paths`` (every row pending), locked by this process until
        :meth:`close`. An existing path is a :class:`StoreError`: a store is never overwritten.
        Built in a temporary sibling folder and renamed into place; at a URL (``s3://...``), built in
        memory, uploaded root last, under a lease (:mod:`.store_remote`). ``shard_rows``: None (one
        object per chunk), ``"auto"`` (:func:`.shard_format.shard_rows_for`) or a multiple of the
        batch size: tap arrays sharded (:mod:`.store_shards`)."""
        io = RemoteIO(path, storage_options) if is_url(path) else None
        path = Path(local_path(path)) if io is None else io.url
        if io is None and path.exists():
            raise StoreError(f"{path} already exists; add --resume to complete it, or choose a new -o path")
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
        info["shard_rows"] = _shard_rows(shard_rows, n, rows, info["chunk_rows"], shapes, dtype)
        if io is not None:
            return cls._create_remote(io, info, paths)
        return cls._create_atomically(path, info, paths)

    @classmethod
    def _create_remote(cls, io: RemoteIO, info: dict, paths: list[str]) -> "FeatureStore":
        import zarr

        lease = Lease.acquire(io)
        try:
            try:
                if io.exists("zarr.json"):
                    raise StoreError(f"{io.url} already exists; add --resume to complete it, or choose a new -o path")
                memory = zarr.storage.MemoryStore()
                _write_layout(zarr.open_group(memory, mode="w-", zarr_format=3), info, paths)
                io.upload_layout(memory)
                group = zarr.open_group(io.zarr_store(read_only=False), mode="r+", zarr_format=3)
            except FeaturemapsError:
                raise
            except Exception as e:  # noqa: BLE001 - network, permissions, quota: one line
                raise io.error("creating the store", e) from None
            return cls(group, io.url, lease, io)
        except BaseException:
            lease.release()
            raise

    @classmethod
    def _create_atomically(cls, path: Path, info: dict, paths: list[str]) -> "FeatureStore":
        import zarr

        path.parent.mkdir(parents=True, exist_ok=True)
        _clean_stale_temps(path)
        tmp = path.parent / f".{path.name}{_TMP_MARK}{os.getpid()}-{uuid.uuid4().hex[:8]}"
        lock = None
        try:
            tmp.mkdir()
            _write_layout(zarr.open_group(confined_store(tmp, read_only=False), mode="w-", zarr_format=3), info,
                          paths)
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
        return cls(zarr.open_group(confined_store(path, read_only=False), mode="r+", zarr_format=3), path, lock)

    @classmethod
    def open(cls, path: str | Path, mode: str = "r", *, lock: bool = False,
             storage_options: dict | None = None) -> "FeatureStore":
        """Open a store (a local path, or an ``s3://``/``gs://``/fsspec URL). ``lock=True`` (a writer
        that may clean up: ``--resume``, ``verify --repair``) takes the advisory lock (the lease, on
        object storage) first and refuses when another process holds it; workers of the lock holder
        (Ray actors) open with ``mode="r+"`` and no lock."""
        import zarr

        if is_url(path):
            return cls._open_remote(RemoteIO(path, storage_options), mode, lock)
        path = Path(local_path(path))
        if not (path / "zarr.json").is_file():
            raise StoreError(f"no featuremaps store at {path}; write one with `featuremaps extract -o PATH.zarr`")
        if lock:  # a writer: nothing in the tree may lead outside it, before anything is written
            check_tree(path)
        held = StoreLock.acquire(path) if lock else None
        try:
            try:
                group = zarr.open_group(confined_store(path, read_only=mode == "r"), mode=mode, zarr_format=3)
            except FeaturemapsError:
                raise
            except Exception as e:  # noqa: BLE001 - a broken zarr.json surfaces as many types
                raise StoreError(f"{path}/zarr.json is damaged ({type(e).__name__}); the store cannot be read, "
                                 "re-create it with `featuremaps extract`") from None
            return cls(group, path, held)
        except BaseException:
            if held is not None:
                held.release()
            raise

    @classmethod
    def _open_remote(cls, io: RemoteIO, mode: str, lock: bool) -> "FeatureStore":
        import zarr

        try:
            found = io.exists("zarr.json")
        except Exception as e:  # noqa: BLE001 - unreachable endpoint, no credentials
            raise io.error("opening the store", e) from None
        if not found:
            raise StoreError(f"no featuremaps store at {io.url}; write one with `featuremaps extract -o URL`")
        held = Lease.acquire(io) if lock else None
        try:
            try:
                group = zarr.open_group(io.zarr_store(read_only=mode == "r"), mode=mode, zarr_format=3)
            except FeaturemapsError:
                raise
            except Exception as e:  # noqa: BLE001
                raise StoreError(f"{io.url}/zarr.json is damaged or unreadable ({type(e).__name__}); the store "
                                 "cannot be read, re-create it with `featuremaps extract`") from None
            return cls(group, io.url, held, io)
        except BaseException:
            if held is not None:
                held.release()
            raise

    @property
    def sharded(self) -> bool:
        """Whether the tap arrays are sharded (several batches per object: :mod:`.store_shards`)."""
        return bool(self.info.get("shard_rows"))

    @property
    def chunks_per_shard(self) -> int:
        """Inner chunks in one shard object of a tap (sharded stores; 1 otherwise)."""
        return self.info["shard_rows"] // self.chunk_rows if self.sharded else 1

    @functools.cached_property
    def _shards(self) -> ShardBuffer:
        return ShardBuffer(self)

    def flush(self) -> None:
        """Write the shards being filled and commit their batches (sharded stores; else nothing).
        The pipeline calls it at the end of a run, :meth:`close` calls it too."""
        if self.sharded and "_shards" in self.__dict__:
            self._shards.flush()

    def object_limit(self, name: str) -> int:
        """The largest object array ``name`` may hold: a chunk, or for a sharded tap a whole shard."""
        limit = self.limits[name][0]
        if self.sharded and name in self.info["outputs"]:
            return self.chunks_per_shard * limit + index_nbytes(self.chunks_per_shard)
        return limit

    def _read_tail(self, key: str, n: int, name: str) -> tuple[int, bytes] | None:
        """``(size, last n bytes)`` of one object of array ``name`` (a shard's index), or None if missing."""
        if self._io is not None:
            return self._io.tail(key, n)
        return read_tail(self.path, key, n, self.object_limit(name))

    def _read_object(self, key: str, name: str) -> bytes | None:
        """The bytes of one object of array ``name`` (None if missing), bounded and confined."""
        if self._io is not None:
            return self._io.read(key, self.object_limit(name))
        return read_key(self.path, key, self.object_limit(name))

    @property
    def location(self) -> str:
        """What opens this store again (in another process or on another node): its absolute local
        path, or its URL (:attr:`path` is the printable form)."""
        return self._io.location if self._io is not None else os.path.abspath(self.path)

    @property
    def storage_options(self) -> dict | None:
        """The explicit fsspec options this store was opened with (None: the standard environment)."""
        return dict(self._io.options) if self._io is not None and self._io.options else None

    @property
    def remote(self) -> bool:
        """Whether the store lives on object storage (``path`` is then its printable URL)."""
        return self._io is not None

    def close(self) -> None:
        """Write what a sharded store still holds, then release the writer's lock (reading still works)."""
        try:
            self.flush()
        finally:
            self._release()

    def _release(self) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def __enter__(self) -> "FeatureStore":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def check_settings(self, *, batch_size: int, dtype: str, compression: str, model_sha256: str | None) -> None:
        """Refuse resuming with settings other than the store's, naming both values."""
        stored = {"--batch-size": self.info.get("requested_batch_size", self.info.get("batch_size")),
                  "--dtype": self.info.get("dtype"), "--compression": self.info.get("compression"),
                  "model SHA-256": self.info.get("model_sha256")}
        asked = {"--batch-size": batch_size, "--dtype": dtype, "--compression": compression,
                 "model SHA-256": model_sha256}
        for key, value in asked.items():
            if value is not None and stored[key] is not None and value != stored[key]:
                raise StoreError(f"{self.path} was written with {key} {stored[key]}, not {value}; resume with "
                                 f"the store's settings ({key} {stored[key]}), or choose a new -o path")

    def check_arithmetic(self, provider: str, math_mode: str, *, who: str = "this run") -> None:
        """Refuse adding maps computed in another math mode than the store records (tf32 vs strict
        fp32 differ at the 1e-4 level, bf16 or int8 more): one store, one arithmetic. A provider
        change with the same mode (cpu fp32 vs cuda --no-tf32) is allowed. Stores that record no
        mode (older versions) are not checked."""
        recorded = self.metadata.get("extraction") or {}
        mode = recorded.get("math_mode")
        if mode is None or mode == math_mode:
            return
        raise StoreError(f"{self.path} holds maps computed in {mode} ({recorded.get('provider')}), but {who} "
                         f"computes {math_mode} ({provider}); use the provider and math mode the store records "
                         "(--provider, --no-tf32, --math-mode) on every machine, or choose a new -o path")

    # ------------------------------------------------------------ reading

    def __len__(self) -> int:
        return int(self.info["n"])

    @property
    def batch_size(self) -> int:
        """Rows per batch (the requested batch size, at most the row count)."""
        return int(self.info["batch_size"])

    @property
    def chunk_rows(self) -> int:
        return int(self.info.get("chunk_rows", self.batch_size))

    @property
    def dtype(self) -> str:
        return self.info["dtype"]

    @property
    def metadata(self) -> dict:
        """The exported model's metadata (taps, preprocessing, weights, reductions, ...)."""
        return self.info["model"]

    @property
    def outputs(self) -> list[str]:
        return list(self.info["outputs"])

    @property
    def taps(self) -> tuple[Tap, ...]:
        """The stored taps; ``shape`` is the per-image stored shape (reduced where reduced)."""
        if "taps" not in self.metadata:
            raise StoreError(f"{self.path} records no model taps (zarr.json has no model metadata); it was not "
                             "written by `featuremaps extract`, so it cannot be drawn")
        try:
            return tuple(Tap.from_dict(d) for d in self.metadata["taps"])
        except (TypeError, ValueError, KeyError):
            raise StoreError(f"{self.path}/zarr.json is damaged (a model tap lacks its name, shape or counts); "
                             "re-create the store with `featuremaps extract`") from None

    @property
    def image_size(self) -> tuple[int, int]:
        """``(H, W)`` the model took its images at (the stored preprocessing size)."""
        pre = self.metadata.get("preprocessing")
        if not isinstance(pre, dict):
            raise StoreError(f"{self.path} records no model preprocessing (zarr.json has no model metadata); it "
                             "was not written by `featuremaps extract`, so it cannot be drawn")
        return tuple(pre["size"])

    @property
    def paths(self) -> "StoredPaths":
        """Input paths as ``os`` functions take them (non-UTF-8 bytes surrogate-escaped, lossless): a
        sequence that reads one chunk for ``paths[i]`` and every chunk only when iterated or compared."""
        if self._paths is None:
            self._paths = StoredPaths(self)
        return self._paths

    def counts(self) -> dict[str, int]:
        """``{"ok": .., "error": .., "pending": ..}`` from the status codes (one uint8 per row)."""
        n = np.bincount(self.status_codes, minlength=3)
        return {"pending": int(n[PENDING]), "ok": int(n[OK]), "error": int(n[ERROR])}

    def error_message(self, index: int) -> str:
        """The stored reason of row ``index`` ("" unless it is an error row); reads one chunk."""
        return str(self._group["errors"][int(index)])

    @property
    def status_codes(self) -> np.ndarray:
        """``(N,) uint8``: 0 pending, 1 ok, 2 error."""
        try:
            with self._remote_errors("reading the status"):
                return np.asarray(self._group["status"][:])
        except UnsafeStoreError:
            raise
        except ValueError:  # a status chunk fails its checksum
            raise StoreError(f"{self.path}: a status chunk is damaged; run `featuremaps verify --repair "
                             f"{self.path}` to mark its batches pending, then --resume") from None

    def _status_of(self, index: int) -> int:
        """Status code of one row (reads one status chunk, not all of them)."""
        try:
            return int(self._group["status"][index])
        except UnsafeStoreError:
            raise
        except ValueError:
            raise StoreError(f"{self.path}: a status chunk is damaged; run `featuremaps verify --repair "
                             f"{self.path}` to mark its batches pending, then --resume") from None

    @property
    def status(self) -> np.ndarray:
        """``(N,)`` of ``'pending' | 'ok' | 'error'``."""
        return np.asarray(STATUS_NAMES)[self.status_codes]

    @property
    def errors(self) -> list[ErrorRow]:
        """Every error row: index, path and the reason."""
        idx = np.flatnonzero(self.status_codes == ERROR)
        if not len(idx):
            return []
        msgs, paths = self._group["errors"][:], list(self.paths)
        return [ErrorRow(int(i), paths[i], str(msgs[i])) for i in idx]

    def __getitem__(self, tap):
        """The zarr array of one output (``'features.17'`` or a :class:`Tap`), N first."""
        name = tap.name if isinstance(tap, Tap) else str(tap)
        if name not in self.info["outputs"]:
            raise KeyError(f"no output {name!r} in this store; it has {', '.join(self.outputs)}")
        return self._group[name]

    def maps(self, index: int) -> dict[str, np.ndarray]:
        """All stored outputs of image ``index``: ``{name: (C, H, W)}`` (reduced shapes where reduced)."""
        return {name: self.read_row(name, index) for name in self.outputs}

    def read_row(self, tap, index: int) -> np.ndarray:
        """Output ``tap`` of row ``index``, checked: a chunk that fails its checksum, or a done
        row's chunk file that is missing (zarr would read it as zeros), is a :class:`StoreError`
        naming ``verify --repair`` and ``extract --resume``, never maps that were not computed."""
        name = tap.name if isinstance(tap, Tap) else str(tap)
        arr = self[name]
        ci = int(index) // self.chunk_rows
        rows = f"rows {ci * self.chunk_rows}-{min(ci * self.chunk_rows + self.chunk_rows, len(self)) - 1}"
        fix = (f"run `featuremaps verify {self.path} --repair`, then `featuremaps extract ... -o {self.path} "
               "--resume` to redo them")
        done = self._status_of(int(index)) == OK  # an error row's chunk may be absent: it holds no maps
        if done and self.info.get("format") == STORE_FORMAT and not self._has_chunk(name, ci, arr.ndim):
            raise StoreError(f"{self.path}: the {name} chunk of {rows} is missing; {fix}")
        try:
            return np.asarray(arr[int(index)])
        except UnsafeStoreError:
            raise
        except ValueError as e:  # zarr: "Stored and computed checksum do not match", or a short chunk
            why = "fails its checksum" if "checksum" in str(e) else "is unreadable"
            raise StoreError(f"{self.path}: the {name} chunk of {rows} {why}; {fix}") from None

    def _has_chunk(self, name: str, ci: int, ndim: int) -> bool:
        if self.sharded:
            per = self.chunks_per_shard
            return self._shards.stored(name, ci // per, strict=True)[ci % per]
        if self._io is not None:
            return self._io.exists("/".join([name, "c", str(ci), *(["0"] * (ndim - 1))]))
        return chunk_file(self, name, ci, ndim).is_file()

    def n_batches(self) -> int:
        return -(-len(self) // self.batch_size)

    def batch_rows(self, b: int) -> tuple[int, int]:
        start = b * self.batch_size
        return start, min(start + self.batch_size, len(self))

    def pending_batches(self) -> list[int]:
        """Batches with any pending row: written partly or not at all; a run (re)does these."""
        codes = self.status_codes
        return [b for b in range(self.n_batches()) if (codes[slice(*self.batch_rows(b))] == PENDING).any()]

    def nbytes_on_disk(self, *, check: bool = False) -> int:
        """Bytes of the store's regular files (links and FIFOs are not followed; ``check=True``
        raises :class:`UnsafeStoreError` for the first of them instead)."""
        return self.footprint(check=check)[1]

    def footprint(self, *, check: bool = False) -> tuple[int, int]:
        """``(files, bytes)`` the store holds, from one walk (one listing on object storage): what a
        copy or a bucket listing meets. ``check`` as for :meth:`nbytes_on_disk`."""
        if self._io is not None:
            return self._io.footprint()
        files, total, problem = tree_bytes(self.path)
        if check and problem is not None:
            raise problem
        return files, total

    def nbytes_maps(self) -> int:
        """Bytes of the feature maps themselves (rows x stored shape x itemsize), for overhead figures."""
        itemsize = np.dtype(DTYPES[self.dtype]).itemsize
        return len(self) * itemsize * sum(math.prod(s) for s in self.info["outputs"].values())

    # ------------------------------------------------------------ checking

    def verify(self, *, repair: bool = False) -> VerifyReport:
        """Read every chunk and check its CRC-32C; a done batch whose tap chunk is missing is
        damage too. ``repair=True`` marks the batches that hold damage pending (``--resume``
        then redoes them); call it only while holding the lock."""

        if self._io is None:
            check_tree(self.path)  # every chunk is read next: none may be a link or a FIFO
        damage, checked, notes = scan(self)
        batches = tuple(sorted({r // self.batch_size for d in damage if d.array not in FIXED_ARRAYS
                                for r in range(*d.rows)}))
        if repair and batches:
            for d in damage:  # a damaged row chunk spans batches: rewrite it whole (a partial write reads it)
                if d.array in ("status", "errors"):
                    blank = np.zeros(d.rows[1] - d.rows[0], np.uint8) if d.array == "status" else \
                        np.full(d.rows[1] - d.rows[0], "", dtype=object).astype(str)
                    self._group[d.array][d.rows[0]:d.rows[1]] = blank
            for b in batches:
                self._group["status"][slice(*self.batch_rows(b))] = np.zeros(np.subtract(*self.batch_rows(b)[::-1]),
                                                                               np.uint8)
            log.info("marked %d damaged batch(es) of %s pending", len(batches), self.path)
        return VerifyReport(tuple(damage), batches, checked, repair and bool(batches), tuple(notes))

    # ------------------------------------------------------------ writing

    def write_output(self, name: str, b: int, rows: np.ndarray | None) -> int:
        """Write output ``name``'s ``rows`` (every row of batch ``b``, the store's dtype); no commit.
        Every chunk of a written batch lands on disk, all-zero ones too, so that :meth:`verify`
        can call a missing chunk of an ok row damage. ``rows=None`` (every row of the batch is an
        error) writes nothing and removes what an earlier attempt left: an error row costs no map
        bytes. Returns the bytes written."""
        if self.sharded:
            if rows is not None and rows.dtype != DTYPES[self.dtype]:
                rows = rows.astype(DTYPES[self.dtype])
            return self._shards.write(name, b, rows, self._chunk_writer)
        if rows is None:
            self._drop_chunks(name, b)
            return 0
        start, stop = self.batch_rows(b)
        c = self.chunk_rows
        if start % c == 0 and (stop - start) % c == 0 and rows.dtype == DTYPES[self.dtype] \
                and ChunkWriter.can_write(rows):  # whole chunks: straight to their files (.chunk_writer)
            tail = len(self.info["outputs"][name])
            for k in range((stop - start) // c):
                self._chunk_writer.write(name, start // c + k, tail, rows[k * c:(k + 1) * c])
            return rows.nbytes
        self._group[name].with_config({"write_empty_chunks": True})[start:stop] = rows
        return rows.nbytes

    @functools.cached_property
    def _chunk_writer(self) -> ChunkWriter:
        if self._io is not None:
            return ChunkWriter(None, self.info.get("compression", "zstd"), put=self._io.write)
        return ChunkWriter(self.path, self.info.get("compression", "zstd"))

    def _drop_chunks(self, name: str, b: int) -> None:
        """Remove batch ``b``'s chunk files of output ``name`` (no link is followed)."""
        start, stop = self.batch_rows(b)
        tail = ["0"] * len(self.info["outputs"][name])
        for ci in range(start // self.chunk_rows, -(-stop // self.chunk_rows)):
            parts = [name, "c", str(ci), *tail]
            if self._io is not None:
                self._io.delete("/".join(parts))
                continue
            try:
                dfd = open_folder(self.path, parts[:-1])
            except FileNotFoundError:
                continue
            try:
                os.unlink(parts[-1], dir_fd=dfd)
            except FileNotFoundError:
                pass
            finally:
                os.close(dfd)

    def commit_batch(self, b: int, errors: dict[int, str], pending=()) -> None:
        """Mark batch ``b`` done: its error rows, then its status rows (ok, or error for the
        row offsets in ``errors``; row offsets in ``pending`` stay pending: their decoder died, a
        resumed run redoes the batch). Call only after every tap chunk of ``b`` is written
        (:func:`featuremaps.engine.unit.commit` is the one caller). A sharded store records the
        commit and writes it once the batch's shard is written (:mod:`.store_shards`)."""
        if self.sharded:
            self._shards.commit(b, errors, pending)
            return
        self._commit_many({b: (errors, pending)})

    @contextlib.contextmanager
    def _remote_errors(self, what: str, then: str = ""):
        """On object storage, any client failure inside the block (an unreachable endpoint, expired
        credentials) becomes one :class:`StoreError` line; locally nothing changes."""
        if self._io is None:
            yield
            return
        try:
            yield
        except (FeaturemapsError, ValueError):  # ours, and zarr's checksum failures (handled by the caller)
            raise
        except Exception as e:  # noqa: BLE001
            raise self._io.error(what, e, then) from None

    def _commit_many(self, commits: dict[int, tuple[dict, tuple]]) -> None:
        """Write the error rows, then the status rows, of ``commits`` (``{batch: (errors, pending)}``):
        one write of each per run of consecutive batches (a sharded store commits a shard's at once)."""
        with self._remote_errors(f"committing batch(es) {min(commits)}-{max(commits)}", RESUME):
            if isinstance(self._lock, Lease):
                self._lock.check()  # fencing: a writer that lost its lease must not overwrite another's status
            order = sorted(commits)
            runs = [[order[0]]]
            for b in order[1:]:
                runs[-1].append(b) if b == runs[-1][-1] + 1 else runs.append([b])
            for run in runs:
                start, stop = self.batch_rows(run[0])[0], self.batch_rows(run[-1])[1]
                msgs = np.full(stop - start, "", dtype=object)
                status = np.full(stop - start, OK, np.uint8)
                for b in run:
                    errors, pending = commits[b]
                    first = self.batch_rows(b)[0] - start
                    for row, msg in errors.items():
                        msgs[first + int(row)], status[first + int(row)] = displayable(msg)[:MAX_ERROR_CHARS], ERROR
                    for row in pending:
                        status[first + int(row)] = PENDING
                self._group["errors"][start:stop] = msgs.astype(str)
                self._group["status"][start:stop] = status

    def clean_partials(self) -> int:
        """Remove ``*.partial`` files a killed writer left behind (never read by zarr). Only the
        lock holder may do this: another live writer's temporary files look the same."""
        if self._lock is None:
            raise StoreError(f"{self.path}: cleaning temporary files needs the writer's lock; open with lock=True")
        if self._io is not None:
            return 0  # object stores: every chunk is one atomic PUT, nothing temporary
        removed = 0
        for root, _, files in os.walk(self.path):
            for f in files:
                if f.endswith(".partial"):
                    os.unlink(os.path.join(root, f))
                    removed += 1
        return removed

    def __repr__(self) -> str:
        codes = self.status_codes
        return (f"FeatureStore({str(self.path)!r}, n={len(self)}, ok={int((codes == OK).sum())}, "
                f"errors={int((codes == ERROR).sum())}, pending={int((codes == PENDING).sum())}, "
                f"outputs={self.outputs}, dtype={self.dtype})")


def array_specs(info: dict) -> dict[str, dict]:
    """``create_array`` keywords of every array of a store with attributes ``info``: what
    :func:`_write_layout` creates, and what an opened store's arrays are checked against."""
    from zarr.codecs import Crc32cCodec, ZstdCodec

    n, c = info["n"], info["chunk_rows"]
    crc = [Crc32cCodec()]
    rows = {"shape": (n,), "chunks": (info.get("row_chunk", c),), "dimension_names": ("image",), "compressors": crc}
    specs = {"paths": dict(rows, dtype=str), "status": dict(rows, dtype="uint8", fill_value=PENDING),
             "errors": dict(rows, dtype=str)}
    if info.get("format") == STORE_FORMAT:
        specs["path_bytes"] = dict(rows, dtype=str)
    codecs = ([ZstdCodec()] if info.get("compression") == "zstd" else []) + crc
    for name, shape in info["outputs"].items():
        if info.get("shard_rows"):
            specs[name] = dict(shard_spec(c, info["shard_rows"], tuple(shape), DTYPES[info["dtype"]],
                                          info.get("compression", "zstd")),
                               shape=(n, *shape), dimension_names=dimension_names(name, tuple(shape)))
            continue
        specs[name] = {"shape": (n, *shape), "chunks": (c, *shape), "dtype": DTYPES[info["dtype"]], "fill_value": 0,
                       "compressors": codecs, "dimension_names": dimension_names(name, tuple(shape))}
    return specs


def _write_layout(group, info: dict, paths: list[str]) -> None:
    """Create every array of a new store in ``group``, then the attributes (a store is
    recognisable only once all of its arrays exist)."""
    specs = array_specs(info)
    display, b64 = zip(*map(encode_path, paths)) if paths else ((), ())
    group.create_array("paths", **specs.pop("paths"))[:] = np.asarray(display, dtype=str)
    group.create_array("path_bytes", **specs.pop("path_bytes"))[:] = np.asarray(b64, dtype=str)
    group.create_array("status", **specs.pop("status"),
                       attributes={"flag_values": [PENDING, OK, ERROR], "flag_meanings": " ".join(STATUS_NAMES),
                                   "long_name": "extraction status per image"})
    for name, spec in specs.items():
        group.create_array(name, **spec)
    group.attrs[ATTR_KEY] = info


def _layout_problem(arr, spec: dict) -> str | None:
    """How ``arr`` differs from what ``create`` writes for it (shape, chunks, data type, codec
    chain), or None: a store's own metadata is checked before any chunk is read."""
    import zarr

    wanted = zarr.create_array(zarr.storage.MemoryStore(), **spec)
    want = wanted.metadata
    have = arr.metadata
    if getattr(have, "zarr_format", 3) != 3:
        return "it is not a Zarr v3 array"
    for what, a, b in (("shape", have.shape, want.shape), ("chunk shape", arr.chunks, tuple(spec["chunks"])),
                       ("data type", str(have.data_type), str(want.data_type)),
                       ("codecs", [c.to_dict()["name"] for c in have.codecs],
                        [c.to_dict()["name"] for c in want.codecs]),
                       ("chunk key encoding", have.chunk_key_encoding.to_dict(), want.chunk_key_encoding.to_dict()),
                       ("shards", arr.shards or (), wanted.shards or ()),
                       ("inner codecs", _inner_codecs(have), _inner_codecs(want))):
        if tuple(a) != tuple(b) if isinstance(a, (list, tuple)) else a != b:
            return f"its {what} {_short(a)} is not the {_short(b)} featuremaps writes"
    return None


def _inner_codecs(metadata) -> list:
    """The codec chain inside a sharding codec (names and configuration), or [] for an unsharded array."""
    for codec in metadata.codecs:
        d = codec.to_dict()
        if d["name"] == "sharding_indexed":
            conf = d.get("configuration", {})
            chain = [*conf.get("codecs", ()), *conf.get("index_codecs", ()), conf.get("index_location")]
            return [json.dumps(x.to_dict() if hasattr(x, "to_dict") else x, sort_keys=True, default=str)
                    for x in chain]
    return []


def _shard_rows(asked, n: int, batch: int, chunk_rows: int, shapes: dict, dtype: str) -> int | None:
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


def _short(x) -> str:
    text = str(list(x) if isinstance(x, tuple) else x)
    return text if len(text) <= 80 else text[:77] + "..."


def chunk_limits(info: dict) -> dict[str, tuple[int, int | None]]:
    """Per array: the largest chunk file it may hold, and the exact decoded size a zstd chunk
    must declare (None without zstd). Anything larger is refused before it is read."""
    c, row_chunk = info["chunk_rows"], info.get("row_chunk", info["chunk_rows"])
    limits = {"status": (row_chunk + 64, None), "errors": (row_chunk * (4 * MAX_ERROR_CHARS + 8) + 64, None)}
    for name in ("paths", "path_bytes"):
        limits[name] = (row_chunk * (MAX_PATH_ROW_BYTES + 8) + 64, None)
    itemsize = np.dtype(DTYPES[info["dtype"]]).itemsize
    for name, shape in info["outputs"].items():
        raw = c * math.prod(shape) * itemsize
        zstd = info.get("compression") == "zstd"
        limits[name] = (raw + raw // 128 + 2**17 + 4, raw) if zstd else (raw + 4, None)
    return limits


def open_store(path: str | Path, *, storage_options: dict | None = None) -> FeatureStore:
    """Open a bulk feature store read-only: ``.paths``, ``.status``, ``.errors``, ``.taps``,
    ``.metadata``, and ``store['features.17']`` (zarr array, N first).

    >>> import featuremaps
    >>> st = featuremaps.open_store("out.zarr")   # doctest: +SKIP
    >>> ok = st.status == "ok"                     # doctest: +SKIP
    >>> st["features.28"][0]                       # doctest: +SKIP
    """
    return FeatureStore.open(path, mode="r", storage_options=storage_options)
