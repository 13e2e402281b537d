"""The contract types every layer shares: taps, preprocessing, and the exported model's metadata.

A *tap* is one module output, named by its module path (``features.17``); a layer selection is
parsed once (``featuremaps.export.taps.parse_taps``) into a tuple of frozen :class:`Tap` objects
and everything downstream (export, engine, store, figures) reads those. :class:`Preprocessing`
says what the model expects; both are stored as JSON in the exported ``.onnx`` file
(``metadata_props["featuremaps"]``), and the helpers here read that back for the engine and the
export side alike.

This module sits just above :mod:`featuremaps.errors` and imports nothing else from the
project; onnxruntime is imported only inside :func:`read_metadata`.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import ArgumentError, ModelFileError

__all__ = ["METADATA_KEY", "RESIZE_METHOD", "Preprocessing", "Tap", "load_proto_metadata",
           "metadata_from_session", "optional_keys_problem", "parse_metadata", "read_metadata"]

METADATA_KEY = "featuremaps"
RESIZE_METHOD = "pil-bilinear-antialias"
FLOAT_NCHW = "float_nchw"
UINT8_NHWC = "uint8_nhwc"
INPUT_LAYOUTS = (FLOAT_NCHW, UINT8_NHWC)
DECODE_MODES = ("full", "reduced")
PRECISIONS = ("fp32", "fp16", "int8")
_LEGACY_LAYOUTS = {"NCHW float32": FLOAT_NCHW, "NHWC uint8": UINT8_NHWC}


@dataclass(frozen=True)
class Tap:
    """One tappable module output.

    ``shape`` is ``(C, H, W)`` at the input size the spec was built for; ``macs`` is the
    number of multiply-accumulates per image needed to compute this output (cumulative from
    the input), ``total_macs`` those of the whole network including the classifier.
    """

    name: str  # canonical module path, e.g. "features.17"; also the ONNX output name
    index: int  # position inside ``features``
    alias: str  # VGG alias: conv4_1, relu4_1, pool4
    kind: str  # torch module type: Conv2d, ReLU, MaxPool2d
    shape: tuple[int, int, int]
    macs: int
    total_macs: int

    @property
    def channels(self) -> int:
        return self.shape[0]

    @property
    def mac_share(self) -> float:
        """Share of the full network's MACs needed to reach this tap (0..1)."""
        return self.macs / self.total_macs

    def to_dict(self) -> dict:
        return {"name": self.name, "index": self.index, "alias": self.alias, "kind": self.kind,
                "shape": list(self.shape), "channels": self.channels, "macs": self.macs,
                "total_macs": self.total_macs}

    @classmethod
    def from_dict(cls, d: dict) -> "Tap":
        fields = {f.name for f in dataclasses.fields(cls)}
        kw = {k: v for k, v in d.items() if k in fields}
        kw["shape"] = tuple(kw["shape"])
        return cls(**kw)


@dataclass(frozen=True)
class Preprocessing:
    """What the model expects; stored in the exported model's metadata.

    ``size`` is ``(H, W)``; mean/std are per RGB channel on the 0..1 scale; ``input_layout`` is
    ``"uint8_nhwc"`` (pixels; the graph does /255, mean/std and the transpose: new exports) or
    ``"float_nchw"`` (normalized floats: models exported before uint8 input, where the key is
    absent); ``decode`` is ``"full"`` or ``"reduced"`` (JPEGs at least 2x the model size decode
    at 1/2, 1/4 or 1/8 scale in the DCT domain, then resize: faster, not the seed's pixels; a run
    option, not stored in models).
    """

    size: tuple[int, int] = (224, 224)
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    colour_order: str = "RGB"
    resize: str = RESIZE_METHOD
    input_layout: str = FLOAT_NCHW
    decode: str = "full"

    def __post_init__(self):
        if self.input_layout not in INPUT_LAYOUTS:
            raise ArgumentError(f"input_layout {self.input_layout!r}; use one of {', '.join(INPUT_LAYOUTS)}")
        if self.decode not in DECODE_MODES:
            raise ArgumentError(f"decode {self.decode!r}; use one of {', '.join(DECODE_MODES)}")

    def to_dict(self) -> dict:
        return {"size": list(self.size), "mean": list(self.mean), "std": list(self.std),
                "colour_order": self.colour_order, "resize": self.resize, "input_layout": self.input_layout}

    @classmethod
    def from_dict(cls, d: dict) -> "Preprocessing":
        layout = d.get("input_layout") or _LEGACY_LAYOUTS.get(d.get("layout", ""), FLOAT_NCHW)
        return cls(size=tuple(d["size"]), mean=tuple(d["mean"]), std=tuple(d["std"]),
                   colour_order=d.get("colour_order", "RGB"), resize=d.get("resize", RESIZE_METHOD),
                   input_layout=layout, decode=d.get("decode", "full"))  # a store records its run's decode

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """One image's model input shape: ``(3, H, W)`` or ``(H, W, 3)``."""
        h, w = self.size
        return (h, w, 3) if self.input_layout == UINT8_NHWC else (3, h, w)

    def float_input(self) -> "Preprocessing":
        """The same preprocessing producing normalized ``float32 (3, H, W)``: what the PyTorch
        reference takes (an Extractor maps it back to a uint8 model's pixels exactly)."""
        return dataclasses.replace(self, input_layout=FLOAT_NCHW)

    @property
    def input_dtype(self) -> np.dtype:
        return np.dtype(np.uint8 if self.input_layout == UINT8_NHWC else np.float32)


