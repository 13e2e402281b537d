"""Check an exported model file before anything runs on it or any store is made from it.

A model file is trusted only after three checks, each failing as one :class:`ModelFileError`
line: the file parses as ONNX (not truncated, not another format) and keeps all its tensors
inside itself (featuremaps exports are single files; an initializer stored as "external data"
would make ONNX Runtime map another file, of any size, next to the model); its ``featuremaps``
metadata is JSON that fits the schema below; and the metadata agrees with the graph (every
output it names exists with the stored shape, the input has the preprocessing size). Later
code (engine, store, figures) then trusts the metadata, as timm's ``FeatureInfo`` is checked
once and trusted after.

Schema (types and ranges; other keys are allowed and kept)::

    format str, model str, input str, outputs [safe name, ...] (non-empty, unique)
    taps [{name: safe name listed in outputs, shape: [int >= 1, ...]}, ...] (non-empty)
    preprocessing {size: [H, W] in 1..4096, mean: 3 finite numbers, std: 3 finite numbers > 0,
                   input_layout: uint8_nhwc | float_nchw (optional; it must match the graph's input)}
    precision, reductions, weights: types checked by :func:`featuremaps.contracts.parse_metadata`

:func:`read_model_record` is the one validating parser: it returns a frozen :class:`ModelRecord`
(taps, input name and preprocessing, outputs, precision, family, the file's SHA-256 computed once
when first asked) that a run reads the file through once and passes on; the raw metadata dict
stays on it (``record.metadata``) for what is written into stores unchanged.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from ..contracts import DECODE_MODES, METADATA_KEY, UINT8_NHWC, Preprocessing, Tap, parse_metadata
from ..errors import ModelFileError
from .hashing import file_sha256
from .names import unsafe_name_reason

MAX_SIZE = 4096
_FIX = "re-export it with `featuremaps export -o PATH.onnx`"


@dataclass(frozen=True)
class ModelRecord:
    """An exported model file, checked once (:func:`read_model_record`) and trusted after.

    ``taps``: the tap outputs with their per-image ``(C, H, W)`` shapes; ``outputs``: every graph
    output in export order (taps, then ``logits`` or reduced outputs); ``input_name`` and
    ``preprocessing`` (size, mean/std, input layout) say what the graph takes; ``precision`` is
    ``fp32``, ``fp16`` or ``int8`` (the weights'), ``output_dtype`` ``fp32`` or ``fp16`` (what the
    outputs hold); ``family`` is the model family's name (None in files exported before families).
    ``metadata`` is the checked JSON itself, kept for stores (they record it unchanged).
    """

    path: Path
    model: str
    family: str | None
    input_name: str
    outputs: tuple[str, ...]
    taps: tuple[Tap, ...]
    preprocessing: Preprocessing
    precision: str
    output_dtype: str
    metadata: dict = field(repr=False, compare=False)

    @classmethod
    def from_metadata(cls, meta: dict, path: str | Path = "model") -> "ModelRecord":
        """The record of metadata ``meta`` that :func:`check_metadata` accepted."""
        try:
            taps = tuple(Tap.from_dict(d) for d in meta["taps"])
        except (TypeError, ValueError):  # a tap without index, alias, kind or MAC counts
            _fail(path, "taps need name, index, alias, kind, shape, macs and total_macs")
        return cls(path=Path(path), model=meta["model"], family=meta.get("family"), input_name=meta["input"],
                   outputs=tuple(meta["outputs"]), taps=taps,
                   preprocessing=Preprocessing.from_dict(meta["preprocessing"]),
                   precision=meta.get("precision", "fp32"),
                   output_dtype="fp16" if meta.get("output_dtype") == "fp16" else "fp32", metadata=meta)

    @property
    def input_size(self) -> int:
        return self.preprocessing.size[0]

    @property
    def input_layout(self) -> str:
        """``uint8_nhwc`` (pixels, normalized in the graph) or ``float_nchw`` (older exports)."""
        return self.preprocessing.input_layout

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """One image's model input: ``(H, W, 3)`` uint8 or ``(3, H, W)`` float32."""
        return self.preprocessing.input_shape

    @property
    def reductions(self) -> dict:
        return self.metadata.get("reductions") or {}

    @property
    def weights(self) -> dict:
        return self.metadata.get("weights") or {}

    @property
    def math_mode(self) -> str | None:
        """The arithmetic the export was gated in (``fp32``, ``fp16``, ``int8``...), None if unrecorded."""
        mode = self.metadata.get("math_mode")
        return mode if isinstance(mode, str) else None

    @property
    def extraction(self) -> dict:
        """What a store's maps were computed with (``provider``, ``math_mode``, ``device``): a store
        adds this to the model's metadata it keeps; {} in a model file or an older store."""
        extraction = self.metadata.get("extraction")
        return extraction if isinstance(extraction, dict) else {}

    @property
    def versions(self) -> dict:
        """Tool versions at export (``torch``, ``onnx``, ``opset``, ...)."""
        versions = self.metadata.get("versions")
        return dict(versions) if isinstance(versions, dict) else {}

    @property
    def logits(self) -> bool:
        """Whether the graph also outputs the classifier's logits (not cut after the deepest tap)."""
        return bool(self.metadata.get("logits"))

    @property
    def cut_after(self) -> str | None:
        """The last module the graph keeps (the deepest tap), None where not recorded."""
        cut = self.metadata.get("cut_after")
        return None if cut is None else str(cut)

    @property
    def created(self) -> str | None:
        """When the file was exported (ISO 8601), where recorded."""
        created = self.metadata.get("created")
        return None if created is None else str(created)

    @property
    def command(self) -> str | None:
        """The command line that made the file (or the store keeping this copy), where recorded."""
        command = self.metadata.get("command")
        return command if isinstance(command, str) else None

    @cached_property
    def sha256(self) -> str:
        """SHA-256 of the file's bytes (graph and weights: a model's identity), hashed once, when first
        asked (a store records it; TensorRT's engine cache is keyed by it)."""
        return file_sha256(self.path)


