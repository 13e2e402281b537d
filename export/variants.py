"""Turn a verified fp32 export into the deployed variant: convert, gate, then write.

``build_variant`` is the post-export step behind ``featuremaps export --precision/--format``:
fp16 or calibrated int8 conversion, the per-tap parity gate on held-back photos, and the ORT
format file. A variant that misses its gate never lands at the output path.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from ..engine.decode_pool import load_batch
from ..engine.preprocess import Preprocessing
from .calib import split_images
from .gate import GateError, GateResult, GateThresholds, check_gate
from .onnx_export import load_proto_metadata
from .quantize import FORMATS, PRECISIONS, Int8Options, convert_fp16, convert_ort_format, quantize_int8

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class VariantResult:
    """What :func:`build_variant` wrote: the ``.onnx`` (and ``.ort``) files, their sizes in bytes,
    the gate result (``None`` for fp32, which is verified against PyTorch instead)."""

    precision: str
    path: Path
    size_bytes: int
    fp32_size_bytes: int
    gate: GateResult | None = None
    ort_path: Path | None = None
    ort_size_bytes: int | None = None
    ort_gate: GateResult | None = None
    calibration_images: list[str] = field(default_factory=list)
    holdout_images: list[str] = field(default_factory=list)

    def size_rows(self) -> list[tuple[str, str, int]]:
        """``(variant, file, bytes)`` rows for a size report."""
        rows = [("fp32 onnx (source)", "", self.fp32_size_bytes)] if self.precision != "fp32" else []
        rows.append((f"{self.precision} onnx", str(self.path), self.size_bytes))
        if self.ort_path is not None:
            rows.append((f"{self.precision} ort", str(self.ort_path), self.ort_size_bytes or 0))
        return rows


def _check_choice(value: str, choices: tuple[str, ...], what: str) -> None:
    if value not in choices:
        raise ValueError(f"unknown {what} {value!r}; use one of {', '.join(choices)}")


def build_variant(fp32_path: str | Path, output: str | Path, *, precision: str = "int8", fmt: str = "onnx",
                  calib=None, holdout=None, calib_count: int | None = None,
                  thresholds: GateThresholds = GateThresholds(), int8: Int8Options = Int8Options(),
                  keep_io_types: bool = True, provider: str = "cpu") -> VariantResult:
    """Convert the fp32 model at ``fp32_path`` to ``precision`` (fp32|fp16|int8), gate it against
    fp32 on held-back photos, and write it to ``output`` (may be ``fp32_path`` itself); with
    ``fmt="ort"`` also write ``output`` with suffix ``.ort`` (gated too).

    ``calib``/``holdout``/``calib_count``: see :func:`featuremaps.export.calib.split_images`.
    Raises :class:`GateError` (the rejected file is kept as ``<stem>.gate-failed.onnx``). When
    ``output`` is ``fp32_path`` (convert in place) and the conversion or its gate fails, the fp32
    model is moved to ``<stem>.fp32.onnx``: no file under the requested name holds a model of
    another precision than asked (``GateError.fp32_kept`` says where it went).

    >>> from featuremaps.export.variants import build_variant
    >>> res = build_variant("/tmp/vgg16-taps.onnx", "/tmp/vgg16-int8.onnx", precision="int8")  # doctest: +SKIP
    >>> res.gate.ok  # doctest: +SKIP
    True
    """
    _check_choice(precision, PRECISIONS, "precision")
    _check_choice(fmt, FORMATS, "format")
    fp32_path, output = Path(fp32_path), Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    in_place = precision != "fp32" and output.exists() and output.resolve() == fp32_path.resolve()
    try:
        return _build(fp32_path, output, precision=precision, fmt=fmt, calib=calib, holdout=holdout,
                      calib_count=calib_count, thresholds=thresholds, int8=int8, keep_io_types=keep_io_types,
                      provider=provider)
    except BaseException as e:
        if in_place and output.exists() and not getattr(e, "variant_written", False):
            kept = output.with_name(output.stem + ".fp32.onnx")
            os.replace(output, kept)
            if isinstance(e, GateError):
                e.fp32_kept = kept
            log.info("%s failed; the fp32 source moved to %s", precision, kept)
        raise


def _build(fp32_path: Path, output: Path, *, precision: str, fmt: str, calib, holdout, calib_count,
           thresholds: GateThresholds, int8: Int8Options, keep_io_types: bool, provider: str) -> VariantResult:

    with tempfile.TemporaryDirectory(prefix="featuremaps-variant-") as tmp:
        source = Path(tmp) / "fp32.onnx"
        shutil.copyfile(fp32_path, source)
        fp32_size = source.stat().st_size
        import onnx

        meta = load_proto_metadata(onnx.load(str(source), load_external_data=False))
        pre = Preprocessing.from_dict(meta["preprocessing"])
        cal_paths, hold_paths = ([], [])
        if precision != "fp32" or fmt == "ort":
            cal_paths, hold_paths = split_images(calib, holdout, calib_count=calib_count)
        holdout_batch = load_batch(hold_paths, pre) if hold_paths else None
        candidate = Path(tmp) / f"candidate-{precision}.onnx"
        if precision == "int8":
            quantize_int8(source, candidate, load_batch(cal_paths, pre), options=int8, metadata=meta)
        elif precision == "fp16":
            convert_fp16(source, candidate, keep_io_types=keep_io_types, metadata=meta)
        else:
            shutil.copyfile(source, candidate)
        gate = None
        if precision != "fp32":
            gate = check_gate(candidate, source, holdout_batch, precision=precision, thresholds=thresholds,
                              provider=provider)
            if not gate.ok:
                kept = output.with_name(output.stem + ".gate-failed.onnx")
                shutil.move(str(candidate), kept)
                raise GateError(gate, kept)
        _copy_atomic(candidate, output)  # temp dir may be on another filesystem
        try:
            ort_path, ort_gate = _ort_variant(output, source, holdout_batch, precision=precision, fmt=fmt,
                                              thresholds=thresholds, provider=provider)
        except BaseException as e:
            e.variant_written = True  # output holds the gated variant: it stays where it is
            raise
    log.info("wrote %s (%s, %d bytes)", output, precision, output.stat().st_size)
    return VariantResult(precision=precision, path=output, size_bytes=output.stat().st_size,
                         fp32_size_bytes=fp32_size, gate=gate, ort_path=ort_path,
                         ort_size_bytes=ort_path.stat().st_size if ort_path else None, ort_gate=ort_gate,
                         calibration_images=[str(p) for p in cal_paths] if precision == "int8" else [],
                         holdout_images=[str(p) for p in hold_paths])


def _ort_variant(output: Path, source: Path, holdout_batch, *, precision: str, fmt: str,
                 thresholds: GateThresholds, provider: str) -> tuple[Path | None, GateResult | None]:
    """With ``fmt="ort"``: convert ``output`` to ``.ort`` and gate it; a failed one is moved to
    ``<stem>.gate-failed.ort`` (the ``.onnx`` passed its own gate and stays)."""
    if fmt != "ort":
        return None, None
    ort_path, _ = convert_ort_format(output, output.with_suffix(".ort"), optimize=precision != "fp16")
    ort_gate = check_gate(ort_path, source, holdout_batch, precision=f"{precision} (ort)",
                          thresholds=thresholds if precision != "fp32" else GateThresholds(0.99999, 1e-4),
                          provider=provider)
    if not ort_gate.ok:
        kept = ort_path.with_name(ort_path.stem + ".gate-failed.ort")
        os.replace(ort_path, kept)
        raise GateError(ort_gate, kept)
    return ort_path, ort_gate


def _copy_atomic(src: Path, dst: Path) -> None:
    tmp = dst.with_name(dst.name + ".partial")
    shutil.copyfile(src, tmp)
    os.replace(tmp, dst)
