"""Stores on object storage (``s3://``, ``gs://``, any fsspec URL): the same guarantees as on a disk.

A local store relies on three POSIX facts: a rename publishes a finished file (chunks, and the
store itself at creation), ``flock`` keeps a second writer out, and a folder can be walked for
links. An object store has none of them, and needs none:

* **Durable and atomic per object.** A PUT is all or nothing, so a chunk is written straight to
  its key: a killed writer leaves every chunk old or new, never torn (no ``.partial`` files).
* **Creation.** The store's layout is built in memory and uploaded with the root ``zarr.json``
  last: a store is recognisable only once all of its arrays exist, as the local rename gives.
  A failed creation leaves array objects without a root, which the next creation overwrites.
* **One writer: a lease** (:class:`Lease`), the object ``status/featuremaps.lease`` created with a
  conditional write (S3 ``If-None-Match: *``), holding who writes (host, pid, a random owner id)
  and until when. The holder renews it with ``If-Match`` on its ETag (compare-and-swap) every
  third of its term; a second writer is refused while it is live. A writer killed with ``-9``
  leaves a lease that expires after :data:`LEASE_SECONDS` (``FEATUREMAPS_LEASE_SECONDS``), or at
  once for a resume on the same host whose holder pid is gone. Before each batch is committed the
  writer checks that the lease is still its own (fencing), so a writer that lost it stops instead
  of overwriting another's status.
* **Nothing to walk.** Object stores have no links, FIFOs or devices, and keys never leave the
  store's prefix (every key is ``prefix + "/" + name`` with a name checked by
  :func:`.names.unsafe_name_reason`).

Credentials and endpoints come the standard way (the filesystem's own: the AWS environment,
``AWS_ENDPOINT_URL``, ``~/.aws``; ``GOOGLE_APPLICATION_CREDENTIALS``), or ``storage_options``
given explicitly. Neither is ever written into the store, and printed URLs keep only scheme,
bucket and path (:func:`display_url`).
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import socket
import threading
import time
import uuid
from urllib.parse import urlsplit, urlunsplit

from .. import sources
from ...errors import StoreError
from .io import (HOSTILE, UnsafeStoreError, check_inner_headers, check_zstd, key_limit, refuse_partial,
                 shard_entries, too_large)
from .shard_format import index_nbytes

LEASE_NAME = "status/featuremaps.lease"
RESUME = "re-run with --resume (completed batches are kept)"
LEASE_SECONDS = 60.0
MAX_LEASE_BYTES = 4096
_WRITABLE = ("s3", "s3a", "gs", "gcs", "memory")  # schemes with atomic PUTs (and, for s3, conditional writes)


def is_url(target) -> bool:
    """Whether ``target`` names a store by URL (:func:`.sources.is_url`) rather than a local path;
    ``file://`` URLs are local paths (see :func:`local_path`)."""
    return isinstance(target, str) and sources.is_url(target) and not target.lower().startswith("file://")


def local_path(target):
    """``file:///a/b`` -> ``/a/b``, as inputs read it (:func:`.sources.local_path_of`); anything else unchanged."""
    if isinstance(target, str) and target.lower().startswith("file://"):
        return sources.local_path_of(target)
    return target


