"""The streaming extraction pipeline: decode processes -> bounded batch queue -> model -> writer pool.

::

    reader thread  has batch b decoded (read within the budget + decode + resize + layout) by a
                   :class:`~.decode_pool.DecodePool` of ``workers`` processes straight into a
                   shared-memory slot, puts the slot's view on a bounded queue; the model
                   releases the slot after running it (``prefetch + 2`` slots)
    caller thread  runs the model on each batch (ONNX Runtime releases the GIL), outputs bound
                   into a ring of preallocated (on a GPU, pinned) buffers
    writer thread  hands each batch's tap chunks to a pool of ``writers`` threads (chunks are
                   independent), and writes a batch's status chunk (the commit) only after all of
                   its tap chunks; then releases its ring slot

Both queues are bounded, so memory stays at a few batches whatever the input size, and a
slow disk slows the model down instead of filling memory. Only pending batches run, so the
same call completes a store after a crash or Ctrl-C.
"""

from __future__ import annotations

import logging
import queue
import signal
import sys
import threading
import time
from collections import deque
from contextlib import contextmanager
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import wait as futures_wait
from dataclasses import dataclass, field


from .decode_pool import DecodePool, InlineDecoder, SharedMemoryError, worker_count
from .preprocess import DecodeBudget
from .store import FeatureStore
from .unit import Batch, ExtractSettings, StageClock, commit, finish_counts, strict_failure, submit_taps

log = logging.getLogger(__name__)
_DONE = object()


