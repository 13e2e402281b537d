"""One writer at a time on a local store: an advisory ``flock`` on ``status/featuremaps.lock``
(object stores use :class:`.remote.Lease`), and the clean-up of creation folders whose creator died."""

from __future__ import annotations

import errno
import os
import shutil
import stat
from pathlib import Path

from ...errors import StoreError
from .format import LOCK_NAME
from .io import UnsafeStoreError, open_folder, unsafe

TMP_MARK = ".creating-"  # a store is built in ``.NAME.creating-PID-XXXX`` beside it, then renamed


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


def clean_stale_temps(path: Path) -> None:
    """Remove temporary creation folders of ``path`` whose creator process is gone."""
    for tmp in path.parent.glob(f".{path.name}{TMP_MARK}*"):
        try:
            pid = int(tmp.name[len(f".{path.name}{TMP_MARK}"):].split("-")[0])
            os.kill(pid, 0)
        except ProcessLookupError:
            shutil.rmtree(tmp, ignore_errors=True)
        except (ValueError, PermissionError):
            continue  # not ours, or alive under another user
