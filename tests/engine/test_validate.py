"""Model files are validated at open: every broken or lying model is one ModelFileError line.

The good model is tests/models/vgg16-features0-32.onnx (VGG16 features.0 only, 32x32 input,
seeded random weights, 10 KB); the bad ones are made from it here.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from featuremaps.cli import main
from featuremaps.engine.validate import check_metadata, validate_model_file
from featuremaps.errors import ModelFileError

GOOD = Path(__file__).parent.parent / "models" / "vgg16-features0-32.onnx"


def _with_metadata(tmp_path: Path, name: str, edit) -> Path:
    """A copy of the good model whose metadata string is ``edit(metadata dict)`` (a dict is dumped)."""
    import onnx

    proto = onnx.load(str(GOOD))
    meta = json.loads(next(p.value for p in proto.metadata_props if p.key == "featuremaps"))
    new = edit(meta)
    keep = [(p.key, p.value) for p in proto.metadata_props if p.key != "featuremaps"]
    del proto.metadata_props[:]
    for key, value in keep + ([("featuremaps", new if isinstance(new, str) else json.dumps(new))] if new is not None
                              else []):
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    out = tmp_path / f"{name}.onnx"
    onnx.save(proto, str(out))
    return out


def _set(path: str, value):
    def edit(meta):
        *parents, last = path.split(".")
        node = meta
        for p in parents:
            node = node[p] if not isinstance(node, list) else node[int(p)]
        node[last] = value
        return meta
    return edit


def _drop(key):
    def edit(meta):
        del meta[key]
        return meta
    return edit


BAD_METADATA = {  # name: (edit of the metadata, expected message)
    "no-metadata": (lambda m: None, "has no featuremaps metadata"),
    "not-json": (lambda m: "{taps: [", "not valid JSON"),
    "deep-json": (lambda m: "[" * 200_000 + "]" * 200_000, "not valid JSON"),
    "json-list": (lambda m: "[1, 2]", "not a JSON object"),
    "no-taps": (_drop("taps"), "'taps' must be a non-empty list"),
    "no-outputs": (_drop("outputs"), "'outputs' must be a non-empty list"),
    "output-not-in-graph": (_set("outputs", ["features.0", "features.5"]), "are not the graph's"),
    "tap-shape-lies": (_set("taps.0.shape", [64, 16, 16]), r"is \[64, 16, 16\] in the metadata but \[64, 32, 32\]"),
    "size-0": (_set("preprocessing.size", [0, 0]), "must be \\[H, W\\] within 1..4096"),
    "size-60000": (_set("preprocessing.size", [60000, 60000]), "within 1..4096"),
    "size-not-graph": (lambda m: {**_set("preprocessing.size", [64, 64])(m), "input_size": 64},
                       "the graph input is \\[3, 32, 32\\] per image but the metadata says 64x64"),
    "std-0": (_set("preprocessing.std", [0.2, 0.0, 0.2]), "std .* must be > 0"),
    "decode-bogus": (_set("preprocessing.decode", "gs"), "decode .gs. must be one of full, reduced"),
    "mean-2": (_set("preprocessing.mean", [0.5, 0.5]), "mean must be 3 finite numbers"),
    "tap-dotdot": (lambda m: {**m, "outputs": ["../x"]}, "output '../x' is not a safe name"),
    "tap-abs": (lambda m: {**m, "outputs": ["/tmp/x"]}, "output '/tmp/x' is not a safe name"),
    "tap-zarr-json": (lambda m: {**m, "outputs": ["zarr.json"]}, "'zarr.json' is reserved"),
    "tap-status": (lambda m: {**m, "outputs": ["status"]}, "'status' is reserved"),
    "precision-fp64": (_set("precision", "fp64"), "precision 'fp64'; expected fp32, fp16 or int8"),
    "layout-lies": (_set("preprocessing.input_layout", "uint8_nhwc"),
                    "input_layout uint8_nhwc but the graph's input is float \\[3, 32, 32\\]"),
    "layout-unknown": (_set("preprocessing.input_layout", "planar"), "input_layout 'planar'; expected"),
    "reductions-str": (_set("reductions", "xx"), "reductions 'xx'; expected an object"),
    "reduction-str": (_set("reductions", {"features.0": "avgpool:0"}), "reduction 'features.0': 'avgpool:0'"),
    "reduction-unknown-tap": (_set("reductions", {"features.9": {"op": "mean"}}), "reduction 'features.9'"),
    "seed-str": (_set("weights.seed", "x"), "weights seed 'x'; expected an integer >= 0"),
    "weights-str": (_set("weights", "imagenet"), "weights 'imagenet'; expected an object"),
    "taps-str": (_set("taps", ["features.0"]), "taps \\['features.0'\\]; expected a list of objects"),
}


@pytest.fixture(scope="module")
def bad_models(tmp_path_factory) -> dict[str, tuple[Path, str]]:
    """Every kind of broken model file next to the message it must produce."""
    tmp = tmp_path_factory.mktemp("bad-models")
    data = GOOD.read_bytes()
    (tmp / "truncated.onnx").write_bytes(data[: len(data) // 2])
    (tmp / "random.onnx").write_bytes(np.random.RandomState(0).bytes(4096))
    (tmp / "text.onnx").write_text("this is not a model\n")
    (tmp / "empty.onnx").write_bytes(b"")
    files = {n: (tmp / f"{n}.onnx", "not (a readable ONNX model|an ONNX model with a graph)")
             for n in ("truncated", "random", "text", "empty")}
    for name, (edit, match) in BAD_METADATA.items():
        files[name] = (_with_metadata(tmp, name, edit), match)
    return files


def test_good_model_passes():
    meta = validate_model_file(GOOD)
    assert meta["outputs"] == ["features.0"] and meta["preprocessing"]["size"] == [32, 32]


@pytest.mark.parametrize("case", ["truncated", "random", "text", "empty", *BAD_METADATA])
def test_bad_model_is_one_model_file_error(bad_models, case):
    path, match = bad_models[case]
    with pytest.raises(ModelFileError, match=match):
        validate_model_file(path)


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("featuremaps: error: "), err
    return err[0]


@pytest.mark.parametrize("case", ["truncated", "random", "no-metadata", "deep-json", "no-taps", "tap-shape-lies",
                                  "size-60000", "std-0", "tap-dotdot", "tap-status", "precision-fp64",
                                  "layout-lies", "reductions-str", "reduction-str", "seed-str"])
def test_extract_with_bad_model_exits_2_with_one_line_and_no_store(bad_models, case, tmp_path, capsys):
    path, match = bad_models[case]
    out = tmp_path / "out.zarr"
    assert main(["extract", str(GOOD), "--model", str(path), "-o", str(out), "--provider", "cpu",
                 "--no-progress"]) == 2
    assert str(path) in _one_error_line(capsys)
    assert os.listdir(tmp_path) == []  # no store, no temporary folder left behind


@pytest.mark.parametrize("command", ["show", "parity"])
@pytest.mark.parametrize("case", ["truncated", "not-json", "output-not-in-graph", "precision-fp64", "layout-lies",
                                  "reduction-str", "seed-str"])
def test_show_and_parity_with_bad_model_exit_2_with_one_line(bad_models, case, command, tmp_path, capsys):
    path, match = bad_models[case]
    argv = (["show", str(GOOD), "--model", str(path), "-o", str(tmp_path), "--provider", "cpu"] if command == "show"
            else ["parity", "--model", str(path), "--providers", "cpu"])
    assert main(argv) == 2
    line = _one_error_line(capsys)
    assert "ModelFileError" not in line and str(path) in line


@pytest.mark.parametrize("case", ["precision-fp64", "layout-unknown", "reductions-str", "reduction-str", "seed-str",
                                  "taps-str"])
def test_layers_and_info_with_bad_metadata_exit_2_with_one_line(bad_models, case, capsys):
    """``layers`` reads the metadata without the graph checks: the key checks still apply."""
    path, match = bad_models[case]
    for argv in (["layers", "--model", str(path)], ["info", str(path)]):
        assert main(argv) == 2
        assert str(path) in _one_error_line(capsys)


def test_schema_rejects_bool_and_nan():
    meta = json.loads(json.dumps(validate_model_file(GOOD)))
    meta["preprocessing"]["mean"] = [float("nan"), 0.5, 0.5]
    with pytest.raises(ModelFileError, match="mean must be 3 finite numbers"):
        check_metadata(meta)
    meta = json.loads(json.dumps(validate_model_file(GOOD)))
    meta["taps"][0]["shape"] = [True, 32, 32]
    with pytest.raises(ModelFileError, match="has no valid 'shape'"):
        check_metadata(meta)


@pytest.mark.parametrize("case", ["truncated", "random", "no-metadata", "not-json", "tap-shape-lies", "std-0"])
def test_onnxruntime_reader_gives_the_same_errors(bad_models, case, monkeypatch):
    """Without the onnx package (or for .ort files) the metadata is read with onnxruntime."""
    from featuremaps.engine import validate

    monkeypatch.setattr(validate, "_has_onnx", lambda: False)
    assert validate.validate_model_file(GOOD)["outputs"] == ["features.0"]
    path, match = bad_models[case]
    with pytest.raises(ModelFileError, match=match):
        validate.validate_model_file(path)


def test_ort_format_model_validates(tmp_path):
    from featuremaps.export.quantize import convert_ort_format

    ort_path, _ = convert_ort_format(GOOD, tmp_path / "m.ort")
    assert validate_model_file(ort_path)["outputs"] == ["features.0"]
    (tmp_path / "cut.ort").write_bytes(ort_path.read_bytes()[:2000])
    with pytest.raises(ModelFileError, match="not a readable ONNX model"):
        validate_model_file(tmp_path / "cut.ort")


def test_parity_on_a_model_whose_metadata_names_no_zoo_model(tmp_path, capsys):
    """It said "unknown model 'vgg99' ... (or pass the path of an exported .onnx file)" to someone
    who had passed exactly that."""
    path = _with_metadata(tmp_path, "vgg99", _set("model", "vgg99"))
    assert main(["parity", "--model", str(path), "--max-images", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "metadata names 'vgg99', which this version cannot rebuild" in err and "re-export" in err, err
    assert "or pass the path of an exported .onnx file" not in err


def test_parity_never_opens_a_weights_file_the_metadata_names(tmp_path, capsys, monkeypatch):
    """The metadata names a local file that exists (terminal escapes in its name): parity says to
    pass it with --weights, escaped, and never hands it to the weights loader (it used to load
    it: a .pth is a pickle); with the user's own --weights it goes on."""
    import featuremaps.bench.parity as parity_bench  # parity builds the reference net through this name

    sentinel = tmp_path / "evil\x1b[2J.pth"
    sentinel.write_bytes(b"not weights")
    path = _with_metadata(tmp_path, "named-weights", _set("weights.source", str(sentinel)))
    built = []
    real_build = parity_bench.build_model
    monkeypatch.setattr(parity_bench, "build_model", lambda *a, **k: built.append(a[1]) or real_build(*a, **k))
    assert main(["parity", "--model", str(path), "--providers", "cpu", "--max-images", "1"]) == 2
    line = _one_error_line(capsys)
    assert "weights file" in line and "evil\\x1b[2J.pth" in line and "pass it with --weights PATH" in line, line
    assert "\x1b" not in line and built == []
    assert main(["parity", "--model", str(path), "--providers", "cpu", "--max-images", "1", "--weights", "random"]) == 0
    assert built == ["random"]


