"""File access confined to a store's own tree: no symlink, no FIFO or device, no oversized file.

A store is often received from someone else (tar and rsync keep symlinks), so nothing in it may
make featuremaps read or write outside it. Two checks, both without following any link:

* :func:`tree_problem` walks the whole tree once (``os.scandir``: the entry type comes with the
  listing, no ``stat`` per file) before anything writes to a store (``--resume``, ``verify
  --repair``) or reads every chunk (``verify``): the first symlink or non-regular file refuses it.
* :func:`confined_store` is the zarr store every :class:`~.core.FeatureStore` reads and writes
  through: each key is opened component by component with ``O_NOFOLLOW`` relative to the
  previous folder's descriptor, must be a regular file, and no larger than its array's chunks
  can be (a ``zarr.json`` at most ``MAX_METADATA_BYTES``). A zstd chunk must declare, in its
  frame header, exactly the decoded size of a chunk; numcodecs allocates whatever the header
  says, so a 196 KB frame would otherwise become 6 GiB.
"""

from __future__ import annotations

import errno
import functools
import os
import stat
from pathlib import Path

from ...errors import StoreError
from .shard_format import ShardIndexError, index_nbytes, read_index

MAX_METADATA_BYTES = 16 * 2**20
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
HOSTILE = "the store may be hostile or damaged; re-create it with `featuremaps extract`"


class UnsafeStoreError(StoreError):
    """An entry of a store would make featuremaps read or write outside it, or read without bound."""


def _kind(mode: int) -> str:
    if stat.S_ISLNK(mode):
        return "a symbolic link"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "not a regular file"


def unsafe(root: Path, rel: str, what: str) -> UnsafeStoreError:
    return UnsafeStoreError(f"{Path(root) / rel} is {what}; featuremaps reads and writes only regular files and "
                            f"folders inside a store (was it copied with links?): {HOSTILE}")


# ---------------------------------------------------------------- the walk


def tree_problem(root: Path) -> UnsafeStoreError | None:
    """The first symlink or non-regular file under ``root`` (one ``scandir`` per folder), or None."""
    root = Path(root)
    folders = [""]
    while folders:
        rel = folders.pop()
        try:
            with os.scandir(root / rel if rel else root) as it:
                for e in it:
                    sub = f"{rel}/{e.name}" if rel else e.name
                    if e.is_symlink():
                        return unsafe(root, sub, "a symbolic link")
                    if e.is_dir(follow_symlinks=False):
                        folders.append(sub)
                    elif not e.is_file(follow_symlinks=False):
                        return unsafe(root, sub, _kind(e.stat(follow_symlinks=False).st_mode))
        except FileNotFoundError:  # removed while we walked (a writer's temporary file)
            continue
    return None


def check_tree(root: Path) -> None:
    """Raise :class:`UnsafeStoreError` for the first symlink or non-regular file under ``root``."""
    problem = tree_problem(root)
    if problem is not None:
        raise problem


def tree_bytes(root: Path) -> tuple[int, int, UnsafeStoreError | None]:
    """``(regular files under root, their bytes, the first symlink or non-regular file or None)``;
    ``lstat`` only: a link or a FIFO is never followed nor opened."""
    files, total, problem, folders = 0, 0, None, [""]
    root = Path(root)
    while folders:
        rel = folders.pop()
        try:
            with os.scandir(root / rel if rel else root) as it:
                for e in it:
                    if e.is_dir(follow_symlinks=False):
                        folders.append(f"{rel}/{e.name}" if rel else e.name)
                        continue
                    st = e.stat(follow_symlinks=False)
                    if stat.S_ISREG(st.st_mode):
                        files += 1
                        total += st.st_size
                    elif problem is None:
                        problem = unsafe(root, f"{rel}/{e.name}" if rel else e.name, _kind(st.st_mode))
        except FileNotFoundError:
            continue
    return files, total, problem


# ---------------------------------------------------------------- one key


def open_folder(root: Path, parts: list[str], create: bool = False) -> int:
    """A descriptor of the folder ``root/parts...``, every component opened with ``O_NOFOLLOW``
    (``create``: missing folders are made). Raises FileNotFoundError when one is missing."""
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for i, name in enumerate(parts):
            try:
                nxt = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
            except FileNotFoundError:
                if not create:
                    raise
                try:
                    os.mkdir(name, dir_fd=fd)
                except FileExistsError:
                    pass
                nxt = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
            except (NotADirectoryError, OSError) as e:
                if isinstance(e, NotADirectoryError) or e.errno == errno.ELOOP:
                    mode = os.lstat(name, dir_fd=fd).st_mode
                    if stat.S_ISLNK(mode):
                        raise unsafe(root, "/".join(parts[:i + 1]), "a symbolic link") from None
                    raise FileNotFoundError(name) from None  # a file where a folder should be: "missing"
                raise
            os.close(fd)
            fd = nxt
    except BaseException:
        os.close(fd)
        raise
    return fd


