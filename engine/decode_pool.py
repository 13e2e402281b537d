"""Decode in worker processes that write straight into shared-memory batch buffers.

Why processes: decode + resize holds the GIL for part of its work and threads stop scaling
after a few cores (measured on a 16-core H200 host: 1,959 img/s in threads, 4,614 in
processes). Why shared memory: a decoded 224x224 float image is 602 KB; pickling it back to the
parent would cost as much as the decode. Here the parent owns one ``SharedMemory`` block of
``slots`` batch buffers ``(slots, batch_size, *input_shape)``; a worker gets ``(task, slot, row,
path)`` over its own pipe, writes the model input into ``buffer[slot, row]`` and answers only
``(task, reason or None)``.

A file is a row: each worker has its own pipe, so the parent always knows which file a worker
holds. A worker that dies (killed by the OOM killer, SIGBUS, a decoder segfault) or exceeds
``timeout_s`` on one image (stopped, a hung network read, a laptop asleep) is killed and replaced
and the file is tried once more in the fresh worker; a second failure leaves the row *pending*
(:attr:`DecodedBatch.pending`), not an error: it says nothing certain about the file, so
``--resume`` retries it. A file that kills its decoder every time costs two workers per run, never
a loop. Only the decoder's own verdict ("truncated JPEG", "not a decodable image") is an error row. Workers start with
the ``forkserver`` method (the parent may already run ONNX Runtime threads, and forking a
threaded process is unsafe); they ignore SIGINT, so Ctrl-C reaches only the parent, which
stops them on close. ``close()`` unlinks the shared block, so nothing is left in ``/dev/shm``.

The block is reserved when it is made (``posix_fallocate``), after checking the free space of
``/dev/shm``: a sparse block on a small ``/dev/shm`` (Docker's default is 64 MiB) would kill the
run with SIGBUS at the first write past the end. With room for fewer batch buffers than asked
the pool uses fewer (less overlap of decode and model, with a warning); with room for none,
:class:`SharedMemoryError` tells the caller to decode without shared memory.
"""

from __future__ import annotations

import errno
import logging
import math
import multiprocessing as mp
import os
import queue
import signal
import sys
import time
import types
from collections import deque
from contextlib import contextmanager
from dataclasses import dataclass, field
from multiprocessing import connection, shared_memory

import numpy as np

from .inputs import printable_path
from .preprocess import DecodeBudget, Preprocessing, preprocess_image, to_input
from .sources import iter_input_bytes, read_input_bytes
from ..errors import ExtractionError, ImageDecodeError

log = logging.getLogger(__name__)
SHM_DIR = "/dev/shm"  # where glibc's shm_open (multiprocessing.shared_memory) makes its files
_DEPTH = 2  # tasks queued per worker
TRIES = 2  # attempts per file when its worker dies or times out (the second in a fresh worker)
_PRELOAD = ["featuremaps.engine.decode_pool", "PIL.Image", "PIL.JpegImagePlugin", "PIL.PngImagePlugin"]


@contextmanager
def _worker_start():
    """While a worker process starts:

    * ``PYTHONSAFEPATH=1``: Python 3.11's forkserver runs as ``python -c`` (the current folder
      first on ``sys.path``) and does not apply the parent's ``sys.path`` before preloading, so a
      folder or file named ``featuremaps`` where the user stands shadowed the package and every
      worker died on import. Safe-path mode leaves the current folder off ``sys.path``.
    * the caller's ``__main__`` hidden: spawn and forkserver children re-import the parent's main
      script (as ``__mp_main__``) so that functions defined there unpickle; a script without an
      ``if __name__ == "__main__":`` guard then ran again in every worker, and a script read from
      stdin (``python -``) killed them. Our workers' code lives in this module, so they never need
      the main module: a bare stand-in (no ``__file__``, no ``__spec__``) gives them nothing to import.
    """
    old = os.environ.get("PYTHONSAFEPATH")
    os.environ["PYTHONSAFEPATH"] = "1"
    main = sys.modules.get("__main__")
    sys.modules["__main__"] = types.ModuleType("__main__")
    try:
        yield
    finally:
        if main is not None:
            sys.modules["__main__"] = main
        if old is None:
            os.environ.pop("PYTHONSAFEPATH", None)
        else:
            os.environ["PYTHONSAFEPATH"] = old


