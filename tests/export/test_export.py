"""Export: every tap matches the clone-hook reference; graphs are cut, dynamic and self-describing."""

import json

import numpy as np
import onnx
import pytest

from featuremaps.export.reference import reference_features
from featuremaps.compare import rel_l2_error
from featuremaps.engine.extractor import Extractor
from featuremaps.export.onnx_export import METADATA_KEY, export_model, read_metadata
from featuremaps.export.taps import model_layers, parse_taps
from featuremaps.export.zoo import build_model

from conftest import ALL_TAPS, SMALL, random_batch

FP32_REL_L2 = 1e-5  # the project's fp32 parity budget (observed: <= 3e-6 at 224)
FP32_ATOL = 1e-5  # absolute, for tensors of magnitude ~1 (max |ref| is 0.5..3 here)


@pytest.fixture(scope="module")
def all_taps_model(tmp_path_factory, vgg_net):
    net, info = vgg_net
    # Reverse order on purpose: outputs must follow the order given, not depth.
    taps = tuple(reversed(parse_taps(list(ALL_TAPS), input_size=SMALL)))
    path = tmp_path_factory.mktemp("all") / "all.onnx"
    return export_model(taps, path, input_size=SMALL, net=net, weights_info=info)


@pytest.fixture(scope="module")
def all_taps_outputs(all_taps_model, vgg_net, small_batch):
    net, _ = vgg_net
    with Extractor(all_taps_model.path, provider="cpu") as ex:
        out = ex.run(small_batch)
    return out, reference_features(net, small_batch, all_taps_model.taps)


@pytest.mark.parametrize("index", ALL_TAPS, ids=lambda i: f"features.{i}")
def test_every_vgg16_tap_matches_reference(all_taps_outputs, index):
    out, ref = all_taps_outputs
    name = f"features.{index}"
    assert out[name].shape == ref[name].shape
    assert rel_l2_error(out[name], ref[name]) <= FP32_REL_L2
    np.testing.assert_allclose(out[name], ref[name], rtol=1e-4, atol=FP32_ATOL)


def test_outputs_named_by_tap_in_given_order(all_taps_model):
    proto = onnx.load(str(all_taps_model.path))
    assert [o.name for o in proto.graph.output] == [f"features.{i}" for i in reversed(ALL_TAPS)]
    assert [i.name for i in proto.graph.input] == ["input"]


@pytest.mark.slow
def test_full_size_224_parity(tmp_path, vgg_net, sample_paths):
    from featuremaps.engine.decode_pool import load_batch

    net, info = vgg_net
    res = export_model("0,5,10,17,28", tmp_path / "m.onnx", net=net, weights_info=info)
    with Extractor(res.path, provider="cpu") as ex:
        out = ex.run(load_batch(sample_paths[:2], ex.preprocessing))  # uint8 pixels, what the model takes
    ref = reference_features(net, load_batch(sample_paths[:2], ex.preprocessing.float_input()), res.taps)
    for tap in res.taps:
        assert out[tap.name].shape == (2, *tap.shape)
        assert rel_l2_error(out[tap.name], ref[tap.name]) <= FP32_REL_L2, tap.name
    # Cut after features.28: the conv weights of features[:29], fp32, plus a little graph. Biases may
    # be absent: the seeded init sets them to zero and the exporter drops an all-zero bias.
    weights = sum(p.numel() for n, p in net.features[:29].named_parameters() if n.endswith("weight")) * 4
    params = sum(p.numel() for p in net.features[:29].parameters()) * 4
    assert weights <= res.size_bytes <= params * 1.01
    assert 58e6 < res.size_bytes < 60e6


@pytest.mark.parametrize("n", [1, 3])
def test_dynamic_batch_and_shapes_match_metadata(small_model, vgg_net, n):
    net, _ = vgg_net
    x = random_batch(n)
    with Extractor(small_model.path, provider="cpu") as ex:
        out = ex.run(x)
        assert list(out) == [t.name for t in ex.taps]
        for tap in ex.taps:
            assert out[tap.name].shape == (n, *tap.shape)
            assert out[tap.name].dtype == np.float32
    ref = reference_features(net, x, small_model.taps)
    for k in ref:
        assert rel_l2_error(out[k], ref[k]) <= FP32_REL_L2


