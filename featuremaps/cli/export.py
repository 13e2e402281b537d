"""``featuremaps export``: export a zoo model with taps as ONNX outputs, verify it against the PyTorch
reference, then optionally reduce in the graph (``--reduce``/``--fp16-outputs``) or convert to
``--precision fp16|int8`` / ``--format ort``. The work is in :mod:`featuremaps.export`; this
module holds the options and prints."""

from __future__ import annotations

import argparse
import math
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

from ..compare import format_parity_table
from ..engine.preprocess import Preprocessing
from ..engine.validate import ModelRecord
from ..engine.decode_pool import load_batch
from ..errors import ArgumentError
from ..export.calib import resolve_images
from ..export.gate import DEFAULT_MAX_REL_L2, DEFAULT_MIN_COSINE, GateError, GateThresholds, format_gate_table
from ..export.onnx_export import export_model
from ..export.quantize import CALIB_METHODS, FORMATS, PRECISIONS, Int8Options
from ..export.reduce import parse_reductions, reduce_model, verify_reduced
from ..export.taps import parse_taps
from ..export.variants import build_variant
from ..export.verify import verify_export
from ..export.zoo import build_model
from ..samples import sample_images
from ..families import default_taps
from ._args import (ModelSpec, add_model_args, check_writable_parent, file_arg, float_in, is_onnx_path,
                    need_export_extra, positive_int, refuse_existing, removed_if_failed)


def register(sub) -> None:
    p = sub.add_parser("export", help="export a model with taps as ONNX outputs, then verify it",
                       description="Export a zoo model with the chosen taps as ONNX outputs named features.i "
                                   "(dynamic batch), cut after the deepest tap unless --logits, with JSON "
                                   "metadata inside; then verify every tap against the PyTorch clone-hook "
                                   "reference on a real photo (exit 1 if any fp32 tap has rel L2 > 1e-5).")
    add_model_args(p, onnx_file=False)  # export builds from the zoo; an .onnx file is refused
    p.add_argument("--logits", action="store_true", help="keep the classifier and add a 'logits' output")
    p.add_argument("-o", "--output", type=file_arg, default=None,
                   help="output .onnx path (default: models/MODEL.onnx); an existing file is never overwritten "
                        "without --force")
    p.add_argument("--force", action="store_true", help="overwrite the output file (and its .ort) if it exists")
    p.add_argument("--no-verify", action="store_true", help="skip the parity check after writing")
    add_precision_args(p)
    add_reduce_args(p)
    p.set_defaults(func=cmd_export)


def add_precision_args(p: argparse.ArgumentParser) -> None:
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
    g.add_argument("--calib-count", type=positive_int, default=None, help="use at most N calibration photos")
    g.add_argument("--holdout", default=None,
                   help="photos for the gate, never used for calibration (default: scikit-image's other photos)")
    g.add_argument("--calib-method", choices=CALIB_METHODS, default="minmax", help="int8 range calibration "
                   "(default: minmax)")
    g.add_argument("--gate-cosine", type=float_in(-1, 1, "--gate-cosine"), default=DEFAULT_MIN_COSINE,
                   help=f"per-tap minimum cosine similarity vs fp32 (default: {DEFAULT_MIN_COSINE})")
    g.add_argument("--gate-rel-l2", type=float_in(0, None, "--gate-rel-l2"), default=DEFAULT_MAX_REL_L2,
                   help=f"per-tap maximum relative L2 error vs fp32 (default: {DEFAULT_MAX_REL_L2})")
    g.add_argument("--fp16-io", action="store_true", help="fp16: make input and outputs float16 too "
                   "(default: they stay float32)")


def add_reduce_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("in-graph reductions (bulk extraction)")
    g.add_argument("--reduce", default=None, metavar="TAP=OP,...",
                   help="reduce taps inside the graph: OP is mean or max (global, -> (C,)) or avgpool:K "
                        "(K x K average pool), e.g. features.0=mean,features.17=avgpool:4")
    g.add_argument("--fp16-outputs", action="store_true",
                   help="cast every output to float16 inside the graph (half the bytes leave the model)")