def read_model_record(path: str | Path) -> ModelRecord:
    """The exported model at ``path``, parsed and checked once (raises one :class:`ModelFileError`
    line); see :func:`validate_model_file` for what is checked.

    >>> read_model_record("models/vgg16.onnx").taps[0].name  # doctest: +SKIP
    'features.0'
    """
    return ModelRecord.from_metadata(validate_model_file(path), path)


def validate_model_file(path: str | Path) -> dict:
    """The checked metadata of the exported model at ``path`` (raises :class:`ModelFileError`);
    :func:`read_model_record` gives it as a typed record.

    Reads the ONNX protobuf without external data (the graph's names and shapes and the
    metadata; no session is built), so it is cheap next to building a session. ORT-format
    files (``.ort``), or an install without the ``onnx`` package, are read with an unoptimized
    onnxruntime CPU session instead.

    >>> validate_model_file("models/vgg16.onnx")["outputs"]  # doctest: +SKIP
    ['features.0', 'features.5', 'features.10', 'features.17', 'features.28']
    """
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"model {str(path)!r} not found; export one with `featuremaps export -o PATH.onnx`")
    raw, io = _read_with_ort(path) if path.suffix == ".ort" or not _has_onnx() else _read_with_onnx(path)
    meta = check_metadata(parse_metadata(raw, path), path)
    check_against_graph(meta, io, path)
    return meta


def _has_onnx() -> bool:
    import importlib.util

    try:  # a blocked or broken onnx (an import hook may refuse it) counts as absent
        return importlib.util.find_spec("onnx") is not None
    except (ImportError, ValueError):
        return False


def _read_with_onnx(path: Path) -> tuple[str | None, dict]:
    """``(metadata JSON or None, graph io)`` from the protobuf."""
    import onnx
    from google.protobuf.message import DecodeError

    try:
        proto = onnx.load_model(str(path), load_external_data=False)
    except (DecodeError, ValueError, RuntimeError, OSError, RecursionError) as e:
        raise ModelFileError(f"{path} is not a readable ONNX model (truncated or another format: "
                             f"{type(e).__name__}); {_FIX}") from None
    if not proto.graph.output or not proto.graph.input:
        raise ModelFileError(f"{path} is not an ONNX model with a graph (no inputs or outputs); {_FIX}")
    _check_no_external_data(proto, path)
    raw = next((p.value for p in proto.metadata_props if p.key == METADATA_KEY), None)
    return raw, _graph_io(proto)


