"""fp32 vs int8 (vs fp16, vs naive int8) on the CPU provider: img/s at batch 8, measured side by
side in one run (round-robin, median), per-tap parity against fp32 on held-back photos, file sizes.

    flock /tmp/fm-bench.lock python -m featuremaps.bench.precision_bench

Writes ``bench/results/precision_bench.json`` and ``.md``. Goal (issue 6): int8 >= 2.5x fp32 with
every tap inside the gate (cosine >= 0.99, rel L2 <= 0.1).
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
from ..engine.decode_pool import load_batch
from ..engine.extractor import Extractor
from ..engine.preprocess import Preprocessing
from ..export.calib import default_holdout
from ..export.gate import GateError
from ..export.onnx_export import export_model
from ..export.quantize import Int8Options
from ..export.variants import build_variant
from ..samples import sample_images

RESULTS = Path(__file__).resolve().parent / "results"


def build_variants(tmp: Path, *, layers: str, size: int, weights: str, seed: int,
                   precisions: list[str]) -> dict[str, dict]:
    """Export fp32 and make each variant; ``{name: {"path", "gate", "ort_size", "size"}}``."""

    fp32 = export_model(layers, tmp / "fp32.onnx", weights=weights, seed=seed, input_size=size).path
    out: dict[str, dict] = {}
    for name in precisions:
        precision = "int8" if name.startswith("int8") else name
        opts = Int8Options(fix_taps=False, reduce_range=False, float_first_conv=False) \
            if name == "int8-naive" else Int8Options()
        t0 = time.perf_counter()
        try:
            res = build_variant(fp32, tmp / f"{name}.onnx", precision=precision, fmt="ort", int8=opts)
            gate, path = res.gate, res.path
            ort_size = res.ort_size_bytes
        except GateError as e:  # the naive variant is expected to fail: keep it for the record
            gate, path, ort_size = e.result, e.kept, None
        out[name] = {"path": path, "gate": gate, "size": path.stat().st_size, "ort_size": ort_size,
                     "build_s": time.perf_counter() - t0}
    return out


def time_round_robin(paths: dict[str, Path], batch: np.ndarray, *, repeats: int, threads: int | None,
                     slow: dict[str, int]) -> dict[str, list[float]]:
    """Seconds per ``batch`` run for each model, interleaved so load drifts hit all alike."""

    exs = {k: Extractor(p, provider="cpu", threads=threads, spin=False) for k, p in paths.items()}  # interleaved
    times: dict[str, list[float]] = {k: [] for k in exs}
    for ex in exs.values():
        ex.run(batch)  # warm-up: allocations, kernel selection
    for r in range(repeats):
        for k, ex in exs.items():
            if r >= slow.get(k, repeats):
                continue
            t0 = time.perf_counter()
            ex.run(batch)
            times[k].append(time.perf_counter() - t0)
    return times


def to_markdown(report: dict) -> str:
    rows = report["variants"]
    fp32_rate = rows["fp32"]["img_per_s"]
    lines = [f"# precision bench ({report['machine']}, {report['input_size']}x{report['input_size']}, "
             f"batch {report['batch']}, CPU provider, {report['weights']} weights)", "",
             "| variant | img/s (median) | vs fp32 | .onnx MB | .ort MB | gate |", "|---|---|---|---|---|---|"]
    for name, r in rows.items():
        ort = f"{r['ort_mb']:.1f}" if r["ort_mb"] else "-"
        gate = "-" if r["gate"] is None else ("pass" if r["gate"]["ok"] else "FAIL")
        lines.append(f"| {name} | {r['img_per_s']:.2f} | {r['img_per_s'] / fp32_rate:.2f}x | {r['onnx_mb']:.1f} | "
                     f"{ort} | {gate} |")
    for name, r in rows.items():
        if r["gate"] is None:
            continue
        g = r["gate"]
        lines += ["", f"## {name} vs fp32, {g['images']} held-back photos (gate cosine >= {g['min_cosine']}, "
                      f"rel L2 <= {g['max_rel_l2']})", "", "| tap | rel L2 | cosine | max abs err | max abs ref |",
                  "|---|---|---|---|---|"]
        lines += [f"| {t['tap']} | {t['rel_l2']:.4f} | {t['cosine']:.6f} | {t['max_abs']:.3g} "
                  f"| {t['ref_max_abs']:.3g} |"
                  for t in g["taps"]]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m featuremaps.bench.precision_bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--layers", default="0,5,10,17,28")
    p.add_argument("--input-size", type=int, default=224)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--repeats", type=int, default=7, help="timed runs per variant (default: 7)")
    p.add_argument("--fp16-repeats", type=int, default=2, help="timed fp16 runs (slow on CPU; default: 2)")
    p.add_argument("--threads", type=int, default=None, help="intra-op threads (default: ONNX Runtime's)")
    p.add_argument("--weights", default="random")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--precisions", default="fp32,int8,int8-naive,fp16")
    p.add_argument("--out", default=str(RESULTS), help="results folder (default: bench/results)")
    args = p.parse_args(argv)

    names = args.precisions.split(",")
    if "fp32" not in names:
        names.insert(0, "fp32")
    pre = Preprocessing(size=(args.input_size, args.input_size))
    photos = (default_holdout() + sample_images()) * args.batch
    batch = load_batch(photos[:args.batch], pre)
    with tempfile.TemporaryDirectory(prefix="featuremaps-bench-") as tmp:
        print(f"building {', '.join(names)} at {args.input_size}x{args.input_size} ...", flush=True)
        built = build_variants(Path(tmp), layers=args.layers, size=args.input_size, weights=args.weights,
                               seed=args.seed, precisions=[n for n in names if n != "fp32"])
        fp32_path = Path(tmp) / "fp32.onnx"
        paths = {"fp32": fp32_path, **{k: v["path"] for k, v in built.items()}}
        print(f"timing batch {args.batch}, {args.repeats} round-robin repeats ...", flush=True)
        times = time_round_robin(paths, batch, repeats=args.repeats, threads=args.threads,
                                 slow={"fp16": args.fp16_repeats})
        fp32_size = fp32_path.stat().st_size
    variants = {}
    for name in paths:
        b = built.get(name, {})
        rate = args.batch / float(np.median(times[name]))
        variants[name] = {"img_per_s": rate, "seconds": times[name],
                          "onnx_mb": (b.get("size") or fp32_size) / 1e6,
                          "ort_mb": (b["ort_size"] / 1e6) if b.get("ort_size") else None,
                          "build_s": b.get("build_s"),
                          "gate": b["gate"].to_dict() if b.get("gate") is not None else None}
    import onnxruntime

    report = {"machine": f"{platform.processor() or platform.machine()}, {__import__('os').cpu_count()} cpus",
              "onnxruntime": onnxruntime.__version__, "input_size": args.input_size, "batch": args.batch,
              "layers": args.layers, "weights": f"{args.weights}" + (f" seed {args.seed}" if args.weights == "random"
                                                                     else ""),
              "repeats": args.repeats, "variants": variants,
              "int8_speedup": variants["int8"]["img_per_s"] / variants["fp32"]["img_per_s"] if "int8" in variants
              else None}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "precision_bench.json").write_text(json.dumps(report, indent=2))
    md = to_markdown(report)
    (out / "precision_bench.md").write_text(md)
    print(md)
    print(f"wrote {out / 'precision_bench.json'} and {out / 'precision_bench.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