@dataclass
class Summary:
    """What one run did. ``ok``/``errors``/``pending`` count the whole store; ``images`` this run;
    ``left_pending`` the rows this run left pending because their decoder died or hung (twice)."""

    ok: int = 0
    errors: int = 0
    pending: int = 0
    left_pending: int = 0
    images: int = 0
    batches: int = 0
    seconds: float = 0.0
    bytes_written: int = 0
    interrupted: bool = False
    error_rows: list = field(default_factory=list)
    stages: dict = field(default_factory=dict)  # StageClock.as_dict(): wall and own-thread CPU per stage
    cpu_s: dict = field(default_factory=dict)  # process CPU seconds: "this process", "decode workers"

    @property
    def images_per_s(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else 0.0


def _open_decoder(preprocessing, workers: int, batch_size: int, prefetch: int, budget: DecodeBudget,
                  timeout_s: float):
    """A decode pool of ``workers`` processes (``prefetch + 2`` slots: one being filled, ``prefetch``
    queued, one in the model), or in-thread decoding for ``workers == 0``."""
    if workers < 1:
        return InlineDecoder(preprocessing, batch_size=batch_size, budget=budget)
    return DecodePool(preprocessing, workers=workers, batch_size=batch_size, slots=prefetch + 2, budget=budget,
                      timeout_s=timeout_s)


def _start_decoder(pool):
    """Start ``pool``; where /dev/shm has no room for one batch buffer, decode in a thread instead
    (slower, with a warning) rather than refuse the run."""
    if isinstance(pool, InlineDecoder):
        return pool
    try:
        pool.start()
    except SharedMemoryError as e:
        log.warning("%s; decoding in a thread instead of %d worker processes (slower)", e, pool.workers)
        return InlineDecoder(pool.pre, batch_size=pool.batch_size, budget=pool.budget)
    return pool


class _Worker(threading.Thread):
    """A thread that records its exception for the caller instead of dying silently."""

    def __init__(self, target, name):
        super().__init__(target=self._guard, name=name, daemon=True)
        self._fn = target
        self.error: BaseException | None = None

    def _guard(self):
        try:
            self._fn()
        except BaseException as e:  # re-raised in the caller thread
            self.error = e


def _put(q: queue.Queue, item, keep_trying) -> bool:
    """Put ``item`` on the bounded ``q``, retrying while ``keep_trying()``; False if given up."""
    while keep_trying():
        try:
            q.put(item, timeout=0.1)
            return True
        except queue.Full:
            continue
    return False


@dataclass
class _Written:
    """A batch whose tap chunks are being written: commit it once every future is done."""

    batch: Batch
    chunks: list
    slot: object = None


def submit_chunks(chunk_pool, store: FeatureStore, batch: Batch, outputs: dict, slot=None,
                  clock: StageClock | None = None) -> _Written:
    """Queue one chunk write per output of ``batch`` on ``chunk_pool`` (:func:`.unit.submit_taps`):
    the commit reads ``batch.errors``/``ok_rows`` only after every chunk of the batch is written."""
    return _Written(batch, submit_taps(chunk_pool, store, batch, outputs, clock), slot)


def _acquire(ring, keep_waiting):
    """A free ring slot, waiting while the writers hold every one (None: stopped waiting)."""
    slot = None
    while slot is None and keep_waiting():
        slot = ring.acquire(timeout=0.1)
    return slot


def run_batch(run_model, ring, inputs, keep_waiting):
    """Run the model on one batch: into a free ring slot when there is a ring (waiting while the
    writers still hold every slot), else as a plain call. Returns ``(slot or None, outputs)``."""
    if inputs is None:
        return None, {}
    if ring is None:  # a plain callable, or an Extractor without IO binding (OpenVINO)
        return None, (run_model(inputs) if callable(run_model) else run_model.run(inputs))
    slot = _acquire(ring, keep_waiting)
    if slot is None:
        return None, {}
    return slot, run_model.run_into(inputs, slot)


@contextmanager
def _sigint_deferred():
    """While stopping: Ctrl-C (SIGINT) only says that the stop is under way. The batches in flight
    are written and committed, the decode workers stopped and the shared memory freed within a few
    seconds; an interrupted clean-up would leak the block and leave a traceback."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def note(signum, frame):
        print("featuremaps: stopping: writing the batches already computed, then exiting", file=sys.stderr,
              flush=True)

    previous = signal.signal(signal.SIGINT, note)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def run_extraction(store: FeatureStore, run_model, preprocessing, settings: ExtractSettings | None = None, *,
                   progress=None) -> Summary:
    """Extract every pending batch of ``store``, the :mod:`.unit`'s steps overlapped.

    ``run_model``: an :class:`~featuremaps.engine.extractor.Extractor` (its outputs are bound into
    a ring of ``settings.ring_slots`` preallocated, on a GPU pinned, buffer sets; up to
    ``ring_slots - 1`` batches are being written while the next one runs; one whose
    ``binds_outputs`` is False, OpenVINO's, is called through ``run``), or any callable
    ``batch -> {output name: (n, ...) array}`` (fresh arrays per batch). ``settings.writers``
    threads write chunks (each tap of each batch is its own chunk; casting to the store's dtype
    happens there); a batch's status chunk is written only after all of its tap chunks (the
    commit). ``progress(n_images)`` is called after each committed batch. Bad images become error
    rows unless ``settings.strict``, where the first one raises :class:`ExtractionError` (its batch
    is left pending). Ctrl-C stops after the batches in flight are written and returns
    ``Summary(interrupted=True)``. ``settings.workers`` decode processes (default: the usable
    cores; 0 decodes in a thread), each image within ``settings.budget``.
    """
    settings = settings or ExtractSettings()
    prefetch, ring_slots = settings.prefetch, settings.ring_slots
    todo = store.pending_batches()
    paths = store.paths
    summary = Summary(batches=len(todo))
    clock = StageClock()
    stop = threading.Event()
    batches: queue.Queue = queue.Queue(maxsize=prefetch)
    results: queue.Queue = queue.Queue(maxsize=2)
    workers = worker_count(settings.workers, sum(len(range(*store.batch_rows(b))) for b in todo))
    batch_size = max((len(range(*store.batch_rows(b))) for b in todo), default=1)
    binds = getattr(run_model, "binds_outputs", hasattr(run_model, "run_into"))
    async_runs = binds and hasattr(run_model, "submit_into")  # an Extractor: start, then collect
    # OpenVINO's throughput mode runs `lanes` batches at once (one per stream); a ring slot and a
    # decode slot per batch in the model, ring_slots - 1 batches being written meanwhile
    lanes = max(1, int(getattr(run_model, "lanes", 1))) if async_runs else 1
    pool = _open_decoder(preprocessing, workers, batch_size, prefetch + lanes - 1, settings.budget,
                         settings.decode_timeout_s)

    def read():
        for b in todo:
            if stop.is_set():
                return
            start, end = store.batch_rows(b)
            with clock.stage("decode (reader waits for the workers)"):
                got = pool.decode([paths[i] for i in range(start, end)], cancelled=stop.is_set)
            if got is None:
                return
            failure = strict_failure(paths, start, got.errors) if settings.strict else None
            if failure is not None:
                pool.release(got)
                raise failure
            inputs = got.inputs if got.ok_rows else None
            batch = Batch(b, inputs, got.ok_rows, got.errors, release=lambda got=got: pool.release(got),
                          pending=got.pending)
            if not _put(batches, batch, lambda: not stop.is_set()):
                return
        _put(batches, _DONE, lambda: not stop.is_set())

    ring = run_model.output_ring(store.batch_size, ring_slots + lanes - 1) if binds else None
    chunk_pool = ThreadPoolExecutor(max_workers=max(1, settings.writers), thread_name_prefix="fm-write")
    inflight: list[_Written] = []

    def commit_oldest():
        done = inflight.pop(0)
        with clock.stage("writer waits for chunks"):
            summary.bytes_written += sum(f.result() for f in done.chunks)  # re-raises a failed chunk write
        with clock.stage("commit (error rows, status)"):
            commit(store, done.batch.index, done.batch.errors, done.batch.pending)  # status last: the commit
        if ring is not None and done.slot is not None:
            ring.release(done.slot)
        n = done.batch.rows_done
        summary.left_pending += len(done.batch.pending)
        summary.images += n
        if progress is not None:
            progress(n)

    def write():
        try:
            while True:
                while inflight and all(f.done() for f in inflight[0].chunks):
                    commit_oldest()
                try:
                    item = results.get(timeout=0.02 if inflight else None)
                except queue.Empty:  # nothing new: give the oldest batch's chunks a moment
                    futures_wait(inflight[0].chunks, timeout=0.05)
                    continue
                if item is _DONE:
                    break
                inflight.append(submit_chunks(chunk_pool, store, *item, clock=clock))
                while len(inflight) > max(1, ring_slots - 1):
                    commit_oldest()  # at most slots - 1 batches being written: one slot stays for the model
            while inflight:
                commit_oldest()
        finally:
            chunk_pool.shutdown(wait=True)

    reader, writer = _Worker(read, "fm-reader"), _Worker(write, "fm-writer")
    t0, cpu0 = time.perf_counter(), time.process_time()
    pool = _start_decoder(pool)  # read() sees this one
    reader.start()
    writer.start()
    running: deque = deque()  # (batch, run, ring slot): started on the model, not collected yet

    def collect_oldest() -> bool:
        item, run, slot = running.popleft()
        with clock.stage("model (caller waits for the runtime)"):
            outputs = run_model.collect(run)
        item.done_with_inputs()  # the model has read the shared-memory slot: give it back
        return _put(results, (item, outputs, slot), writer.is_alive)

    try:
        while True:
            try:
                with clock.stage("model waits for decoded batches"):
                    item = batches.get(timeout=0.2)
            except queue.Empty:
                if reader.error is not None or writer.error is not None:
                    break
                if not reader.is_alive() and batches.empty():
                    break
                continue
            if item is _DONE:
                break
            if async_runs:
                if item.inputs is None:  # no row decoded: nothing to run
                    if not _put(results, (item, {}, None), writer.is_alive):
                        break
                    continue
                slot = _acquire(ring, writer.is_alive)
                if slot is None:
                    break
                running.append((item, run_model.submit_into(item.inputs, slot), slot))
                if len(running) >= lanes and not collect_oldest():
                    break
                continue
            with clock.stage("model (caller waits for the runtime)"):
                slot, outputs = run_batch(run_model, ring, item.inputs, writer.is_alive)
            item.done_with_inputs()  # the model has read the shared-memory slot: give it back
            if not _put(results, (item, outputs, slot), writer.is_alive):
                break
        while running and writer.is_alive():
            if not collect_oldest():
                break
    except KeyboardInterrupt:
        summary.interrupted = True
        if running:  # runs the interrupt did not reach (they stop when their turn comes)
            run_model.cancel_all()
    finally:
        with _sigint_deferred():  # a second Ctrl-C must not cut the clean-up short (leaked shared memory)
            stop.set()
            _put(results, _DONE, writer.is_alive)  # the writer finishes what the model already produced
            writer.join()
            reader.join()
            decode_cpu = pool.cpu_seconds()  # before the workers exit
            pool.__exit__(None, None, None)
            if ring is not None:
                ring.close()
    summary.seconds = time.perf_counter() - t0
    summary.stages = clock.as_dict()
    summary.cpu_s = {"this process": time.process_time() - cpu0, "decode workers": decode_cpu}
    for worker in (writer, reader):
        if worker.error is not None:
            raise worker.error
    return finish_counts(summary, store)
