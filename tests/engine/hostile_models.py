"""Tiny hostile ONNX models with valid featuremaps metadata, written with onnx.helper.

Every model takes ``input`` float ``(N, 3, 8, 8)`` and declares one tap ``features.0`` of per-image
shape ``(3, 8, 8)``: what the metadata and the graph's outputs say is right; what the graph does
is the attack (never returns, allocates gigabytes, computes another shape, needs an op or opset
ONNX Runtime does not have, or an initializer whose data lies about its size).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

GOOD = Path(__file__).parent.parent / "models" / "vgg16-features0-32.onnx"
SIZE = 8
NEVER = 2**63 - 1  # a Loop trip count: ~forever


def _metadata() -> str:
    import onnx

    meta = json.loads(next(p.value for p in onnx.load(str(GOOD)).metadata_props if p.key == "featuremaps"))
    tap = dict(meta["taps"][0], shape=[3, SIZE, SIZE], channels=3)
    pre = dict(meta["preprocessing"], size=[SIZE, SIZE])
    return json.dumps(dict(meta, input_size=SIZE, outputs=["features.0"], taps=[tap], preprocessing=pre))


def save(path: Path, nodes, *, initializers=(), opset: int = 17, extra_opsets=(), out_channels: int = 3) -> Path:
    """A model from ``nodes`` (``input`` -> ... -> ``features.0``) declaring ``(N, out_channels, 8, 8)``."""
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        nodes, "hostile", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, SIZE, SIZE])],
        [helper.make_tensor_value_info("features.0", TensorProto.FLOAT, ["N", out_channels, SIZE, SIZE])],
        initializer=list(initializers))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset), *extra_opsets], ir_version=9)
    entry = model.metadata_props.add()
    entry.key, entry.value = "featuremaps", _metadata()
    onnx.save(model, str(path))
    return path


def const(name: str, value) -> object:
    from onnx import helper, numpy_helper

    return helper.make_node("Constant", [], [name], value=numpy_helper.from_array(np.asarray(value), name))


def _plus_zero_times(name: str) -> list:
    """``features.0 = input + 0 * sum(name)``: the output depends on ``name`` (never optimized away)."""
    from onnx import helper

    return [helper.make_node("ReduceSum", [name], ["s"], keepdims=0), const("zero", np.array(0, np.float32)),
            helper.make_node("Mul", ["s", "zero"], ["z"]), helper.make_node("Add", ["input", "z"], ["features.0"])]


def relu(path: Path) -> Path:
    """The harmless control."""
    from onnx import helper

    return save(path, [helper.make_node("Relu", ["input"], ["features.0"])])


def loop_forever(path: Path, *, bright_only: bool = False) -> Path:
    """A ``Loop`` of 2**63 - 1 iterations (negating the input each time). ``bright_only``: the
    trip count is 0 for a batch whose normalized pixels are all < 0 (black images), so those
    batches finish and the others never do."""
    from onnx import TensorProto, helper

    body = helper.make_graph(
        [helper.make_node("Identity", ["cond_in"], ["cond_out"]), helper.make_node("Neg", ["v_in"], ["v_out"])],
        "body", [helper.make_tensor_value_info("i", TensorProto.INT64, []),
                 helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
                 helper.make_tensor_value_info("v_in", TensorProto.FLOAT, None)],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
         helper.make_tensor_value_info("v_out", TensorProto.FLOAT, None)])
    nodes = [const("never", np.array(NEVER, np.int64)), const("c", np.array(True))]
    if bright_only:
        nodes += [helper.make_node("ReduceMax", ["input"], ["mx"], keepdims=0), const("zf", np.array(0, np.float32)),
                  helper.make_node("Greater", ["mx", "zf"], ["bright"]),
                  helper.make_node("Cast", ["bright"], ["b64"], to=TensorProto.INT64),
                  helper.make_node("Mul", ["b64", "never"], ["M"])]
    else:
        nodes.append(helper.make_node("Identity", ["never"], ["M"]))
    nodes.append(helper.make_node("Loop", ["M", "c", "input"], ["features.0"], body=body))
    return save(path, nodes)


def expand(path: Path, nbytes: int, *, constant: bool = False) -> Path:
    """A float tensor of ``nbytes`` made by ``Expand`` (of the input's max, or of a constant:
    then ONNX Runtime's constant folding would make it while the session is built)."""
    from onnx import helper

    first = const("x", np.array(1.0, np.float32)) if constant else helper.make_node("ReduceMax", ["input"], ["x"],
                                                                                   keepdims=0)
    nodes = [first, const("shape", np.array([nbytes // 4], np.int64)), helper.make_node("Expand", ["x", "shape"], ["big"])]
    return save(path, nodes + _plus_zero_times("big"))


def custom_domain(path: Path) -> Path:
    from onnx import helper

    return save(path, [helper.make_node("Evil", ["input"], ["features.0"], domain="com.evil")],
                extra_opsets=[helper.make_opsetid("com.evil", 1)])


def opset(path: Path, version: int = 99) -> Path:
    from onnx import helper

    return save(path, [helper.make_node("Relu", ["input"], ["features.0"])], opset=version)


def wrong_shape(path: Path) -> Path:
    """Declares ``(N, 3, 8, 8)`` (graph and metadata agree) but computes ``(N, 6, 8, 8)``."""
    from onnx import helper

    return save(path, [helper.make_node("Concat", ["input", "input"], ["features.0"], axis=1)])


def huge_initializer(path: Path) -> Path:
    """An initializer declaring 2**30 floats (4 GiB) that holds 16 bytes."""
    from onnx import TensorProto

    t = TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[2**30], raw_data=b"\0" * 16)
    return save(path, _plus_zero_times("w"), initializers=[t])


def external_initializer(path: Path, location: str, nbytes: int) -> Path:
    """An initializer of ``nbytes`` whose data ONNX Runtime would read from ``location``."""
    from onnx import TensorProto

    t = TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[nbytes // 4], data_location=TensorProto.EXTERNAL)
    for key, value in (("location", location), ("offset", "0"), ("length", str(nbytes))):
        entry = t.external_data.add()
        entry.key, entry.value = key, value
    return save(path, _plus_zero_times("w"), initializers=[t])
