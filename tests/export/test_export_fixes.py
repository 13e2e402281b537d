"""Export and parity fixes of issue 11.6: fp16 with fp16 I/O passes its own gate, a failed gate
leaves nothing of another precision under the requested name, parity checks reduced models
against the reduced reference. VGG16 features.0 at 32x32 keeps each export to seconds."""

from __future__ import annotations

import json

import pytest

from featuremaps.cli import main

SMALL = ["--layers", "0", "--input-size", "32", "--weights", "random"]
pytestmark = pytest.mark.slow  # each case exports a model with torch (10-20 s on 2 shared cores)


def _meta(path) -> dict:
    import onnx

    proto = onnx.load(str(path))
    return json.loads(next(p.value for p in proto.metadata_props if p.key == "featuremaps"))


def _input_type(path) -> int:
    import onnx

    return onnx.load(str(path)).graph.input[0].type.tensor_type.elem_type


def test_fp16_io_export_passes_its_gate(tmp_path, capsys):
    import onnx

    out = tmp_path / "m-fp16io.onnx"
    assert main(["export", *SMALL, "--precision", "fp16", "--fp16-io", "-o", str(out)]) == 0
    proto = onnx.load(str(out))
    # uint8 pixels stay uint8 (already 2 bytes less than fp16); every output becomes float16
    assert _input_type(out) == onnx.TensorProto.UINT8
    assert {o.type.tensor_type.elem_type for o in proto.graph.output} == {onnx.TensorProto.FLOAT16}
    assert _meta(out)["precision"] == "fp16"
    text = capsys.readouterr().out
    assert "fp16 vs fp32" in text and "FAIL" not in text


def test_failed_int8_gate_leaves_no_fp32_model_under_the_int8_name(tmp_path, capsys):
    out = tmp_path / "m-int8.onnx"
    # features.2 (the second conv: the first stays float in int8 exports) and a gate nothing passes
    rc = main(["export", "--layers", "2", "--input-size", "32", "--precision", "int8", "--gate-rel-l2", "1e-12",
               "-o", str(out)])
    assert rc == 1
    assert not out.exists()
    rejected, fp32 = tmp_path / "m-int8.gate-failed.onnx", tmp_path / "m-int8.fp32.onnx"
    assert _meta(rejected)["precision"] == "int8"
    assert _meta(fp32)["precision"] == "fp32"
    assert f"moved to {fp32}" in capsys.readouterr().err


def test_failed_fp32_check_of_an_int8_export_keeps_nothing_under_the_int8_name(tmp_path, capsys, monkeypatch):
    import featuremaps.cli.export as cli_export

    real = cli_export._verify_on_photo

    def failing(*a, **k):  # the real check, then pretend a tap missed the fp32 tolerance
        import dataclasses

        ver = real(*a, **k)
        return dataclasses.replace(ver, tolerance=-1.0)

    monkeypatch.setattr(cli_export, "_verify_on_photo", failing)
    out = tmp_path / "m-int8.onnx"
    assert main(["export", *SMALL, "--precision", "int8", "-o", str(out)]) == 1
    assert not out.exists()
    assert _meta(tmp_path / "m-int8.fp32.onnx")["precision"] == "fp32"
    assert "m-int8.fp32.onnx" in capsys.readouterr().err


@pytest.mark.parametrize("extra", [["--reduce", "features.0=mean"],
                                   ["--reduce", "features.0=avgpool:4", "--fp16-outputs"]],
                         ids=["mean", "avgpool4-fp16-outputs"])
def test_parity_checks_a_reduced_model_against_the_reduced_reference(tmp_path, capsys, extra):
    out = tmp_path / "m-reduced.onnx"
    assert main(["export", *SMALL, *extra, "-o", str(out)]) == 0
    capsys.readouterr()
    report = tmp_path / "parity.json"
    assert main(["parity", "--model", str(out), "--providers", "cpu", "--max-images", "2",
                 "--json", str(report)]) == 0
    rows = json.loads(report.read_text())["providers"][0]
    assert rows["status"] == "ok"
    assert "parity ok" in capsys.readouterr().out