def _proc_cpu_seconds(pid: int | None) -> float:
    """User + system CPU seconds of process ``pid`` from ``/proc/PID/stat`` (0.0 if unreadable)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime
    except (OSError, ValueError, IndexError, TypeError):
        return 0.0


def usable_cores() -> int:
    """CPU cores this process may run on (affinity/cgroup cpusets), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


class SharedMemoryError(ExtractionError):
    """Not even one batch buffer fits in shared memory (``/dev/shm``)."""


def shm_free_bytes() -> int | None:
    """Bytes free in ``/dev/shm`` for this user, or None where it cannot be told (no /dev/shm)."""
    try:
        st = os.statvfs(SHM_DIR)
    except OSError:
        return None
    return st.f_bavail * st.f_frsize


def _mb(n: int) -> str:
    return f"{n / 2**20:.0f} MiB" if n >= 2**20 else f"{n / 2**10:.0f} KiB"


def _shm_fix(need: int) -> str:
    return (f"give it at least {_mb(need)} (docker run --shm-size={math.ceil(need * 1.25 / 2**20)}m), or lower "
            "--batch-size")


def fit_slots(slots: int, slot_bytes: int, free: int | None) -> int:
    """How many of ``slots`` batch buffers of ``slot_bytes`` to make with ``free`` bytes in
    /dev/shm (10% left to others); fewer than asked is logged; none raises :class:`SharedMemoryError`."""
    if free is None:
        return slots
    fits = min(slots, int(free * 0.9) // max(slot_bytes, 1))
    need = slots * slot_bytes
    if fits < 1:
        raise SharedMemoryError(f"{SHM_DIR} has {_mb(free)} free, less than one decode batch buffer "
                                f"({_mb(slot_bytes)}); {_shm_fix(need)}")
    if fits < slots:
        log.warning("%s has %s free, room for %d of the %d decode batch buffers (%s); decoding overlaps the model "
                    "less. To run at full speed %s", SHM_DIR, _mb(free), fits, slots, _mb(need), _shm_fix(need))
    return fits


def _reserved_block(nbytes: int) -> shared_memory.SharedMemory:
    """A new shared block whose pages are reserved now: no room is :class:`SharedMemoryError` here,
    not SIGBUS at the first write (another process may have filled /dev/shm since the check)."""
    shm = shared_memory.SharedMemory(create=True, size=max(nbytes, 1))
    fd = getattr(shm, "_fd", -1)  # POSIX only
    try:
        if fd >= 0 and hasattr(os, "posix_fallocate"):
            os.posix_fallocate(fd, 0, max(nbytes, 1))
    except OSError as e:
        if e.errno not in (errno.ENOSPC, errno.ENOMEM, errno.EFBIG):
            return shm  # not supported on this file system: the free-space check is what there is
        shm.close()
        shm.unlink()
        raise SharedMemoryError(f"{SHM_DIR} has no room for the decode batch buffers ({_mb(nbytes)}); "
                                f"{_shm_fix(nbytes)}") from None
    return shm


def worker_count(requested: int | None, files: int) -> int:
    """Decode processes to start: ``requested`` (default: the usable cores), at most one per file
    and at most 4 per usable core (more only compete for the same cores, each a Python process);
    a cut below an explicit request is logged. 0 stays 0 (decode in a thread)."""
    cores = usable_cores()
    want = cores if requested is None else requested
    n = max(0, min(want, files, 4 * cores))
    if requested is not None and n < requested and n > 0:
        why = f"{files} image(s)" if n == files else f"4 x {cores} usable core(s)"
        log.info("--workers %d: starting %d decode worker(s) (no more than %s)", requested, n, why)
    return n


def default_decoder(path: str, pre: Preprocessing, budget: DecodeBudget, out: np.ndarray) -> None:
    """Decode row ``path`` (a file, a tar member or a URL object: :func:`.sources.read_input_bytes`)
    into ``out`` (one row of a batch buffer), within ``budget``. Raises ImageDecodeError."""
    preprocess_row(read_input_bytes(path, budget.max_file_bytes), pre, budget, out)


def preprocess_row(data: bytes | ImageDecodeError, pre: Preprocessing, budget: DecodeBudget,
                   out: np.ndarray) -> None:
    """One row's bytes (or the error reading them) -> the model input in ``out``."""
    if isinstance(data, ImageDecodeError):
        raise data
    to_input(preprocess_image(data, pre, budget), pre, out)


def _as_array(shm: shared_memory.SharedMemory, shape: tuple, dtype: np.dtype) -> np.ndarray:
    """``shm`` as an array that holds a buffer export: while any view of it lives, ``shm.close()``
    raises instead of unmapping memory under it (``np.ndarray(buffer=...)`` holds none)."""
    return np.frombuffer(shm.buf, dtype, count=int(np.prod(shape))).reshape(shape)


def _worker_main(conn, shm_name: str, shape: tuple, dtype: str, pre: Preprocessing, budget: DecodeBudget,
                 decoder) -> None:
    """Worker process: decode tasks from ``conn`` into the shared block until ``None`` arrives."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    # The workers share the parent's resource tracker (spawn/forkserver pass it on), so attaching
    # registers nothing new and the parent's unlink is the one clean-up.
    try:
        shm = shared_memory.SharedMemory(name=shm_name)
    except FileNotFoundError:  # the pool closed (Ctrl-C) before this worker got going: nothing to do
        return
    buf = _as_array(shm, shape, np.dtype(dtype))
    try:
        while True:
            msg = conn.recv()
            if msg is None:
                break
            task, slot, row, path = msg
            try:
                decoder(path, pre, budget, buf[slot, row])
                reason = None
            except ImageDecodeError as e:
                reason = str(e)
            except Exception as e:  # noqa: BLE001 - one file's failure is that file's error row
                reason = f"decoder failed: {type(e).__name__}: {e}"
            conn.send((task, reason))
    except (EOFError, KeyboardInterrupt, BrokenPipeError):
        pass
    finally:
        del buf
        shm.close()


@dataclass
class _Proc:
    process: mp.process.BaseProcess
    conn: connection.Connection
    tasks: deque = field(default_factory=deque)  # (task id, row, path) sent, in order; [0] is in progress
    started: float = 0.0  # when tasks[0] began (its predecessor answered, or it was sent to an idle worker)


@dataclass
class DecodedBatch:
    """One decoded batch: ``inputs`` is a view of the shared buffer holding the ok rows in order
    (``(n_ok, *input_shape)``; valid until :meth:`DecodePool.release`), ``ok_rows`` their row
    numbers in the request, ``errors`` ``{row: reason}`` for the files the decoder refused, and
    ``pending`` ``{row: what happened}`` for those whose worker died or timed out ``TRIES`` times
    (an infrastructure failure: the row stays pending so a resumed run retries it)."""

    slot: int
    inputs: np.ndarray
    ok_rows: list[int]
    errors: dict[int, str] = field(default_factory=dict)
    pending: dict[int, str] = field(default_factory=dict)


@dataclass
class _Outcome:
    """What :meth:`DecodePool._run` learns about one batch's rows."""

    errors: dict = field(default_factory=dict)
    pending: dict = field(default_factory=dict)
    tries: dict = field(default_factory=dict)  # row -> infrastructure failures so far


class DecodePool:
    """A pool of decode worker processes writing into ``slots`` shared batch buffers.

    >>> with DecodePool(Preprocessing(size=(64, 64)), workers=2, batch_size=8) as pool:  # doctest: +SKIP
    ...     batch = pool.decode(paths[:8])       # blocks until a slot is free and all rows are done
    ...     maps = extractor.run(batch.inputs)   # (n_ok, 3, 64, 64) float32, no copy
    ...     pool.release(batch)                  # the slot may be reused now

    ``decoder(path, pre, budget, out)`` is what a worker calls per file (default: read within the
    budget, decode, resize, lay out into ``out``); it must be importable by the workers. Start-up
    costs about one Python interpreter fork per worker (see ``bench/decode_bench.py``).
    """

    def __init__(self, preprocessing: Preprocessing, *, workers: int | None = None, batch_size: int = 64,
                 slots: int = 4, budget: DecodeBudget | None = None, timeout_s: float = 60.0,
                 start_method: str = "forkserver", decoder=default_decoder):
        if batch_size < 1 or slots < 1:
            raise ValueError("batch_size and slots must be >= 1")
        self.pre = preprocessing
        self.workers = workers or usable_cores()
        self.batch_size, self.slots, self.timeout_s = batch_size, slots, timeout_s
        self.budget = budget or DecodeBudget()
        self._decoder = decoder
        self._ctx = mp.get_context(start_method)
        self._shape = (slots, batch_size, *preprocessing.input_shape)
        self._shm: shared_memory.SharedMemory | None = None
        self._buf: np.ndarray | None = None
        self._procs: list[_Proc] = []
        self._free: queue.Queue = queue.Queue()
        self._task = 0

    # -- lifecycle -------------------------------------------------------------------------
    def __enter__(self) -> "DecodePool":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def start(self) -> None:
        """Create the shared block and start the workers."""
        if self._ctx.get_start_method() == "forkserver":
            self._ctx.set_forkserver_preload(_PRELOAD)
        slot_bytes = int(np.prod(self._shape[1:])) * self.pre.input_dtype.itemsize
        self.slots = fit_slots(self.slots, slot_bytes, shm_free_bytes())
        self._shape = (self.slots, *self._shape[1:])
        self._shm = _reserved_block(self.slots * slot_bytes)
        self._buf = _as_array(self._shm, self._shape, self.pre.input_dtype)
        for s in range(self.slots):
            self._free.put(s)
        try:
            self._procs = [self._spawn() for _ in range(self.workers)]
        except BaseException:
            self.close()
            raise

    def _spawn(self) -> _Proc:
        parent, child = self._ctx.Pipe(duplex=True)
        p = self._ctx.Process(target=_worker_main, name="fm-decode", daemon=True,
                              args=(child, self._shm.name, self._shape, self.pre.input_dtype.str, self.pre,
                                    self.budget, self._decoder))
        with _worker_start():  # a replacement worker too
            p.start()
        child.close()
        return _Proc(p, parent)

    def cpu_seconds(self) -> float:
        """CPU seconds the live workers have used so far (``/proc``; 0 where it cannot be read).
        They are the forkserver's children, not ours, so ``RUSAGE_CHILDREN`` never sees them."""
        return sum(_proc_cpu_seconds(w.process.pid) for w in self._procs)

    def close(self) -> None:
        """Stop the workers (kill those that do not stop within a second) and unlink the block."""
        for w in self._procs:
            try:
                w.conn.send(None)
            except OSError:
                pass
        deadline = time.monotonic() + 1.0
        for w in self._procs:
            w.process.join(max(0.0, deadline - time.monotonic()))
            if w.process.is_alive():
                w.process.kill()
                w.process.join(1.0)
            w.conn.close()
        self._procs = []
        self._buf = None
        if self._shm is not None:
            try:
                self._shm.close()
            except BufferError:  # a caller still holds a view: the mapping lives until that view dies
                self._shm._buf = self._shm._mmap = None  # noqa: SLF001 - so __del__ does not retry

            self._shm.unlink()
            self._shm = None

    # -- decoding --------------------------------------------------------------------------
    def decode(self, paths: list[str], cancelled=None) -> DecodedBatch | None:
        """Decode up to ``batch_size`` files into a free slot (waits for one); see :class:`DecodedBatch`.

        ``cancelled()`` (optional) is polled while waiting; when it turns true the batch is
        abandoned and None returned (so a stopped consumer never leaves this call hanging).
        """
        if len(paths) > self.batch_size:
            raise ValueError(f"{len(paths)} paths for a batch buffer of {self.batch_size}")
        if self._shm is None:
            raise RuntimeError("DecodePool is not started; use it as a context manager")
        cancelled = cancelled or (lambda: False)
        slot = None
        while slot is None:
            if cancelled():
                return None
            try:
                slot = self._free.get(timeout=0.1)
            except queue.Empty:
                continue
        try:
            got = self._run(slot, paths, cancelled)
        except BaseException:
            self._free.put(slot)
            raise
        if got is None:
            self._free.put(slot)
            return None
        ok_rows = [r for r in range(len(paths)) if r not in got.errors and r not in got.pending]
        rows = self._buf[slot]
        for k, r in enumerate(ok_rows):  # compact ok rows to the front, in place (k <= r)
            if k != r:
                rows[k] = rows[r]
        return DecodedBatch(slot, rows[:len(ok_rows)], ok_rows, got.errors, got.pending)

    def release(self, batch: DecodedBatch) -> None:
        """Give ``batch``'s slot back; its ``inputs`` view must not be used after this."""
        self._free.put(batch.slot)

    def _run(self, slot: int, paths: list[str], cancelled) -> _Outcome | None:
        """Decode ``paths`` into ``slot``; the rows that failed and how, or None if cancelled."""
        todo = deque(enumerate(paths))
        out = _Outcome()
        while todo or any(w.tasks for w in self._procs):
            if cancelled():
                for w in list(self._procs):  # they hold tasks of the abandoned batch
                    if w.tasks:
                        self._replace(w)
                return None
            self._dispatch(slot, todo)
            ready = self._wait([w for w in self._procs if w.tasks])
            for w in list(self._procs):
                if w.tasks:
                    self._collect(w, ready, todo, out)
        return out

    def _dispatch(self, slot: int, todo: deque) -> None:
        """Give every worker up to ``_DEPTH`` tasks (one first to each, then a second), so a worker
        never waits for the parent to be scheduled before it can start its next image."""
        for depth in range(1, _DEPTH + 1):
            for w in list(self._procs):
                if not todo:
                    return
                if len(w.tasks) >= depth:
                    continue
                if not w.tasks and not w.process.is_alive():  # exited after its last answer
                    w = self._replace(w)
                row, path = todo.popleft()
                self._task += 1
                try:
                    w.conn.send((self._task, slot, row, path))
                except OSError:  # died meanwhile: its outcome is collected from its sentinel
                    todo.appendleft((row, path))
                    continue
                if not w.tasks:
                    w.started = time.monotonic()
                w.tasks.append((self._task, row, path))

    def _wait(self, busy: list[_Proc]) -> set:
        """Block until a busy worker answers or dies, or the earliest task deadline; the ready handles."""
        now = time.monotonic()
        left = min((w.started + self.timeout_s - now for w in busy), default=0.0)
        handles = [w.conn for w in busy] + [w.process.sentinel for w in busy]
        return set(connection.wait(handles, timeout=max(0.0, min(left, 1.0))))

    def _collect(self, w: _Proc, ready: set, todo: deque, out: _Outcome) -> None:
        """Record ``w``'s answers; if it died or overran, it is replaced, the files queued behind it
        go back to ``todo``, and so does its current file unless this was its last try (then
        pending)."""
        if w.conn in ready:
            try:
                while w.tasks and w.conn.poll():
                    got, reason = w.conn.recv()
                    task, row, _ = w.tasks[0]
                    if got != task:
                        continue
                    w.tasks.popleft()
                    w.started = time.monotonic()
                    if reason is not None:
                        out.errors[row] = reason
            except (EOFError, OSError):
                pass
        if not w.tasks:
            return
        _, row, path = w.tasks[0]
        if w.process.sentinel in ready:
            w.process.join(0.1)
            code = w.process.exitcode
            how = f"killed by signal {-code}" if code is not None and code < 0 else f"exit status {code}"
            what = f"the decoder process died ({how})"
        elif time.monotonic() - w.started > self.timeout_s:
            what = f"decoding took over {self.timeout_s:g} s (worker stopped or stuck)"
        else:
            return
        w.tasks.popleft()
        out.tries[row] = out.tries.get(row, 0) + 1
        again = out.tries[row] < TRIES
        log.warning("%s on %s; worker replaced, %s", what, printable_path(path),
                    "trying the file once more" if again else "row left pending (extract --resume retries it)")
        if not again:
            out.pending[row] = f"{what}, {TRIES} times"
        todo.extendleft((r, p) for _, r, p in reversed(w.tasks))
        if again:
            todo.appendleft((row, path))
        w.tasks.clear()
        self._replace(w)

    def _replace(self, dead: _Proc) -> _Proc:
        """Reap ``dead`` and start a fresh worker in its place."""
        if dead.process.is_alive():
            dead.process.kill()
        dead.process.join(1.0)
        dead.conn.close()
        new = self._spawn()
        self._procs[self._procs.index(dead)] = new
        return new


class InlineDecoder:
    """:class:`DecodePool`'s API, decoding in the calling thread (``workers=0``: no processes)."""

    def __init__(self, preprocessing: Preprocessing, *, batch_size: int = 64, budget: DecodeBudget | None = None):
        self.pre, self.batch_size = preprocessing, batch_size
        self.budget = budget or DecodeBudget()
        self._buf = np.empty((batch_size, *preprocessing.input_shape), preprocessing.input_dtype)

    def __enter__(self) -> "InlineDecoder":
        return self

    def __exit__(self, *exc) -> None:
        pass

    def decode(self, paths: list[str], cancelled=None) -> DecodedBatch:
        errors: dict[int, str] = {}
        ok_rows: list[int] = []
        # consecutive members of one shard come in one range read
        for r, data in enumerate(iter_input_bytes(paths, self.budget.max_file_bytes)):
            try:
                preprocess_row(data, self.pre, self.budget, self._buf[len(ok_rows)])
                ok_rows.append(r)
            except ImageDecodeError as e:
                errors[r] = str(e)
        return DecodedBatch(0, self._buf[:len(ok_rows)].copy(), ok_rows, errors)

    def release(self, batch: DecodedBatch) -> None:
        pass

    def cpu_seconds(self) -> float:
        return 0.0  # decoding runs in the caller's thread: counted as this process's CPU


def decode_paths(paths: list[str], pre: Preprocessing, *, budget: DecodeBudget, workers: int | None = None,
                 pool_threshold: int = 48) -> np.ndarray:
    """Files -> one stacked batch in ``pre.input_layout``; the first bad file raises
    :class:`ImageDecodeError` naming it. Uses a :class:`DecodePool` only when there are at least
    ``pool_threshold * workers`` files: starting the processes costs more than decoding a few dozen
    inline (bench/results/load_batch_bench.md, 2 workers on 2 cores: the pool is 0.81x inline for
    24 files, 1.04x for 96, 1.28x for 384)."""
    workers = worker_count(workers or None, len(paths))
    out = np.empty((len(paths), *pre.input_shape), pre.input_dtype)
    if workers >= 2 and len(paths) >= pool_threshold * workers:
        try:
            return _decode_in_pool(paths, pre, budget, workers, out)
        except SharedMemoryError as e:
            log.warning("%s; decoding in this process instead", e)
    for i, (p, data) in enumerate(zip(paths, iter_input_bytes(paths, budget.max_file_bytes))):
        try:
            preprocess_row(data, pre, budget, out[i])
        except ImageDecodeError as e:
            raise ImageDecodeError(f"{printable_path(p)}: {e}") from None
    return out


def _decode_in_pool(paths: list[str], pre: Preprocessing, budget: DecodeBudget, workers: int,
                    out: np.ndarray) -> np.ndarray:
    with DecodePool(pre, workers=workers, batch_size=len(paths), slots=1, budget=budget) as pool:
        batch = pool.decode(paths)
        if batch.errors:
            r, reason = min(batch.errors.items())
            raise ImageDecodeError(f"{printable_path(paths[r])}: {reason}")
        if batch.pending:
            r, what = min(batch.pending.items())
            raise ExtractionError(f"{printable_path(paths[r])}: {what}; run again (with fewer --workers or more "
                                  "memory if it happens again)")
        out[...] = batch.inputs
        del batch
    return out


def load_batch(paths, pre: Preprocessing | None = None, *, budget: DecodeBudget | None = None,
               workers: int | None = None) -> np.ndarray:
    """Images (files, tar members ``SHARD#MEMBER``, URLs) ->
    ``(N, 3, H, W) float32`` or ``(N, H, W, 3) uint8`` batch (``pre.input_layout``).

    A few dozen images decode in this process; many (``>= 48 * workers``) in a
    :class:`~featuremaps.engine.decode_pool.DecodePool` of worker processes. The first bad file
    raises :class:`ImageDecodeError` naming it.
    """
    return decode_paths([os.fspath(p) for p in paths], pre or Preprocessing(), budget=budget or DecodeBudget(),
                        workers=workers)
