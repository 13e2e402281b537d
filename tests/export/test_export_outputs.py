"""Where an export writes its file: a folder it cannot write is one line (ArgumentError), and a
failed write leaves no ``.partial`` file behind."""

from __future__ import annotations

import errno

import onnx
import pytest
from onnx import TensorProto, helper

from featuremaps.errors import ArgumentError
from featuremaps.export import onnx_export


def _tiny_proto():
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g", [x], [y])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_read_only_destination_is_one_line_and_leaves_nothing(tmp_path, monkeypatch):
    """Before: export -o into a read-only folder ended in an OSError traceback."""
    def read_only(proto, path):
        open(path, "wb").close()  # as far as it got
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(onnx, "save_model", read_only)
    out = tmp_path / "m.onnx"
    with pytest.raises(ArgumentError, match="cannot write .*m.onnx.*Read-only file system; choose a writable path"):
        onnx_export.write_model(_tiny_proto(), {"format": "featuremaps/1"}, out)
    assert list(tmp_path.iterdir()) == []


def test_folder_under_a_file_is_one_line(tmp_path):
    """Before: a model cache under a file (XDG_CACHE_HOME=/dev/null) gave NotADirectoryError."""
    (tmp_path / "file").write_text("x")
    with pytest.raises(ArgumentError, match="cannot create folder"):
        onnx_export._make_parent(tmp_path / "file" / "sub" / "m.onnx")