# ---------------------------------------------------------------- the typed model record, read once


def test_the_record_carries_what_the_metadata_says():
    from featuremaps.engine.hashing import file_sha256
    from featuremaps.engine.validate import read_model_record

    rec = read_model_record(GOOD)
    meta = validate_model_file(GOOD)
    assert rec.metadata == meta and rec.model == meta["model"] == "vgg16"
    assert rec.outputs == tuple(meta["outputs"]) == ("features.0",) and rec.input_name == meta["input"]
    assert [t.to_dict() for t in rec.taps] == [dict(d, shape=list(d["shape"])) for d in meta["taps"]]
    assert rec.input_size == 32 and rec.input_shape == (3, 32, 32) and rec.input_layout == "float_nchw"
    assert rec.precision == "fp32" and rec.output_dtype == "fp32" and rec.reductions == {}
    assert rec.sha256 == file_sha256(GOOD)


def test_the_record_hashes_the_file_once(monkeypatch):
    from featuremaps.engine import validate

    calls = []
    monkeypatch.setattr(validate, "file_sha256", lambda p: calls.append(p) or "ab" * 32)
    rec = validate.read_model_record(GOOD)
    assert calls == []  # not at read: a CPU run that writes no store never hashes
    assert rec.sha256 == rec.sha256 == "ab" * 32 and calls == [GOOD]