def display_url(url: str) -> str:
    """``url`` without user info, query or fragment: what may be printed (never a secret)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host += f":{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def scrub(text: str, options: dict | None) -> str:
    """``text`` with every storage option value of four characters or more replaced by ``***``
    (an error from a client library may quote what it was given)."""
    for value in (options or {}).values():
        if isinstance(value, str) and len(value) >= 4:
            text = text.replace(value, "***")
    return sources.blank_secrets(text)


class RemoteIO:
    """Key-level access to a store at an fsspec URL: bounded reads, whole-object writes, listings.
    ``url`` is what the user gave; :attr:`url` is its printable form."""

    def __init__(self, url: str, storage_options: dict | None = None):
        from fsspec.core import url_to_fs

        self.options = dict(storage_options or {})
        self._url = url.rstrip("/")
        self.url = display_url(url).rstrip("/")
        scheme = url.split("://", 1)[0].lower()
        try:
            # no listing cache: a store's objects change under other processes (a lease, a resumed run)
            self.fs, root = url_to_fs(url, **{"use_listings_cache": False, "skip_instance_cache": True,
                                              **self.options})
        except ImportError as e:
            extra = {"s3": "s3", "s3a": "s3", "gs": "gcs", "gcs": "gcs"}.get(scheme)
            how = f"pip install 'featuremaps[{extra}]'" if extra else f"install the fsspec backend for {scheme}://"
            raise StoreError(f"{self.url}: {scheme}:// needs a package that is not installed "
                             f"({e.name or e}); {how}") from None
        except (ValueError, TypeError) as e:
            raise StoreError(f"{self.url}: not a usable store URL ({scrub(str(e), self.options)[:200]}); "
                             "use s3://bucket/path.zarr or gs://bucket/path.zarr") from None
        self.scheme = scheme
        self.root = root.rstrip("/")
        if not self.root or "/" not in self.root.strip("/") and scheme in ("s3", "s3a", "gs", "gcs"):
            raise StoreError(f"{self.url}: a store needs a path inside the bucket (s3://bucket/feats.zarr), "
                             "not a bare bucket")

    @property
    def location(self) -> str:
        """The URL as given (what opens the store again; may not be printed: see :attr:`url`)."""
        return self._url

    @property
    def writable(self) -> bool:
        return self.scheme in _WRITABLE

    def key(self, k: str) -> str:
        return f"{self.root}/{k}"

    def error(self, what: str, e: BaseException, then: str = "") -> StoreError:
        """A one-line StoreError for a failed ``what`` (secrets scrubbed); ``then``: what to do after
        the fix (e.g. re-run with --resume)."""
        reason = scrub(f"{type(e).__name__}: {e}", self.options).splitlines()[0][:300] if str(e) else type(e).__name__
        return StoreError(f"{self.url}: {what} failed ({reason}); check the URL, the credentials "
                          "(AWS_* / GOOGLE_* environment or --storage-option) and that the endpoint is reachable"
                          + (f", then {then}" if then else ""))

    # ------------------------------------------------------------ objects

    def read(self, k: str, limit: int) -> bytes | None:
        """The bytes of key ``k`` (None if missing); an object over ``limit`` bytes is refused unread."""
        try:
            size = self.fs.size(self.key(k))
        except FileNotFoundError:
            return None
        if size is None or size > limit:
            raise too_large(f"{self.url}/{k}", size, limit)
        try:
            return self.fs.cat_file(self.key(k))
        except FileNotFoundError:
            return None

    def exists(self, k: str) -> bool:
        try:
            self.fs.size(self.key(k))
            return True
        except FileNotFoundError:
            return False

    def put(self, k: str, data, **conditions):
        """Write ``data`` (bytes, or a list of buffers) to key ``k`` in one PUT; ``conditions`` go to
        the client (``IfMatch=etag``, ``mode="create"``). Returns the client's answer."""
        if isinstance(data, (list, tuple)):
            data = b"".join(memoryview(p).cast("B") for p in data)
        return self.fs.pipe_file(self.key(k), bytes(data) if not isinstance(data, bytes) else data, **conditions)

    def write(self, k: str, data) -> None:
        """:meth:`put` for the store's own objects (chunks, shards, layout): any failure is one
        :class:`StoreError` line (network, permissions, quota), secrets scrubbed."""
        try:
            self.put(k, data)
        except Exception as e:  # noqa: BLE001
            raise self.error(f"writing {k}", e, RESUME) from None

    def tail(self, k: str, n: int) -> tuple[int, bytes] | None:
        """``(object size, its last n bytes)`` of key ``k`` (one HEAD, one range request), or None."""
        try:
            size = self.fs.size(self.key(k))
            return size, self.fs.cat_file(self.key(k), start=max(0, size - n), end=size)
        except FileNotFoundError:
            return None

    def delete(self, k: str) -> None:
        try:
            self.fs.rm_file(self.key(k))
        except FileNotFoundError:
            pass

    def etag(self, k: str) -> str | None:
        self.fs.invalidate_cache(self.key(k))
        try:
            info = self.fs.info(self.key(k))
        except FileNotFoundError:
            return None
        return info.get("ETag") or info.get("etag") or info.get("generation")

    def list_chunks(self, name: str, ndim: int) -> list[int]:
        """Chunk indices along ``image`` of array ``name`` that have an object (one listing)."""
        prefix = self.key(f"{name}/c")
        self.fs.invalidate_cache(prefix)
        try:
            found = self.fs.find(prefix)
        except FileNotFoundError:
            return []
        tail = "/0" * (ndim - 1)
        out = set()
        for key in found:
            rel = key[len(prefix) + 1:]
            head, _, rest = rel.partition("/")
            if head.isdigit() and ("/" + rest if rest else "") == tail:
                out.add(int(head))
        return sorted(out)

    def footprint(self) -> tuple[int, int]:
        """``(objects, bytes)`` under the store's prefix (one listing)."""
        self.fs.invalidate_cache(self.root)
        try:
            found = self.fs.find(self.root, detail=True)
        except FileNotFoundError:
            return 0, 0
        return len(found), sum(int(v.get("size") or 0) for v in found.values())

    def zarr_store(self, *, read_only: bool):
        """A zarr store on this prefix: zarr's FsspecStore (on its own asynchronous filesystem) whose
        reads are bounded as a local store's are (:func:`_bounded_class`)."""
        st = _bounded_class().from_url(self._url, storage_options=self.options or None, read_only=read_only)
        st.limits, st.sharded, st.url, st.shard_sizes = {}, {}, self.url, {}
        return st

    def upload_layout(self, memory_store) -> None:
        """Copy every key of a zarr MemoryStore (a store's layout built in memory) here, the root
        ``zarr.json`` last (see the module docstring: creation)."""
        items = dict(memory_store._store_dict)
        root = items.pop("zarr.json")
        for k in sorted(items):
            self.write(k, items[k].to_bytes())
        self.write("zarr.json", root.to_bytes())


