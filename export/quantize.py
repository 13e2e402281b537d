"""Lower-precision variants of an exported fp32 model: calibrated int8 (QDQ), fp16, ORT format.

Each function reads an fp32 ``.onnx`` written by :func:`featuremaps.export.export_model` and
writes a new file whose featuremaps metadata says its ``precision``; whether a variant is close
enough to fp32 is :mod:`featuremaps.export.gate`'s job.

Why naive ``quantize_static`` breaks the pre-ReLU taps
-------------------------------------------------------
``onnxruntime.quantization`` folds the range of a ``Relu``'s output into the range of its input
(``BaseQuantizer.adjust_tensor_ranges``) whenever that input has exactly one consuming node, so
that the conv before it can be quantized straight to the post-ReLU range. A tap such as
``features.0`` (the conv output) is read by one node, the ReLU, *and* by the graph output; the
quantizer counts only nodes, so the tap gets the post-ReLU range ``[0, max]`` with zero point 0.
Its QuantizeLinear then clamps every negative value to 0: the int8 "features.0" is really
``relu(features.0)``, relative L2 error about sqrt(1/2) ~ 0.7 for a roughly symmetric pre-ReLU
tensor (``features.28``, with no ReLU after it in the cut graph, was fine). The fix here is
structural: every tap that a node also reads is routed through an ``Identity``, so the tap tensor
has two consumers, keeps its own calibrated (signed, asymmetric uint8) range, and the ReLU output
keeps the tighter post-ReLU range for the next conv. The Identity is removed again afterwards.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..engine.layouts import as_model_input
from ..engine.preprocess import Preprocessing
from .onnx_export import load_proto_metadata, write_model

log = logging.getLogger(__name__)

PRECISIONS = ("fp32", "fp16", "int8")
FORMATS = ("onnx", "ort")
CALIB_METHODS = ("minmax", "percentile", "entropy")
_TAP_SUFFIX = "__tap"


@dataclass(frozen=True)
class Int8Options:
    """How :func:`quantize_int8` quantizes.

    ``reduce_range`` stores weights in 7 bits: x86 CPUs without VNNI multiply u8 x s8 with
    ``vpmaddubsw``, whose int16 pair sums can saturate with full 8-bit weights.
    ``float_first_conv`` keeps the first conv (3 input channels, < 1% of VGG16's MACs) in fp32
    so the normalized input is never quantized.
    """

    method: str = "minmax"
    per_channel: bool = True
    reduce_range: bool = True
    float_first_conv: bool = True
    fix_taps: bool = True  # False reproduces the naive quantize_static result (for the record)

    def to_dict(self) -> dict:
        return {"method": self.method, "per_channel": self.per_channel, "reduce_range": self.reduce_range,
                "float_first_conv": self.float_first_conv, "fix_taps": self.fix_taps,
                "activations": "uint8 asymmetric", "weights": "int8 symmetric", "format": "QDQ"}


def _calibration_input(calib: np.ndarray, meta: dict) -> np.ndarray:
    """The calibration batch in the model's input layout: ``uint8 (N, H, W, 3)`` pixels for models
    that normalize in the graph, ``float32 (N, 3, H, W)`` for older exports."""

    return as_model_input(calib, Preprocessing.from_dict(meta["preprocessing"]))


class _BatchReader:
    """``CalibrationDataReader`` over an ``(N, ...)`` array already in the model's input layout
    (uint8 NHWC or float32 NCHW), ``batch`` images at a time."""

    def __init__(self, images: np.ndarray, input_name: str, batch: int = 1):
        self._feeds = [{input_name: np.ascontiguousarray(images[i:i + batch])}
                       for i in range(0, len(images), batch)]
        self._it = iter(self._feeds)

    def get_next(self):
        return next(self._it, None)

    def rewind(self):
        self._it = iter(self._feeds)


def _load(path):
    import onnx

    return onnx.load(str(path))


def route_taps_through_identity(proto) -> list[str]:
    """Give every graph output that a node also reads its own ``Identity`` consumer (in place).

    The producer's output is renamed ``<tap>__tap``; its readers and an ``Identity`` producing the
    graph output ``<tap>`` read that. Returns the taps rerouted. See the module docstring.
    """
    import onnx

    graph = proto.graph
    read = {name for node in graph.node for name in node.input}
    rerouted = [name for name in (o.name for o in graph.output) if name in read]
    for name in rerouted:
        inner = name + _TAP_SUFFIX
        for node in graph.node:
            node.output[:] = [inner if o == name else o for o in node.output]
            node.input[:] = [inner if i == name else i for i in node.input]
        graph.node.append(onnx.helper.make_node("Identity", [inner], [name], name=f"{name}/tap_identity"))
    return rerouted


def drop_tap_identities(proto) -> int:
    """Undo :func:`route_taps_through_identity` after quantization: the graph output is produced
    directly by what fed the Identity (a DequantizeLinear of the tap's own Q/DQ pair)."""
    graph = proto.graph
    ids = [n for n in graph.node if n.op_type == "Identity" and n.name.endswith("/tap_identity")]
    for node in ids:
        src, out = node.input[0], node.output[0]
        producer = next(n for n in graph.node if src in n.output)
        readers = [n for n in graph.node if src in n.input and n is not node]
        if readers:  # the tap tensor still feeds the ReLU: keep one name for both
            for n in readers:
                n.input[:] = [out if i == src else i for i in n.input]
        producer.output[:] = [out if o == src else o for o in producer.output]
        graph.node.remove(node)
    return len(ids)


def _first_conv(proto) -> str | None:
    convs = [n for n in proto.graph.node if n.op_type == "Conv"]
    return convs[0].name if convs else None


def quantize_int8(fp32_path: str | Path, output: str | Path, calib: np.ndarray, *,
                  options: Int8Options = Int8Options(), metadata: dict | None = None) -> Path:
    """Static int8 QDQ quantization of ``fp32_path`` calibrated on ``calib`` (preprocessed real photos:
    ``(N, 3, H, W) float32`` or ``(N, H, W, 3) uint8``, converted to the model's input layout),
    written to ``output`` with metadata ``precision: int8``.

    Activations uint8 asymmetric, weights int8 per output channel. Each tap keeps its own
    calibrated range (see the module docstring for why this needs care).
    """
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    if options.method not in CALIB_METHODS:
        raise ValueError(f"unknown calibration method {options.method!r}; use one of {', '.join(CALIB_METHODS)}")
    proto = _load(fp32_path)
    meta = dict(metadata if metadata is not None else load_proto_metadata(proto))
    rerouted = route_taps_through_identity(proto) if options.fix_taps else []
    exclude = [_first_conv(proto)] if options.float_first_conv else []
    method = {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile,
              "entropy": CalibrationMethod.Entropy}[options.method]
    with tempfile.TemporaryDirectory(prefix="featuremaps-q-") as tmp:
        src, dst = Path(tmp) / "fp32.onnx", Path(tmp) / "int8.onnx"
        onnx.save_model(proto, str(src))
        reader = _BatchReader(_calibration_input(calib, meta), proto.graph.input[0].name)
        with _quiet_quantizer():
            quantize_static(str(src), str(dst), reader, quant_format=QuantFormat.QDQ,
                            per_channel=options.per_channel, reduce_range=options.reduce_range,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                            calibrate_method=method, nodes_to_exclude=[n for n in exclude if n],
                            # bounds calibration memory (VGG16 at 224: ~50 MB of activations per image)
                            extra_options={"CalibMaxIntermediateOutputs": 8})
        qproto = onnx.load(str(dst))
    drop_tap_identities(qproto)
    meta.update(precision="int8", quantization={**options.to_dict(), "calibration_images": int(len(calib)),
                                                "taps_rerouted": rerouted})
    return write_model(qproto, meta, output)


@contextlib.contextmanager
def _quiet_quantizer():
    """onnxruntime.quantization warns on the root logger ("consider pre-processing") and its
    histogram calibrators print to stdout; log both instead of writing to the user's terminal."""
    root = logging.getLogger()
    level = root.level
    if not log.isEnabledFor(logging.INFO):
        root.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()) as out:
            yield
    finally:
        root.setLevel(level)
    if out.getvalue().strip():
        log.info("calibrator: %s", " | ".join(out.getvalue().split("\n")).strip(" |"))


def convert_fp16(fp32_path: str | Path, output: str | Path, *, keep_io_types: bool = True,
                 metadata: dict | None = None) -> Path:
    """fp16 weights and activations; input and outputs stay fp32 (``keep_io_types``) unless told.

    Meant for GPU providers: ONNX Runtime's CPU provider has few fp16 kernels on x86 and runs
    the model through Cast nodes, slower than fp32.
    """

    proto = _load(fp32_path)
    meta = dict(metadata if metadata is not None else load_proto_metadata(proto))
    half = to_float16(proto, keep_io_types=keep_io_types)
    meta.update(precision="fp16", fp16={"keep_io_types": keep_io_types,
                                        "io_dtype": "float32" if keep_io_types else "float16"})
    return write_model(half, meta, output)


def to_float16(proto, *, keep_io_types: bool = True):
    """An fp16 copy of ``proto``: float initializers, Constants and Casts become float16; with
    ``keep_io_types`` a Cast after the input and before every output keeps the interface fp32.

    Written here rather than taken from onnxconverter-common: its ``keep_io_types`` mistypes a
    graph output that another node also reads (every tap is one), and ONNX Runtime refuses the
    model ("Type (tensor(float16)) of output arg (relu) ... does not match").
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    m = onnx.ModelProto()
    m.CopyFrom(proto)
    g = m.graph
    del g.value_info[:]  # stale float32 types; ONNX Runtime infers them again
    for init in g.initializer:
        if init.data_type == TensorProto.FLOAT:
            init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init).astype(np.float16), init.name))
    for node in g.node:
        for attr in node.attribute:
            if node.op_type == "Cast" and attr.name == "to" and attr.i == TensorProto.FLOAT:
                attr.i = TensorProto.FLOAT16
            elif node.op_type == "Constant" and attr.t.data_type == TensorProto.FLOAT:
                attr.t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(attr.t).astype(np.float16),
                                                        attr.t.name))
    if not keep_io_types:
        for vi in list(g.input) + list(g.output):
            if vi.type.tensor_type.elem_type == TensorProto.FLOAT:
                vi.type.tensor_type.elem_type = TensorProto.FLOAT16
        return m
    casts_in = []
    for vi in g.input:
        if vi.type.tensor_type.elem_type != TensorProto.FLOAT:
            continue
        half = vi.name + "__fp16"
        for node in g.node:
            node.input[:] = [half if i == vi.name else i for i in node.input]
        casts_in.append(helper.make_node("Cast", [vi.name], [half], to=TensorProto.FLOAT16,
                                         name=f"{vi.name}/to_fp16"))
    for vi in g.output:
        if vi.type.tensor_type.elem_type != TensorProto.FLOAT:
            continue
        half = vi.name + "__fp16"
        for node in g.node:
            node.output[:] = [half if o == vi.name else o for o in node.output]
            node.input[:] = [half if i == vi.name else i for i in node.input]
        g.node.append(helper.make_node("Cast", [half], [vi.name], to=TensorProto.FLOAT, name=f"{vi.name}/to_fp32"))
    nodes = casts_in + list(g.node)
    del g.node[:]
    g.node.extend(nodes)
    return m


def convert_ort_format(onnx_path: str | Path, output: str | Path | None = None, *,
                       optimize: bool = True) -> tuple[Path, Path | None]:
    """ONNX Runtime's ORT format (mobile / minimal builds), made the way onnxruntime's converter
    (``onnxruntime.tools.convert_onnx_models_to_ort``, "fixed" style) makes it: a CPU session
    saves its optimized graph as ORT, with the NCHWc layout pass off so the file runs on any CPU.

    ``optimize=False`` saves the graph unoptimized: needed for fp16, where the CPU optimizer
    would fold the fp16 weights back to fp32 (fp16 kernels are missing on x86) and double the
    file. Writes ``output`` (default: suffix ``.ort``) and ``<stem>.required_operators.config``
    (the operator list a minimal build needs). Returns ``(ort_path, config_path or None)``.
    The featuremaps metadata travels inside.
    """
    import onnxruntime as ort

    onnx_path = Path(onnx_path)
    output = Path(output) if output is not None else onnx_path.with_suffix(".ort")
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp_out = output.with_name(output.name + ".partial.ort")
    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.optimized_model_filepath = str(tmp_out)
    so.graph_optimization_level = (ort.GraphOptimizationLevel.ORT_ENABLE_ALL if optimize
                                   else ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
    so.add_session_config_entry("session.save_model_format", "ORT")
    so.add_session_config_entry("session.qdqisint8allowed", "0")  # as the converter does for x86
    ort.InferenceSession(str(onnx_path), sess_options=so, providers=["CPUExecutionProvider"],
                         disabled_optimizers=["NchwcTransformer"])
    os.replace(tmp_out, output)
    return output, _operator_config(output)


def _operator_config(ort_path: Path) -> Path | None:
    config = ort_path.with_name(ort_path.stem + ".required_operators.config")
    try:
        from onnxruntime.tools.ort_format_model.utils import create_config_from_models

        quiet = logging.getLogger("ort_format_model.utils")
        level, quiet.level = quiet.level, logging.WARNING
        with contextlib.redirect_stdout(io.StringIO()):
            create_config_from_models([ort_path], config, enable_type_reduction=False)
        quiet.setLevel(level)
    except Exception as e:  # the config is a convenience for minimal builds, never a reason to fail
        log.warning("no required-operators config for %s: %s", ort_path.name, e)
        return None
    return config