def test_a_tap_without_its_facts_is_one_line(tmp_path):
    from featuremaps.engine.validate import read_model_record

    bad = _with_metadata(tmp_path, "tap-no-index", lambda m: dict(m, taps=[{"name": "features.0", "shape": [64, 32, 32]}]))
    with pytest.raises(ModelFileError, match="taps need name, index, alias"):
        read_model_record(bad)


def test_an_extractor_given_the_record_does_not_read_the_metadata_again(monkeypatch):
    from featuremaps.engine import extractor, validate
    from featuremaps.engine.extractor import Extractor

    rec = validate.read_model_record(GOOD)
    monkeypatch.setattr(extractor, "read_model_record", lambda p: pytest.fail("read the model file again"))
    with Extractor(rec, provider="cpu") as ex:
        assert ex.record is rec and ex.taps == rec.taps and ex.model_path == GOOD
        out = ex.run(np.zeros((1, 32, 32, 3), np.uint8))
    assert out["features.0"].shape == (1, 64, 32, 32)


@pytest.mark.slow
def test_extract_reads_and_hashes_the_model_file_once(tmp_path, monkeypatch, sample_paths):
    """Before: validated at open, its metadata parsed again from the session and once more for
    --fast, and hashed for the store; now one read, one hash per run."""
    from featuremaps.engine import validate

    reads, hashes = [], []
    real_validate, real_hash = validate.validate_model_file, validate.file_sha256
    monkeypatch.setattr(validate, "validate_model_file", lambda p: reads.append(p) or real_validate(p))
    monkeypatch.setattr(validate, "file_sha256", lambda p: hashes.append(p) or real_hash(p))
    rc = main(["extract", str(sample_paths[0]), "--model", str(GOOD), "-o", str(tmp_path / "s.zarr"),
               "--provider", "cpu", "--no-progress"])
    assert rc == 0 and len(reads) == 1 and len(hashes) == 1
    from featuremaps.engine.store import open_store

    with open_store(tmp_path / "s.zarr") as st:
        assert st.info["model_sha256"] == real_hash(GOOD)


@pytest.mark.parametrize("case", ["output-not-in-graph", "tap-shape-lies", "layout-lies"])
def test_layers_of_a_lying_model_file_is_one_line(bad_models, case, capsys):
    """Before: `layers FILE` read the metadata unchecked and printed taps the graph does not have."""
    path, match = bad_models[case]
    assert main(["layers", "--model", str(path)]) == 2
    assert str(path) in _one_error_line(capsys)