# ---------------------------------------------------------------- metadata (JSON in metadata_props)


def parse_metadata(raw: str | None, model_path: str | Path = "model") -> dict:
    """The metadata dict from its JSON text ``raw`` (None: the key is absent)."""
    if raw is None:
        raise ModelFileError(f"{model_path} has no featuremaps metadata; export it with `featuremaps export`")
    try:
        meta = json.loads(raw)
    except (ValueError, RecursionError) as e:
        raise ModelFileError(f"{model_path}: its featuremaps metadata is not valid JSON ({type(e).__name__}); "
                             "re-export it with `featuremaps export -o PATH.onnx`") from None
    if not isinstance(meta, dict):
        raise ModelFileError(f"{model_path}: its featuremaps metadata is not a JSON object; re-export it with "
                             "`featuremaps export -o PATH.onnx`")
    problem = optional_keys_problem(meta)
    if problem:
        raise ModelFileError(f"{model_path}: its featuremaps metadata {problem}; re-export it with "
                             "`featuremaps export -o PATH.onnx`")
    return meta


def optional_keys_problem(meta: dict) -> str | None:
    """What is wrong with the keys every reader of the metadata trusts (taps as objects, precision,
    the input layout, reductions, the weights' seed), or None. The full schema is checked by
    ``featuremaps.engine.validate`` against the graph; these are checked wherever metadata is read.

    >>> optional_keys_problem({"precision": "fp64"})
    "has precision 'fp64'; expected fp32, fp16 or int8"
    """
    def short(x) -> str:
        return repr(x)[:60]

    taps = meta.get("taps")
    if taps is not None and not (isinstance(taps, list) and all(isinstance(t, dict) for t in taps)):
        return f"has taps {short(taps)}; expected a list of objects {{name, shape, ...}}"
    if "precision" in meta and meta["precision"] not in PRECISIONS:
        return f"has precision {short(meta['precision'])}; expected fp32, fp16 or int8"
    pre = meta.get("preprocessing")
    if isinstance(pre, dict) and "input_layout" in pre and pre["input_layout"] not in INPUT_LAYOUTS:
        return f"has input_layout {short(pre['input_layout'])}; expected {' or '.join(INPUT_LAYOUTS)}"
    reductions = meta.get("reductions")
    if reductions is not None:
        if not isinstance(reductions, dict):
            return f"has reductions {short(reductions)}; expected an object {{output: {{op, k, spec}}}}"
        outputs = meta.get("outputs") if isinstance(meta.get("outputs"), list) else None
        for name, red in reductions.items():
            if not isinstance(red, dict) or (outputs is not None and name not in outputs):
                return f"has reduction {short(name)}: {short(red)}; expected an output name and {{op, k, spec}}"
    weights = meta.get("weights")
    if weights is not None:
        if not isinstance(weights, dict):
            return f"has weights {short(weights)}; expected an object"
        seed = weights.get("seed")
        if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool) or seed < 0):
            return f"has weights seed {short(seed)}; expected an integer >= 0"
    return None


def metadata_from_session(sess, model_path: str | Path = "model") -> dict:
    """The metadata of an open ``onnxruntime.InferenceSession``."""
    return parse_metadata(sess.get_modelmeta().custom_metadata_map.get(METADATA_KEY), model_path)


def load_proto_metadata(proto) -> dict:
    """The featuremaps metadata of an in-memory ``onnx.ModelProto`` (no onnx import needed)."""
    raw = next((p.value for p in proto.metadata_props if p.key == METADATA_KEY), None)
    return parse_metadata(raw)


def read_metadata(model_path: str | Path) -> dict:
    """The featuremaps metadata of an exported model, read with onnxruntime (no torch, no onnx)."""
    import onnxruntime as ort

    ort.set_default_logger_severity(3)
    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # no constant folding: a hostile
    # graph's constant part (a 1 GiB Expand) would be computed while loading, just to read metadata
    try:
        sess = ort.InferenceSession(str(model_path), sess_options=so, providers=["CPUExecutionProvider"])
    except Exception as e:  # noqa: BLE001 - onnxruntime raises its own unrelated types for bad files
        raise ModelFileError(f"{model_path} is not a loadable ONNX model ({type(e).__name__}); "
                             "export one with `featuremaps export`") from None
    return metadata_from_session(sess, model_path)
