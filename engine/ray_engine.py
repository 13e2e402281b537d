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

import dataclasses
import json
import logging
import os
import re
import sys
import time
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np

from .. import errors
from ..errors import ClusterError, DependencyError, FeaturemapsError, one_line
from .pipeline import ExtractionError, Summary, _decode
from .preprocess import DecodeBudget, Preprocessing
from .store import ERROR, OK, FeatureStore

log = logging.getLogger(__name__)


class RayUnavailableError(DependencyError):
    """Ray is not installed."""


@dataclass
class RaySummary(Summary):
    """:class:`Summary` plus where each batch ran: ``nodes[b]`` is the Ray node id (hex) of the
    actor that wrote batch ``b`` in this run."""

    nodes: dict[int, str] = field(default_factory=dict)


def _import_ray():
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise RayUnavailableError("--engine ray needs Ray Data: pip install 'ray[data]'") from None
    return ray


def _decode_row(row: dict, pre: dict, decode: str = "full", budget: dict | None = None) -> dict:
    """One store batch's images -> inputs of the good ones, their row offsets, error reasons (JSON).
    ``budget``: the :class:`DecodeBudget` fields (--max-pixels, --max-file-bytes), as the local engine's."""
    p = dataclasses.replace(Preprocessing.from_dict(pre), decode=decode)
    limits = DecodeBudget(**(budget or {}))
    decoded = [_decode(path, p, limits) for path in json.loads(row["paths"])]
    errors = {r: d for r, d in enumerate(decoded) if isinstance(d, str)}
    ok = [r for r in range(len(decoded)) if r not in errors]
    # the model's own layout (uint8 NHWC for new exports: 4x fewer bytes through the object store)
    inputs = np.stack([decoded[r] for r in ok]) if ok else np.zeros((0, *p.input_shape), p.input_dtype)
    return {"batch": row["batch"], "n": len(decoded), "inputs": inputs, "ok_rows": json.dumps(ok),
            "errors": json.dumps(errors)}


