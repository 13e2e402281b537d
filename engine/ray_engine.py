"""Scale-out: the same bulk extraction on Ray Data, writing the same store.

::

    driver        pending batches of the store -> Dataset (one row per store batch)
    decode tasks  ds.map(_decode_row): read + check + decode + resize, error reasons as text
    actor pool    ds.map_batches(_ModelWriter, concurrency=K): one ONNX Runtime session per
                  actor (built once), runs the model and writes the batch's tap chunks at its
                  rows (batches never share a chunk, so writers never collide)
    driver        iterates the results and commits each batch (error chunk, then status chunk)

A batch is committed by the driver only after its actor returned, i.e. after every tap chunk
is on the store: a worker killed mid-batch leaves the batch pending (Ray retries it, or
``--resume`` redoes it), never half-committed. The store path must be one every node can
reach (a shared filesystem); a local Ray instance is bound to 127.0.0.1.

Ray is optional (``pip install 'ray[data]'``); nothing here is imported by the local engine.
"""

from __future__ import annotations

import json
import logging
import os
import time

import numpy as np

from ..errors import DependencyError
from .pipeline import ExtractionError, Summary, _decode
from .preprocess import Preprocessing
from .store import ERROR, OK, FeatureStore

log = logging.getLogger(__name__)


class RayUnavailableError(DependencyError):
    """Ray is not installed."""


def _import_ray():
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise RayUnavailableError("--engine ray needs Ray Data: pip install 'ray[data]'") from None
    return ray


def _decode_row(row: dict, pre: dict) -> dict:
    """One store batch's images -> inputs of the good ones, their row offsets, error reasons (JSON)."""
    p = Preprocessing.from_dict(pre)
    decoded = [_decode(path, p) for path in json.loads(row["paths"])]
    errors = {r: d for r, d in enumerate(decoded) if isinstance(d, str)}
    ok = [r for r in range(len(decoded)) if r not in errors]
    h, w = p.size
    inputs = np.stack([decoded[r] for r in ok]) if ok else np.zeros((0, 3, h, w), np.float32)
    return {"batch": row["batch"], "n": len(decoded), "inputs": inputs, "ok_rows": json.dumps(ok),
            "errors": json.dumps(errors)}


class _ModelWriter:
    """Ray actor: one Extractor, built once; runs a batch and writes its tap chunks (no commit)."""

    def __init__(self, model_path: str, store_path: str, provider: str, threads: int | None, batch_size: int):
        from .extractor import Extractor

        self.extractor = Extractor(model_path, provider=provider, threads=threads, max_batch=batch_size,
                                   spin=False)  # decode tasks share the node's CPUs
        self.store = FeatureStore.open(store_path, mode="r+")

    def __call__(self, batch: dict) -> dict:
        for b, inputs, ok_json in zip(batch["batch"], batch["inputs"], batch["ok_rows"]):
            ok_rows = json.loads(str(ok_json))
            outputs = self.extractor.run(np.asarray(inputs, np.float32)) if ok_rows else {}
            self.store.write_maps(int(b), outputs, ok_rows)
            _maybe_die_for_test(int(b))
        return {"batch": batch["batch"], "n": batch["n"], "errors": batch["errors"]}


_FAULT_ENV = "FEATUREMAPS_TEST_KILL_ACTOR"


def _maybe_die_for_test(batch: int) -> None:
    """Fault injection for the failure test: with ``FEATUREMAPS_TEST_KILL_ACTOR=MARKER`` set, the
    first actor to finish writing a batch's chunks dies hard (before the driver can commit it),
    once: the marker file records that it happened."""
    marker = os.environ.get(_FAULT_ENV)
    if marker and batch > 0 and not os.path.exists(marker):
        with open(marker, "w") as f:
            f.write(str(batch))
        os._exit(1)