def _check_no_external_data(proto, path: Path) -> None:
    """Refuse a tensor whose data lives in another file (its ``location`` is data: shown escaped)."""
    external = 1  # onnx.TensorProto.EXTERNAL
    for tensor in _tensors(proto.graph):
        if tensor.data_location == external:
            where = next((e.value for e in tensor.external_data if e.key == "location"), "?")
            raise ModelFileError(f"{path}: tensor {tensor.name[:80]!r} keeps its data in another file "
                                 f"({where[:120]!r}); featuremaps reads single-file models only: {_FIX}")


def _tensors(graph):
    """Every tensor of ``graph`` and its subgraphs: initializers, sparse ones, node attributes."""
    yield from graph.initializer
    for sparse in graph.sparse_initializer:
        yield from (sparse.values, sparse.indices)
    for node in graph.node:
        for attr in node.attribute:
            if attr.HasField("t"):
                yield attr.t
            yield from attr.tensors
            for sub in ([attr.g] if attr.HasField("g") else []) + list(attr.graphs):
                yield from _tensors(sub)


def _read_with_ort(path: Path) -> tuple[str | None, dict]:
    """``(metadata JSON or None, session io)`` from an unoptimized CPU session."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    try:
        sess = ort.InferenceSession(str(path), sess_options=so, providers=["CPUExecutionProvider"])
    except Exception as e:  # noqa: BLE001 - onnxruntime raises InvalidProtobuf, Fail, InvalidGraph, ...
        raise ModelFileError(f"{path} is not a readable ONNX model (truncated or another format: "
                             f"{type(e).__name__}); {_FIX}") from None
    return sess.get_modelmeta().custom_metadata_map.get(METADATA_KEY), session_io(sess)


def _fail(path, what: str):
    raise ModelFileError(f"{path}: metadata {what}; {_FIX}")


def _is_int(x, lo: int, hi: int | None = None) -> bool:
    return isinstance(x, int) and not isinstance(x, bool) and x >= lo and (hi is None or x <= hi)


def _is_num(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def check_metadata(meta: dict, path="model") -> dict:
    """Check ``meta`` against the schema in the module docstring; returns it unchanged."""
    for key in ("format", "model", "input"):
        if not isinstance(meta.get(key), str):
            _fail(path, f"key {key!r} is missing or not a string")
    outputs = meta.get("outputs")
    if not isinstance(outputs, list) or not outputs or len(set(map(str, outputs))) != len(outputs):
        _fail(path, "'outputs' must be a non-empty list of distinct names")
    for name in outputs:
        reason = unsafe_name_reason(name)
        if reason:
            _fail(path, f"output {reason}")
    _check_taps(meta.get("taps"), outputs, path)
    _check_preprocessing(meta.get("preprocessing"), meta.get("input_size"), path)
    return meta


def _check_taps(taps, outputs: list, path) -> None:
    if not isinstance(taps, list) or not taps:
        _fail(path, "'taps' must be a non-empty list")
    for tap in taps:
        if not isinstance(tap, dict) or not isinstance(tap.get("name"), str):
            _fail(path, "every tap needs a 'name'")
        if tap["name"] not in outputs:
            _fail(path, f"tap {tap['name']!r} is not among the outputs")
        shape = tap.get("shape")
        if not isinstance(shape, list) or not shape or not all(_is_int(d, 1) for d in shape):
            _fail(path, f"tap {tap['name']!r} has no valid 'shape' (positive integers)")


def _check_preprocessing(pre, input_size, path) -> None:
    if not isinstance(pre, dict):
        _fail(path, "'preprocessing' is missing")
    size = pre.get("size")
    if not isinstance(size, list) or len(size) != 2 or not all(_is_int(d, 1, MAX_SIZE) for d in size):
        _fail(path, f"preprocessing size {size!r} must be [H, W] within 1..{MAX_SIZE}")
    if input_size is not None and input_size != size[0]:
        _fail(path, f"input_size {input_size!r} disagrees with preprocessing size {size}")
    for key in ("mean", "std"):
        v = pre.get(key)
        if not isinstance(v, list) or len(v) != 3 or not all(_is_num(x) for x in v):
            _fail(path, f"preprocessing {key} must be 3 finite numbers, got {v!r}")
    if any(x <= 0 for x in pre["std"]):
        _fail(path, f"preprocessing std {pre['std']} must be > 0")
    if pre.get("decode", "full") not in DECODE_MODES:  # written by extract into a store's copy
        _fail(path, f"preprocessing decode {pre.get('decode')!r} must be one of {', '.join(DECODE_MODES)}")


def _dims(value_info) -> list:
    """Static dims as ints, symbolic or unknown ones as None."""
    dims = value_info.type.tensor_type.shape.dim
    return [d.dim_value if d.HasField("dim_value") else None for d in dims]


def _graph_io(proto) -> dict:
    inits = {i.name for i in proto.graph.initializer}
    inputs = {v.name: _dims(v) for v in proto.graph.input if v.name not in inits}
    uint8 = 2  # onnx.TensorProto.UINT8
    types = {v.name: "uint8" if v.type.tensor_type.elem_type == uint8 else "float"
             for v in proto.graph.input if v.name not in inits}
    return {"inputs": inputs, "input_types": types, "outputs": {v.name: _dims(v) for v in proto.graph.output}}


def check_against_graph(meta: dict, io: dict, path="model") -> None:
    """``io = {"inputs": {name: dims}, "outputs": {name: dims}}`` (None for a dynamic dim), from
    the graph or a session; the metadata must name the graph's input and outputs, with the
    taps' shapes and the preprocessing size."""
    if meta["input"] not in io["inputs"]:
        raise ModelFileError(f"{path}: the metadata's input {meta['input']!r} is not the graph's "
                             f"({', '.join(io['inputs'])}); {_FIX}")
    if set(meta["outputs"]) != set(io["outputs"]):
        raise ModelFileError(f"{path}: the metadata's outputs {meta['outputs']} are not the graph's "
                             f"{list(io['outputs'])}; {_FIX}")
    for tap in meta["taps"]:
        graph = io["outputs"][tap["name"]][1:]
        if len(graph) != len(tap["shape"]) or any(g is not None and g != s for g, s in zip(graph, tap["shape"])):
            raise ModelFileError(f"{path}: tap {tap['name']!r} is {tap['shape']} in the metadata but "
                                 f"{['?' if g is None else g for g in graph]} in the graph; {_FIX}")
    _check_input_dims(io["inputs"][meta["input"]][1:], list(meta["preprocessing"]["size"]), path)
    _check_layout(meta, io, path)


