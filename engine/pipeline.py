"""The streaming extraction pipeline: decode threads -> bounded batch queue -> model -> writer thread.

::

    reader thread  submits decodes (read + check + decode + resize + normalize) for up to
                   ``prefetch`` batches ahead to a pool of ``workers`` threads (OpenCV and
                   NumPy release the GIL), assembles batch b, puts it on a bounded queue
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
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from .inputs import read_image_bytes
from .preprocess import preprocess_bytes
from .store import ERROR, OK, FeatureStore
from ..errors import ExtractionError

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


def _decode(path: str, pre) -> np.ndarray | str:
    """One image -> ``(3, H, W) float32``, or the reason it failed (a one-line string)."""
    try:
        return preprocess_bytes(read_image_bytes(path), pre)
    except OSError as e:
        return f"unreadable: {e.strerror or e}"
    except ValueError as e:  # zero bytes, truncated, not an image
        return str(e)


@dataclass
class _Batch:
    index: int
    inputs: np.ndarray | None
    ok_rows: list[int]
    errors: dict[int, str]


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


def run_extraction(store: FeatureStore, run_model, preprocessing, *, workers: int = 2, prefetch: int = 2,
                   strict: bool = False, progress=None) -> Summary:
    """Extract every pending batch of ``store``.

    ``run_model(batch (n, 3, H, W) float32) -> {output name: (n, ...) array}`` (an
    :class:`~featuremaps.engine.extractor.Extractor`'s ``run``); ``progress(n_images)`` is
    called after each committed batch. Bad images become error rows unless ``strict``, where
    the first one raises :class:`ExtractionError` (its batch is left pending). Ctrl-C stops
    after the batches in flight are written and returns ``Summary(interrupted=True)``.
    """
    todo = store.pending_batches()
    paths = store.paths
    summary = Summary(batches=len(todo))
    stop = threading.Event()
    batches: queue.Queue = queue.Queue(maxsize=prefetch)
    results: queue.Queue = queue.Queue(maxsize=2)
    pool = ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="fm-decode")

    def read():
        window: list[tuple[int, list]] = []
        it = iter(todo)
        while not stop.is_set():
            while len(window) < prefetch + 1:
                b = next(it, None)
                if b is None:
                    break
                start, stop_ = store.batch_rows(b)
                window.append((b, [pool.submit(_decode, paths[i], preprocessing) for i in range(start, stop_)]))
            if not window:
                break
            b, futs = window.pop(0)
            decoded = [f.result() for f in futs]
            errors = {r: d for r, d in enumerate(decoded) if isinstance(d, str)}
            ok_rows = [r for r in range(len(decoded)) if r not in errors]
            if strict and errors:
                r, msg = next(iter(errors.items()))
                raise ExtractionError(f"{paths[store.batch_rows(b)[0] + r]}: {msg} (--strict stops at the first "
                                      "bad image; drop --strict to record it as an error row and go on)")
            inputs = np.stack([decoded[r] for r in ok_rows]) if ok_rows else None
            if not _put(batches, _Batch(b, inputs, ok_rows, errors), lambda: not stop.is_set()):
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
            if not _put(results, (item, outputs), writer.is_alive):
                break
    except KeyboardInterrupt:
        summary.interrupted = True
    finally:
        stop.set()
        _put(results, _DONE, writer.is_alive)  # the writer finishes what the model already produced
        writer.join()
        reader.join()
        pool.shutdown(wait=True, cancel_futures=True)
    summary.seconds = time.perf_counter() - t0
    for worker in (writer, reader):
        if worker.error is not None:
            raise worker.error
    codes = store.status_codes
    summary.ok, summary.errors = int((codes == OK).sum()), int((codes == ERROR).sum())
    summary.pending = len(codes) - summary.ok - summary.errors
    return summary
