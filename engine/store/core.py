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

import contextlib
import functools
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ...contracts import Tap
from ...errors import FeaturemapsError, StoreError
from ..validate import ModelRecord
from .chunk_writer import ChunkWriter
from .create import create_local, create_remote, new_info
from .format import (ATTR_KEY, DTYPES, ERROR, MAX_ERROR_CHARS, OK, PENDING, READABLE_FORMATS, STATUS_NAMES,
                     STORE_FORMAT, attrs_problem, chunk_key, chunk_limits, model_record, size_text)
from .io import UnsafeStoreError, check_tree, confined_store, open_folder, read_key, read_tail, tree_bytes
from .layout import array_specs, layout_problem
from .lock import StoreLock
from .paths import StoredPaths, displayable
from .remote import RESUME, Lease, RemoteIO, is_url, local_path
from .shard_format import index_nbytes
from .shards import ShardBuffer
from .sizing import available_memory
from .verify import VerifyReport, chunk_file, verify


@dataclass(frozen=True)
class ErrorRow:
    index: int
    path: str
    message: str


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
        self.record: ModelRecord | None = model_record(self.info, self.path)
        for name, spec in array_specs(self.info).items():
            try:
                problem = layout_problem(self._group[name], spec)
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
            raise StoreError(f"{self.path}: one chunk of its outputs is {size_text(largest)}, more than half the "
                             f"memory available ({size_text(available_memory())}); read it on a larger machine, or "
                             "re-create it with a smaller --batch-size")

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
        memory, uploaded root last, under a lease (:mod:`.create`, :mod:`.remote`). ``shard_rows``:
        None (one object per chunk), ``"auto"`` (:func:`.shard_format.shard_rows_for`) or a multiple
        of the batch size: tap arrays sharded (:mod:`.shards`)."""
        io = RemoteIO(path, storage_options) if is_url(path) else None
        path = Path(local_path(path)) if io is None else io.url
        if io is None and path.exists():
            raise StoreError(f"{path} already exists; add --resume to complete it, or choose a new -o path")
        info = new_info(paths=paths, metadata=metadata, shapes=shapes, batch_size=batch_size, dtype=dtype,
                        compression=compression, model_path=model_path, model_sha256=model_sha256,
                        check_memory=check_memory, shard_rows_asked=shard_rows)
        if io is None:
            group, lock = create_local(path, info, paths)
            return cls(group, path, lock)
        group, lease = create_remote(io, info, paths)
        try:
            return cls(group, io.url, lease, io)
        except BaseException:
            lease.release()
            raise

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
        """Whether the tap arrays are sharded (several batches per object: :mod:`.shards`)."""
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
        recorded = self.record.extraction if self.record is not None else {}
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
        """The exported model's metadata as stored (written into new stores unchanged); read it
        through :attr:`record` (typed, checked at open; None where the store keeps no model)."""
        return self.info["model"]

    @property
    def outputs(self) -> list[str]:
        return list(self.info["outputs"])

    @property
    def taps(self) -> tuple[Tap, ...]:
        """The stored taps; ``shape`` is the per-image stored shape (reduced where reduced)."""
        return self.required_record("taps").taps

    @property
    def image_size(self) -> tuple[int, int]:
        """``(H, W)`` the model took its images at (the stored preprocessing size)."""
        return tuple(self.required_record("preprocessing").preprocessing.size)

    def required_record(self, what: str, then: str = "it cannot be drawn") -> ModelRecord:
        """:attr:`record`, or one line saying that a store without model metadata (one the library
        made with ``metadata={}``) lacks ``what``, and so ``then``."""
        if self.record is None:
            raise StoreError(f"{self.path} records no model {what} (zarr.json has no model metadata); it was not "
                             f"written by `featuremaps extract`, so {then}")
        return self.record

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
            return self._io.exists(chunk_key(name, ci, ndim))
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
        then redoes them); call it only while holding the lock (:mod:`.verify`)."""
        return verify(self, repair=repair)

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
        ndim = len(self.info["outputs"][name]) + 1
        for ci in range(start // self.chunk_rows, -(-stop // self.chunk_rows)):
            key = chunk_key(name, ci, ndim)
            if self._io is not None:
                self._io.delete(key)
                continue
            parts = key.split("/")
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
        commit and writes it once the batch's shard is written (:mod:`.shards`)."""
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


def open_store(path: str | Path, *, storage_options: dict | None = None) -> FeatureStore:
    """Open a bulk feature store read-only: ``.paths``, ``.status``, ``.errors``, ``.taps``,
    ``.metadata``, and ``store['features.17']`` (zarr array, N first).

    >>> import featuremaps
    >>> st = featuremaps.open_store("out.zarr")   # doctest: +SKIP
    >>> ok = st.status == "ok"                     # doctest: +SKIP
    >>> st["features.28"][0]                       # doctest: +SKIP
    """
    return FeatureStore.open(path, mode="r", storage_options=storage_options)
