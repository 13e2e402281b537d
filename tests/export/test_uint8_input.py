"""uint8 NHWC input with normalization in the graph: layout, parity with the PyTorch reference,
conversion between layouts, and the older float NCHW export still running."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from conftest import SMALL

from featuremaps.bench.reference import reference_features
from featuremaps.bench.stats import rel_l2_error
from featuremaps.engine.extractor import Extractor
from featuremaps.engine.preprocess import Preprocessing, read_image, resize_pil_bilinear, to_input
from featuremaps.errors import ArgumentError, InputError
from featuremaps.export.onnx_export import export_model, read_metadata

FP32_REL_L2 = 1e-5


@pytest.fixture(scope="module")
def photo_pixels(sample_paths):
    """Three real photos resized to ``(3, SMALL, SMALL, 3) uint8`` and, independently of the
    graph, their normalized float tensor from the engine's per-image ``to_input``."""
    pre = Preprocessing(size=(SMALL, SMALL))
    pixels = np.stack([resize_pil_bilinear(read_image(p), pre.size) for p in sample_paths[:3]])
    floats = np.stack([to_input(px, pre) for px in pixels])
    return pixels, floats


@pytest.fixture(scope="module")
def float_model(tmp_path_factory, vgg_net):
    net, info = vgg_net
    path = tmp_path_factory.mktemp("old") / "float.onnx"
    return export_model("0,5,17", path, input_size=SMALL, net=net, weights_info=info, input_layout="float_nchw")


def _graph_input(path):
    inp = onnx.load(str(path), load_external_data=False).graph.input[0]
    dims = [d.dim_value or d.dim_param for d in inp.type.tensor_type.shape.dim]
    return inp.type.tensor_type.elem_type, dims


def test_new_export_takes_uint8_nhwc_and_says_so(small_model):
    elem, dims = _graph_input(small_model.path)
    assert elem == onnx.TensorProto.UINT8
    assert dims[1:] == [SMALL, SMALL, 3] and isinstance(dims[0], str)  # batch stays dynamic
    assert read_metadata(small_model.path)["preprocessing"]["input_layout"] == "uint8_nhwc"


def test_uint8_model_matches_reference_on_photo_pixels(small_model, vgg_net, photo_pixels):
    net, _ = vgg_net
    pixels, floats = photo_pixels
    with Extractor(small_model.path, provider="cpu") as ex:
        assert ex.input_layout == "uint8_nhwc" and ex.input_shape == (SMALL, SMALL, 3)
        out = ex.run(pixels)
    ref = reference_features(net, floats, small_model.taps)
    for tap in small_model.taps:
        assert out[tap.name].shape == (3, *tap.shape)
        assert rel_l2_error(out[tap.name], ref[tap.name]) <= FP32_REL_L2, tap.name


def test_uint8_model_accepts_the_float_tensor_of_the_same_pixels(small_model, photo_pixels):
    pixels, floats = photo_pixels
    with Extractor(small_model.path, provider="cpu") as ex:
        a, b = ex.run(pixels), ex.run(floats)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])  # floats map back to the very same pixels


def test_uint8_model_refuses_floats_that_are_not_pixels(small_model):
    noise = np.random.RandomState(0).randn(1, 3, SMALL, SMALL).astype(np.float32)
    with Extractor(small_model.path, provider="cpu") as ex:
        with pytest.raises(InputError, match="not normalized 8-bit pixels; pass pixels, or export with"):
            ex.run(noise)
        with pytest.raises(InputError, match=r"got \(1, 3, 32, 32\) uint8"):
            ex.run(np.zeros((1, 3, 32, 32), np.uint8))


def test_float_nchw_export_still_runs_both_layouts(float_model, vgg_net, photo_pixels):
    net, _ = vgg_net
    pixels, floats = photo_pixels
    meta = read_metadata(float_model.path)
    assert meta["preprocessing"]["input_layout"] == "float_nchw"
    assert _graph_input(float_model.path) == (onnx.TensorProto.FLOAT, [_graph_input(float_model.path)[1][0],
                                                                       3, SMALL, SMALL])
    with Extractor(float_model.path, provider="cpu") as ex:
        assert ex.input_shape == (3, SMALL, SMALL)
        from_floats, from_pixels = ex.run(floats), ex.run(pixels)
    ref = reference_features(net, floats, float_model.taps)
    for tap in float_model.taps:
        assert rel_l2_error(from_floats[tap.name], ref[tap.name]) <= FP32_REL_L2
        np.testing.assert_array_equal(from_pixels[tap.name], from_floats[tap.name])


def test_metadata_without_input_layout_means_float_nchw(float_model):
    meta = read_metadata(float_model.path)
    pre = dict(meta["preprocessing"])
    del pre["input_layout"]  # as models exported before uint8 input were
    assert Preprocessing.from_dict(pre).input_layout == "float_nchw"


def test_unknown_input_layout_is_an_argument_error(tmp_path):
    with pytest.raises(ArgumentError, match="unknown input layout 'nhwc'; use uint8_nhwc or float_nchw"):
        export_model("0", tmp_path / "m.onnx", input_size=SMALL, input_layout="nhwc")