def output_path(output: str | None, model: str, force: bool, *, fmt: str = "onnx",
                inputs: tuple[str | None, ...] = ()) -> Path:
    """``-o`` as given, else ``models/MODEL.onnx``. An existing file there (or its ``.ort`` with
    ``--format ort``) is never overwritten without ``force``, and never at all when it is one of
    ``inputs`` (a ``--weights``/``--calib``/``--holdout`` file); its folder must be writable.
    Checked before the slow export."""
    path = Path(output) if output is not None else Path("models") / f"{model}.onnx"
    for inp in inputs:
        if inp and path.exists() and Path(inp).exists() and os.path.samefile(inp, path):
            raise ArgumentError(f"-o {path} is the input file {inp!r}; name the new model with -o PATH.onnx")
    written = [path] + ([path.with_suffix(".ort")] if fmt == "ort" else [])
    if not force:
        refuse_existing(written, fix="name the new file with -o PATH.onnx, or add --force to overwrite it")
    check_writable_parent(path)
    return path


@dataclass(frozen=True)
class PrecisionStep:
    """``--precision/--format`` and how the conversion is calibrated (``calib``/``holdout``: a folder
    or comma-separated photos, None for the defaults) and gated."""

    precision: str = "fp32"
    fmt: str = "onnx"
    calib: str | None = None
    holdout: str | None = None
    calib_count: int | None = None
    thresholds: GateThresholds = field(default_factory=GateThresholds)
    int8: Int8Options = field(default_factory=Int8Options)
    keep_io_types: bool = True

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> "PrecisionStep":
        """The step, its photo lists checked now (a typo must not wait for the export)."""
        resolve_images(args.calib, "--calib")
        resolve_images(args.holdout, "--holdout")
        return cls(precision=args.precision, fmt=args.model_format, calib=args.calib, holdout=args.holdout,
                   calib_count=args.calib_count, thresholds=GateThresholds(args.gate_cosine, args.gate_rel_l2),
                   int8=Int8Options(method=args.calib_method), keep_io_types=not args.fp16_io)

    @property
    def converts(self) -> bool:
        return not (self.precision == "fp32" and self.fmt == "onnx")


@dataclass(frozen=True)
class Reduce:
    """``--reduce TAP=OP,...`` (None: no reduction) and ``--fp16-outputs``."""

    spec: str | None = None
    fp16_outputs: bool = False

    @property
    def wanted(self) -> bool:
        return bool(self.spec or self.fp16_outputs)


def check_reduce(reduce: Reduce, step: PrecisionStep, taps, model: str) -> dict | None:
    """Validate ``--reduce/--fp16-outputs`` before any slow work; None when neither is given."""
    if not reduce.wanted:
        return None
    if step.converts:
        raise ArgumentError("--reduce/--fp16-outputs work on the fp32 ONNX export; drop --precision/--format "
                            "(use --fp16-outputs to store fp16)")
    return parse_reductions(reduce.spec or "", taps, model)


def cmd_export(args: argparse.Namespace) -> int:
    spec = ModelSpec.from_args(args)
    if is_onnx_path(spec.model):
        raise ArgumentError("export takes a zoo model name (--model vgg16), not an .onnx file")
    step = PrecisionStep.from_args(args)
    output = output_path(args.output, spec.model, args.force, fmt=step.fmt,
                         inputs=(spec.weights, step.calib, step.holdout))
    reduce = Reduce(args.reduce, args.fp16_outputs)
    with removed_if_failed(output.parent):  # a failed or interrupted export leaves no new empty folder
        return _export(spec, output, step, reduce, verify=not args.no_verify)


