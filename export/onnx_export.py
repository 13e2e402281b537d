"""Export a zoo model with chosen taps as extra ONNX graph outputs, cut after the deepest tap.

The written file is self-describing: ``metadata_props["featuremaps"]`` holds JSON with the
model, taps (name, alias, shape, channels), weights source and SHA-256, preprocessing,
precision and tool versions. :func:`read_metadata` reads it back with onnxruntime alone.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import os
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

# the metadata readers live with the contract types; re-exported here for older imports
from ..contracts import (METADATA_KEY, Preprocessing, Tap, load_proto_metadata,  # noqa: F401
                         metadata_from_session, read_metadata)
from ..errors import ArgumentError
from ..families import default_taps, family_of
from .taps import IMAGENET_MEAN, IMAGENET_STD, parse_taps
from .. import __version__
from .zoo import build_model

log = logging.getLogger(__name__)

INPUT_NAME = "input"
LOGITS_NAME = "logits"
OPSET = 20
INPUT_LAYOUTS = ("uint8_nhwc", "float_nchw")


@dataclass(frozen=True)
class ExportResult:
    path: Path
    taps: tuple[Tap, ...]
    metadata: dict
    size_bytes: int


def _tap_module(net, taps: tuple[Tap, ...], *, logits_node: str | None = None):
    """An nn.Module returning the taps (in the order given), plus logits if ``logits_node`` is given.

    Built with torchvision's ``create_feature_extractor`` on a copy of ``net`` whose in-place
    ops are switched off: traced in place, a ReLU would overwrite a conv or BatchNorm tap before
    it is returned (the seed's hazard, inside the graph). The FX graph drops every node the
    outputs do not need, so the graph is cut after the deepest tap.
    """
    from torchvision.models.feature_extraction import create_feature_extractor

    body = copy.deepcopy(net).eval()
    for m in body.modules():
        if getattr(m, "inplace", False):
            m.inplace = False
    order = [t.name for t in taps] + ([logits_node] if logits_node else [])
    module = create_feature_extractor(body, return_nodes={n: n for n in order})
    # return a tuple in the order asked (ONNX outputs are positional); parameters keep their
    # torchvision names (features.7.weight), which the int8 and fp16 passes and tests rely on
    out = next(n for n in module.graph.nodes if n.op == "output")
    out.args = (tuple(out.args[0][name] for name in order),)
    module.recompile()
    return module.eval()


def _uint8_input(module, mean, std):
    """Make ``module`` (a :func:`_tap_module`) take ``uint8 (N, H, W, 3)`` RGB pixels: transpose to
    NCHW, then the engine's own arithmetic in the same order (cast, /255, -mean, /std), so the
    graph's normalized tensor equals :func:`featuremaps.engine.preprocess.to_input`. 4x fewer bytes
    cross to a GPU than float NCHW, and the CPU does no float work per pixel. The module is
    changed in place (not wrapped) so weight names in the graph stay ``features.i.weight``."""
    import torch

    module.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
    module.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1))
    forward = module.forward

    def from_pixels(x: torch.Tensor):
        x = x.permute(0, 3, 1, 2).to(torch.float32) / 255.0
        return forward((x - module.mean) / module.std)

    module.forward = from_pixels
    return module


def _versions() -> dict:
    import onnx
    import torch
    import torchvision

    return {"featuremaps": __version__, "torch": torch.__version__, "torchvision": torchvision.__version__,
            "onnx": onnx.__version__, "opset": OPSET}


def build_metadata(model: str, taps: tuple[Tap, ...], input_size: int, weights: dict,
                   logits: bool, input_layout: str = "uint8_nhwc") -> dict:
    pre = Preprocessing(size=(input_size, input_size), mean=IMAGENET_MEAN, std=IMAGENET_STD,
                        input_layout=input_layout)
    outputs = [t.name for t in taps] + ([LOGITS_NAME] if logits else [])
    return {"format": "featuremaps/1", "model": model, "input": INPUT_NAME, "input_size": input_size,
            "outputs": outputs, "taps": [t.to_dict() for t in taps], "logits": logits,
            "family": family_of(model).name,
            "cut_after": None if logits else max(taps, key=lambda t: t.index).name,
            "weights": weights, "preprocessing": pre.to_dict(), "precision": "fp32",
            "reductions": {}, "versions": _versions()}  # no timestamp: the same export gives the same bytes


def export_model(taps=None, output="models/vgg16.onnx", *, model: str = "vgg16",
                 weights: str = "random", seed: int = 0, input_size: int = 224,
                 logits: bool = False, net=None, weights_info=None,
                 input_layout: str = "uint8_nhwc") -> ExportResult:
    """Export ``model`` with ``taps`` as ONNX outputs named by tap (``features.17``,
    ``layer3.5.relu_2``); batch is dynamic. ``taps`` None: the family's default taps (``default_taps``).

    The input is ``uint8 (N, H, W, 3)`` RGB pixels with normalization inside the graph
    (``input_layout="uint8_nhwc"``, the default), or the older normalized ``float32 (N, 3, H, W)``
    (``"float_nchw"``); the metadata's ``preprocessing.input_layout`` says which.
    The graph stops at the deepest tap unless ``logits=True``. ``weights`` is ``"random"``
    (seeded by ``seed``), ``"imagenet"`` or a ``.pth``/``.safetensors`` path; pass ``net``
    (and ``weights_info``) to export an already built torchvision model instead.

    >>> from featuremaps import export_model, Extractor
    >>> res = export_model("0,conv4_1", "/tmp/vgg16-demo.onnx", input_size=64)
    >>> [t.name for t in res.taps]
    ['features.0', 'features.17']
    """
    import torch

    if input_layout not in INPUT_LAYOUTS:
        raise ArgumentError(f"unknown input layout {input_layout!r}; use {' or '.join(INPUT_LAYOUTS)}")
    taps = parse_taps(default_taps(model, input_size) if taps is None else taps, model, input_size)
    if net is None:
        net, weights_info = build_model(model, weights, seed, need_classifier=logits)
    module = _tap_module(net, taps, logits_node=family_of(model).logits_node if logits else None)
    if input_layout == "uint8_nhwc":
        module = _uint8_input(module, IMAGENET_MEAN, IMAGENET_STD)
        example = torch.zeros(2, input_size, input_size, 3, dtype=torch.uint8)
    else:
        example = torch.zeros(2, 3, input_size, input_size)
    output = Path(output)
    _make_parent(output)
    names = [t.name for t in taps] + ([LOGITS_NAME] if logits else [])
    with warnings.catch_warnings(), tempfile.TemporaryDirectory() as tmp:
        warnings.simplefilter("ignore")
        logging.getLogger("torch.onnx").setLevel(logging.ERROR)
        prog = torch.onnx.export(module, (example,), dynamo=True, external_data=False,
                                 input_names=[INPUT_NAME], output_names=names, opset_version=OPSET,
                                 dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=4096)},),
                                 verbose=False, report=False, artifacts_dir=tmp)
    proto = prog.model_proto
    proto.producer_name = "featuremaps"
    strip_trace_metadata(proto)
    meta = build_metadata(model, taps, input_size, weights_info.to_dict(), logits, input_layout)
    write_model(proto, meta, output)
    return ExportResult(path=output, taps=taps, metadata=meta, size_bytes=output.stat().st_size)


def strip_trace_metadata(proto) -> None:
    """Drop the exporter's per-node and per-value ``metadata_props`` (Python stack traces with this
    machine's paths and a counter that changes between calls, FX names, class hierarchies): they
    made two exports of the same model differ, and leaked local paths into a shared file. The
    model-level ``featuremaps`` JSON is what describes the file."""
    graphs = [proto.graph]
    while graphs:
        g = graphs.pop()
        del g.metadata_props[:]
        for v in (*g.input, *g.output, *g.value_info, *g.initializer):
            if hasattr(v, "metadata_props"):
                del v.metadata_props[:]
        for node in g.node:
            del node.metadata_props[:]
            graphs += [a.g for a in node.attribute if a.HasField("g")] + [x for a in node.attribute for x in a.graphs]
    for f in proto.functions:
        for node in f.node:
            del node.metadata_props[:]


def set_metadata(proto, meta: dict) -> None:
    """Replace the featuremaps JSON in ``proto.metadata_props`` (other keys are kept)."""
    keep = [(p.key, p.value) for p in proto.metadata_props if p.key != METADATA_KEY]
    del proto.metadata_props[:]
    for key, value in keep + [(METADATA_KEY, json.dumps(meta))]:
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value


def write_model(proto, meta: dict, output: str | Path) -> Path:
    """Set ``meta``, run ``onnx.checker``, and write ``proto`` to ``output`` atomically
    (temporary name, then rename: a crash never leaves a half-written model)."""
    import onnx

    set_metadata(proto, meta)
    onnx.checker.check_model(proto)
    output = Path(output)
    tmp_out = output.with_name(output.name + ".partial")
    try:
        onnx.save_model(proto, str(tmp_out))
        os.replace(tmp_out, output)
    except OSError as e:  # read-only folder, disk full: one line, and no .partial left behind
        with contextlib.suppress(OSError):
            tmp_out.unlink()
        raise ArgumentError(f"cannot write {str(output)!r}: {e.strerror or e}; choose a writable path") from None
    return output


def _make_parent(output: Path) -> None:
    """Create ``output``'s folder, or one line saying why it cannot be (a file in the way, read-only)."""
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ArgumentError(f"cannot create folder {str(output.parent)!r}: {e.strerror or e}; "
                            "choose a writable path") from None