MAX_CACHED_SHARDS = 4096  # shard objects whose size (and last index) a store remembers


@functools.lru_cache(maxsize=1)
def _bounded_class():
    """The zarr FsspecStore subclass (defined on first use: zarr is imported lazily).

    zarr reads a whole object per chunk (one GET), or for a sharded tap the index (a suffix
    range) and then one range per inner chunk. A store at a URL may be hostile as a received folder
    may, so every read is held to what :class:`~.io.confined_store` allows, at no extra request for
    a chunk and one (the object's size, once per shard object) for a shard:

    * a chunk or ``zarr.json``: one GET of at most ``limit + 1`` bytes (a range request): more is
      refused unread past that; a zstd chunk must declare its exact decoded size; a partial read
      of an unsharded array is refused;
    * a shard, whole: the same bound (the whole shard's), its index validated and every inner
      chunk's header checked;
    * a shard's index: the object's size (once per key, kept), then the index, validated by
      :func:`.shard_format.read_index` and kept, so zarr's ranges can be checked;
    * a range of a shard: inside the object, no longer than an inner chunk may be; the bytes it
      returns must begin with a zstd header declaring the chunk's size (zarr decodes them as one
      inner chunk), as must every indexed inner chunk starting inside it.
    """
    from zarr.abc.store import OffsetByteRequest, RangeByteRequest, SuffixByteRequest
    from zarr.core.buffer import default_buffer_prototype
    from zarr.storage import FsspecStore

    class BoundedFsspecStore(FsspecStore):
        """FsspecStore whose reads never fetch or decode more than the store's arrays can hold."""

        # array name -> (largest chunk object, exact decoded zstd size or None); set by FeatureStore
        limits: dict
        # array name -> (inner chunks per shard, largest shard object): sharded tap arrays
        sharded: dict
        url: str  # printable (display_url)
        # shard key -> (object size, validated index entries, the index bytes)
        shard_sizes: dict

        def with_read_only(self, read_only: bool = False):
            other = super().with_read_only(read_only)
            other.limits, other.sharded, other.url, other.shard_sizes = \
                self.limits, self.sharded, self.url, self.shard_sizes
            return other

        def _where(self, key: str) -> str:
            return f"{self.url}/{key}"

        async def _bounded(self, key: str, prototype, limit: int):
            """The whole object ``key`` (None if missing) in one GET of at most ``limit + 1`` bytes."""
            data = await super().get(key, prototype, RangeByteRequest(0, limit + 1))
            if data is not None and len(data) > limit:
                raise too_large(self._where(key), None, limit)
            return data

        async def get(self, key, prototype=None, byte_range=None):
            prototype = prototype or default_buffer_prototype()
            name = key.split("/", 1)[0]
            if name in self.sharded and not key.endswith("zarr.json"):
                return await self._get_shard(key, name, prototype, byte_range)
            limit, zstd_size = key_limit(self.limits, key)
            if byte_range is not None:
                raise refuse_partial(self._where(key))
            data = await self._bounded(key, prototype, limit)
            if data is not None:
                check_zstd(self._where(key), data.as_numpy_array(), zstd_size)
            return data

        async def _get_shard(self, key: str, name: str, prototype, byte_range):
            per, limit = self.sharded[name]
            inner_limit, zstd_size = self.limits[name]
            where = self._where(key)
            if byte_range is None:  # the whole shard (zarr reads every inner chunk of it)
                data = await self._bounded(key, prototype, limit)
                if data is not None:
                    blob = data.as_numpy_array()
                    entries = shard_entries(where, blob, per, len(blob), inner_limit)
                    check_inner_headers(where, entries, lambda off, nb: blob[off:off + min(18, nb)], zstd_size)
                return data
            n = index_nbytes(per)
            if isinstance(byte_range, SuffixByteRequest) and byte_range.suffix <= n:  # zarr asks for the index
                found = await self._index(key, per, limit, inner_limit)
                return None if found is None else prototype.buffer.from_bytes(found[2][n - byte_range.suffix:])
            if not isinstance(byte_range, (RangeByteRequest, OffsetByteRequest)) or key not in self.shard_sizes:
                found = await self._index(key, per, limit, inner_limit)  # a range before the index: read it first
                if found is None:
                    return None
            size, entries, _ = self.shard_sizes[key]
            start = getattr(byte_range, "start", getattr(byte_range, "offset", None))
            end = getattr(byte_range, "end", size)
            if start is None or not 0 <= start < end <= size or end - start > inner_limit:
                raise UnsafeStoreError(f"{where}: a read of bytes {start} to {end} is not an inner chunk of this "
                                       f"{size}-byte shard (at most {inner_limit} bytes each); {HOSTILE}")
            data = await super().get(key, prototype, RangeByteRequest(start, end))
            if data is None:
                return None
            if len(data) > end - start:
                raise too_large(where, None, end - start)
            blob = data.as_numpy_array()
            check_zstd(where, blob, zstd_size)
            check_inner_headers(where, entries, lambda off, nb: blob[off - start:off - start + min(18, nb)]
                                if start <= off < start + len(blob) else None, zstd_size)
            return data

        async def _index(self, key: str, per: int, limit: int, inner_limit: int):
            """``(size, entries, index bytes)`` of shard ``key``, validated (None if missing): the size
            once per key (kept), the index each time zarr asks for it (a shard may be rewritten)."""
            known = self.shard_sizes.get(key)
            try:
                size = known[0] if known else await self.getsize(key)
            except self.allowed_exceptions:
                return None
            if size > limit:
                raise too_large(self._where(key), size, limit)
            n = index_nbytes(per)
            tail = await super().get(key, default_buffer_prototype(), SuffixByteRequest(n)) if size >= n else b""
            if tail is None:
                return None
            tail = bytes(tail.to_bytes() if hasattr(tail, "to_bytes") else tail)
            try:
                entries = shard_entries(self._where(key), tail, per, size, inner_limit)
            except UnsafeStoreError:
                if not known:
                    raise
                self.shard_sizes.pop(key, None)  # the size kept may be stale (a rewritten shard): ask once more
                return await self._index(key, per, limit, inner_limit)
            if len(self.shard_sizes) >= MAX_CACHED_SHARDS:
                self.shard_sizes.clear()
            self.shard_sizes[key] = size, entries, tail
            return self.shard_sizes[key]

        async def get_partial_values(self, prototype, key_ranges):
            return list(await asyncio.gather(*(self.get(k, prototype, r) for k, r in key_ranges)))

    return BoundedFsspecStore