def _export(spec: ModelSpec, output: Path, step: PrecisionStep, reduce: Reduce, *, verify: bool) -> int:
    need_export_extra("featuremaps export")
    taps = parse_taps(spec.layers or default_taps(spec.model, spec.input_size), spec.model, spec.input_size)
    reductions = check_reduce(reduce, step, taps, spec.model)  # before the slow part: a bad spec fails at once
    spec = spec.with_weights_chosen()
    net, info = build_model(spec.model, spec.weights, spec.seed, need_classifier=spec.logits)
    res = export_model(taps, output, model=spec.model, seed=spec.seed, input_size=spec.input_size,
                       logits=spec.logits, net=net, weights_info=info)
    cut = "full network with logits" if spec.logits else f"cut after {max(taps, key=lambda t: t.index).name}"
    outputs = ModelRecord.from_metadata(res.metadata, res.path).outputs
    print(f"wrote {res.path} ({res.size_bytes / 1e6:.1f} MB; outputs {', '.join(outputs)}; "
          f"{cut}; weights {info.source}, sha256 {info.sha256[:12]})")
    if reductions is not None:  # in-graph reductions: verify, reduce, check again
        return export_reduced(res, net, taps, reductions, fp16_outputs=reduce.fp16_outputs,
                              input_size=spec.input_size, verify=verify)
    if not verify:
        return run_precision_step(step, res)
    ver = _verify_on_photo(res.path, net, taps, spec.input_size)
    _print_verification(ver)
    if not ver.ok:
        kept = res.path
        if step.precision != "fp32":  # nothing but the precision asked for may stand under its name
            kept = res.path.with_name(f"{res.path.stem}.fp32{res.path.suffix}")
            os.replace(res.path, kept)
        print(f"featuremaps: error: {', '.join(ver.failures)} exceed the fp32 tolerance; "
              f"the fp32 export is kept at {kept} for inspection", file=sys.stderr)
        return 1
    return run_precision_step(step, res)


def _print_verification(ver) -> None:
    print(f"parity vs PyTorch clone-hook reference ({ver.provider}, fp32, rel L2 <= {ver.tolerance:g}):")
    print(format_parity_table(ver.rows, ver.tolerance))


def _photo_batch(input_size: int):
    return load_batch(sample_images()[:1], Preprocessing(size=(input_size, input_size)))


def _verify_on_photo(path: Path, net, taps, input_size: int):
    return verify_export(path, net, taps, _photo_batch(input_size))


# ---------------------------------------------------------------- --reduce / --fp16-outputs


def export_reduced(res, net, taps, reductions: dict, *, fp16_outputs: bool, input_size: int, verify: bool) -> int:
    """``featuremaps export --reduce/--fp16-outputs``: verify the plain export, compile the
    ``reductions`` (from :func:`check_reduce`) into it (same path), then check the reduced
    outputs against NumPy reductions of the PyTorch reference."""
    if verify:
        ver = _verify_on_photo(res.path, net, taps, input_size)
        _print_verification(ver)
        if not ver.ok:
            print(f"featuremaps: error: {', '.join(ver.failures)} exceed the fp32 tolerance", file=sys.stderr)
            return 1
    record = ModelRecord.from_metadata(reduce_model(res.path, res.path, reductions, fp16_outputs), res.path)
    kept = ", ".join(f"{t.name} {'x'.join(map(str, t.shape))}" for t in record.taps)
    per_image = sum(math.prod(t.shape) for t in record.taps) * (2 if fp16_outputs else 4)
    print(f"reduced in the graph: {kept} ({record.output_dtype}; {per_image / 1e6:.3f} MB per image) -> {res.path}")
    if not verify:
        return 0
    rows, tol = verify_reduced(res.path, net, taps, _photo_batch(input_size), reductions, fp16_outputs)
    print(f"reduced outputs vs NumPy reductions of the PyTorch reference (rel L2 <= {tol:g}):")
    print(format_parity_table(rows, tol))
    failed = [r.tap for r in rows if not r.passes(tol)]
    if failed:
        print(f"featuremaps: error: {', '.join(failed)} exceed the tolerance", file=sys.stderr)
        return 1
    return 0


# ---------------------------------------------------------------- --precision / --format


def run_precision_step(step: PrecisionStep, res) -> int:
    """Convert the verified fp32 export ``res`` in place to ``--precision``/``--format``; print the
    gate table and a size report. Returns the exit status (1 when the gate fails)."""
    if not step.converts:
        return 0
    print(f"converting to {step.precision}" + (" + ORT format" if step.fmt == "ort" else "") + " ...", flush=True)
    try:
        out = build_variant(res.path, res.path, precision=step.precision, fmt=step.fmt, calib=step.calib,
                            holdout=step.holdout, calib_count=step.calib_count, thresholds=step.thresholds,
                            int8=step.int8, keep_io_types=step.keep_io_types)
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
