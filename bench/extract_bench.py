"""Bulk extraction benchmark: model-only vs end-to-end ``extract`` throughput, and bytes per image.

    python -m featuremaps.bench.extract_bench [--images 32] [--batch-size 8] [--repeats 3]

On the same image files, in one run, rounds interleaved (model-only, end-to-end, ...):

* **model-only**: the Extractor on pre-decoded batches (the ceiling the pipeline can reach);
* **end-to-end**: :func:`run_extraction` from files to a fresh Zarr store (read, decode,
  resize, model, write, commit);
* **decode-only**: the decode workers alone, to show what competes with the model for CPU.

for these configurations: **write-bound** (tap 0 only: 12.8 MB of fp32 maps per image at 224,
little compute), judged against min(model-only img/s, the output disk's sequential write
bandwidth measured in the same run / bytes per image); VGG16 taps 0,5,10,17,28 stored as fp16
(zstd and uncompressed); and a reduced configuration compiled into the graph with fp16 outputs.
``--provider cuda`` runs the model on a GPU (outputs into pinned buffers, TF32 unless
``--no-tf32``); ``--store-dir`` puts the stores on the disk to measure. Writes ``extract_bench.json`` and
``extract_bench.md`` into ``--out`` (default ``bench/results``) and prints the table.
Weights are seeded random: speed does not depend on them.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import shutil
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from ..engine.decode_pool import load_batch
from ..engine.extractor import Extractor
from ..engine.inputs import read_image_bytes
from ..engine.layouts import as_model_input
from ..engine.pipeline import run_extraction
from ..engine.preprocess import preprocess_bytes
from ..engine.ray_cluster import init_ray  # ray itself is imported when called
from ..engine.ray_engine import run_extraction_ray
from ..engine.store import FeatureStore, output_shapes
from ..engine.unit import ExtractSettings, write_batch
from ..export.onnx_export import export_model
from ..export.reduce import parse_reductions, reduce_model
from ..samples import sample_images
from .timing import interleaved

TAPS = "0,5,10,17,28"
REDUCED = "features.0=mean,features.5=mean,features.10=avgpool:4,features.17=avgpool:2,features.28=max"


def _images(folder: Path, n: int) -> list[str]:

    src = sample_images()
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(n):
        s = Path(src[i % len(src)])
        dst = folder / f"img{i:04d}{s.suffix}"
        shutil.copyfile(s, dst)
        out.append(str(dst))
    return out


def _decoded_batches(paths, pre, batch_size: int) -> list[np.ndarray]:
    """Batches already in the model's input layout (uint8 NHWC for new exports): model-only
    timing must not include decode or layout conversion."""

    return [as_model_input(load_batch(paths[i:i + batch_size], pre), pre) for i in range(0, len(paths), batch_size)]


def disk_write_bandwidth(folder: Path, mb: int = 256, block_mb: int = 16) -> float:
    """Sequential write bandwidth of the disk under ``folder`` in bytes/s: ``mb`` MB written in
    ``block_mb`` blocks, then fsync (page cache excluded), file removed."""
    block = np.random.default_rng(0).integers(0, 256, block_mb << 20, dtype=np.uint8).tobytes()
    path = folder / "fm-disk-probe.bin"
    t0 = time.perf_counter()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        for _ in range(max(1, mb // block_mb)):
            os.write(fd, block)
        os.fsync(fd)
    finally:
        os.close(fd)
    seconds = time.perf_counter() - t0
    written = path.stat().st_size
    path.unlink()
    return written / seconds


def _decode_rate(paths, pre, workers: int) -> float:

    t0 = time.perf_counter()
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(lambda p: preprocess_bytes(read_image_bytes(p), pre), paths))
    return len(paths) / (time.perf_counter() - t0)


def _store_bytes(outputs: dict, shapes: dict, dtype: str, compression: str, tmp: Path, meta: dict) -> float:
    """On-disk bytes per image of one batch of ``outputs`` stored with ``dtype``/``compression``."""

    n = len(next(iter(outputs.values())))
    path = Path(tempfile.mkdtemp(dir=tmp)) / "s.zarr"
    st = FeatureStore.create(path, paths=[f"x{i}" for i in range(n)], metadata=meta, shapes=shapes,
                             batch_size=n, dtype=dtype, compression=compression)
    empty = st.nbytes_on_disk()
    write_batch(st, 0, outputs, range(n), {})
    size = (st.nbytes_on_disk() - empty) / n
    shutil.rmtree(path.parent)
    return size


def bench_config(label: str, model_path: Path, paths: list[str], tmp: Path, *, batch_size: int, workers: int,
                 repeats: int, threads: int | None, compression: str = "zstd", dtype: str = "fp16",
                 provider: str = "cpu", device: int = 0, tf32: bool = True, writers: int = 4) -> dict:

    with Extractor(model_path, provider=provider, threads=threads, max_batch=batch_size, spin=False,
                   device=device, tf32=tf32) as ex:
        shapes = output_shapes(ex.record, ex.session)
        out_dtype = ex.record.output_dtype
        batches = _decoded_batches(paths, ex.preprocessing, batch_size)
        ring = ex.output_ring(batch_size, slots=2)
        runs = {"n": 0}

        def model_only():  # maps into preallocated (pinned on a GPU) host buffers, as extract does
            for b in batches:
                slot = ring.acquire()
                ex.run_into(b, slot)
                ring.release(slot)

        def end_to_end():
            runs["n"] += 1
            st = FeatureStore.create(tmp / f"{label}-{runs['n']}.zarr", paths=paths, metadata=ex.metadata,
                                     shapes=shapes, batch_size=batch_size, dtype=dtype, compression=compression)
            s = run_extraction(st, ex, ex.preprocessing, ExtractSettings(workers=workers, writers=writers))
            if s.ok != len(paths):
                raise RuntimeError(f"end-to-end run stored {s.ok} of {len(paths)} images: {s}")
            return st

        times = interleaved({"model_only": model_only, "end_to_end": end_to_end}, warmup=1, repeats=repeats)
        disk = FeatureStore.open(tmp / f"{label}-{runs['n']}.zarr").nbytes_on_disk() / len(paths)
        sample = ex.run(batches[0])
        decode = _decode_rate(paths, ex.preprocessing, workers)
        mode = ex.math_mode
        ring.close()
    model_rate = len(paths) / float(np.median(times["model_only"]))
    e2e_rate = len(paths) / float(np.median(times["end_to_end"]))
    raw = {dt: sum(math.prod(s) for s in shapes.values()) * (2 if dt == "fp16" else 4) for dt in ("fp32", "fp16")}
    storage = {"fp32 raw": raw["fp32"], "fp16 raw": raw["fp16"]} if compression == "zstd" else {}
    for dt in ("fp32", "fp16") if compression == "zstd" else ():
        if dt == "fp32" and out_dtype == "fp16":
            continue
        storage[f"{dt} zstd on disk"] = _store_bytes(sample, shapes, dt, "zstd", tmp, ex.metadata)
    stored = sum(math.prod(s) for s in shapes.values()) * (2 if dtype == "fp16" else 4)
    return {"config": label, "model": str(model_path.name), "output_dtype": out_dtype,
            "provider": provider, "math_mode": mode, "writers": writers,
            "shapes": {k: list(v) for k, v in shapes.items()}, "stored_bytes_per_image": stored,
            "model_only_img_s": model_rate, "end_to_end_img_s": e2e_rate, "ratio": e2e_rate / model_rate,
            "decode_only_img_s": decode, "end_to_end_store": f"{dtype} {compression}",
            "end_to_end_disk_bytes_per_image": disk, "bytes_per_image": storage,
            "seconds": {k: v for k, v in times.items()}}


def bench_ray(model_path: Path, paths: list[str], tmp: Path, *, batch_size: int, actors: int) -> dict:
    """End-to-end img/s of the local engine and the Ray engine (local Ray, already started) on
    the same files, one run each after a warm-up run; Ray's time includes starting its actors."""

    def fresh(name):
        return FeatureStore.create(tmp / name, paths=paths, metadata=ex.metadata, batch_size=batch_size,
                                   shapes=output_shapes(ex.record, ex.session), dtype="fp16")

    with Extractor(model_path, provider="cpu", max_batch=batch_size, spin=False) as ex:
        run_extraction(fresh("warm-local.zarr"), ex, ex.preprocessing)
        local = run_extraction(fresh("local.zarr"), ex, ex.preprocessing)
        ray_s = run_extraction_ray(fresh("ray.zarr"), model_path, actors=actors, provider="cpu")
    return {"images": len(paths), "actors": actors, "local_img_s": local.images_per_s,
            "ray_img_s": ray_s.images_per_s, "ray_over_local": ray_s.images_per_s / local.images_per_s}


