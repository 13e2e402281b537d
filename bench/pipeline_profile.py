"""Where ``extract``'s time goes, and how close it comes to the runtime's own speed: per-stage wall
and CPU seconds per image, next to the runtime alone on the same file, for one or more tap sets.

    python -m featuremaps.bench.pipeline_profile [--images 96] [--batch-size 8] [--repeats 3] \\
        [--workloads 28 0,5,10,17,28] [--provider cpu|openvino] [--compression zstd none]

For each workload: VGG16 (seeded random weights; speed does not depend on them) exported at 224
with those taps, ``--images`` JPEGs of 500x375 (q90, cut from the sample photos), then rounds
interleaved (the order rotated every round):

* **ceiling**: the runtime without featuremaps (:mod:`.ceiling`): OpenVINO's async THROUGHPUT
  queue on random uint8 batches (what ``benchmark_app -hint throughput`` does), or one ONNX
  Runtime session over every core;
* **model only**: the Extractor (as ``extract`` builds it) on pre-decoded batches, into its
  output ring, as many batches in flight as it has lanes;
* **end to end**: :func:`~featuremaps.engine.pipeline.run_extraction` from the files into a
  fresh fp16 store, as ``extract`` runs it.

The stage table is the end-to-end round with the median rate: wall seconds per image summed over
the threads that ran the stage (stages overlap, so they add up to more than the run's wall time)
and that thread's own CPU time (the runtime's threads, zarr's I/O thread and the decode processes
are counted in the totals below it). Writes ``bench/results/<name>.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import shutil
import tempfile
import time
from pathlib import Path


from ..engine.cpu_features import cpu_features
from ..engine.decode_pool import load_batch
from ..engine.extractor import Extractor
from ..engine.pipeline import run_extraction
from ..engine.store import FeatureStore, output_shapes
from ..export.onnx_export import export_model
from .ceiling import openvino_ceiling, ort_ceiling
from .decode_bench import make_jpegs


def _model_only(ex: Extractor, batches: list) -> float:
    """The Extractor alone on decoded batches, into its output ring, ``ex.lanes`` batches in flight."""
    ring = ex.output_ring(len(batches[0]), ex.lanes)
    running = []
    t0 = time.perf_counter()
    for b in batches:
        if len(running) >= ex.lanes:
            run, slot = running.pop(0)
            ex.collect(run)
            ring.release(slot)
        slot = ring.acquire()
        running.append((ex.submit_into(b, slot), slot))
    for run, _ in running:
        ex.collect(run)
    rate = sum(len(b) for b in batches) / (time.perf_counter() - t0)
    ring.close()
    return rate


def profile(taps: str, paths: list[str], tmp: Path, *, batch_size: int, repeats: int, provider: str,
            compression: str) -> dict:
    model = export_model(taps, tmp / f"vgg16-{taps.replace(',', '_')}.onnx", weights="random").path
    rows = {"model_only": [], "end_to_end": [], "ceiling": []}
    n_batches = -(-len(paths) // batch_size)
    if provider == "openvino":
        ceiling = openvino_ceiling(model, batch_size, n_batches)
    else:
        ceiling = ort_ceiling(model, batch_size, n_batches, provider=provider)
    with Extractor(model, provider=provider, max_batch=batch_size, spin=False, throughput=True) as ex:
        pixels = load_batch(paths, ex.preprocessing)
        batches = [pixels[i:i + batch_size] for i in range(0, len(pixels), batch_size)]
        shapes = output_shapes(ex.record, getattr(ex, "session", None))
        _model_only(ex, batches[:max(1, ex.lanes)])  # warm-up
        order = ["ceiling", "model_only", "end_to_end"]
        for r in range(repeats):
            for how in order[r % 3:] + order[:r % 3]:
                if how == "ceiling":
                    rows[how].append({"img_s": ceiling.rate()})
                elif how == "model_only":
                    rows[how].append({"img_s": _model_only(ex, batches)})
                else:
                    st = FeatureStore.create(tmp / f"s-{taps}-{r}.zarr", paths=paths, metadata=ex.metadata,
                                             shapes=shapes, batch_size=batch_size, dtype="fp16",
                                             compression=compression)
                    s = run_extraction(st, ex, ex.preprocessing)
                    st.close()
                    shutil.rmtree(tmp / f"s-{taps}-{r}.zarr")
                    rows[how].append({"img_s": s.images_per_s, "seconds": s.seconds, "stages": s.stages,
                                      "cpu_s": s.cpu_s, "images": s.images})
        e2e = sorted(rows["end_to_end"], key=lambda x: x["img_s"])[len(rows["end_to_end"]) // 2]
        top = statistics.median(x["img_s"] for x in rows["ceiling"])
        model_only = statistics.median(x["img_s"] for x in rows["model_only"])
        return {"taps": taps, "provider": ex.provider, "math_mode": ex.math_mode, "note": ex.info.note,
                "lanes": ex.lanes, "compression": compression, "ceiling_name": ceiling.name,
                "ceiling_detail": ceiling.detail, "ceiling_img_s": top, "model_only_img_s": model_only,
                "end_to_end_img_s": e2e["img_s"], "share": e2e["img_s"] / top, "model_only_share": model_only / top,
                "median_run": e2e, "runs": rows}


def _table(p: dict) -> list[str]:
    run, n = p["median_run"], p["median_run"]["images"]
    detail = ", ".join(f"{k} {v}" for k, v in p["ceiling_detail"].items())
    lines = [f"### taps {p['taps']} ({p['note']}; store fp16, compression {p['compression']})", "",
             "| | img/s (median) | share of the ceiling |", "|---|---:|---:|",
             f"| ceiling: {p['ceiling_name']} ({detail}) | {p['ceiling_img_s']:.1f} | 1.00x |",
             f"| model only: the Extractor, {p['lanes']} batch(es) in flight, into its output ring | "
             f"{p['model_only_img_s']:.1f} | {p['model_only_share']:.2f}x |",
             f"| **end to end: files -> store** | **{p['end_to_end_img_s']:.1f}** | **{p['share']:.2f}x** |", "",
             "| stage | wall ms/img | own CPU ms/img |", "|---|---:|---:|"]
    for name, t in sorted(run["stages"].items(), key=lambda kv: -kv[1]["wall_s"]):
        lines.append(f"| {name} | {1e3 * t['wall_s'] / n:.1f} | {1e3 * t['cpu_s'] / n:.1f} |")
    lines += [f"| **run wall time** | {1e3 * run['seconds'] / n:.1f} | |",
              f"| **CPU, this process (model threads included)** | | {1e3 * run['cpu_s']['this process'] / n:.1f} |",
              f"| **CPU, decode worker processes** | | {1e3 * run['cpu_s']['decode workers'] / n:.1f} |", ""]
    return lines


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--images", type=int, default=96)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--workloads", nargs="+", default=["28", "0,5,10,17,28"])
    p.add_argument("--provider", default="cpu")
    p.add_argument("--compression", nargs="+", default=["zstd"], help="store compression(s) to profile")
    p.add_argument("--name", default="pipeline_profile", help="stem of the result files")
    p.add_argument("--out", default="bench/results")
    args = p.parse_args(argv)
    cpu = cpu_features()
    with tempfile.TemporaryDirectory(prefix="fm-prof-") as tmp:
        tmp = Path(tmp)
        paths = make_jpegs(tmp, args.images)
        results = [profile(t, paths, tmp, batch_size=args.batch_size, repeats=args.repeats, provider=args.provider,
                           compression=c) for t in args.workloads for c in args.compression]
    md = ["# extract, stage by stage", "",
          f"VGG16 at 224, {args.images} JPEGs 500x375 q90, batch {args.batch_size}, fp16 store; {cpu.summary()}; "
          f"rounds interleaved, the median of {args.repeats} end-to-end runs.", ""]
    for r in results:
        md += _table(r)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{args.name}.json").write_text(json.dumps({"cpu": cpu.to_dict(), "images": args.images,
                                                          "batch_size": args.batch_size, "results": results},
                                                         indent=2) + "\n")
    (out / f"{args.name}.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
