"""The streaming extraction pipeline: decode processes -> bounded batch queue -> model -> writer thread.

::

    reader thread  has batch b decoded (read within the budget + decode + resize + layout) by a
                   :class:`~.decode_pool.DecodePool` of ``workers`` processes straight into a
                   shared-memory slot, puts the slot's view on a bounded queue; the model
                   releases the slot after running it (``prefetch + 2`` slots)
    caller thread  runs the model on each batch (ONNX Runtime releases the GIL)
    writer thread  writes each batch's chunks, then its status chunk (the commit)

Both queues are bounded, so memory stays at a few batches whatever the input size, and a
slow disk slows the model down instead of filling memory. Only pending batches run, so the
same call completes a store after a crash or Ctrl-C.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass, field

import numpy as np

from .decode_pool import DecodePool, InlineDecoder, usable_cores
from .inputs import printable_path
from .preprocess import DecodeBudget, preprocess_file
from .store import ERROR, OK, FeatureStore
from ..errors import ExtractionError, ImageDecodeError

log = logging.getLogger(__name__)
_DONE = object()


@dataclass
class Summary:
    """What one run did. ``ok``/``errors`` count the whole store; ``images`` this run."""

    ok: int = 0
    errors: int = 0
    pending: int = 0
    images: int = 0
    batches: int = 0
    seconds: float = 0.0
    bytes_written: int = 0
    interrupted: bool = False
    error_rows: list = field(default_factory=list)

    @property
    def images_per_s(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else 0.0


def _decode(path: str, pre, budget: DecodeBudget | None = None) -> np.ndarray | str:
    """One image -> one model input (``pre.input_layout``), or the reason it failed (one line).
    For decoding outside a :class:`DecodePool` (Ray decode tasks)."""
    try:
        return preprocess_file(path, pre, budget)
    except ImageDecodeError as e:
        return str(e)


def _open_decoder(preprocessing, workers: int, batch_size: int, prefetch: int, budget: DecodeBudget,
                  timeout_s: float):
    """A decode pool of ``workers`` processes (``prefetch + 2`` slots: one being filled, ``prefetch``
    queued, one in the model), or in-thread decoding for ``workers == 0``."""
    if workers < 1:
        return InlineDecoder(preprocessing, batch_size=batch_size, budget=budget)
    return DecodePool(preprocessing, workers=workers, batch_size=batch_size, slots=prefetch + 2, budget=budget,
                      timeout_s=timeout_s)


@dataclass
class _Batch:
    index: int
    inputs: np.ndarray | None
    ok_rows: list[int]
    errors: dict[int, str]
    release: object = None  # callable giving the decode slot back once the model has read inputs

    def done_with_inputs(self) -> None:
        if self.release is not None:
            self.release()


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


def run_extraction(store: FeatureStore, run_model, preprocessing, *, workers: int | None = None, prefetch: int = 2,
                   strict: bool = False, progress=None, budget: DecodeBudget | None = None,
                   decode_timeout_s: float = 60.0) -> Summary:
    """Extract every pending batch of ``store``.

    ``run_model(batch (n, 3, H, W) float32) -> {output name: (n, ...) array}`` (an
    :class:`~featuremaps.engine.extractor.Extractor`'s ``run``); ``progress(n_images)`` is
    called after each committed batch. Bad images become error rows unless ``strict``, where
    the first one raises :class:`ExtractionError` (its batch is left pending). Ctrl-C stops
    after the batches in flight are written and returns ``Summary(interrupted=True)``.
    ``workers`` decode processes (default: the usable cores; 0 decodes in a thread), each
    image within ``budget`` and ``decode_timeout_s``.
    """
    todo = store.pending_batches()
    paths = store.paths
    summary = Summary(batches=len(todo))
    stop = threading.Event()
    batches: queue.Queue = queue.Queue(maxsize=prefetch)
    results: queue.Queue = queue.Queue(maxsize=2)
    workers = usable_cores() if workers is None else workers
    batch_size = max((len(range(*store.batch_rows(b))) for b in todo), default=1)
    pool = _open_decoder(preprocessing, workers, batch_size, prefetch, budget or DecodeBudget(), decode_timeout_s)

    def read():
        for b in todo:
            if stop.is_set():
                return
            start, end = store.batch_rows(b)
            got = pool.decode([paths[i] for i in range(start, end)], cancelled=stop.is_set)
            if got is None:
                return
            if strict and got.errors:
                pool.release(got)
                r, msg = min(got.errors.items())
                raise ExtractionError(f"{printable_path(paths[start + r])}: {msg} (--strict stops at the first "
                                      "bad image; drop --strict to record it as an error row and go on)")
            inputs = got.inputs if got.ok_rows else None
            batch = _Batch(b, inputs, got.ok_rows, got.errors, release=lambda got=got: pool.release(got))
            if not _put(batches, batch, lambda: not stop.is_set()):
                return
        _put(batches, _DONE, lambda: not stop.is_set())

    def write():
        while True:
            item = results.get()
            if item is _DONE:
                return
            batch, outputs = item
            summary.bytes_written += store.write_batch(batch.index, outputs, batch.ok_rows, batch.errors)
            n = len(batch.ok_rows) + len(batch.errors)
            summary.images += n
            if progress is not None:
                progress(n)

    reader, writer = _Worker(read, "fm-reader"), _Worker(write, "fm-writer")
    t0 = time.perf_counter()
    pool.__enter__()
    reader.start()
    writer.start()
    try:
        while True:
            try:
                item = batches.get(timeout=0.2)
            except queue.Empty:
                if reader.error is not None or writer.error is not None:
                    break
                if not reader.is_alive() and batches.empty():
                    break
                continue
            if item is _DONE:
                break
            outputs = run_model(item.inputs) if item.inputs is not None else {}
            item.done_with_inputs()
            if not _put(results, (item, outputs), writer.is_alive):
                break
    except KeyboardInterrupt:
        summary.interrupted = True
    finally:
        stop.set()
        _put(results, _DONE, writer.is_alive)  # the writer finishes what the model already produced
        writer.join()
        reader.join()
        pool.__exit__(None, None, None)
    summary.seconds = time.perf_counter() - t0
    for worker in (writer, reader):
        if worker.error is not None:
            raise worker.error
    codes = store.status_codes
    summary.ok, summary.errors = int((codes == OK).sum()), int((codes == ERROR).sum())
    summary.pending = len(codes) - summary.ok - summary.errors
    return summary
