"""One extraction unit: a store batch goes decode (within the budget) -> run -> check -> write every
tap -> commit. Both schedulers are built from these pieces and nothing else touches the store:

* the local pipeline (:mod:`.pipeline`) decodes in a process pool, runs the model in the caller
  thread and writes taps in a thread pool, overlapping all three across batches;
* Ray (:mod:`.ray_engine`) decodes in tasks (:func:`decode_batch`), runs and writes in actors
  (:func:`write_taps`) and commits in the driver (:func:`commit`).

So a rule about a batch (what the decode budget refuses, what ``--strict`` stops at, which rows
become error rows because their maps hold NaN/inf or overflow fp16 storage, that a batch without
an ok row costs no map bytes, that status is written last) is written once, here.
"""

from __future__ import annotations

import threading
import time
import weakref
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field

import numpy as np

from ..errors import ExtractionError
from .cast import to_fp16
from .decode_pool import InlineDecoder
from .inputs import printable_path
from .preprocess import DecodeBudget, Preprocessing
from .store import DTYPES, FeatureStore

FP16_MAX = 65504.0


class StageClock:
    """Wall and CPU seconds per stage of a run, summed over batches and threads (``cpu`` is the
    calling thread's own CPU time, so a stage waiting on others costs wall, not CPU). Cheap: two
    clock reads per stage entry. :func:`as_dict` gives ``{stage: {"wall_s", "cpu_s", "calls"}}``."""

    def __init__(self):
        self._lock = threading.Lock()
        self._t: dict[str, list[float]] = {}

    @contextmanager
    def stage(self, name: str):
        w0, c0 = time.perf_counter(), time.thread_time()
        try:
            yield
        finally:
            wall, cpu = time.perf_counter() - w0, time.thread_time() - c0
            with self._lock:
                t = self._t.setdefault(name, [0.0, 0.0, 0])
                t[0] += wall
                t[1] += cpu
                t[2] += 1

    def as_dict(self) -> dict:
        with self._lock:
            return {k: {"wall_s": w, "cpu_s": c, "calls": n} for k, (w, c, n) in self._t.items()}


def _stage(clock: StageClock | None, name: str):
    return clock.stage(name) if clock is not None else nullcontext()


@dataclass(frozen=True)
class ExtractSettings:
    """How a run extracts, parsed once (the CLI builds it from its options; library callers pass it).

    ``workers`` decode processes (None: the usable cores; 0: decode in a thread; Ray: the most
    decode tasks at once), ``writers`` chunk-writing threads (per Ray actor with Ray),
    ``prefetch`` decoded batches queued ahead of the model, ``ring_slots`` output buffer sets
    (local engine), ``strict`` stop at the first bad image, ``budget`` what one image may cost,
    ``decode_timeout_s`` how long a decode worker may take for one image before it counts as hung.
    """

    workers: int | None = None
    writers: int = 4
    prefetch: int = 2
    ring_slots: int = 3
    strict: bool = False
    budget: DecodeBudget = field(default_factory=DecodeBudget)
    decode_timeout_s: float = 60.0


@dataclass
class Batch:
    """One store batch on its way through the unit: ``inputs`` holds the model inputs of
    ``ok_rows`` (row offsets inside the batch, in order; None when no row decoded), ``errors``
    ``{row: reason}`` for bad images (and, after :func:`write_taps`, for rows whose maps are not
    storable), ``pending`` ``{row: what happened}`` for rows whose decoder died or hung (not done:
    a resumed run redoes them). ``release`` gives a decode pool's buffer back."""

    index: int
    inputs: np.ndarray | None
    ok_rows: list[int]
    errors: dict[int, str]
    release: Callable[[], None] | None = None
    pending: dict[int, str] = field(default_factory=dict)

    def done_with_inputs(self) -> None:
        if self.release is not None:
            self.release()

    @property
    def rows_done(self) -> int:
        """Rows this batch settles (ok or error; pending ones are not done)."""
        return len(self.ok_rows) + len(self.errors)


def decode_batch(index: int, paths: Sequence[str], pre: Preprocessing, budget: DecodeBudget) -> Batch:
    """Decode one batch in this thread (a Ray decode task; the local engine's pool does the same
    work in processes): each image within ``budget``, a refused one an error row."""
    got = InlineDecoder(pre, batch_size=max(1, len(paths)), budget=budget).decode(list(paths))
    return Batch(index, got.inputs if got.ok_rows else None, list(got.ok_rows), dict(got.errors))


def strict_failure(paths: Sequence[str], start: int, errors: dict[int, str]) -> ExtractionError | None:
    """``--strict``: the error for the batch's first bad image (its batch stays pending), or None."""
    if not errors:
        return None
    r, msg = min(errors.items())
    return ExtractionError(f"{printable_path(paths[start + r])}: {msg} (--strict stops at the first bad image; "
                           "drop --strict to record it as an error row and go on)")


