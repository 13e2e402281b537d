"""``featuremaps parity``: every tap, every provider, against the PyTorch clone-hook reference."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

from ..bench.parity import (budget_for_model, list_images, load_reference_net, model_parity, pipeline_gap,
                            reduce_reference)
from ..compare import format_parity_table
from ..engine.cpu_features import cpu_features
from ..engine.extractor import Extractor
from ..engine.decode_pool import load_batch
from ..engine.openvino_backend import MATH_MODES as OV_MATH_MODES
from ..engine.providers import provider_names
from ..engine.validate import read_model_record
from ..errors import ArgumentError, ProviderError
from ..export.reference import reference_features
from ..samples import sample_images
from ._args import (ModelSpec, add_math_args, add_model_args, new_file_arg, positive_int,
                    write_new_file)
from .cache import resolve_model


def register(sub) -> None:
    p = sub.add_parser(
        "parity", help="check every tap and provider against the PyTorch clone-hook reference",
        description="Run an exported model (or a zoo model exported on the fly) with each ONNX Runtime "
                    "provider (and OpenVINO) on real photos and compare every tap with the PyTorch clone-hook "
                    "reference on the same input tensor: max abs error, relative L2, cosine, pass/fail against the "
                    "budget of the math mode each provider ran (fp32: rel L2 <= 1e-5; tf32, CUDA's default for fp32 "
                    "models: rel L2 <= 2e-3 and cosine >= 0.99999; fp16: rel L2 <= 1e-2 and "
                    "cosine >= 0.9999; int8: rel L2 <= 0.1 and cosine >= 0.99). The reference weights are "
                    "rebuilt from the model's metadata (seed, ImageNet cache or --weights FILE) and must "
                    "match its recorded SHA-256. Exit 1 if any tap fails.")
    # None = "what the model's metadata says" for an .onnx file, random/0 for a zoo model
    add_model_args(p, weights_default=None, seed_default=None)
    p.add_argument("--images", default=None,
                   help="folder of photos (default: the sample photos shipped with installed packages)")
    p.add_argument("--max-images", type=positive_int, default=8, help="use at most this many photos (default: 8)")
    p.add_argument("--providers", default="cpu,cuda,tensorrt",
                   help="comma list of cpu, cuda, tensorrt, openvino (OpenVINO's default math: bf16 on CPUs "
                        "with bf16 units, judged by the bf16 budget), openvino:fp32 or openvino:bf16; unavailable "
                        "ones are skipped with the reason (default: cpu,cuda,tensorrt)")
    add_math_args(p, math_mode=False)  # OpenVINO's math mode is named per provider: openvino:fp32
    p.add_argument("--pipeline", action="store_true",
                   help="also measure the preprocessing gap: engine decode/resize/normalize vs the seed's "
                        "PIL + torchvision Resize/ToTensor/Normalize (pixels and per-tap error)")
    p.add_argument("--json", metavar="OUT", type=new_file_arg, default=None,
                   help="also write the full report as JSON to OUT, a new file (an existing one is never overwritten)")
    p.set_defaults(func=cmd_parity)


def _providers(spec: str) -> tuple[str, ...]:
    """``cpu,openvino:fp32`` -> names; ``openvino:MODE`` asks OpenVINO for a math mode."""
    known = (*provider_names(), *(f"openvino:{m}" for m in OV_MATH_MODES))
    names = tuple(s.strip() for s in spec.split(",") if s.strip())
    bad = [n for n in names if n not in known]
    if bad or not names:
        raise ArgumentError(f"unknown provider {', '.join(bad) or spec!r}; use a comma list of "
                            f"{', '.join(provider_names())} or openvino:fp32")
    return names


def _limits(b) -> str:
    return f"rel L2 <= {b.rel_l2:g}" + (f", cosine >= {b.cosine:g}" if b.cosine else "")


def _image_paths(folder: str | None, limit: int) -> list[Path]:
    """The photos to compare on: ``--images``'s (a folder that is not one is one line here, before any
    model is exported), else the sample photos."""
    if folder:
        return list_images(folder, limit)
    return sample_images()[:limit]


def _reduced_decode_gap(path, paths, pre, net, taps, record):
    """The seed-pipeline gap of ``--decode reduced`` (pixels and taps; ONNX Runtime on the CPU)."""
    pre_r = dataclasses.replace(pre.float_input(), decode="reduced")
    batch = load_batch(paths, pre_r)
    with Extractor(path, provider="cpu") as ex:
        outs = ex.run(batch)
    return pipeline_gap(paths, pre_r, batch, outs, net, taps, record)


def cmd_parity(args: argparse.Namespace) -> int:
    providers = _providers(args.providers)
    spec = ModelSpec.from_args(args)
    paths = _image_paths(args.images, args.max_images)  # listed before the export: a typo costs no model
    path = resolve_model(spec)  # a zoo model: exported with the chosen weights (auto: imagenet if cached)
    record = read_model_record(path)  # read and checked once; every provider's Extractor takes the record
    precision, taps, pre = record.precision, record.taps, record.preprocessing
    budget = budget_for_model(record)
    # only weights the user names are read: a file the model's metadata records is not opened
    net, info = load_reference_net(record, spec.weights if spec.weights not in (None, "auto") else None)
    batch = load_batch(paths, pre.float_input())  # the reference's input; the engine maps it to pixels
    reference = reduce_reference(reference_features(net, batch, taps), record)
    results, engine_outs = model_parity(record, reference, batch, providers, budget, tf32=not args.no_tf32,
                                        device=args.device)

    print(f"{path}: {record.model} {precision}, {len(taps)} taps, {len(paths)} photos at "
          f"{pre.size[0]}x{pre.size[1]}; weights {info.source} (sha256 {info.sha256[:12]} verified)")
    for r in results:
        if r.status == "skipped":
            print(f"\n[{r.provider}] skipped: {r.reason}")
            continue
        b = r.budget or budget
        mode = f" math mode {r.math_mode}: {_limits(b)}" if r.math_mode else ""
        print(f"\n[{r.provider}] {r.status.upper()}{mode}" + (f"; {r.reason}" if r.reason else ""))
        print(format_parity_table(r.rows, b.rel_l2))
        if b.cosine is not None:
            low = [row.tap for row in r.rows if row.cosine < b.cosine]
            if low:
                print(f"cosine below {b.cosine:g}: {', '.join(low)}")

    gap = None
    if args.pipeline:
        if not engine_outs:
            raise ArgumentError("--pipeline needs at least one provider that ran; add cpu to --providers")
        gap = pipeline_gap(paths, pre, batch, engine_outs, net, taps, record)
        print(f"\npipeline gap (engine decode + Pillow resize vs PIL + torchvision, "
              f"informational): pixels max |diff| {gap.pixel_max_abs} levels, mean {gap.pixel_mean_abs:.4f}, "
              f"{gap.pixels_differing:.2%} of values differ; input tensor max |diff| {gap.input_max_abs:.3g}")
        print(format_parity_table(gap.rows))
        gap_reduced = _reduced_decode_gap(path, paths, pre, net, taps, record)
        print(f"\nextract --decode reduced (JPEGs decoded at 1/2-1/8 scale) vs the seed, informational: pixels "
              f"max |diff| {gap_reduced.pixel_max_abs} levels, mean {gap_reduced.pixel_mean_abs:.4f}")
        print(format_parity_table(gap_reduced.rows))

    ran = [r for r in results if r.status != "skipped"]
    ok = bool(ran) and all(r.status == "ok" for r in ran)
    if args.json:
        report = {"format": "featuremaps-parity/1", "model": str(path), "model_name": record.model,
                  "precision": precision, "budget": budget.to_dict(), "ok": ok, "tf32": not args.no_tf32,
                  "weights": dict(info.to_dict(), verified=True),
                  "input_size": list(pre.size), "images": [str(p) for p in paths],
                  "taps": [t.name for t in taps],
                  "providers": [r.to_dict(budget) for r in results],
                  "cpu": cpu_features().to_dict(),  # bf16/int8 modes depend on the CPU's matrix units
                  "pipeline": gap.to_dict() if gap else None,
                  "pipeline_reduced_decode": gap_reduced.to_dict() if gap else None}
        write_new_file(Path(args.json), json.dumps(report, indent=2))
        print(f"\nwrote {args.json}")
    if not ran:  # every provider asked for is missing here: a usage error (exit 2), not a parity failure
        raise ProviderError(f"no provider could run ({', '.join(r.provider for r in results)} skipped); "
                            "add cpu to --providers")
    if not ok:
        bad = [f"{r.provider}:{row.tap} ({r.math_mode})" for r in ran for row in r.rows if not r.passes(row)]
        bad += [f"{r.provider} ({r.reason})" for r in ran if r.status == "fail" and not r.rows]
        print(f"featuremaps: error: parity FAILED for {', '.join(bad)}", file=sys.stderr)
        return 1
    modes = ", ".join(f"{r.provider} ({r.math_mode})" for r in ran)
    print(f"\nparity ok: every tap within the budget of its math mode on {modes}")
    return 0