def init_ray(address: str | None, *, num_cpus: int | None = None, verbose: bool = False) -> bool:
    """Join ``address``, or start a local instance bound to 127.0.0.1. Returns True if started here
    (the caller shuts it down)."""
    ray = _import_ray()
    quiet = {"log_to_driver": verbose, "logging_level": logging.INFO if verbose else logging.ERROR,
             "configure_logging": True}
    if not verbose:
        # Ray's C++ core and Ray Data log warnings to stderr by default; one progress line is enough.
        os.environ.setdefault("RAY_BACKEND_LOG_LEVEL", "fatal")
        for name in ("ray", "ray.data"):
            logging.getLogger(name).setLevel(logging.ERROR)
    if ray.is_initialized():
        return False
    if address:
        ray.init(address=address, **quiet)
        return False
    ray.init(num_cpus=num_cpus or os.cpu_count(), include_dashboard=False, _node_ip_address="127.0.0.1", **quiet)
    return True


def actor_cpus(total_cpus: float, actors: int) -> float:
    """CPUs each model actor reserves: at most half the cluster's CPUs go to actors, so decode
    tasks always get some (actors holding every CPU deadlock a 2-core machine)."""
    return max(0.25, min(1.0, total_cpus / 2 / max(1, actors)))


def run_extraction_ray(store: FeatureStore, model_path, *, actors: int = 1, gpus_per_actor: float = 0.0,
                       provider: str = "auto", threads: int | None = None, strict: bool = False,
                       progress=None) -> Summary:
    """Extract every pending batch of ``store`` on the current Ray cluster (see :func:`init_ray`).

    Same contract as :func:`~featuremaps.engine.pipeline.run_extraction`: bad images become error
    rows (``strict``: the first raises :class:`ExtractionError`, its batch stays pending), Ctrl-C
    returns ``Summary(interrupted=True)`` with finished batches committed.
    """
    ray = _import_ray()
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
    todo = store.pending_batches()
    paths = store.paths
    summary = Summary(batches=len(todo))
    pre = Preprocessing.from_dict(store.metadata["preprocessing"]).to_dict()
    rows = [{"batch": b, "paths": json.dumps(paths[slice(*store.batch_rows(b))])} for b in todo]
    t0 = time.perf_counter()
    if rows:
        cpus = float(ray.cluster_resources().get("CPU", 1))
        ds = ray.data.from_items(rows, override_num_blocks=len(rows))
        ds = ds.map(_decode_row, fn_kwargs={"pre": pre}, num_cpus=0.5)
        ds = ds.map_batches(_ModelWriter, batch_size=1, batch_format="numpy",
                            compute=ray.data.ActorPoolStrategy(size=actors),
                            num_cpus=actor_cpus(cpus, actors), num_gpus=gpus_per_actor or None,
                            fn_constructor_kwargs={"model_path": str(os.path.abspath(model_path)),
                                                   "store_path": str(os.path.abspath(store.path)),
                                                   "provider": provider, "threads": threads,
                                                   "batch_size": store.batch_size})
        try:
            for row in ds.iter_rows():
                b, errors = int(row["batch"]), {int(k): v for k, v in json.loads(str(row["errors"])).items()}
                if strict and errors:
                    r, msg = next(iter(errors.items()))
                    raise ExtractionError(f"{paths[store.batch_rows(b)[0] + r]}: {msg} (--strict stops at the "
                                          "first bad image; drop --strict to record it as an error row)")
                store.commit_batch(b, errors)
                summary.images += int(row["n"])
                summary.bytes_written += _batch_bytes(store, int(row["n"]))
                if progress is not None:
                    progress(int(row["n"]))
        except KeyboardInterrupt:
            summary.interrupted = True
    summary.seconds = time.perf_counter() - t0
    codes = store.status_codes
    summary.ok, summary.errors = int((codes == OK).sum()), int((codes == ERROR).sum())
    summary.pending = len(codes) - summary.ok - summary.errors
    return summary


def _batch_bytes(store: FeatureStore, n: int) -> int:
    itemsize = 2 if store.dtype == "fp16" else 4
    return n * itemsize * sum(int(np.prod(s)) for s in store.info["outputs"].values())