def _open_key(root: Path, key: str, limit: int) -> tuple[int, int] | None:
    """``(descriptor, size)`` of the regular file ``root/key`` of at most ``limit`` bytes, opened
    without following any link (None if missing); the caller closes the descriptor."""
    parts = key.split("/")
    try:
        dfd = open_folder(root, parts[:-1], create=False)
    except FileNotFoundError:
        return None
    try:
        try:
            fd = os.open(parts[-1], os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dfd)
        except FileNotFoundError:
            return None
        except OSError as e:
            if e.errno == errno.ELOOP:
                raise unsafe(root, key, "a symbolic link") from None
            raise
    finally:
        os.close(dfd)
    try:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            os.close(fd)
            return None  # zarr: a folder where a chunk should be reads as missing
        if not stat.S_ISREG(st.st_mode):
            raise unsafe(root, key, _kind(st.st_mode))
        if st.st_size > limit:
            raise too_large(Path(root) / key, st.st_size, limit)
    except BaseException:
        os.close(fd)
        raise
    return fd, st.st_size


def read_key(root: Path, key: str, limit: int) -> bytes | None:
    """The bytes of ``root/key`` (None if missing), opened without following any link; a link, a
    FIFO or a device is :class:`UnsafeStoreError`, and so is a file over ``limit`` bytes."""
    opened = _open_key(root, key, limit)
    if opened is None:
        return None
    fd, _ = opened
    try:
        with os.fdopen(fd, "rb", closefd=False) as f:
            return f.read(limit + 1)
    finally:
        os.close(fd)


def read_tail(root: Path, key: str, n: int, limit: int) -> tuple[int, bytes] | None:
    """``(size, last n bytes)`` of ``root/key``, checked as :func:`read_key` checks (None if missing)."""
    opened = _open_key(root, key, limit)
    if opened is None:
        return None
    fd, size = opened
    try:
        return size, os.pread(fd, min(n, size), max(0, size - n))
    finally:
        os.close(fd)


def zstd_content_size(frame: bytes) -> int | None:
    """The decoded size a zstd frame header declares (None when the frame does not declare it)."""
    if len(frame) < 6 or frame[:4] != _ZSTD_MAGIC:
        return None
    fhd = frame[4]
    fcs_flag, single, dict_flag = fhd >> 6, (fhd >> 5) & 1, fhd & 3
    pos = 5 + (0 if single else 1) + (0, 1, 2, 4)[dict_flag]
    size = (1 if single else 0, 2, 4, 8)[fcs_flag]
    if size == 0 or len(frame) < pos + size:
        return None
    value = int.from_bytes(frame[pos:pos + size], "little")
    return value + 256 if size == 2 else value


def too_large(where, size: int | None, limit: int) -> UnsafeStoreError:
    """An object of ``size`` bytes (None: more than ``limit``, read no further) where at most ``limit`` may be."""
    what = "larger" if size is None else f"{size} bytes, more"
    return UnsafeStoreError(f"{where} is {what} than its array's chunks can be ({limit} bytes); {HOSTILE}")


def check_zstd(where, frame, zstd_size: int | None) -> None:
    """Refuse a zstd chunk whose frame header does not declare exactly ``zstd_size`` decoded bytes
    (numcodecs allocates what the header says); nothing to check when ``zstd_size`` is None."""
    if zstd_size is not None and zstd_content_size(bytes(frame[:18])) != zstd_size:
        raise UnsafeStoreError(f"{where} does not declare the {zstd_size} decoded bytes of a chunk in its zstd "
                               f"header; {HOSTILE}")


def refuse_partial(where) -> UnsafeStoreError:
    return UnsafeStoreError(f"{where}: partial reads (sharding) are not part of a featuremaps store; {HOSTILE}")


def shard_entries(where, tail, per: int, size: int, inner_limit: int) -> list[tuple[int, int] | None]:
    """:func:`.shard_format.read_index`, its refusal as one :class:`UnsafeStoreError` line."""
    try:
        return read_index(tail, per, size, inner_limit)
    except ShardIndexError as e:
        raise UnsafeStoreError(f"{where}: {e}; {HOSTILE}") from None


