"""The Ray scheduler's actors trust the driver's model record: they only check that their node's file
has the driver's bytes (no second parse), and a node with another file at that path is refused."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from featuremaps.engine.ray_engine import same_model_here
from featuremaps.engine.validate import read_model_record
from featuremaps.errors import ModelFileError

TINY = Path(__file__).resolve().parents[1] / "models" / "vgg16-features0-32.onnx"


def test_an_actor_takes_the_drivers_record_when_its_file_has_the_same_bytes(tmp_path):
    path = tmp_path / "m.onnx"
    shutil.copyfile(TINY, path)
    record = read_model_record(path)
    assert same_model_here(record) is record


def test_a_node_holding_another_file_at_the_path_is_refused_in_one_line(tmp_path):
    path = tmp_path / "m.onnx"
    shutil.copyfile(TINY, path)
    record = read_model_record(path)
    _ = record.sha256  # the driver hashed it before shipping
    path.write_bytes(TINY.read_bytes() + b"\0")  # this node's copy differs
    with pytest.raises(ModelFileError, match=r"is not the driver's .*put the same file on every node") as e:
        same_model_here(record)
    assert "\n" not in str(e.value)


def test_a_node_without_the_file_is_refused_in_one_line(tmp_path):
    path = tmp_path / "m.onnx"
    shutil.copyfile(TINY, path)
    record = read_model_record(path)
    _ = record.sha256
    path.unlink()
    with pytest.raises(ModelFileError, match=r"cannot read the model .*every node needs the model"):
        same_model_here(record)
