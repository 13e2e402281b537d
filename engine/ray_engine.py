"""Scale-out: the same extraction unit (:mod:`.unit`) scheduled on Ray Data, writing the same store.

::

    driver        pending batches of the store -> Dataset (one row per store batch)
    decode tasks  ds.map(_decode_row): unit.decode_batch (read + budget + decode + resize)
    actor pool    ds.map_batches(_ModelWriter, concurrency=K): one ONNX Runtime session per
                  actor (built once), runs the model and unit.write_taps (rows whose maps are
                  not storable become error rows; batches never share a chunk, so writers
                  never collide)
    driver        unit.commit for each batch (error rows, then status: the commit)

A batch is committed by the driver only after its actor returned, i.e. after every tap chunk
is on the store: a worker killed mid-batch leaves the batch pending (Ray retries it, or
``--resume`` redoes it), never half-committed. The store path must be one every node can
reach (a shared filesystem); a local Ray instance is bound to 127.0.0.1.

Joining or starting the cluster and sizing the actor pool live in :mod:`.ray_cluster`. Ray is
optional (``pip install 'ray[data]'``); nothing here is imported by the local engine.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import sys
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from .. import errors
from ..errors import ClusterError, FeaturemapsError, ModelFileError
from .hashing import file_sha256
from .pipeline import Summary
from .ray_cluster import ACTOR_START_LIMIT_S, import_ray, actor_cpus, gpu_shortfall
from .preprocess import DecodeBudget, Preprocessing
from .store import FeatureStore
from .unit import Batch, ExtractSettings, commit, decode_batch, finish_counts, strict_failure, write_taps
from .extractor import Extractor
from .validate import ModelRecord, read_model_record

log = logging.getLogger(__name__)


@dataclass
class RaySummary(Summary):
    """:class:`Summary` plus where each batch ran: ``nodes[b]`` is the Ray node id (hex) of the
    actor that wrote batch ``b`` in this run."""

    nodes: dict[int, str] = field(default_factory=dict)


_STORES: dict[str, FeatureStore] = {}  # per Ray worker process: the stores its decode tasks read row ids from


def _batch_paths(location: str, storage_options: dict | None, b: int) -> list[str]:
    """Batch ``b``'s row ids, read by the task from the store itself (only the chunks holding them):
    the driver ships batch numbers, not millions of paths."""
    st = _STORES.get(location)
    if st is None:
        st = _STORES[location] = FeatureStore.open(location, "r", storage_options=storage_options)
    return list(st.paths[slice(*st.batch_rows(b))])


def _decode_row(row: dict, pre: Preprocessing, store: str, budget: dict | None = None,
                storage_options: dict | None = None) -> dict:
    """One store batch's images -> inputs of the good ones, their row offsets, error reasons (JSON):
    :func:`.unit.decode_batch`, each image within ``budget`` (the :class:`DecodeBudget` fields); the
    row ids of batch ``row["batch"]`` are read from the store at ``store``."""
    paths = _batch_paths(store, storage_options, int(row["batch"]))
    got = decode_batch(int(row["batch"]), paths, pre, DecodeBudget(**(budget or {})))
    # the model's own layout (uint8 NHWC for new exports: 4x fewer bytes through the object store)
    inputs = got.inputs if got.inputs is not None else np.zeros((0, *pre.input_shape), pre.input_dtype)
    return {"batch": row["batch"], "n": len(paths), "inputs": inputs, "ok_rows": json.dumps(got.ok_rows),
            "errors": json.dumps(got.errors)}


def same_model_here(record: ModelRecord) -> ModelRecord:
    """``record`` (read and checked once, by the driver) if the file at its path on this node has the
    driver's bytes; a node holding another file at that path would mix two models' maps in one store,
    so it is refused in one line. Hashing costs a fraction of a model load and no second parse."""
    try:
        here = file_sha256(record.path)
    except OSError as e:
        raise ModelFileError(f"cannot read the model {str(record.path)!r} ({e.strerror or e}); "
                             "every node needs the model at the driver's path (a shared filesystem)") from None
    if here != record.sha256:
        raise ModelFileError(f"the model at {str(record.path)!r} is not the driver's (SHA-256 {here[:12]}, "
                             f"driver's {record.sha256[:12]}); put the same file on every node")
    return record


class _ModelWriter:
    """Ray actor: one Extractor, built once from the driver's model record; runs a batch and writes its
    tap chunks (no commit)."""

    def __init__(self, record: ModelRecord, store_path: str, provider: str, threads: int | None, batch_size: int,
                 tf32: bool = True, math_mode: str = "default", device: str | None = None, writers: int = 4,
                 storage_options: dict | None = None):
        import ray

        node = f"Ray node {ray.get_runtime_context().get_node_id()[:12]}"
        try:
            # device: an OpenVINO device name, or None (Ray gives a GPU actor its GPU as device 0);
            # spin=False: decode tasks share the node's CPUs
            self.extractor = Extractor(same_model_here(record), provider=provider, threads=threads,
                                       max_batch=batch_size, spin=False, device=device, tf32=tf32, math_mode=math_mode)
        except FeaturemapsError as e:  # say where: the driver's machine may well have what this node lacks
            raise type(e)(f"{node}: {e}") from None
        self.store = FeatureStore.open(store_path, mode="r+", storage_options=storage_options)
        # a node without the driver's GPU or bf16 units must not mix other arithmetic into the store
        self.store.check_arithmetic(self.extractor.provider, self.extractor.math_mode, who=node)
        self.writers = ThreadPoolExecutor(max_workers=max(1, writers), thread_name_prefix="fm-write")

    def __call__(self, batch: dict) -> dict:
        """Run and write each batch (:func:`.unit.write_taps`); the errors returned include rows
        whose maps were not storable (NaN/inf, fp16 overflow): the driver commits them."""
        import ray

        node = ray.get_runtime_context().get_node_id()
        errors, written = [], []
        for b, inputs, ok_json, err_json in zip(batch["batch"], batch["inputs"], batch["ok_rows"], batch["errors"]):
            unit = Batch(int(b), np.asarray(inputs), json.loads(str(ok_json)),
                         {int(k): v for k, v in json.loads(str(err_json)).items()})
            outputs = self.extractor.run(unit.inputs) if unit.ok_rows else {}
            written.append(write_taps(self.store, unit, outputs, self.writers))
            errors.append(json.dumps(unit.errors))
            _maybe_die_for_test(int(b))
        return {"batch": batch["batch"], "n": batch["n"], "errors": np.array(errors), "bytes": np.array(written),
                "decode_errors": batch["errors"],
                "node": np.array([node] * len(batch["batch"]))}


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


def run_extraction_ray(store: FeatureStore, model: str | os.PathLike | ModelRecord,
                       settings: ExtractSettings | None = None, *, actors: int = 1,
                       gpus_per_actor: float = 0.0, provider: str = "auto", threads: int | None = None,
                       progress=None, tf32: bool = True, math_mode: str = "default",
                       device: str | None = None) -> RaySummary:
    """Extract every pending batch of ``store`` on the current Ray cluster (see :func:`init_ray`).

    The same unit (:mod:`.unit`) and contract as :func:`~featuremaps.engine.pipeline.run_extraction`:
    bad images become error rows (``settings.strict``: the first raises :class:`ExtractionError`,
    its batch stays pending), rows whose maps hold NaN/inf are error rows, Ctrl-C returns
    ``Summary(interrupted=True)`` with finished batches committed. Each image is decoded within
    ``settings.budget``; ``settings.workers`` caps the decode tasks running at once (None: as
    many as Ray schedules), ``settings.writers`` is each actor's chunk-writing threads. ``model``:
    the model file's :class:`ModelRecord` (read once per run) or its path; actors take the record and
    check only that their node's file has the same bytes.
    """
    settings = settings or ExtractSettings()
    record = model if isinstance(model, ModelRecord) else read_model_record(os.path.abspath(model))
    if not record.path.is_absolute():  # actors run in other folders, on other nodes
        record = dataclasses.replace(record, path=record.path.absolute())
    _ = record.sha256  # hashed here, once: the record travels to each actor with it
    ray = import_ray()
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
    # Work starts once all ``actors`` model actors are up: otherwise the first one ready takes
    # every batch of a short job while the others are still loading the model.
    ctx.wait_for_min_actors_s = ACTOR_START_LIMIT_S
    todo = store.pending_batches()
    paths = store.paths
    summary = RaySummary(batches=len(todo))
    rows = [{"batch": b} for b in todo]  # each decode task reads its batch's row ids from the store
    t0 = time.perf_counter()
    if rows:
        actors = min(actors, len(rows))  # an actor without a batch would only load the model
        resources = ray.cluster_resources()
        cpus = float(resources.get("CPU", 1))
        short = gpu_shortfall(actors, gpus_per_actor, float(resources.get("GPU", 0)))
        if short:  # an autoscaler may still add GPU nodes: say so, then wait (bounded)
            print(f"{short}; waiting up to {ACTOR_START_LIMIT_S} s for GPU nodes to join", file=sys.stderr)
        ds = ray.data.from_items(rows, override_num_blocks=len(rows))
        limits = dataclasses.asdict(settings.budget)
        # the store's preprocessing, with the decode the driver recorded
        ds = ds.map(_decode_row, fn_kwargs={"pre": store.record.preprocessing, "budget": limits,
                                            "store": store.location, "storage_options": store.storage_options},
                    num_cpus=0.5,
                    concurrency=settings.workers or None)
        ds = ds.map_batches(_ModelWriter, batch_size=1, batch_format="numpy",
                            compute=ray.data.ActorPoolStrategy(size=actors),
                            num_cpus=actor_cpus(cpus, actors), num_gpus=gpus_per_actor or None,
                            fn_constructor_kwargs={"record": record,
                                                   "store_path": store.location,
                                                   "storage_options": store.storage_options,
                                                   "provider": provider, "threads": threads,
                                                   "batch_size": store.batch_size, "tf32": tf32,
                                                   "math_mode": math_mode, "device": device,
                                                   "writers": settings.writers})
        try:
            for row in ds.iter_rows():
                b, errors = int(row["batch"]), {int(k): v for k, v in json.loads(str(row["errors"])).items()}
                decode_errors = {int(k): v for k, v in json.loads(str(row["decode_errors"])).items()}
                failure = strict_failure(paths, store.batch_rows(b)[0], decode_errors) if settings.strict else None
                if failure is not None:
                    raise failure
                commit(store, b, errors)
                summary.nodes[b] = str(row["node"])
                summary.images += int(row["n"])
                summary.bytes_written += int(row["bytes"])
                if progress is not None:
                    progress(int(row["n"]))
        except KeyboardInterrupt:
            summary.interrupted = True
        except ray.exceptions.GetTimeoutError:  # raised before any actor ran: nothing to keep
            raise ClusterError(
                f"the Ray cluster did not start {actors} model actor(s) within {ACTOR_START_LIMIT_S} s (each "
                f"needs {actor_cpus(cpus, actors):g} CPU{f' and {gpus_per_actor:g} GPU' if gpus_per_actor else ''}); "
                "pass fewer --actors (or --gpus-per-actor), or add nodes") from None
        except ray.exceptions.RayError as e:
            raise _user_error_from(e) from None
    summary.seconds = time.perf_counter() - t0
    _log_placement(summary.nodes)
    return finish_counts(summary, store)


_OUR_ERROR = re.compile(r"featuremaps\.errors\.(\w+): (.+)$", re.M)


def _user_error_from(e: Exception) -> FeaturemapsError:
    """A Ray failure as one of our errors (one line at the CLI). An actor that raised ours in its
    constructor (e.g. a store check) reaches the driver as ``ActorDiedError`` whose text holds the
    remote traceback only; a task's ``RayTaskError`` keeps the exception as ``cause``."""
    cause = getattr(e, "cause", None)
    if isinstance(cause, FeaturemapsError):
        return cause
    found = _OUR_ERROR.findall(str(e))
    if found:
        name, message = found[-1]
        cls = getattr(errors, name, None)
        return (cls if isinstance(cls, type) and issubclass(cls, FeaturemapsError) else ClusterError)(message)
    last = [line.strip() for line in str(e).splitlines() if line.strip()]
    return ClusterError(f"the Ray job failed: {last[-1] if last else type(e).__name__}; completed batches are "
                        "kept: fix that and re-run with --resume")


def _log_placement(nodes: dict[int, str]) -> None:
    """One INFO line: how many batches ran on each node (node ids cut to 12 hex digits)."""
    if nodes:
        counts = Counter(nodes.values())
        log.info("batches per Ray node: %s", ", ".join(f"{n[:12]}={k}" for n, k in counts.items()))
