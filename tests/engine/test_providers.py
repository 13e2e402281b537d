"""The provider table, CUDA options per math mode, math-mode selection and budgets by mode (CPU only)."""

from __future__ import annotations

import numpy as np
import pytest

from featuremaps.bench.parity import budget_for, model_parity
from featuremaps.bench.stats import TapError
from featuremaps.engine.providers import PROVIDER_TABLE, math_mode, provider_names
from featuremaps.engine.session import make_session, provider_options
from featuremaps.errors import ArgumentError


@pytest.mark.parametrize("tf32, flag", [(True, "1"), (False, "0")], ids=["tf32", "strict"])
def test_cuda_options_carry_tf32_nhwc_and_device(tf32, flag):
    opts = provider_options("cuda", device_id=3, tf32=tf32)
    assert opts["use_tf32"] == flag
    assert opts["prefer_nhwc"] == "1"
    assert opts["device_id"] == "3"
    assert opts["cudnn_conv_algo_search"] == "EXHAUSTIVE"


def test_tensorrt_profile_follows_uint8_nhwc_input():
    opts = provider_options("tensorrt", input_shape=(64, 64, 3), max_batch=16, device_id=1)
    assert opts["trt_profile_max_shapes"] == "input:16x64x64x3"
    assert opts["device_id"] == 1


def test_table_drives_choices_and_auto_order():
    names = provider_names()
    assert names[:3] == ("tensorrt", "cuda", "cpu")
    for name in names:
        spec = PROVIDER_TABLE[name]
        # ONNX Runtime's providers name their EP; others (openvino) are built by their own backend
        assert spec.name == name and (spec.ort_name.endswith("ExecutionProvider") if spec.backend == "onnxruntime"
                                      else spec.ort_name == "" and spec.auto_rank is None)
        assert spec.probe() is None or isinstance(spec.probe(), str)
    assert PROVIDER_TABLE["cpu"].probe() is None
    with pytest.raises(ArgumentError, match="unknown provider 'rocm'; use one of auto, tensorrt"):
        provider_options("rocm")


def test_cli_provider_choices_come_from_the_table():
    from featuremaps.cli import build_parser

    parser = build_parser()
    with pytest.raises(SystemExit):
        parser.parse_args(["extract", "x.jpg", "-o", "o.zarr", "--provider", "rocm"])
    args = parser.parse_args(["extract", "x.jpg", "-o", "o.zarr", "--provider", "cuda", "--device", "2",
                              "--no-tf32"])
    assert (args.provider, args.device, args.no_tf32) == ("cuda", 2, True)


@pytest.mark.parametrize("provider, precision, tf32, mode", [
    ("cuda", "fp32", True, "tf32"), ("cuda", "fp32", False, "fp32"), ("cpu", "fp32", True, "fp32"),
    ("tensorrt", "fp32", False, "tf32"), ("cuda", "fp16", True, "fp16"), ("cpu", "int8", True, "int8"),
])
def test_math_mode_from_provider_precision_and_option(provider, precision, tf32, mode):
    assert math_mode(provider, precision, tf32=tf32) == mode


def test_budgets_by_mode():
    tf32, fp32 = budget_for("tf32"), budget_for("fp32")
    assert (tf32.rel_l2, tf32.cosine) == (2e-3, 0.99999)
    # a tap at the H200's measured TF32 error passes tf32 and fails strict fp32
    row = TapError("features.28", (2, 8), 1e-3, 9.0e-4, 0.9999996, 1.0)
    assert tf32.passes(row) and not fp32.passes(row)
    assert not tf32.passes(TapError("features.28", (2, 8), 1e-3, 9.0e-4, 0.9999, 1.0))
    with pytest.raises(ValueError, match="no parity budget for precision 'fp8'"):
        budget_for("fp8")


def test_cpu_session_reports_strict_fp32(small_model):
    _, info = make_session(small_model.path, "cpu", tf32=True)
    assert info.math_mode == "fp32" and "fp32" in info.note


def test_parity_judges_each_provider_by_its_mode(small_model, small_batch):
    from featuremaps.engine.extractor import Extractor

    with Extractor(small_model.path, provider="cpu") as ex:
        assert ex.math_mode == "fp32"
        outs = ex.run(small_batch)
    # a reference off by 1e-4 rel L2 fails the strict fp32 budget CPU runs under
    ref = {k: v * np.float32(1 + 1e-4) for k, v in outs.items()}
    results, _ = model_parity(small_model.path, ref, small_batch, ("cpu",))
    (r,) = results
    assert r.math_mode == "fp32" and r.budget == budget_for("fp32") and r.status == "fail"
    assert r.to_dict()["math_mode"] == "fp32"


def test_store_records_provider_and_math_mode(small_model, sample_paths, tmp_path):
    from featuremaps.cli import main
    from featuremaps.engine.store import open_store

    out = tmp_path / "s.zarr"
    rc = main(["extract", *map(str, sample_paths[:2]), "--model", str(small_model.path), "-o", str(out),
               "--provider", "cpu", "--no-progress", "--batch-size", "2"])
    assert rc == 0
    assert open_store(out).metadata["extraction"] == {"provider": "cpu", "math_mode": "fp32", "device": 0,
                                                      "batches_in_flight": 1, "streams": 1}
