"""``featuremaps parity``: every tap, every provider, against the PyTorch clone-hook reference."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .cli import CLIError, add_model_args, is_onnx_path, resolve_model


def register(sub) -> None:
    p = sub.add_parser(
        "parity", help="check every tap and provider against the PyTorch clone-hook reference",
        description="Run an exported model (or a zoo model exported on the fly) with each ONNX Runtime "
                    "provider on real photos and compare every tap with the PyTorch clone-hook reference "
                    "on the same input tensor: max abs error, relative L2, cosine, pass/fail against the "
                    "budget of the model's precision (fp32: rel L2 <= 1e-5; fp16: rel L2 <= 1e-2 and "
                    "cosine >= 0.9999; int8: rel L2 <= 0.1 and cosine >= 0.99). The reference weights are "
                    "rebuilt from the model's metadata (seed, ImageNet cache or --weights FILE) and must "
                    "match its recorded SHA-256. Exit 1 if any tap fails.")
    add_model_args(p)
    # None = "what the model's metadata says" for an .onnx file, random/0 for a zoo model
    p.set_defaults(weights=None, seed=None)
    p.add_argument("--images", default=None,
                   help="folder of photos (default: the sample photos shipped with installed packages)")
    p.add_argument("--max-images", type=int, default=8, help="use at most this many photos (default: 8)")
    p.add_argument("--providers", default="cpu,cuda,tensorrt",
                   help="comma list of cpu, cuda, tensorrt, openvino (OpenVINO's default math: bf16 on CPUs "
                        "with bf16 units, judged by the bf16 budget), openvino:fp32 (strict); unavailable ones "
                        "are skipped with the reason (default: cpu,cuda,tensorrt)")
    p.add_argument("--pipeline", action="store_true",
                   help="also measure the preprocessing gap: engine decode/resize/normalize vs the seed's "
                        "PIL + torchvision Resize/ToTensor/Normalize (pixels and per-tap error)")
    p.add_argument("--json", metavar="OUT", default=None, help="also write the full report as JSON")
    p.set_defaults(func=cmd_parity)


def _providers(spec: str) -> tuple[str, ...]:
    from .engine.openvino_backend import MATH_MODES
    from .engine.session import PROVIDERS

    known = (*PROVIDERS, "openvino", *(f"openvino:{m}" for m in MATH_MODES))
    names = tuple(s.strip() for s in spec.split(",") if s.strip())
    bad = [n for n in names if n not in known]
    if bad or not names:
        raise CLIError(f"unknown provider {', '.join(bad) or spec!r}; use a comma list of "
                       f"{', '.join(PROVIDERS)}, openvino or openvino:fp32")
    return names


def _image_paths(args) -> list[Path]:
    from .bench.parity import list_images
    from .samples import sample_images

    if args.images:
        return list_images(args.images, args.max_images)
    return sample_images()[: args.max_images]


def cmd_parity(args: argparse.Namespace) -> int:
    from .bench.parity import ReferenceWeightsError, budget_for, load_reference_net, model_parity, pipeline_gap
    from .bench.reference import reference_features
    from .bench.stats import format_parity_table
    from .engine.cpu_features import cpu_features
    from .engine.preprocess import Preprocessing, load_batch
    from .export.onnx_export import read_metadata
    from .export.taps import Tap

    providers = _providers(args.providers)
    if not is_onnx_path(args.model):
        args.weights = args.weights or "random"
        args.seed = 0 if args.seed is None else args.seed
    path = resolve_model(args)
    meta = read_metadata(path)
    precision = meta.get("precision", "fp32")
    try:
        budget = budget_for(precision)
        net, info = load_reference_net(meta, args.weights)
    except (ValueError, ReferenceWeightsError) as e:
        raise CLIError(str(e)) from None
    taps = tuple(Tap.from_dict(d) for d in meta["taps"])
    pre = Preprocessing.from_dict(meta["preprocessing"])
    paths = _image_paths(args)
    batch = load_batch(paths, pre)
    reference = reference_features(net, batch, taps)
    results, engine_outs = model_parity(path, reference, batch, providers, budget)

    limits = f"rel L2 <= {budget.rel_l2:g}" + (f", cosine >= {budget.cosine:g}" if budget.cosine else "")
    print(f"{path}: {meta['model']} {precision}, {len(taps)} taps, {len(paths)} photos at "
          f"{pre.size[0]}x{pre.size[1]}; weights {info.source} (sha256 {info.sha256[:12]} verified)")
    print(f"budget for {precision}: {limits}")
    for r in results:
        if r.status == "skipped":
            print(f"\n[{r.provider}] skipped: {r.reason}")
            continue
        judged = r.budget or budget
        mode = f" {r.mode} math" + (f", judged by the {r.mode} budget (rel L2 <= {judged.rel_l2:g})"
                                    if judged is not budget else "") if r.mode else ""
        print(f"\n[{r.provider}]{mode} {r.status.upper()}" + (f": {r.reason}" if r.reason else ""))
        print(format_parity_table(r.rows, judged.rel_l2))
        if judged.cosine is not None:
            low = [row.tap for row in r.rows if row.cosine < judged.cosine]
            if low:
                print(f"cosine below {judged.cosine:g}: {', '.join(low)}")

    gap = None
    if args.pipeline:
        if not engine_outs:
            raise CLIError("--pipeline needs at least one provider that ran; add cpu to --providers")
        gap = pipeline_gap(paths, pre, batch, engine_outs, net, taps)
        print(f"\npipeline gap (engine OpenCV decode + PIL-exact resize vs PIL + torchvision, "
              f"informational): pixels max |diff| {gap.pixel_max_abs} levels, mean {gap.pixel_mean_abs:.4f}, "
              f"{gap.pixels_differing:.2%} of values differ; input tensor max |diff| {gap.input_max_abs:.3g}")
        print(format_parity_table(gap.rows))

    ran = [r for r in results if r.status != "skipped"]
    ok = bool(ran) and all(r.status == "ok" for r in ran)
    if args.json:
        report = {"format": "featuremaps-parity/1", "model": str(path), "model_name": meta["model"],
                  "precision": precision, "budget": budget.to_dict(), "ok": ok,
                  "weights": dict(info.to_dict(), verified=True),
                  "input_size": list(pre.size), "images": [str(p) for p in paths],
                  "taps": [t.name for t in taps],
                  "providers": [r.to_dict(budget) for r in results],
                  "cpu": cpu_features().to_dict(),  # bf16/int8 modes depend on the CPU's matrix units
                  "pipeline": gap.to_dict() if gap else None}
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(report, indent=2))
        print(f"\nwrote {args.json}")
    if not ran:
        print("featuremaps: error: no provider could run; add cpu to --providers", file=sys.stderr)
        return 1
    if not ok:
        bad = [f"{r.provider}:{row.tap}" for r in ran for row in r.rows if not (r.budget or budget).passes(row)]
        bad += [f"{r.provider} ({r.reason})" for r in ran if r.status == "fail" and not r.rows]
        print(f"featuremaps: error: parity FAILED for {', '.join(bad)} ({precision} budget: {limits})",
              file=sys.stderr)
        return 1
    print(f"\nparity ok: every tap within budget on " +
          ", ".join(f"{r.provider} ({r.mode or precision})" for r in ran))
    return 0