def _check_layout(meta: dict, io: dict, path) -> None:
    """The metadata's input_layout must be what the graph takes: uint8 (N, H, W, 3) pixels for
    ``uint8_nhwc``, floats (N, 3, H, W) for ``float_nchw`` (the engine feeds what the metadata says)."""
    layout = Preprocessing.from_dict(meta["preprocessing"]).input_layout
    dims = io["inputs"][meta["input"]][1:]
    kind = (io.get("input_types") or {}).get(meta["input"])
    wants_uint8 = layout == UINT8_NHWC
    channels = dims[2] if wants_uint8 else dims[0]
    if (kind is not None and (kind == "uint8") != wants_uint8) or channels not in (3, None):
        graph = f"{kind or '?'} {['?' if d is None else d for d in dims]}"
        raise ModelFileError(f"{path}: the metadata says input_layout {layout} but the graph's input is {graph} "
                             f"per image; {_FIX}")


def _check_input_dims(dims: list, size: list, path) -> None:
    """The input is (N, 3, H, W) float or (N, H, W, 3) uint8: H, W must be the preprocessing size."""
    hw = dims[1:3] if len(dims) == 3 and dims[0] == 3 else dims[0:2] if len(dims) == 3 else None
    if hw is None or any(g is not None and g != s for g, s in zip(hw, size)):
        raise ModelFileError(f"{path}: the graph input is {['?' if d is None else d for d in dims]} per image but "
                             f"the metadata says {size[0]}x{size[1]} RGB; {_FIX}")


def session_io(session) -> dict:
    """``check_against_graph``'s ``io`` from an onnxruntime session (its declared shapes)."""
    def dims(shape):
        return [d if isinstance(d, int) else None for d in shape]

    return {"inputs": {i.name: dims(i.shape) for i in session.get_inputs()},
            "input_types": {i.name: "uint8" if i.type == "tensor(uint8)" else "float" for i in session.get_inputs()},
            "outputs": {o.name: dims(o.shape) for o in session.get_outputs()}}
