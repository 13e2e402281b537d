"""In-graph reductions of tap outputs: keep only what the user stores.

``features.0=mean,features.17=avgpool:4`` appends, after a tap's output, a global mean
(``(C,)``), a global max (``(C,)``) or a k x k average pool (``(C, H/k, W/k)``); an optional
cast makes every output float16. The graph output keeps the tap's name, so the contract
"outputs are named by tap" holds; the tap's ``shape`` in the metadata becomes the shape the
graph now returns (the original is kept as ``source_shape``), ``reductions`` records what was
done and ``output_dtype`` the output type. Everything downstream (Extractor, store) reads
shapes from the metadata and needs no special case.

All VGG16 taps at 224x224 are 24.5 MB per image in fp32; reducing in the graph means the
reduced bytes are all that cross from the device and reach the disk.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from ..compare import compare
from ..contracts import Tap, load_proto_metadata
from ..engine.extractor import Extractor
from ..errors import ArgumentError, LayerError, ModelFileError
from .onnx_export import write_model
from .reference import reference_features
from .taps import parse_taps
from .verify import FP32_REL_L2_TOL

OPS = ("mean", "max", "avgpool")
_SPEC = re.compile(r"^(mean|max|avgpool:(\d+))$")


@dataclass(frozen=True)
class Reduction:
    """One tap's reduction: ``op`` is mean | max | avgpool (``k`` x ``k``, stride ``k``)."""

    op: str
    k: int | None = None

    def __str__(self) -> str:
        return f"avgpool:{self.k}" if self.op == "avgpool" else self.op

    def out_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        c, h, w = shape
        return (c,) if self.op in ("mean", "max") else (c, h // self.k, w // self.k)

    def apply(self, x: np.ndarray) -> np.ndarray:
        """NumPy reference on ``(N, C, H, W)`` (float64 accumulation)."""
        if self.op == "mean":
            return x.mean(axis=(2, 3), dtype=np.float64)
        if self.op == "max":
            return x.max(axis=(2, 3))
        n, c, h, w = x.shape
        k = self.k
        x = x[:, :, : h // k * k, : w // k * k].astype(np.float64)
        return x.reshape(n, c, h // k, k, w // k, k).mean(axis=(3, 5))


def parse_reductions(spec: str, taps: tuple[Tap, ...], model: str = "vgg16") -> dict[str, Reduction]:
    """``"features.0=mean,17=avgpool:4"`` -> ``{"features.0": Reduction("mean"), ...}``.

    Tap names accept the ``--layers`` forms (``17``, ``features.17``, ``conv4_1``) and must
    be among the exported ``taps``; ``avgpool:k`` must divide the tap's height and width.
    """
    by_name = {t.name: t for t in taps}
    out: dict[str, Reduction] = {}
    for item in filter(None, (s.strip() for s in spec.split(","))):
        key, sep, what = item.partition("=")
        m = _SPEC.match(what.strip())
        if not sep or not m:
            raise ArgumentError(f"bad reduction {item!r}; write TAP=mean, TAP=max or TAP=avgpool:K, "
                             "e.g. --reduce features.0=mean,features.17=avgpool:4")
        name = parse_taps(key.strip(), model, 224)[0].name  # canonical name; shapes come from taps
        if name not in by_name:
            raise LayerError(f"--reduce names {name}, which is not exported; add it to --layers "
                             f"({', '.join(by_name)})")
        red = Reduction("avgpool", int(m.group(2))) if m.group(2) else Reduction(m.group(1))
        _, h, w = by_name[name].shape
        if red.op == "avgpool" and (red.k < 1 or h % red.k or w % red.k):
            raise ArgumentError(f"avgpool:{red.k} does not divide {name}'s {h}x{w} map; "
                             f"pick a divisor of {h}")
        if name in out:
            raise ArgumentError(f"--reduce names {name} twice ({out[name].op} and {red.op}); one reduction per tap")
        out[name] = red
    return out


def _rename_internal(graph, name: str, new: str) -> None:
    for node in graph.node:
        for i, x in enumerate(node.input):
            if x == name:
                node.input[i] = new
        for i, x in enumerate(node.output):
            if x == name:
                node.output[i] = new
    for vi in graph.value_info:
        if vi.name == name:
            vi.name = new


def add_reductions(proto, meta: dict, reductions: dict[str, Reduction], fp16_outputs: bool = False) -> dict:
    """Append reduction (and cast) nodes after the tap outputs of ``proto`` in place; returns
    the updated metadata (write both with :func:`~featuremaps.export.onnx_export.write_model`)."""
    from onnx import TensorProto, helper

    graph = proto.graph
    opset = next(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx"))
    if opset < 18:
        raise ModelFileError(f"reductions need opset >= 18 (axes as inputs); this model has opset {opset}")
    meta = dict(meta)
    taps = {d["name"]: dict(d) for d in meta["taps"]}
    axes = f"featuremaps_reduce_axes_{len(graph.initializer)}"
    graph.initializer.append(helper.make_tensor(axes, TensorProto.INT64, [2], [2, 3]))
    new_outputs = []
    for out in graph.output:
        name = out.name
        red = reductions.get(name)
        if red is None and not fp16_outputs:
            new_outputs.append(out)
            continue
        dims = out.type.tensor_type.shape.dim
        batch = dims[0].dim_param or dims[0].dim_value
        shape = tuple(d.dim_value for d in dims[1:])
        raw = f"{name}/raw"
        _rename_internal(graph, name, raw)
        x = raw
        if red is not None:
            y = f"{name}/{red.op}" if fp16_outputs else name
            if red.op == "avgpool":
                graph.node.append(helper.make_node("AveragePool", [x], [y], name=f"{name}/reduce",
                                                   kernel_shape=[red.k, red.k], strides=[red.k, red.k]))
            else:
                op = "ReduceMean" if red.op == "mean" else "ReduceMax"
                graph.node.append(helper.make_node(op, [x, axes], [y], name=f"{name}/reduce", keepdims=0))
            shape, x = red.out_shape(shape), y
            taps[name].update(source_shape=taps[name]["shape"], shape=list(shape))
        if fp16_outputs:
            graph.node.append(helper.make_node("Cast", [x], [name], name=f"{name}/cast", to=TensorProto.FLOAT16))
        elem = TensorProto.FLOAT16 if fp16_outputs else out.type.tensor_type.elem_type
        new_outputs.append(helper.make_tensor_value_info(name, elem, [batch, *shape]))
    del graph.output[:]
    graph.output.extend(new_outputs)
    meta["taps"] = [taps[d["name"]] for d in meta["taps"]]
    meta["reductions"] = {**meta.get("reductions", {}),
                          **{k: {"op": r.op, "k": r.k, "spec": str(r)} for k, r in reductions.items()}}
    meta["output_dtype"] = "fp16" if fp16_outputs else meta.get("output_dtype", "fp32")
    return meta


def reduce_model(src, dst, reductions: dict[str, Reduction], fp16_outputs: bool = False) -> dict:
    """Load ``src``, add the reductions and cast, write ``dst`` (checked, atomic); returns metadata."""
    import onnx

    proto = onnx.load(str(src))
    meta = add_reductions(proto, load_proto_metadata(proto), reductions, fp16_outputs)
    write_model(proto, meta, dst)
    return meta


def reference_reduced(maps: dict[str, np.ndarray], reductions: dict[str, Reduction],
                      fp16_outputs: bool = False) -> dict[str, np.ndarray]:
    """NumPy reductions of reference maps ``{name: (N, C, H, W)}``, for parity checks."""
    out = {k: (reductions[k].apply(v) if k in reductions else v) for k, v in maps.items()}
    return {k: v.astype(np.float16 if fp16_outputs else np.float32) for k, v in out.items()}


FP16_OUTPUT_REL_L2_TOL = 1e-3  # fp16 rounding alone is ~3e-4 rel L2


def verify_reduced(model_path, net, taps: tuple[Tap, ...], batch: np.ndarray, reductions: dict[str, Reduction],
                   fp16_outputs: bool = False, provider: str = "cpu"):
    """Parity of a reduced model's outputs against NumPy reductions of the PyTorch clone-hook
    reference on ``batch (N, 3, H, W) float32``: ``(rows, tolerance)`` (rows as
    :func:`featuremaps.compare.compare`)."""
    ref = reference_reduced(reference_features(net, batch, taps), reductions, fp16_outputs)
    with Extractor(model_path, provider=provider) as ex:
        out = ex.run(batch)
    as32 = {k: v.astype(np.float32) for k, v in out.items() if k in ref}
    rows = compare(as32, {k: v.astype(np.float32) for k, v in ref.items()})
    return rows, FP16_OUTPUT_REL_L2_TOL if fp16_outputs else FP32_REL_L2_TOL