def nonfinite_rows(name: str, maps: np.ndarray, dtype) -> dict[int, str]:
    """``{position in maps: reason}`` for rows of ``maps`` that would be stored (as ``dtype``) with
    NaN or inf. Cheap (VGG16's five taps at 224x224: about 1 ms per image for fp32 storage, 2 ms
    for fp16): one float32 sum per row, or for fp16 storage one max and one min per row (which
    also catch values fp16 cannot hold); only a suspect row gets an exact ``isfinite``."""
    rows = np.asarray(maps).reshape(len(maps), -1)
    if not rows.size:
        return {}
    if rows.dtype == np.float16:  # numpy's fp16 arithmetic is slow: NaN/inf are the all-ones exponents
        suspect = np.bitwise_and(rows.view(np.uint16), 0x7FFF).max(axis=1) >= 0x7C00
    elif np.dtype(dtype) == np.float16:
        hi, lo = rows.max(axis=1), rows.min(axis=1)
        with np.errstate(invalid="ignore"):
            suspect = ~(np.isfinite(hi) & np.isfinite(lo) & (hi <= FP16_MAX) & (lo >= -FP16_MAX))
    else:
        with np.errstate(over="ignore", invalid="ignore"):
            suspect = ~np.isfinite(np.add.reduce(rows, axis=1, dtype=np.float32))
    bad = {}
    for i in np.flatnonzero(suspect):
        if not np.isfinite(rows[i]).all():
            bad[int(i)] = (f"the model produced NaN or inf in tap {name} for this image; stored as an error row "
                           "(check the model: `featuremaps parity`)")
        elif np.dtype(dtype) == np.float16:
            top = float(np.abs(rows[i]).max())
            bad[int(i)] = (f"tap {name} overflows fp16 storage (max |x| {top:.2g} > {FP16_MAX:.0f}); re-run with "
                           "--dtype fp32 into a new -o path")
    return bad  # other suspects: finite values whose float32 sum overflowed


def as_stored(maps: np.ndarray, dtype, out: np.ndarray | None = None) -> np.ndarray:
    """``maps`` in the store's ``dtype``: no copy when it already is; fp32 -> fp16 by
    :func:`.cast.to_fp16` (vectorised, the same bits as NumPy's cast), into ``out`` if given."""
    maps = np.asarray(maps)
    if maps.dtype == np.dtype(dtype):
        return maps
    if _casts_to_fp16(maps, dtype):
        return to_fp16(maps, out)
    with np.errstate(over="ignore", invalid="ignore"):
        return maps.astype(dtype)


def write_tap(store: FeatureStore, name: str, b: int, maps: np.ndarray | None, ok_rows: list[int],
              clock: StageClock | None = None) -> int:
    """Write output ``name``'s chunk of batch ``b`` (rows not in ``ok_rows`` are zeros; no chunk when
    no row is ok), cast to the store's dtype here, in the writer's thread (an fp32 model's maps
    become fp16 on the way to disk). Returns bytes written (uncompressed). Batches never share a
    chunk, so any thread or process may write any (tap, batch) chunk; only the commit waits."""
    start, stop = store.batch_rows(b)
    dtype = DTYPES[store.dtype]
    if not ok_rows or maps is None:  # every row an error: no chunk (100,000 missing files wrote 5.6 GB of zeros)
        return store.write_output(name, b, None)
    with _stage(clock, "cast to the store's dtype"):
        if len(ok_rows) == stop - start:  # rows fp16 cannot hold are error rows already
            full = as_stored(maps, dtype)  # every row ok: no zero-filled copy (no copy if dtypes match)
        else:
            full = np.zeros((stop - start, *store.info["outputs"][name]), dtype)
            full[ok_rows] = as_stored(maps, dtype)
    with _stage(clock, "write chunk (encode, CRC-32C, file)"):
        return store.write_output(name, b, full)


def _check_and_write(store: FeatureStore, name: str, batch: Batch, maps, ok_rows: list[int], lock,
                     clock: StageClock | None = None) -> int:
    """Turn rows whose maps would be stored with NaN/inf into error rows of ``batch`` (under
    ``lock``: a batch's taps may be written in parallel), cast the maps to the store's dtype, then
    :func:`write_tap` (which finds them cast already). The check reads the model's own maps: on
    fp32 maps one max and one min per row cost less than a pass over the cast fp16 bits."""
    if maps is not None and ok_rows:
        dtype = DTYPES[store.dtype]
        with _stage(clock, "check NaN/inf"):
            bad = nonfinite_rows(name, maps, dtype)
        if bad:
            with lock:
                for i, reason in bad.items():
                    batch.errors.setdefault(ok_rows[i], reason)
                    if ok_rows[i] in batch.ok_rows:
                        batch.ok_rows.remove(ok_rows[i])
        with _stage(clock, "cast to the store's dtype"):
            scratch = _scratch(store).take(maps.shape) if _casts_to_fp16(maps, dtype) else None
            maps = as_stored(maps, dtype, out=scratch)
        try:
            return write_tap(store, name, batch.index, maps, ok_rows, clock)
        finally:
            if scratch is not None:  # written (write_tap returns once the chunk files are): reusable
                _scratch(store).give(scratch)
    return write_tap(store, name, batch.index, maps, ok_rows, clock)


