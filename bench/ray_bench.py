"""Local engine vs the Ray engine on a simulated multi-node cluster: same files, same model, same run.

The cluster is Ray's own ``ray.cluster_utils.Cluster`` (a head and two worker nodes, 1 CPU and an
80 MB object store each), started in a loopback-only network namespace (``unshare -n``) so no
connection leaves 127.0.0.1. All three "nodes" share this machine's cores, so this measures
Ray's overhead, not scale-out: what crosses process boundaries (decoded batches through the
object store), Ray's own processes, and the actor start-up every run pays.

::

    python -m featuremaps.bench.ray_bench --images 16 --input-size 64 --batch-size 4

Writes ``ray_bench.json`` and ``ray_bench.md`` into ``--out`` (default bench/results).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from ..engine.extractor import Extractor
from ..engine.pipeline import run_extraction
from ..engine.ray_cluster import init_ray
from ..engine.ray_engine import run_extraction_ray
from ..engine.store import FeatureStore, output_shapes
from ..export.onnx_export import export_model
from ..samples import sample_images

TAPS = "0,5"


def _images(root: Path, n: int) -> list[str]:
    """``n`` small JPEGs made from the bundled sample photos (sizes vary so resizing is real work)."""
    import cv2

    root.mkdir(parents=True, exist_ok=True)
    samples = sample_images()
    for i in range(n):
        bgr = cv2.imread(str(samples[i % len(samples)]))
        cv2.imwrite(str(root / f"img{i:03d}.jpg"), cv2.resize(bgr, (320 + i, 240), interpolation=cv2.INTER_AREA))
    return sorted(str(p) for p in root.glob("*.jpg"))


def _fresh_store(path: Path, model_path: Path, paths: list[str], batch_size: int):
    with Extractor(model_path, provider="cpu") as ex:
        return FeatureStore.create(path, paths=paths, metadata=ex.metadata, batch_size=batch_size,
                                   shapes=output_shapes(ex.record, ex.session))


class _Clock:
    """Progress callback that timestamps every committed batch (seconds since start)."""
    def __init__(self):
        self.t0, self.marks = time.perf_counter(), []

    def __call__(self, n: int) -> None:
        self.marks.append((time.perf_counter() - self.t0, n))

    def rates(self, total_s: float) -> dict:
        """First-batch latency and the rate after the first batch (img/s)."""
        if not self.marks:
            return {"first_batch_s": None, "steady_img_s": None}
        first, n0 = self.marks[0]
        rest = sum(n for _, n in self.marks[1:])
        return {"first_batch_s": first, "steady_img_s": rest / (total_s - first) if total_s > first else None}


def bench_local(model_path: Path, paths: list[str], tmp: Path, *, batch_size: int, repeats: int) -> dict:
    """The local engine (threads in this process), after a warm-up run: median img/s."""
    rates = []
    with Extractor(model_path, provider="cpu", max_batch=batch_size, spin=False) as ex:
        for i in range(repeats + 1):
            s = run_extraction(_fresh_store(tmp / f"local{i}.zarr", model_path, paths, batch_size), ex.run,
                               ex.preprocessing)
            rates.append(s.images_per_s)
    return {"img_s": float(np.median(rates[1:])), "runs_img_s": rates[1:]}


def bench_cluster(model_path: Path, paths: list[str], tmp: Path, *, batch_size: int, actors: int,
                  repeats: int) -> dict:
    """Inside the namespace: start the simulated cluster, time ``repeats`` Ray runs (each starts its
    actors, as every ``featuremaps extract --engine ray`` does)."""
    from ray.cluster_utils import Cluster

    node = {"num_cpus": 1, "object_store_memory": 80 * 1024**2}
    t0 = time.perf_counter()
    cluster = Cluster(initialize_head=True, head_node_args={**node, "include_dashboard": False})
    for _ in range(2):
        cluster.add_node(**node)
    cluster.wait_for_nodes()
    startup = time.perf_counter() - t0
    runs = []
    try:
        init_ray(cluster.address)
        for i in range(repeats):
            clock = _Clock()
            s = run_extraction_ray(_fresh_store(tmp / f"ray{i}.zarr", model_path, paths, batch_size), model_path,
                                   actors=actors, provider="cpu", progress=clock)
            runs.append({"img_s": s.images_per_s, "seconds": s.seconds, "nodes": len(set(s.nodes.values())),
                         **clock.rates(s.seconds)})
    finally:
        import ray

        ray.shutdown()
        cluster.shutdown()
    return {"cluster_startup_s": startup, "runs": runs, "img_s": float(np.median([r["img_s"] for r in runs]))}


def _run_cluster_part(args, model_path: Path, images: Path, tmp: Path) -> dict:
    """Re-run this program with ``--cluster-part`` in a loopback-only network namespace."""
    # a PID namespace too: no Ray process outlives the child, however it ends
    flags = ["-n" if os.geteuid() == 0 else "-rn", "-p", "-f", "--mount-proc"]
    if shutil.which("unshare") is None or subprocess.run(["unshare", *flags, "true"]).returncode != 0:
        raise SystemExit("ray_bench: network namespaces are not permitted here (unshare -n); the simulated "
                         "cluster must not bind to the real network")
    out = tmp / "cluster.json"
    inner = [sys.executable, "-m", "featuremaps.bench.ray_bench", "--cluster-part", str(out), "--model",
             str(model_path), "--image-dir", str(images), "--batch-size", str(args.batch_size), "--actors",
             str(args.actors), "--repeats", str(args.repeats)]
    cmd = ["unshare", *flags, "sh", "-c", "ip link set lo up && exec " + " ".join(map(shlex.quote, inner))]
    subprocess.run(cmd, check=True)
    return json.loads(out.read_text())


def markdown(r: dict) -> str:
    c, loc = r["cluster"], r["local"]
    lines = [f"# Local engine vs Ray on a simulated 3-node cluster ({r['images']} images, {r['input_size']}², "
             f"taps {TAPS}, batch {r['batch_size']}, {r['cpu']})", "",
             "Head + 2 worker nodes (`ray.cluster_utils.Cluster`, 1 CPU and 80 MB object store each) on the "
             "same cores, in a loopback-only network namespace. Median of the timed runs; every Ray run "
             "starts its actors, as a real `extract --engine ray` does.", "",
             "First batch s: from the run's start to its first committed batch (Ray Data planning, actor "
             "start-up with its ONNX Runtime session, the first decode). After it: the rest of the images over "
             "the rest of the time (Ray Data streams results, so batches that finished while the driver waited "
             "arrive at once and can inflate it).", "",
             "| engine | img/s | first batch s | after first batch img/s |", "|---|---:|---:|---:|",
             f"| local (threads, one process) | {loc['img_s']:.2f} | | |"]
    for i, run in enumerate(c["runs"]):
        fb = f"{run['first_batch_s']:.2f}" if run["first_batch_s"] is not None else "-"
        st = f"{run['steady_img_s']:.2f}" if run["steady_img_s"] else "-"
        lines.append(f"| ray, {r['actors']} actors, run {i + 1} ({run['nodes']} nodes used) | {run['img_s']:.2f} | "
                     f"{fb} | {st} |")
    lines += [f"| ratio ray / local (median) | {c['img_s'] / loc['img_s']:.2f} | | |", "",
              f"Cluster start-up (not in the rates): {c['cluster_startup_s']:.1f} s.", "",
              f"Command: `{r['command']}`", ""]
    if r.get("note"):
        lines.insert(-3, r["note"])
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m featuremaps.bench.ray_bench", description=__doc__.split("\n")[0])
    p.add_argument("--images", type=int, default=16)
    p.add_argument("--input-size", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--actors", type=int, default=2)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--note", default="", help="a line for the markdown (e.g. that the machine was shared)")
    p.add_argument("--out", default="bench/results")
    p.add_argument("--cluster-part", default=None, help=argparse.SUPPRESS)
    p.add_argument("--model", default=None, help=argparse.SUPPRESS)
    p.add_argument("--image-dir", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    if args.cluster_part:  # the child, inside the namespace
        paths = sorted(str(x) for x in Path(args.image_dir).glob("*.jpg"))
        tmp = Path(args.cluster_part).parent
        res = bench_cluster(Path(args.model), paths, tmp, batch_size=args.batch_size, actors=args.actors,
                            repeats=args.repeats)
        Path(args.cluster_part).write_text(json.dumps(res))
        return 0


    with tempfile.TemporaryDirectory(prefix="fm-ray-bench-") as tmp_s:
        tmp = Path(tmp_s)
        paths = _images(tmp / "images", args.images)
        model = export_model(TAPS, tmp / "vgg16-taps.onnx", weights="random", input_size=args.input_size).path
        local = bench_local(model, paths, tmp, batch_size=args.batch_size, repeats=args.repeats)
        cluster = _run_cluster_part(args, model, tmp / "images", tmp)
    result = {"images": args.images, "input_size": args.input_size, "batch_size": args.batch_size,
              "actors": args.actors, "cpu": f"{platform.machine()}, {os.cpu_count()} cores", "note": args.note,
              "local": local, "cluster": cluster, "ray_over_local": cluster["img_s"] / local["img_s"],
              "command": "python -m featuremaps.bench.ray_bench "
                         + shlex.join(argv if argv is not None else sys.argv[1:])}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "ray_bench.json").write_text(json.dumps(result, indent=1))
    md = markdown(result)
    (out / "ray_bench.md").write_text(md)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