def _if_match(io: RemoteIO, etag: str | None) -> dict:
    """The compare-and-swap condition of a lease write: S3's ``If-Match`` on the ETag last seen."""
    return {"IfMatch": etag} if etag and io.scheme.startswith("s3") else {}


class Lease:
    """The one-writer lease of a store on object storage (see the module docstring)."""

    def __init__(self, io: RemoteIO, owner: str, etag: str | None, term: float):
        self.io, self.owner, self._etag, self.term = io, owner, etag, term
        self._lost: str | None = None
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._renew_loop, name="featuremaps-lease", daemon=True)
        self._thread.start()

    @staticmethod
    def term_seconds() -> float:
        try:
            return max(1.0, float(os.environ.get("FEATUREMAPS_LEASE_SECONDS", LEASE_SECONDS)))
        except ValueError:
            return LEASE_SECONDS

    @staticmethod
    def _body(owner: str, term: float) -> bytes:
        return json.dumps({"owner": owner, "host": socket.gethostname(), "pid": os.getpid(),
                           "expires": time.time() + term, "term": term}).encode()

    @classmethod
    def acquire(cls, io: RemoteIO) -> "Lease":
        if not io.writable:
            raise StoreError(f"{io.url}: featuremaps writes stores only where a write is atomic and a lease can be "
                             f"taken ({', '.join(s + '://' for s in _WRITABLE if s != 'memory')}); write to one of "
                             "those, or to a local path")
        owner, term = uuid.uuid4().hex, cls.term_seconds()
        try:
            io.put(LEASE_NAME, cls._body(owner, term), mode="create")
            return cls(io, owner, io.etag(LEASE_NAME), term)
        except FileExistsError:
            pass
        except Exception as e:  # noqa: BLE001 - network, permissions: one line
            raise io.error("taking the writer's lease", e) from None
        held = cls._read(io)
        etag = io.etag(LEASE_NAME)
        if held is not None and not cls._stale(held):
            until = time.strftime("%H:%M:%S", time.localtime(held.get("expires", 0)))
            pid = held.get("pid") if isinstance(held.get("pid"), int) else "?"
            raise StoreError(f"{io.url} is being written by another process (pid {pid} on "
                             f"{str(held.get('host'))[:64]!r}, lease until {until}); "
                             "wait for it to finish or stop it, then re-run with --resume (a killed writer's lease "
                             f"expires after {held.get('term', LEASE_SECONDS):.0f} s)")
        try:  # expired or its holder is gone: take it over, unless someone else just did
            io.put(LEASE_NAME, cls._body(owner, term), **_if_match(io, etag))
        except FileExistsError:
            raise StoreError(f"{io.url} was just taken over by another writer; re-run with --resume later") from None
        except Exception as e:  # noqa: BLE001
            if type(e).__name__ in ("PreconditionFailed", "ClientError") or "Precondition" in str(e):
                raise StoreError(f"{io.url} was just taken over by another writer; re-run with --resume later") \
                    from None
            raise io.error("taking the writer's lease", e) from None
        return cls(io, owner, io.etag(LEASE_NAME), term)

    @staticmethod
    def _read(io: RemoteIO) -> dict | None:
        try:
            raw = io.read(LEASE_NAME, MAX_LEASE_BYTES)
            held = json.loads(raw) if raw else None
        except Exception:  # noqa: BLE001 - a damaged lease is a stale one
            return None
        return held if isinstance(held, dict) else None

    @staticmethod
    def _stale(held: dict) -> bool:
        expires = held.get("expires")
        if not isinstance(expires, (int, float)) or expires < time.time():
            return True
        if held.get("host") == socket.gethostname() and isinstance(held.get("pid"), int):
            try:
                os.kill(held["pid"], 0)
            except ProcessLookupError:
                return True  # same machine, the holder is gone
            except (PermissionError, OverflowError, ValueError):
                return False
        return False

    def _renew_loop(self) -> None:
        while not self._stop.wait(self.term / 3):
            self.renew()

    def renew(self) -> None:
        with self._lock:
            if self._lost or self._stop.is_set():
                return
            try:
                self.io.put(LEASE_NAME, self._body(self.owner, self.term), **_if_match(self.io, self._etag))
                self._etag = self.io.etag(LEASE_NAME)
            except Exception as e:  # noqa: BLE001 - lost to another writer, or unreachable
                held = self._read(self.io)
                if not held or held.get("owner") != self.owner:
                    self._lost = f"another writer took the lease ({type(e).__name__})"

    def check(self) -> None:
        """Raise :class:`StoreError` unless this process still holds the lease (before a commit)."""
        if self._lost is None:
            held = self._read(self.io)
            if not held or held.get("owner") != self.owner:
                self._lost = "another writer holds it now"
        if self._lost:
            raise StoreError(f"{self.io.url}: this writer lost its lease ({self._lost}); stopping without writing "
                             "more. Completed batches are kept: re-run with --resume when the other writer is done")

    def release(self) -> None:
        self._stop.set()
        with self._lock:
            if self._lost is None:
                held = self._read(self.io)
                if held and held.get("owner") == self.owner:
                    try:
                        self.io.delete(LEASE_NAME)
                    except Exception:  # noqa: BLE001 - it expires on its own
                        pass
            self._lost = self._lost or "released"
