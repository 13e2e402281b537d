"""Path arguments whose check is cheap are checked when the options are read, before any model is
exported or run: a typo is one line and exit status 2 at once. Before, ``parity --images notes.txt``
exported VGG16 first (~17 s), a missing ``--weights`` file waited for torch, and ``extract``/``report``
with ``-o`` under a file ran the model before failing to write."""

from __future__ import annotations

import pytest

from featuremaps.cli import main

# every way a command reaches a model: exporting a zoo model, building torch weights, reading an .onnx
MODEL_WORK = ["featuremaps.cli.cache.export_model", "featuremaps.cli.export.export_model",
              "featuremaps.cli.export.build_model", "featuremaps.cli.bench.build_model", "featuremaps.cli.demo.build_model",
              "featuremaps.cli.parity.resolve_model", "featuremaps.cli.show.resolve_model",
              "featuremaps.cli.report.resolve_model", "featuremaps.cli.extract.resolve_model",
              "featuremaps.cli.bench.read_model_record", "featuremaps.cli.extract.read_model_record"]


@pytest.fixture
def no_model_work(monkeypatch):
    """Any model work fails the test (pytest.fail is no FeaturemapsError: main re-raises it)."""
    for target in MODEL_WORK:
        monkeypatch.setattr(target, lambda *a, _t=target, **k: pytest.fail(f"{_t} ran before the path check"))


@pytest.fixture
def notes(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("not images")
    return path


def _one_line(capsys, argv) -> str:
    assert main([str(a) for a in argv]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("featuremaps: error: "), err
    return err


def test_parity_images_that_are_a_file_fail_before_the_export(no_model_work, capsys, notes):
    err = _one_line(capsys, ["parity", "--images", notes])
    assert "notes.txt' is not a folder; pass a folder of JPEG/PNG files" in err


def test_parity_images_folder_without_images_fails_before_the_export(no_model_work, capsys, tmp_path, notes):
    err = _one_line(capsys, ["parity", "--images", tmp_path])
    assert "no images" in err and str(tmp_path) in err


@pytest.mark.parametrize("argv", [
    ["parity"], ["bench", "--no-scaling"], ["export"], ["show", "{image}", "-o", "{tmp}/show"],
    ["report", "{image}", "-o", "{tmp}/report"], ["extract", "{image}", "-o", "{tmp}/s.zarr"],
    ["demo", "-o", "{tmp}/demo"],
], ids=lambda a: a[0])
def test_a_missing_weights_file_fails_before_any_model_work(no_model_work, capsys, tmp_path, sample_paths, argv):
    values = {"image": sample_paths[0], "tmp": tmp_path}
    err = _one_line(capsys, [a.format(**values) for a in argv] + ["--weights", tmp_path / "w.pth"])
    assert f"weights file '{tmp_path / 'w.pth'}' not found" in err
    assert not any(p.name in ("show", "report", "s.zarr", "demo") for p in tmp_path.iterdir())


def test_weights_that_are_a_folder_are_named_as_such(no_model_work, capsys, tmp_path):
    err = _one_line(capsys, ["export", "--weights", tmp_path])
    assert "is a folder" in err


@pytest.mark.parametrize("cmd, out", [("extract", "s.zarr"), ("report", "report")])
def test_an_output_under_a_file_fails_before_the_model_runs(no_model_work, capsys, sample_paths, notes, cmd, out):
    err = _one_line(capsys, [cmd, sample_paths[0], "-o", notes / out])
    assert "notes.txt' is a file, not a folder" in err


@pytest.mark.parametrize("option", ["--calib", "--holdout"])
def test_export_calibration_photos_are_found_before_the_export(no_model_work, capsys, tmp_path, option):
    err = _one_line(capsys, ["export", "--precision", "int8", option, tmp_path / "photos", "-o", tmp_path / "m.onnx"])
    assert f"{option} image or folder '{tmp_path / 'photos'}' not found" in err


def test_bench_extra_model_is_found_before_the_export(no_model_work, capsys, tmp_path):
    err = _one_line(capsys, ["bench", "--no-scaling", "--extra-model", tmp_path / "int8.onnx"])
    assert f"--extra-model '{tmp_path / 'int8.onnx'}' not found" in err