def _casts_to_fp16(maps, dtype) -> bool:
    return np.dtype(dtype) == np.float16 and getattr(maps, "dtype", None) == np.float32


class _Scratch:
    """fp16 buffers the writers cast into, reused chunk after chunk: a fresh 12 MB array per
    chunk costs its page faults and zeroing again (measured: the cast alone took 2x as long)."""

    def __init__(self):
        self._lock = threading.Lock()
        self._free: dict[tuple, list[np.ndarray]] = {}

    def take(self, shape: tuple) -> np.ndarray:
        with self._lock:
            free = self._free.get(tuple(shape))
            if free:
                return free.pop()
        return np.empty(shape, np.float16)

    def give(self, buf: np.ndarray) -> None:
        with self._lock:
            self._free.setdefault(buf.shape, []).append(buf)


_SCRATCH: "weakref.WeakKeyDictionary[FeatureStore, _Scratch]" = weakref.WeakKeyDictionary()
_SCRATCH_LOCK = threading.Lock()


def _scratch(store: FeatureStore) -> _Scratch:
    """The store's cast buffers (they go with the store object)."""
    with _SCRATCH_LOCK:
        return _SCRATCH.setdefault(store, _Scratch())


def submit_taps(pool: Executor, store: FeatureStore, batch: Batch, outputs: dict,
                clock: StageClock | None = None) -> list:
    """Queue one chunk write per output of ``batch`` on ``pool``; returns the futures (each gives
    the bytes it wrote). ``batch.errors``/``ok_rows`` are final once every future is done."""
    lock, ok_rows = _own_rows(batch)
    return [pool.submit(_check_and_write, store, name, batch, outputs.get(name), ok_rows, lock, clock)
            for name in store.outputs]


def _own_rows(batch: Batch) -> tuple[threading.Lock, list[int]]:
    """Before a batch's taps are written: its ``errors``/``ok_rows`` become ours to change (not the
    decoder's), and the writers index with a copy of ``ok_rows`` (the batch's own list may shrink)."""
    batch.errors, batch.ok_rows = dict(batch.errors), list(batch.ok_rows)
    return threading.Lock(), list(batch.ok_rows)


def write_taps(store: FeatureStore, batch: Batch, outputs: dict, pool: Executor | None = None) -> int:
    """Write every tap chunk of ``batch`` (in ``pool`` if given, else in this thread) and wait for
    them; returns the bytes written. No commit: :func:`commit` follows, maybe in another process."""
    if pool is None:
        lock, ok_rows = _own_rows(batch)
        return sum(_check_and_write(store, name, batch, outputs.get(name), ok_rows, lock) for name in store.outputs)
    return sum(f.result() for f in submit_taps(pool, store, batch, outputs))


def commit(store: FeatureStore, index: int, errors: dict[int, str], pending: dict | Sequence = ()) -> None:
    """Mark the batch done: its error rows, then its status rows, last of all (the commit). Call
    only once every tap chunk of the batch is written."""
    store.commit_batch(index, errors, pending=pending)


def finish_counts(summary, store: FeatureStore):
    """Fill ``summary.ok``/``errors``/``pending`` from the whole store (one uint8 per row), once the
    shards still being filled are written and their batches committed (sharded stores)."""
    store.flush()
    counts = store.counts()
    summary.ok, summary.errors, summary.pending = counts["ok"], counts["error"], counts["pending"]
    return summary


def write_batch(store: FeatureStore, b: int, outputs: dict[str, np.ndarray], ok_rows, errors: dict[int, str]) -> int:
    """The whole unit after the model, in this thread: ``outputs[name]`` holds the maps of
    ``ok_rows`` (row offsets inside batch ``b``, in order), ``errors`` the bad rows' reasons. Tap
    chunks, then the commit. Returns feature bytes written (uncompressed). For benchmarks, tests
    and callers with maps already computed."""
    batch = Batch(b, None, list(ok_rows), dict(errors))
    written = write_taps(store, batch, outputs)
    commit(store, b, batch.errors)
    return written