def check_inner_headers(where, entries, header_at, zstd_size: int | None) -> None:
    """Every stored inner chunk of a shard whose first bytes ``header_at(offset, nbytes)`` gives
    (None: not at hand, skipped) must declare exactly ``zstd_size`` decoded bytes."""
    if zstd_size is None:
        return
    for i, entry in enumerate(entries):
        head = None if entry is None else header_at(*entry)
        if head is not None and zstd_content_size(bytes(head)) != zstd_size:
            raise UnsafeStoreError(f"{where}: inner chunk {i} does not declare the {zstd_size} decoded bytes of a "
                                   f"chunk in its zstd header; {HOSTILE}")


def key_limit(limits: dict, key: str) -> tuple[int, int | None]:
    """``(largest object, exact decoded zstd size or None)`` a store may hold at ``key``: its array's
    limits (``limits``: array name -> the pair), or a ``zarr.json``'s."""
    if key.endswith("zarr.json"):
        return MAX_METADATA_BYTES, None
    return limits.get(key.split("/", 1)[0], (MAX_METADATA_BYTES, None))


def _span(size: int, byte_range) -> tuple[int, int]:
    """``(start, end)`` of a zarr byte request (None: all) in an object of ``size`` bytes."""
    if byte_range is None:
        return 0, size
    if hasattr(byte_range, "suffix"):
        return max(0, size - byte_range.suffix), size
    if hasattr(byte_range, "offset"):
        return min(byte_range.offset, size), size
    return min(byte_range.start, size), min(max(byte_range.start, byte_range.end), size)


@functools.lru_cache(maxsize=1)
def _confined_class():
    """The zarr LocalStore subclass (defined on first use: zarr is imported lazily)."""
    import asyncio

    from zarr.core.buffer import default_buffer_prototype
    from zarr.storage import LocalStore

    class ConfinedStore(LocalStore):
        """LocalStore whose reads and writes never follow a link nor read a file without bound."""

        # key prefix (array name) -> (largest chunk file, exact decoded zstd size or None); set by
        # FeatureStore once the arrays' metadata is validated
        limits: dict
        # array name -> (inner chunks per shard, largest shard object): sharded tap arrays
        sharded: dict

        def with_read_only(self, read_only: bool = False):
            other = type(self)(root=self.root, read_only=read_only)
            other.limits, other.sharded = self.limits, self.sharded
            return other

        def _read(self, key: str, prototype, byte_range):
            name = key.split("/", 1)[0]
            if name in self.sharded and not key.endswith("zarr.json"):
                return self._read_shard(key, name, prototype, byte_range)
            limit, zstd_size = key_limit(self.limits, key)
            data = read_key(self.root, key, limit)
            if data is None:
                return None
            check_zstd(self.root / key, data, zstd_size)
            if byte_range is not None:
                raise refuse_partial(self.root / key)
            return (prototype or default_buffer_prototype()).buffer.from_bytes(data)

        def _read_shard(self, key: str, name: str, prototype, byte_range):
            """The requested range of a shard object (bounded, confined), once its index is validated
            and every inner zstd chunk's declared size checked: the index and the chunk headers are
            read, then only the range (zarr asks for the index, then the inner chunks it needs)."""
            per, limit = self.sharded[name]
            inner_limit, zstd_size = self.limits[name]
            opened = _open_key(self.root, key, limit)
            if opened is None:
                return None
            fd, size = opened
            try:
                n = index_nbytes(per)
                where = self.root / key
                entries = shard_entries(where, os.pread(fd, min(n, size), max(0, size - n)), per, size, inner_limit)
                check_inner_headers(where, entries, lambda off, nb: os.pread(fd, min(18, nb), off), zstd_size)
                start, end = _span(size, byte_range)
                data = os.pread(fd, end - start, start)
            finally:
                os.close(fd)
            return (prototype or default_buffer_prototype()).buffer.from_bytes(data)

        def get_sync(self, key, *, prototype=None, byte_range=None):
            self._ensure_open_sync()
            return self._read(key, prototype, byte_range)

        async def get(self, key, prototype=None, byte_range=None):
            if not self._is_open:
                await self._open()
            return await asyncio.to_thread(self._read, key, prototype, byte_range)

        async def get_partial_values(self, prototype, key_ranges):
            return [await self.get(k, prototype, r) for k, r in key_ranges]

        def _confine(self, key: str) -> None:
            os.close(open_folder(self.root, key.split("/")[:-1], create=True))

        def set_sync(self, key, value):
            self._confine(key)
            super().set_sync(key, value)

        async def _set(self, key, value, exclusive=False):
            await asyncio.to_thread(self._confine, key)
            await super()._set(key, value, exclusive=exclusive)

    return ConfinedStore


def confined_store(root: Path, *, read_only: bool):
    """A zarr store on ``root`` that reads and writes only inside it (see the module docstring)."""
    st = _confined_class()(Path(root), read_only=read_only)
    st.limits, st.sharded = {}, {}
    return st
