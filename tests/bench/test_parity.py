"""`featuremaps parity`: the budgets, the reference weights check, the pass path and the failure path
(a model with one perturbed weight must fail, on exactly the taps after that weight)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from featuremaps.bench.parity import (PRECISION_BUDGETS, Budget, ReferenceWeightsError, budget_for, list_images,
                                      load_reference_net)
from featuremaps.compare import TapError
from featuremaps.errors import InputError
from featuremaps.cli import main

from conftest import tiny_record


def _row(rel_l2: float, cosine: float) -> TapError:
    return TapError(tap="features.0", shape=(1, 2), max_abs=0.0, rel_l2=rel_l2, cosine=cosine, ref_max_abs=1.0)


def test_budget_table():
    assert budget_for("fp32").rel_l2 == 1e-5 and budget_for("fp32").cosine is None
    assert budget_for("int8").rel_l2 == 0.1 and budget_for("int8").cosine == 0.99
    assert budget_for("fp32").rel_l2 < budget_for("fp16").rel_l2 < budget_for("int8").rel_l2
    assert all(b.why for b in PRECISION_BUDGETS.values())
    with pytest.raises(ValueError, match="PRECISION_BUDGETS"):
        budget_for("fp8")


@pytest.mark.parametrize("rel_l2, cosine, ok", [
    (0.05, 0.995, True), (0.2, 0.995, False), (0.05, 0.98, False), (0.1, 0.99, True),
], ids=["inside", "rel-l2-over", "cosine-under", "on-the-limits"])
def test_budget_passes_needs_both_limits(rel_l2, cosine, ok):
    assert Budget(0.1, 0.99, "test").passes(_row(rel_l2, cosine)) is ok


def _parity(model_path, tmp_path, *extra) -> tuple[int, dict]:
    out = tmp_path / "parity.json"
    rc = main(["parity", "--model", str(model_path), "--providers", "cpu", "--max-images", "3",
               "--json", str(out), *extra])
    return rc, (json.loads(out.read_text()) if out.is_file() else {})


def test_parity_passes_on_exported_model_with_pipeline(small_model, tmp_path, capsys):
    rc, rep = _parity(small_model.path, tmp_path, "--pipeline")
    assert rc == 0, capsys.readouterr().err
    assert rep["ok"] is True and rep["precision"] == "fp32" and rep["budget"]["rel_l2"] == 1e-5
    assert rep["weights"]["verified"] is True and rep["weights"]["sha256"] == small_model.metadata["weights"]["sha256"]
    (cpu,) = rep["providers"]
    assert cpu["provider"] == "cpu" and cpu["status"] == "ok"
    assert [t["tap"] for t in cpu["taps"]] == ["features.0", "features.5", "features.10", "features.17", "features.28"]
    for t in cpu["taps"]:
        assert t["ok"] and t["rel_l2"] <= 1e-5 and t["cosine"] > 0.99999 and t["shape"][0] == 3
    gap = rep["pipeline"]
    assert set(gap) >= {"pixel_max_abs", "pixel_mean_abs", "input_max_abs", "taps"} and len(gap["taps"]) == 5
    assert len(gap["per_image_pixel_max_abs"]) == 3
    if gap["pixel_max_abs"] == 0:  # same pixels: the end-to-end gap is the model's fp32 parity
        assert all(t["rel_l2"] <= 1e-5 for t in gap["taps"])
    reduced = rep["pipeline_reduced_decode"]  # --decode reduced: other pixels for JPEGs >= 2x the size
    assert len(reduced["taps"]) == 5 and reduced["pixel_mean_abs"] > gap["pixel_mean_abs"]
    assert "parity ok" in capsys.readouterr().out


@pytest.fixture(scope="module")
def corrupted_model(small_model, tmp_path_factory):
    """small_model with features.7.weight (the conv between taps 5 and 10) scaled by 1.01; metadata
    (and so the recorded weights) unchanged."""
    import onnx
    from onnx import numpy_helper

    from featuremaps.export.onnx_export import load_proto_metadata, write_model

    proto = onnx.load(str(small_model.path))
    init = next(i for i in proto.graph.initializer if i.name == "features.7.weight")
    init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init) * np.float32(1.01), init.name))
    path = tmp_path_factory.mktemp("corrupt") / "vgg16-corrupt.onnx"
    write_model(proto, load_proto_metadata(proto), path)
    return path


def test_parity_fails_on_a_perturbed_weight(corrupted_model, tmp_path, capsys):
    rc, rep = _parity(corrupted_model, tmp_path)
    assert rc == 1
    assert rep["ok"] is False and rep["providers"][0]["status"] == "fail"
    ok = {t["tap"]: t["ok"] for t in rep["providers"][0]["taps"]}
    # taps before features.7 are untouched; every tap after it sees the 1% weight change
    assert ok == {"features.0": True, "features.5": True, "features.10": False, "features.17": False,
                  "features.28": False}
    err = capsys.readouterr().err
    assert "parity FAILED" in err and "cpu:features.10" in err


def test_parity_refuses_other_weights(small_model, tmp_path, capsys):
    import torch

    from featuremaps.export.zoo import build_model

    other, _ = build_model("vgg16", "random", seed=1, need_classifier=False)
    wpath = tmp_path / "other.pth"
    torch.save({k: v for k, v in other.state_dict().items() if k.startswith("features.")}, wpath)
    rc, _ = _parity(small_model.path, tmp_path, "--weights", str(wpath))
    assert rc == 2
    assert "not the ones the model was exported from" in capsys.readouterr().err


def test_reference_net_needs_the_recorded_file():
    record = tiny_record(weights={"source": "/nowhere/w.pth", "sha256": "ab" * 32, "seed": None})
    with pytest.raises(ReferenceWeightsError, match="--weights PATH"):
        load_reference_net(record)


def test_list_images(tmp_path, sample_paths):
    with pytest.raises(InputError, match="no images"):
        list_images(tmp_path)
    with pytest.raises(InputError, match="not found"):
        list_images(tmp_path / "missing")
    (tmp_path / "b.jpg").write_bytes(sample_paths[0].read_bytes())
    (tmp_path / "a.PNG").write_bytes(b"x")
    (tmp_path / "notes.txt").write_text("x")
    assert [p.name for p in list_images(tmp_path)] == ["a.PNG", "b.jpg"]
    assert len(list_images(tmp_path, limit=1)) == 1
