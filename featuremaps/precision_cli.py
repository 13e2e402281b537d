"""``featuremaps export --precision fp16|int8 --format ort``: the CLI side of the post-export step
(options, printing). The work is :func:`featuremaps.export.variants.build_variant`."""

from __future__ import annotations

import argparse
import sys


def add_precision_args(p: argparse.ArgumentParser) -> None:
    from .export.gate import DEFAULT_MAX_REL_L2, DEFAULT_MIN_COSINE
    from .export.quantize import CALIB_METHODS, FORMATS, PRECISIONS

    g = p.add_argument_group("precision and edge artifacts")
    g.add_argument("--precision", choices=PRECISIONS, default="fp32",
                   help="fp32 (default); fp16 (for GPU providers: slower than fp32 on the CPU provider); int8 "
                        "(static QDQ, calibrated on real photos, per-channel weights; fastest on CPU). fp16/int8 "
                        "must pass the per-tap gate against fp32 on held-back photos or the export fails")
    g.add_argument("--format", dest="model_format", choices=FORMATS, default="onnx",
                   help="onnx (default) or ort: also write ONNX Runtime's ORT format (.ort next to the .onnx, "
                        "plus the operator list for a minimal build)")
    g.add_argument("--calib", default=None,
                   help="int8 calibration photos: a folder or comma-separated files (default: the sample photos)")
    g.add_argument("--calib-count", type=int, default=None, help="use at most N calibration photos")
    g.add_argument("--holdout", default=None,
                   help="photos for the gate, never used for calibration (default: scikit-image's other photos)")
    g.add_argument("--calib-method", choices=CALIB_METHODS, default="minmax", help="int8 range calibration "
                   "(default: minmax)")
    g.add_argument("--gate-cosine", type=float, default=DEFAULT_MIN_COSINE,
                   help=f"per-tap minimum cosine similarity vs fp32 (default: {DEFAULT_MIN_COSINE})")
    g.add_argument("--gate-rel-l2", type=float, default=DEFAULT_MAX_REL_L2,
                   help=f"per-tap maximum relative L2 error vs fp32 (default: {DEFAULT_MAX_REL_L2})")
    g.add_argument("--fp16-io", action="store_true", help="fp16: make input and outputs float16 too "
                   "(default: they stay float32)")


def run_precision_step(args: argparse.Namespace, res) -> int:
    """Convert the verified fp32 export ``res`` in place to ``--precision``/``--format``; print the
    gate table and a size report. Returns the exit status (1 when the gate fails)."""
    precision = getattr(args, "precision", "fp32")
    fmt = getattr(args, "model_format", "onnx")
    if precision == "fp32" and fmt == "onnx":
        return 0
    from .cli import CLIError
    from .export.calib import CalibrationError
    from .export.gate import GateError, GateThresholds, format_gate_table
    from .export.quantize import Int8Options
    from .export.variants import build_variant

    print(f"converting to {precision}" + (" + ORT format" if fmt == "ort" else "") + " ...", flush=True)
    try:
        out = build_variant(res.path, res.path, precision=precision, fmt=fmt, calib=args.calib,
                            holdout=args.holdout, calib_count=args.calib_count,
                            thresholds=GateThresholds(args.gate_cosine, args.gate_rel_l2),
                            int8=Int8Options(method=args.calib_method), keep_io_types=not args.fp16_io)
    except CalibrationError as e:
        raise CLIError(str(e)) from None
    except GateError as e:
        print(format_gate_table(e.result))
        where = f"moved to {e.fp32_kept}" if e.fp32_kept else f"at {res.path}"
        print(f"featuremaps: error: {e} (the verified fp32 model is {where})", file=sys.stderr)
        return 1
    for gate in (out.gate, out.ort_gate):
        if gate is not None:
            print(format_gate_table(gate))
    if out.calibration_images:
        print(f"calibrated on {len(out.calibration_images)} photos; gated on {len(out.holdout_images)} others")
    print("sizes:")
    for variant, path, size in out.size_rows():
        print(f"  {variant:<20}{size / 1e6:>8.1f} MB  {path}")
    return 0
