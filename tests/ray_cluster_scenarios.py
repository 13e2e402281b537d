"""Multi-node scenarios on a simulated Ray cluster (a script, run by tests/test_extract_ray_multinode.py).

Run it inside a private network namespace that has only loopback (``unshare -n``), so every
node, the drivers and their connections stay on 127.0.0.1::

    unshare -rn sh -c 'ip link set lo up && exec python tests/ray_cluster_scenarios.py \\
        --model M.onnx --images DIR --work DIR'

One ``ray.cluster_utils.Cluster`` (a head and two worker nodes, 1 CPU and an 80 MB object store
each) serves three scenarios; each driver is ``featuremaps extract --engine ray --ray-address``
in a child process:

- ``spread``: two actors, so (with 0.75 CPU per actor on 1-CPU nodes) on two different nodes;
- ``node_lost``: a worker node that hosts a model actor is removed after a batch committed (and
  a fresh node added); the run completes through Ray's retries, or, if the driver gives up or
  hangs, ``--resume`` completes it;
- ``driver_killed``: the driver is SIGKILLed after a batch committed, then ``--resume``.

Results (exit codes, seconds, node ids per run, store paths) go to ``WORK/results.json``; the
test compares each store with the local engine's.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

NODE = {"num_cpus": 1, "object_store_memory": 80 * 1024**2}
# The GCS declares a lost node dead after ~3 s instead of Ray's default ~30 s.
SYSTEM_CONFIG = {"health_check_initial_delay_ms": 0, "health_check_period_ms": 1000,
                 "health_check_timeout_ms": 1000, "health_check_failure_threshold": 3}
DRIVER_LIMIT_S = 150


def extract(args, out: Path, address: str, *, actors: int, resume: bool = False) -> subprocess.Popen:
    """Start ``featuremaps -v extract ... --engine ray`` (the driver) in a child process."""
    cmd = [sys.executable, "-m", "featuremaps", "-v", "extract", str(args.images), "--model", str(args.model),
           "-o", str(out), "--batch-size", str(args.batch_size), "--no-progress", "--engine", "ray",
           "--ray-address", address, "--actors", str(actors), "--provider", "cpu", "--threads", "1"]
    return subprocess.Popen(cmd + (["--resume"] if resume else []), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)


def finish(proc: subprocess.Popen, limit_s: float = DRIVER_LIMIT_S) -> dict:
    """Wait for a driver; kill it past ``limit_s``. Its exit code, and the node ids it logged."""
    try:
        out, err = proc.communicate(timeout=limit_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        return {"rc": "timeout", "nodes": [], "tail": err[-2000:]}
    m = re.search(r"batches per Ray node: (.*)", err)
    nodes = [kv.split("=")[0] for kv in m.group(1).split(", ")] if m else []
    return {"rc": proc.returncode, "nodes": nodes, "tail": err[-2000:] if proc.returncode not in (0, 1) else ""}


def committed(out: Path) -> int:
    """Batches committed so far (0 while the store does not exist yet)."""
    from featuremaps.engine.store import OK, ERROR, FeatureStore

    try:
        codes = FeatureStore.open(out).status_codes
    except Exception:  # noqa: BLE001 - not created yet, or mid-rename
        return 0
    return int(((codes == OK) | (codes == ERROR)).sum())


def wait_committed(out: Path, proc: subprocess.Popen, at_least: int, limit_s: float = 90) -> bool:
    t0 = time.time()
    while time.time() - t0 < limit_s and proc.poll() is None:
        if committed(out) >= at_least:
            return True
        time.sleep(0.2)
    return False


def actor_nodes() -> set[str]:
    """Node ids (hex) of the live model actors (Ray Data's ``_MapWorker``s; GCS actor table, which
    works without a dashboard)."""
    import ray

    table = ray._private.state.state.actor_table(None)
    return {a["Address"]["NodeID"] for a in table.values()
            if a.get("State") == "ALIVE" and "MapWorker" in a.get("ActorClassName", "")}


def spread(args, cluster) -> dict:
    t0 = time.time()
    res = finish(extract(args, args.work / "spread.zarr", cluster.address, actors=2))
    return {**res, "seconds": round(time.time() - t0, 1), "store": str(args.work / "spread.zarr")}


def node_lost(args, cluster, workers) -> dict:
    """Once a batch is committed, remove a worker node that hosts a model actor and add a fresh one
    (as an autoscaler would). Two actors at 0.75 CPU sit on two of the three 1-CPU nodes, so at
    least one is on a worker (the head cannot be removed)."""
    out = args.work / "node_lost.zarr"
    t0 = time.time()
    proc = extract(args, out, cluster.address, actors=2)
    res = {"store": str(out)}
    if not wait_committed(out, proc, args.batch_size):
        res["note"] = "the run ended before a batch was committed; no node removed"
    else:
        hosts = set()
        for _ in range(20):  # the actor table can lag the first commit by a moment
            hosts = actor_nodes()
            if any(w.node_id in hosts for w in workers):
                break
            time.sleep(0.5)
        res["actor_nodes"], res["worker_nodes"] = sorted(hosts), [w.node_id for w in workers]
        victim = next((w for w in workers if w.node_id in hosts), workers[0])
        res["removed_actor_node"] = victim.node_id in hosts
        res["committed_at_removal"] = committed(out)
        cluster.remove_node(victim, allow_graceful=False)
        workers.remove(victim)
        res["removed_at_s"] = round(time.time() - t0, 1)
        workers.append(cluster.add_node(**NODE))
    res["first"] = finish(proc)
    res["first_s"] = round(time.time() - t0, 1)
    res["pending_after_first"] = len(_all(out)) - committed(out)
    if res["pending_after_first"] or res["first"]["rc"] not in (0, 1):
        res["outcome"] = "resumed"
        t1 = time.time()
        res["resume"] = finish(extract(args, out, cluster.address, actors=2, resume=True))
        res["resume_s"] = round(time.time() - t1, 1)
    else:
        res["outcome"] = "retried"
    return res


def driver_killed(args, cluster) -> dict:
    out = args.work / "driver_killed.zarr"
    t0 = time.time()
    proc = extract(args, out, cluster.address, actors=2)
    res = {"store": str(out), "killed": False}
    if wait_committed(out, proc, args.batch_size):
        os.killpg(proc.pid, signal.SIGKILL)
        res["killed"] = True
    proc.communicate()
    res["committed_at_kill"] = committed(out)
    res["killed_at_s"] = round(time.time() - t0, 1)
    time.sleep(2)  # the GCS ends the dead driver's job and its actors
    t1 = time.time()
    res["resume"] = finish(extract(args, out, cluster.address, actors=2, resume=True))
    res["resume_s"] = round(time.time() - t1, 1)
    return res


def _all(out: Path):
    from featuremaps.engine.store import FeatureStore

    return FeatureStore.open(out).status_codes


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", type=Path, required=True)
    p.add_argument("--images", type=Path, required=True)
    p.add_argument("--work", type=Path, required=True)
    p.add_argument("--batch-size", type=int, default=1)
    p.add_argument("--scenarios", default="spread,node_lost,driver_killed")
    args = p.parse_args(argv)
    os.environ.setdefault("RAY_BACKEND_LOG_LEVEL", "error")

    import ray
    from ray.cluster_utils import Cluster

    t0 = time.time()
    cluster = Cluster(initialize_head=True, head_node_args={**NODE, "include_dashboard": False,
                                                           "_system_config": SYSTEM_CONFIG})
    workers = [cluster.add_node(**NODE) for _ in range(2)]
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, logging_level="ERROR", log_to_driver=False)  # to read the actor table
    results = {"address": cluster.address, "startup_s": round(time.time() - t0, 1),
               "nodes": [n["NodeID"] for n in ray.nodes() if n["Alive"]]}
    try:
        wanted = args.scenarios.split(",")
        if "spread" in wanted:
            results["spread"] = spread(args, cluster)
        if "node_lost" in wanted:
            results["node_lost"] = node_lost(args, cluster, workers)
        if "driver_killed" in wanted:
            results["driver_killed"] = driver_killed(args, cluster)
    finally:
        (args.work / "results.json").write_text(json.dumps(results, indent=1))
        ray.shutdown()
        cluster.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