class _ModelWriter:
    """Ray actor: one Extractor, built once; runs a batch and writes its tap chunks (no commit)."""

    def __init__(self, model_path: str, store_path: str, provider: str, threads: int | None, batch_size: int,
                 tf32: bool = True, math_mode: str = "default", device: str | None = None):
        import ray

        from .extractor import Extractor

        node = f"Ray node {ray.get_runtime_context().get_node_id()[:12]}"
        try:
            # device: an OpenVINO device name, or None (Ray gives a GPU actor its GPU as device 0);
            # spin=False: decode tasks share the node's CPUs
            self.extractor = Extractor(model_path, provider=provider, threads=threads, max_batch=batch_size,
                                       spin=False, device=device, tf32=tf32, math_mode=math_mode)
        except FeaturemapsError as e:  # say where: the driver's machine may well have what this node lacks
            raise type(e)(f"{node}: {e}") from None
        self.store = FeatureStore.open(store_path, mode="r+")
        # a node without the driver's GPU or bf16 units must not mix other arithmetic into the store
        self.store.check_arithmetic(self.extractor.provider, self.extractor.math_mode, who=node)

    def __call__(self, batch: dict) -> dict:
        import ray

        node = ray.get_runtime_context().get_node_id()
        for b, inputs, ok_json in zip(batch["batch"], batch["inputs"], batch["ok_rows"]):
            ok_rows = json.loads(str(ok_json))
            outputs = self.extractor.run(np.asarray(inputs)) if ok_rows else {}
            self.store.write_maps(int(b), outputs, ok_rows)
            _maybe_die_for_test(int(b))
        return {"batch": batch["batch"], "n": batch["n"], "errors": batch["errors"],
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


def init_ray(address: str | None, *, num_cpus: int | None = None, verbose: bool = False, check: bool = True) -> bool:
    """Join ``address``, or start a local instance bound to 127.0.0.1. Returns True if started here
    (the caller shuts it down).

    A join is checked first, in bounded time (:func:`check_cluster_address`): ``ray.init`` itself
    retries an address where no GCS answers for minutes. The check runs even when this process is
    already connected (which is then kept), so a bad address is never silently ignored. ``check``
    False: the caller has just checked it.
    """
    ray = _import_ray()
    quiet = {"log_to_driver": verbose, "logging_level": logging.INFO if verbose else logging.ERROR,
             "configure_logging": True}
    _quiet_ray(verbose)
    if address and check:
        check_cluster_address(address, verbose=verbose)
    if ray.is_initialized():
        return False
    if address:
        try:
            with _fd2_silenced(not verbose):  # Ray's C++ core logs "Set ray log level ..." straight to fd 2
                ray.init(address=address, **quiet)
        except ValueError as e:
            if "ray[client]" in str(e):
                raise RayUnavailableError(f"--ray-address {address} uses Ray Client, which needs its extra: pip "
                                          "install 'ray[client]' (or pass the head's HOST:PORT)") from None
            raise
        return False
    with _fd2_silenced(not verbose):
        ray.init(num_cpus=num_cpus or os.cpu_count(), include_dashboard=False, _node_ip_address="127.0.0.1",
                 **quiet)
    return True


def _quiet_ray(verbose: bool) -> None:
    """Unless ``verbose``: Ray's C++ core and Ray Data log warnings to stderr by default (e.g. that
    8.8.8.8 is unreachable in a loopback-only namespace); one progress line is enough."""
    if not verbose:
        os.environ.setdefault("RAY_BACKEND_LOG_LEVEL", "fatal")
        for name in ("ray", "ray.data"):
            logging.getLogger(name).setLevel(logging.CRITICAL)  # failures reach the CLI as one line


_PROBE_S = 5.0  # per connect / per RPC; three at most, so a join fails within ~15 s


def check_cluster_address(address: str, *, timeout_s: float = _PROBE_S, verbose: bool = False) -> str:
    """Raise :class:`ClusterError` unless a Ray GCS answers where ``ray.init(address)`` will connect.

    Returns the ``host:port`` Ray will use. ``ray.init`` rewrites a loopback host (127.0.0.1,
    localhost) to this machine's own address (Ray's ``resolve_ip_for_localhost``): a head started
    with ``--node-ip-address 127.0.0.1`` listens only on loopback, so the join would retry for
    minutes; that case gets its own message. ``ray://`` (Ray Client) addresses get a TCP check only.
    """
    _quiet_ray(verbose)
    if address.startswith("ray://"):
        host, port = _split_host_port(address[len("ray://"):], address)
        _tcp_probe(host, port, address, timeout_s)
        return f"{host}:{port}"
    with _fd2_silenced(not verbose):  # Ray's C++ core warns straight to fd 2 when 8.8.8.8 is unreachable
        target = _bootstrap_address(address)
    host, port = _split_host_port(target, address)
    given_host, _ = _split_host_port(address, address) if address != "auto" else (host, port)
    if not _tcp_answers(host, port, timeout_s):
        if given_host != host and _tcp_answers(given_host, port, timeout_s):
            raise ClusterError(
                f"Ray joins {address} at {host}:{port} (it rewrites loopback addresses to this machine's "
                f"address) and nothing answers there; start the head with `ray start --head "
                f"--node-ip-address {host}`, or run head, nodes and driver in one loopback-only network "
                "namespace (README: Scaling out)")
        raise ClusterError(f"no Ray cluster answers at {address} (nothing listens on {host}:{port}); start one "
                           f"with `ray start --head --port {port}`, or pass the address `ray start --head` printed")
    _gcs_probe(host, port, address, timeout_s)
    return f"{host}:{port}"


@contextmanager
def _fd2_silenced(on: bool):
    """File descriptor 2 to /dev/null while ``on`` (C++ logging bypasses Python's sys.stderr)."""
    if not on:
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _bootstrap_address(address: str) -> str:
    """``host:port`` that ``ray.init(address=address)`` connects to (``auto`` resolved, loopback
    rewritten), from Ray's own function."""
    from ray._private import services

    try:
        target = services.canonicalize_bootstrap_address(address)
    except (ConnectionError, ValueError) as e:
        raise ClusterError(f"--ray-address {address}: {one_line(e)}; pass HOST:PORT of a running head "
                           "(`ray start --head` prints it)") from None
    if target is None:
        raise ClusterError(f"--ray-address {address} names no running cluster; pass HOST:PORT of a running "
                           "head (`ray start --head` prints it)")
    return target


def _split_host_port(hostport: str, address: str) -> tuple[str, int]:
    host, sep, port = hostport.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise ClusterError(f"--ray-address {address} is not HOST:PORT (e.g. 10.0.0.5:6379, ray://head:10001, "
                           "or auto)")
    if not 0 < int(port) < 65536:
        raise ClusterError(f"--ray-address {address}: port {port} is not a TCP port (1..65535)")
    return host.strip("[]"), int(port)


def _tcp_answers(host: str, port: int, timeout_s: float) -> bool:
    import socket

    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def _tcp_probe(host: str, port: int, address: str, timeout_s: float) -> None:
    if not _tcp_answers(host, port, timeout_s):
        raise ClusterError(f"nothing answers at {address} within {timeout_s:g} s; check the head's address "
                           "and port (Ray Client listens on 10001 by default)")


_GCS_PROBE = """
import sys
try:  # Ray >= 2.5x: a driver sends ~/.ray/auth_token when one exists, as ray.init does
    from ray._private.authentication.authentication_token_setup import (
        maybe_enable_token_auth_if_token_available)
    maybe_enable_token_auth_if_token_available(warn_if_disabled=False)
except ImportError:
    pass
from ray._raylet import GcsClient
GcsClient(address=sys.argv[1])
print("gcs", flush=True)
"""


def _gcs_probe(host: str, port: int, address: str, timeout_s: float) -> None:
    """Something listens at ``host:port``; is it a GCS that lets us in? Ray's own client, in a child
    process (it exits the process when no GCS answers) with short connect timeouts and a hard limit."""
    import subprocess

    env = {**os.environ, "RAY_gcs_rpc_server_connect_timeout_s": str(int(timeout_s)),
           "RAY_gcs_rpc_server_reconnect_timeout_s": str(int(timeout_s)), "RAY_BACKEND_LOG_LEVEL": "warning"}
    try:
        done = subprocess.run([sys.executable, "-c", _GCS_PROBE, f"{host}:{port}"], env=env, capture_output=True,
                              text=True, timeout=3 * timeout_s)
        out, err = done.stdout, done.stderr
    except subprocess.TimeoutExpired as e:
        out, err = _text(e.stdout), _text(e.stderr)
    if "gcs" in out:
        return
    if "Unauthenticated" in err or "AuthenticationError" in err:
        raise ClusterError(f"the Ray cluster at {address} wants an authentication token this machine does not "
                           "have; copy the head's ~/.ray/auth_token here (or set RAY_AUTH_TOKEN), or start every "
                           "node with the same RAY_AUTH_MODE")
    raise ClusterError(f"{host}:{port} answers but no Ray GCS replied within {3 * timeout_s:g} s; pass the "
                       f"address `ray start --head` printed (default port 6379), not {address}")


def _text(b) -> str:
    return b.decode(errors="replace") if isinstance(b, bytes) else (b or "")


ACTOR_START_LIMIT_S = 600  # a cold node may need minutes to start a worker and load a large model


MIN_ACTOR_CPUS = 0.25


def actor_cpus(total_cpus: float, actors: int) -> float:
    """CPUs each model actor reserves: at most half the cluster's CPUs go to actors, so decode
    tasks always get some (actors holding every CPU deadlock a 2-core machine)."""
    return max(MIN_ACTOR_CPUS, min(1.0, total_cpus / 2 / max(1, actors)))


def actor_shortfall(actors: int, total_cpus: float) -> str | None:
    """Why ``actors`` model actors do not fit ``total_cpus``, or None. Each actor reserves at least
    :data:`MIN_ACTOR_CPUS` and actors get at most half the CPUs (:func:`actor_cpus`): more actors
    than that would leave the decode tasks no CPU, and the job would wait forever."""
    most = int(total_cpus / 2 / MIN_ACTOR_CPUS)
    if actors <= most:
        return None
    return (f"--actors {actors} is more than the Ray cluster's {total_cpus:g} CPU(s) can host next to the decode "
            f"tasks (at most {most}: each actor reserves 0.25 CPU or more, actors get at most half the CPUs); "
            f"pass --actors {max(most, 1)} or fewer, or add nodes")


def gpu_shortfall(actors: int, gpus_per_actor: float, cluster_gpus: float) -> str | None:
    """What is missing for ``actors`` x ``gpus_per_actor`` GPUs on a cluster with ``cluster_gpus``,
    or None when they fit."""
    need = actors * gpus_per_actor
    if need <= cluster_gpus:
        return None
    return (f"{actors} actor(s) x {gpus_per_actor:g} GPU need {need:g} GPU(s) and the Ray cluster has "
            f"{cluster_gpus:g}")


def run_extraction_ray(store: FeatureStore, model_path, *, actors: int = 1, gpus_per_actor: float = 0.0,
                       provider: str = "auto", threads: int | None = None, strict: bool = False,
                       progress=None, tf32: bool = True, math_mode: str = "default",
                       device: str | None = None, budget: DecodeBudget | None = None) -> RaySummary:
    """Extract every pending batch of ``store`` on the current Ray cluster (see :func:`init_ray`).

    Same contract as :func:`~featuremaps.engine.pipeline.run_extraction`: bad images become error
    rows (``strict``: the first raises :class:`ExtractionError`, its batch stays pending), Ctrl-C
    returns ``Summary(interrupted=True)`` with finished batches committed. Each image is decoded
    within ``budget`` (default :class:`DecodeBudget`), as in the local engine.
    """
    ray = _import_ray()
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
    # Work starts once all ``actors`` model actors are up: otherwise the first one ready takes
    # every batch of a short job while the others are still loading the model.
    ctx.wait_for_min_actors_s = ACTOR_START_LIMIT_S
    todo = store.pending_batches()
    paths = store.paths
    summary = RaySummary(batches=len(todo))
    pre = Preprocessing.from_dict(store.metadata["preprocessing"]).to_dict()
    rows = [{"batch": b, "paths": json.dumps(paths[slice(*store.batch_rows(b))])} for b in todo]
    t0 = time.perf_counter()
    if rows:
        actors = min(actors, len(rows))  # an actor without a batch would only load the model
        resources = ray.cluster_resources()
        cpus = float(resources.get("CPU", 1))
        short = gpu_shortfall(actors, gpus_per_actor, float(resources.get("GPU", 0)))
        if short:  # an autoscaler may still add GPU nodes: say so, then wait (bounded)
            print(f"{short}; waiting up to {ACTOR_START_LIMIT_S} s for GPU nodes to join", file=sys.stderr)
        ds = ray.data.from_items(rows, override_num_blocks=len(rows))
        decode = store.metadata["preprocessing"].get("decode", "full")  # as recorded by the driver
        limits = dataclasses.asdict(budget or DecodeBudget())
        ds = ds.map(_decode_row, fn_kwargs={"pre": pre, "decode": decode, "budget": limits}, num_cpus=0.5)
        ds = ds.map_batches(_ModelWriter, batch_size=1, batch_format="numpy",
                            compute=ray.data.ActorPoolStrategy(size=actors),
                            num_cpus=actor_cpus(cpus, actors), num_gpus=gpus_per_actor or None,
                            fn_constructor_kwargs={"model_path": str(os.path.abspath(model_path)),
                                                   "store_path": str(os.path.abspath(store.path)),
                                                   "provider": provider, "threads": threads,
                                                   "batch_size": store.batch_size, "tf32": tf32,
                                                   "math_mode": math_mode, "device": device})
        try:
            for row in ds.iter_rows():
                b, errors = int(row["batch"]), {int(k): v for k, v in json.loads(str(row["errors"])).items()}
                if strict and errors:
                    r, msg = next(iter(errors.items()))
                    raise ExtractionError(f"{paths[store.batch_rows(b)[0] + r]}: {msg} (--strict stops at the "
                                          "first bad image; drop --strict to record it as an error row)")
                store.commit_batch(b, errors)
                summary.nodes[b] = str(row["node"])
                summary.images += int(row["n"])
                summary.bytes_written += _batch_bytes(store, int(row["n"]))
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
    codes = store.status_codes
    summary.ok, summary.errors = int((codes == OK).sum()), int((codes == ERROR).sum())
    summary.pending = len(codes) - summary.ok - summary.errors
    return summary


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


def _batch_bytes(store: FeatureStore, n: int) -> int:
    itemsize = 2 if store.dtype == "fp16" else 4
    return n * itemsize * sum(int(np.prod(s)) for s in store.info["outputs"].values())
