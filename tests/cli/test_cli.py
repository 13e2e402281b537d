"""The command line: layers, export, error lines and exit codes."""

import json

import onnx
import pytest

from featuremaps.cli import main


def test_layers_lists_every_layer(capsys):
    assert main(["layers", "--model", "vgg16"]) == 0
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith("features.")]
    assert len(rows) == 31
    assert rows[17].split()[:4] == ["features.17", "conv4_1", "Conv2d", "512x28x28"]
    assert rows[28].rstrip().endswith("99.2%")  # conv5_3 needs 99.2% of the network's MACs


def test_export_writes_and_verifies(tmp_path, capsys):
    out = tmp_path / "m.onnx"
    rc = main(["export", "--layers", "0,conv2_1", "--input-size", "64", "-o", str(out)])
    text = capsys.readouterr().out
    assert rc == 0, text
    assert out.is_file()
    assert "features.0" in text and "features.5" in text and text.count(" ok") == 2
    meta = json.loads({p.key: p.value for p in onnx.load(str(out)).metadata_props}["featuremaps"])
    assert [t["name"] for t in meta["taps"]] == ["features.0", "features.5"]


@pytest.mark.parametrize("argv, match", [
    (["export", "--layers", "0,31"], "unknown layer '31'"),
    (["export", "--model", "resnet9"], "unknown model 'resnet9'"),
    (["export", "--weights", "/nonexistent/w.pth"], "weights file '/nonexistent/w.pth' not found"),
])
def test_errors_are_one_line_with_exit_2(tmp_path, capsys, argv, match):
    rc = main(argv + ["-o", str(tmp_path / "x.onnx"), "--input-size", "64"])
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert err.startswith("featuremaps: error: ") and match in err
    assert len(err.splitlines()) == 1
    assert not (tmp_path / "x.onnx").exists()


def test_help_lists_subcommands(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    for cmd in ("layers", "export", "demo"):
        assert cmd in out


def test_a_closed_pipe_is_not_a_traceback(tmp_path, monkeypatch):
    """`featuremaps layers | head -1`: the reader leaves early; exit 141 quietly, no traceback."""
    import sys

    sink = open(tmp_path / "out", "w")

    class ClosedPipe:
        def write(self, text):
            raise BrokenPipeError(32, "Broken pipe")

        def flush(self):
            pass

        def fileno(self):
            return sink.fileno()

    monkeypatch.setattr(sys, "stdout", ClosedPipe())
    assert main(["layers", "--model", "vgg16"]) == 141
