"""ONNX Runtime vs OpenVINO on the same exported files, side by side in one run (issue 14).

Five engines, timed interleaved (round-robin, median) on one batch of real photos, and each
compared per tap with the PyTorch clone-hook reference on that batch:

* ``ort-fp32``      ONNX Runtime CPU, the fp32 export
* ``ort-int8``      ONNX Runtime CPU, the calibrated, gated int8 QDQ export
* ``ov-f32``        OpenVINO CPU, fp32 export, ``INFERENCE_PRECISION_HINT=f32`` (strict)
* ``ov-default``    OpenVINO CPU, fp32 export, its default precision (bf16 with AMX/AVX-512 BF16)
* ``ov-int8``       OpenVINO CPU, the same int8 QDQ export

    flock /tmp/fm-bench.lock python -m featuremaps.bench.openvino_bench

Writes ``bench/results/openvino_bench.json`` and ``.md`` (``--name`` changes the stem), with the
CPU's matrix units (AMX, AVX-512, bf16, VNNI): they decide whether bf16/int8 pay off.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

from ..compare import budget_for, compare
from ..contracts import Preprocessing
from ..engine.cpu_features import cpu_features
from ..engine.decode_pool import load_batch
from ..engine.extractor import Extractor
from ..errors import FeaturemapsError
from ..export.onnx_export import export_model
from ..export.reference import reference_features
from ..export.variants import build_variant
from ..export.zoo import build_model
from ..samples import sample_images
from .parity import budget_for_model, looser
from .timing import interleaved

RESULTS = Path(__file__).resolve().parent / "results"
# engine -> (model variant, provider, OpenVINO math mode)
ENGINES = {"ort-fp32": ("fp32", "cpu", "default"), "ort-int8": ("int8", "cpu", "default"),
           "ov-f32": ("fp32", "openvino", "fp32"), "ov-default": ("fp32", "openvino", "default"),
           "ov-int8": ("int8", "openvino", "default")}


def build_models(tmp: Path, *, layers: str, size: int, seed: int):
    """Export the fp32 model (seeded random weights) and its calibrated, gated int8 variant.
    Returns ``({"fp32": path, "int8": path}, net, taps, int8 gate dict)``."""
    net, info = build_model("vgg16", "random", seed=seed)
    fp32 = export_model(layers, tmp / "fp32.onnx", input_size=size, net=net, weights_info=info)
    int8 = build_variant(fp32.path, tmp / "int8.onnx", precision="int8")
    return {"fp32": fp32.path, "int8": int8.path}, net, fp32.taps, int8.gate.to_dict()


def open_engines(paths: dict[str, Path], names: list[str], threads: int | None):
    """``{engine: Extractor}``; engines that cannot run here go to the second dict with the reason."""
    ready, skipped = {}, {}
    for name in names:
        variant, provider, mode = ENGINES[name]
        try:
            ready[name] = Extractor(paths[variant], provider=provider, threads=threads, spin=False,
                                    math_mode=mode)
        except FeaturemapsError as e:
            skipped[name] = str(e).splitlines()[0]
    return ready, skipped


def parity_rows(extractors: dict, batch: np.ndarray, reference: dict) -> dict[str, dict]:
    """Per engine: math mode, the budget it is judged by, and per-tap rel L2 / cosine vs PyTorch."""
    out = {}
    for name, ex in extractors.items():
        model_budget = budget_for_model(ex.record)
        budget = looser(budget_for(ex.math_mode), model_budget)
        rows = compare({k: v.astype(np.float32) for k, v in ex.run(batch).items() if k in reference}, reference)
        out[name] = {"math_mode": ex.math_mode, "note": ex.info.note,
                     "budget": dict(budget.to_dict(), name=ex.math_mode if budget is not model_budget
                                    else ex.record.precision),
                     "ok": all(budget.passes(r) for r in rows), "taps": [r.to_dict() for r in rows]}
    return out


def to_markdown(report: dict) -> str:
    cpu = report["cpu"]
    units = ", ".join(f"{k} {'yes' if cpu[k] else 'no'}" for k in ("amx", "avx512", "bf16", "vnni"))
    lines = [f"# OpenVINO vs ONNX Runtime ({report['machine']}; {units})", "",
             f"{report['date']} · VGG16 taps {report['layers']} at {report['input_size']}², batch {report['batch']}, "
             f"threads {report['threads'] or 'default'}, {report['repeats']} interleaved repeats, seeded random "
             f"weights · onnxruntime {report['versions']['onnxruntime']} · openvino {report['versions']['openvino']}",
             ""]
    if report.get("note"):
        lines += [f"**{report['note']}**", ""]
    lines += ["| engine | math | img/s (median) | vs ORT fp32 | parity budget | worst rel L2 | min cosine | ok |",
              "|---|---|---:|---:|---|---:|---:|---|"]
    base = report["engines"].get("ort-fp32", {}).get("img_per_s")
    for name, r in report["engines"].items():
        p = report["parity"][name]
        worst = max(t["rel_l2"] for t in p["taps"])
        cos = min(t["cosine"] for t in p["taps"])
        vs = f"{r['img_per_s'] / base:.2f}x" if base else "–"
        lines.append(f"| {name} | {p['math_mode']} | {r['img_per_s']:.2f} | {vs} | {p['budget']['name']} "
                     f"(rel L2 <= {p['budget']['rel_l2']:g}) | {worst:.2e} | {cos:.6f} | "
                     f"{'yes' if p['ok'] else 'NO'} |")
    for name, why in report["skipped"].items():
        lines.append(f"| {name} | – | skipped: {why} | | | | | |")
    taps = [t["tap"] for t in next(iter(report["parity"].values()))["taps"]] if report["parity"] else []
    if taps:
        lines += ["", "Per-tap rel L2 vs the PyTorch clone-hook reference (same input tensor):", "",
                  "| engine | " + " | ".join(taps) + " |", "|---|" + "---:|" * len(taps)]
        for name, p in report["parity"].items():
            lines.append(f"| {name} | " + " | ".join(f"{t['rel_l2']:.2e}" for t in p["taps"]) + " |")
    return "\n".join(lines) + "\n"


def _version(mod: str) -> str | None:
    """The module's ``__version__`` (onnxruntime may be installed as onnxruntime-gpu)."""
    try:
        return str(__import__(mod).__version__)
    except ImportError:
        return None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m featuremaps.bench.openvino_bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--layers", default="0,5,10,17,28")
    p.add_argument("--input-size", type=int, default=224)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--repeats", type=int, default=7, help="interleaved timed rounds (default: 7)")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--threads", type=int, default=None, help="threads per engine (default: each library's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--engines", default=",".join(ENGINES), help=f"comma list of {', '.join(ENGINES)}")
    p.add_argument("--note", default="", help="a line for the report (e.g. 'smoke run on a shared machine')")
    p.add_argument("--out", default=str(RESULTS), help="results folder (default: bench/results)")
    p.add_argument("--name", default="openvino_bench", help="file stem (default: openvino_bench)")
    args = p.parse_args(argv)
    names = [n.strip() for n in args.engines.split(",") if n.strip()]
    bad = [n for n in names if n not in ENGINES]
    if bad:
        p.error(f"unknown engine {', '.join(bad)}; use {', '.join(ENGINES)}")

    photos = sample_images() * args.batch
    batch = load_batch(photos[:args.batch], Preprocessing(size=(args.input_size, args.input_size)))
    with tempfile.TemporaryDirectory(prefix="featuremaps-ovbench-") as tmp:
        print(f"exporting VGG16 {args.layers} at {args.input_size} and its int8 variant ...", flush=True)
        paths, net, taps, gate = build_models(Path(tmp), layers=args.layers, size=args.input_size, seed=args.seed)
        reference = reference_features(net, batch, taps)
        engines, skipped = open_engines(paths, names, args.threads)
        print(f"timing {', '.join(engines)}: batch {args.batch}, {args.repeats} interleaved rounds ...", flush=True)
        times = interleaved({k: (lambda ex=ex: ex.run(batch)) for k, ex in engines.items()},
                            warmup=args.warmup, repeats=args.repeats)
        parity = parity_rows(engines, batch, reference)
    report = {"format": "featuremaps-openvino-bench/1",
              "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
              "machine": f"{cpu_features().model}, {os.cpu_count()} CPUs", "cpu": cpu_features().to_dict(),
              "platform": platform.platform(), "load_avg": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
              "versions": {m: _version(m) for m in ("onnxruntime", "openvino", "numpy", "torch")},
              "layers": args.layers, "input_size": args.input_size, "batch": args.batch, "threads": args.threads,
              "repeats": args.repeats, "warmup": args.warmup, "note": args.note, "int8_gate": gate,
              "engines": {k: {"img_per_s": args.batch / float(np.median(t)), "seconds": t,
                              "model": ENGINES[k][0], "provider": ENGINES[k][1]} for k, t in times.items()},
              "skipped": skipped, "parity": parity}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{args.name}.json").write_text(json.dumps(report, indent=2))
    md = to_markdown(report)
    (out / f"{args.name}.md").write_text(md)
    print(md)
    print(f"wrote {out / (args.name + '.json')} and {out / (args.name + '.md')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