def test_graph_is_cut_after_deepest_tap(tmp_path, vgg_net):
    net, info = vgg_net
    res = export_model("0,conv2_1", tmp_path / "m.onnx", input_size=SMALL, net=net, weights_info=info)
    proto = onnx.load(str(res.path))
    ops = [n.op_type for n in proto.graph.node]
    assert ops.count("Conv") == 3  # conv1_1, conv1_2, conv2_1 and nothing deeper
    assert "Gemm" not in ops and "MatMul" not in ops
    params = sum(p.numel() for p in net.features[:6].parameters()) * 4
    assert params <= res.size_bytes <= params * 1.05


def test_metadata_round_trip(small_model, vgg_net):
    net, info = vgg_net
    meta = read_metadata(small_model.path)
    assert meta == small_model.metadata
    assert meta["model"] == "vgg16" and meta["precision"] == "fp32" and meta["logits"] is False
    assert meta["outputs"] == ["features.0", "features.5", "features.10", "features.17", "features.28"]
    expected = {t.name: t for t in parse_taps("0,5,10,17,28", input_size=SMALL)}
    for d in meta["taps"]:
        tap = expected[d["name"]]
        assert (d["alias"], tuple(d["shape"]), d["channels"]) == (tap.alias, tap.shape, tap.channels)
    assert meta["weights"]["source"] == "random" and meta["weights"]["sha256"] == info.sha256
    pre = meta["preprocessing"]
    assert pre["size"] == [SMALL, SMALL] and pre["colour_order"] == "RGB"
    assert pre["mean"] == [0.485, 0.456, 0.406] and pre["std"] == [0.229, 0.224, 0.225]
    assert {"torch", "torchvision", "onnx", "featuremaps", "opset"} <= set(meta["versions"])
    proto = onnx.load(str(small_model.path))
    onnx.checker.check_model(proto)
    raw = {p.key: p.value for p in proto.metadata_props}[METADATA_KEY]
    assert json.loads(raw) == meta


@pytest.mark.slow
def test_logits_output_matches_torch_model(tmp_path):
    import torch

    net, info = build_model("vgg16", "random", seed=0, need_classifier=True)  # the session's vgg_net has no head
    res = export_model("28", tmp_path / "full.onnx", input_size=SMALL, logits=True, net=net, weights_info=info)
    assert res.size_bytes > 500e6  # the classifier is most of VGG16's 553 MB
    x = random_batch(2)
    with Extractor(res.path, provider="cpu") as ex:
        out = ex.run(x)
    assert list(out) == ["features.28", "logits"]
    with torch.no_grad():
        logits = net(torch.from_numpy(x)).numpy()
    assert out["logits"].shape == (2, 1000)
    assert rel_l2_error(out["logits"], logits) <= FP32_REL_L2


def test_layer_table_shapes_agree_with_exported_outputs(all_taps_outputs):
    out, _ = all_taps_outputs
    for tap in model_layers("vgg16", SMALL):
        assert out[tap.name].shape[1:] == tap.shape


def test_exporting_twice_gives_identical_bytes(tmp_path, vgg_net):
    """A model's identity is its content: the same model, taps and weights give the same file, so
    a store made with the first export resumes with the second (its SHA-256 is the same)."""
    net, info = vgg_net
    a = export_model("0,5", tmp_path / "a.onnx", input_size=SMALL, net=net, weights_info=info).path.read_bytes()
    b = export_model("0,5", tmp_path / "b.onnx", input_size=SMALL, net=net, weights_info=info).path.read_bytes()
    assert a == b
    # the exporter's stack traces (this machine's paths) are not in the shared file
    assert b"onnx_export.py" not in a and b"site-packages" not in a
    proto = onnx.load_from_string(a)
    assert all(len(n.metadata_props) == 0 for n in proto.graph.node)
    assert "created" not in read_metadata(tmp_path / "a.onnx")


@pytest.mark.slow
def test_export_without_layers_uses_the_familys_default_taps(tmp_path, capsys):
    """`export --model resnet18` with no --layers: a ResNet's stem and stages, not VGG's `0`."""
    from featuremaps.cli import main

    out = tmp_path / "r.onnx"
    assert main(["export", "--model", "resnet18", "--input-size", "32", "--weights", "random", "-o", str(out)]) == 0
    taps = read_metadata(out)["taps"]
    assert [t["alias"] or t["name"] for t in taps] == ["conv1", "layer1", "layer2", "layer3", "layer4"]