def write_bound(config: dict, disk_bytes_s: float) -> dict:
    """The write-bound configuration's ceiling: min(model-only img/s, disk bytes/s / stored bytes
    per image), and end-to-end as a share of it."""
    disk_img_s = disk_bytes_s / config["stored_bytes_per_image"]
    bound = min(config["model_only_img_s"], disk_img_s)
    return dict(config, disk_write_bytes_s=disk_bytes_s, disk_img_s=disk_img_s, bound_img_s=bound,
                ratio_to_bound=config["end_to_end_img_s"] / bound)


def markdown(result: dict) -> str:
    lines = [f"# Bulk extraction benchmark ({result['images']} images, batch {result['batch_size']}, "
             f"{result['workers']} decode processes, {result.get('writers', 1)} writer threads, "
             f"{result.get('provider', 'cpu')}, {result['cpu']})", "",
             "| configuration | model-only img/s | end-to-end img/s | ratio | decode-only img/s |",
             "|---|---:|---:|---:|---:|"]
    for c in result["configs"]:
        lines.append(f"| {c['config']} | {c['model_only_img_s']:.2f} | {c['end_to_end_img_s']:.2f} | "
                     f"{c['ratio']:.2f} | {c['decode_only_img_s']:.1f} |")
    wb = result.get("write_bound")
    if wb:
        lines += ["", f"Write-bound configuration ({wb['config']}; {wb['stored_bytes_per_image'] / 1e6:.1f} MB per "
                      f"image): disk sequential write {wb['disk_write_bytes_s'] / 1e6:.0f} MB/s (fsync) = "
                      f"{wb['disk_img_s']:.1f} img/s; bound = min(model-only {wb['model_only_img_s']:.1f}, disk "
                      f"{wb['disk_img_s']:.1f}) = {wb['bound_img_s']:.1f} img/s; end-to-end "
                      f"{wb['end_to_end_img_s']:.1f} img/s = **{wb['ratio_to_bound']:.2f}x the bound**"]
    lines += ["", "Bytes per image written to the store (raw = uncompressed; zstd measured on one batch):", "",
              "| configuration | storage | MB per image |", "|---|---|---:|"]
    for c in result["configs"]:
        for k, v in c["bytes_per_image"].items():
            lines.append(f"| {c['config']} | {k} | {v / 1e6:.3f} |")
    if result.get("ray"):
        r = result["ray"]
        lines += ["", f"Ray engine (local Ray, {r['actors']} actor) vs local engine, end-to-end, taps {TAPS}, "
                      "fp16 store:", "", "| engine | img/s |", "|---|---:|",
                  f"| local (threads) | {r['local_img_s']:.2f} |",
                  f"| ray (tasks + actor pool, incl. actor start) | {r['ray_img_s']:.2f} |",
                  f"| ratio ray / local | {r['ray_over_local']:.2f} |"]
    lines += ["", f"Command: `{result['command']}`", ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m featuremaps.bench.extract_bench", description=__doc__.split("\n")[0])
    p.add_argument("--images", type=int, default=32)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--threads", type=int, default=None, help="ONNX Runtime intra-op threads (default: all)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--input-size", type=int, default=224)
    p.add_argument("--out", default="bench/results")
    p.add_argument("--ray", action="store_true", help="also compare the Ray engine (local Ray) with the local one")
    p.add_argument("--actors", type=int, default=1, help="Ray model actors for --ray (default: 1)")
    p.add_argument("--provider", default="cpu", help="ONNX Runtime provider for the model (default: cpu)")
    p.add_argument("--device", type=int, default=0, help="GPU index (default: 0)")
    p.add_argument("--no-tf32", action="store_true", help="strict fp32 on CUDA")
    p.add_argument("--writers", type=int, default=4, help="chunk writer threads (default: 4)")
    p.add_argument("--store-dir", default=None,
                   help="folder on the disk the stores go to, and whose write bandwidth is measured "
                        "(default: a temporary folder)")
    p.add_argument("--disk-mb", type=int, default=256, help="MB written to measure the disk (default: 256)")
    p.add_argument("--configs", default="write-bound,full,reduced",
                   help="comma list of write-bound, full, full-uncompressed (fp32 maps cast to fp16 in the writer "
                        "pool), full-fp16-graph (cast in the graph), reduced (default: write-bound,full,reduced)")
    args = p.parse_args(argv)

    wanted = {c.strip() for c in args.configs.split(",") if c.strip()}
    with tempfile.TemporaryDirectory(prefix="fm-extract-bench-", dir=args.store_dir) as tmp_s:
        tmp = Path(tmp_s)
        paths = _images(tmp / "images", args.images)
        full = export_model(TAPS, tmp / "vgg16-taps.onnx", weights="random", input_size=args.input_size)
        kw = dict(batch_size=args.batch_size, workers=args.workers, repeats=args.repeats, threads=args.threads,
                  provider=args.provider, device=args.device, tf32=not args.no_tf32, writers=args.writers)
        configs, wb = [], None
        if "write-bound" in wanted:
            tap0 = export_model("0", tmp / "vgg16-tap0.onnx", weights="random", input_size=args.input_size)
            disk_bw = disk_write_bandwidth(tmp, args.disk_mb)
            wb = write_bound(bench_config("write-bound: tap 0 only, fp32 store, uncompressed", tap0.path, paths,
                                          tmp, compression="none", dtype="fp32", **kw), disk_bw)
            configs.append(wb)
        if "full" in wanted:
            configs.append(bench_config(f"taps {TAPS}, fp16 store, zstd", full.path, paths, tmp, **kw))
        if "full-uncompressed" in wanted:
            configs.append(bench_config(f"taps {TAPS}, fp16 store, uncompressed", full.path, paths, tmp,
                                        compression="none", **kw))
        if "full-fp16-graph" in wanted:  # the fp16 cast in the graph instead of in the writer pool
            half = tmp / "vgg16-taps-fp16out.onnx"
            reduce_model(full.path, half, {}, fp16_outputs=True)
            configs.append(bench_config(f"taps {TAPS}, fp16 outputs in the graph, uncompressed", half, paths, tmp,
                                        compression="none", **kw))
        if "reduced" in wanted:
            reduced = tmp / "vgg16-reduced.onnx"
            reduce_model(full.path, reduced, parse_reductions(REDUCED, full.taps), fp16_outputs=True)
            configs.append(bench_config("reduced (0,5 mean; 10 avgpool:4; 17 avgpool:2; 28 max), fp16 outputs, zstd",
                                        reduced, paths, tmp, **kw))
        ray_result = None
        if args.ray:

            import ray

            init_ray(None)
            try:
                ray_result = bench_ray(full.path, paths, tmp, batch_size=args.batch_size, actors=args.actors)
            finally:
                ray.shutdown()
    result = {"benchmark": "extract", "images": args.images, "batch_size": args.batch_size,
              "workers": args.workers, "threads": args.threads, "input_size": args.input_size,
              "repeats": args.repeats, "cpu": f"{platform.machine()}, {os.cpu_count()} cores",
              "reduced_spec": REDUCED, "configs": configs, "ray": ray_result, "write_bound": wb,
              "provider": args.provider, "tf32": not args.no_tf32, "writers": args.writers,
              "command": " ".join(["python -m featuremaps.bench.extract_bench",
                                   *(sys.argv[1:] if argv is None else argv)])}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "extract_bench.json").write_text(json.dumps(result, indent=2) + "\n")
    md = markdown(result)
    (out / "extract_bench.md").write_text(md)
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
