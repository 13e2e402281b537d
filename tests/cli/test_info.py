"""`featuremaps info` (models and stores), `--version`, `featuremaps cache`, and the one weights default."""

from __future__ import annotations

import json
import os
import sys

import pytest

from featuremaps.errors import ModelFileError, StoreError


def test_info_bad_paths_are_one_line_errors(tmp_path):
    from featuremaps.info import describe

    with pytest.raises(ModelFileError, match="not found; pass an exported .onnx"):
        describe(tmp_path / "missing.onnx")
    with pytest.raises(ModelFileError, match="'/dev/null' is not a regular file or folder"):
        describe("/dev/null")
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(ModelFileError, match="not a readable ONNX model"):
        describe(tmp_path / "notes.txt")
    with pytest.raises(StoreError, match="no featuremaps store"):
        describe(tmp_path)


@pytest.mark.slow
def test_info_model(small_model, capsys):
    import onnx

    from featuremaps.cli import main
    from featuremaps.info import describe

    d = describe(small_model.path)
    proto = onnx.load(str(small_model.path))
    assert d["kind"] == "model" and d["size_bytes"] == os.path.getsize(small_model.path)
    assert d["opset"] == next(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx"))
    # VGG16 at 64x64: conv1_1 keeps the size, each pool halves it (0 -> 64ch, 28 -> 512ch at /16)
    assert [(t["name"], t["shape"]) for t in d["taps"]][::4] == [("features.0", [64, 64, 64]),
                                                                 ("features.28", [512, 4, 4])]
    assert d["weights"]["source"] == "random" and d["weights"]["sha256"]
    assert d["preprocessing"]["size"] == [64, 64] and d["input"]["layout"] == "uint8_nhwc"
    assert {"torch", "onnx", "featuremaps"} <= set(d["versions"])
    assert main(["info", str(small_model.path)]) == 0
    text = capsys.readouterr().out
    assert "RANDOM" in text and "features.28" in text and "512x4x4" in text
    assert main(["info", "--json", str(small_model.path)]) == 0
    assert json.loads(capsys.readouterr().out)["taps"][1]["channels"] == 128


@pytest.mark.slow
def test_info_store(tmp_path, small_model, sample_paths, capsys):
    from featuremaps.cli import main

    store = tmp_path / "s.zarr"
    imgs = [str(p) for p in sample_paths[:2]] + [str(tmp_path / "broken.jpg")]
    (tmp_path / "broken.jpg").write_bytes(b"not a jpeg")
    argv = ["extract", *imgs, "--model", str(small_model.path), "-o", str(store), "--no-progress", "--batch-size", "2"]
    monkey_argv = ["featuremaps"] + argv
    old, sys.argv = sys.argv, monkey_argv  # the store records the command line it was created with
    try:
        assert main(argv) == 1  # one bad image
    finally:
        sys.argv = old
    capsys.readouterr()
    assert main(["info", "--json", str(store)]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["counts"] == {"ok": 2, "error": 1, "pending": 0}
    on_disk = sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(store) for f in fs)
    assert d["bytes_on_disk"] == on_disk
    t28 = next(t for t in d["taps"] if t["name"] == "features.28")
    import zarr

    assert t28["shape"] == [3, 512, 4, 4] and t28["dtype"] == "float32"
    assert tuple(t28["chunks"]) == zarr.open_array(store / "features.28", mode="r").chunks
    assert d["command"].startswith("featuremaps extract") and "--batch-size 2" in d["command"]
    assert main(["info", str(store)]) == 0
    text = capsys.readouterr().out
    assert "2 ok, 1 error, 0 pending" in text
    assert f"batches of 2 images in chunks of {zarr.open_array(store / 'features.28', mode='r').chunks[0]} rows" in text


def test_version(capsys):
    import tomllib
    from pathlib import Path

    from featuremaps.cli import main

    version = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())["project"]["version"]
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out.strip() == f"featuremaps {version}"


def test_cache_lists_and_clears(tmp_path, monkeypatch, capsys):
    from featuremaps.cli import main

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    models = tmp_path / "featuremaps" / "models"
    models.mkdir(parents=True)
    (models / "vgg16-0123456789abcdef.onnx").write_bytes(b"x" * 2_500_000)
    assert main(["cache"]) == 0
    out = capsys.readouterr().out
    assert "1 files, 2.5 MB" in out and "vgg16-0123456789abcdef.onnx" in out
    assert main(["cache", "--clear"]) == 0
    assert not models.exists()


# ---------------------------------------------------------------- weights: one default, never silent


@pytest.fixture
def empty_torch_home(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    return tmp_path / "torch"


def test_default_weights_are_auto_everywhere():
    from featuremaps.cli import build_parser

    sub = build_parser()._subparsers._group_actions[0].choices
    for name in ("show", "export", "report"):
        assert sub[name].get_default("weights") == "auto", name
    # extract: None means "not given" (refused with an .onnx file); a zoo model then chooses as auto
    assert sub["extract"].get_default("weights") is None


def test_auto_without_imagenet_is_random_with_one_warning(empty_torch_home, capsys):
    from featuremaps.cli import ModelSpec

    spec = ModelSpec(model="vgg16", weights="auto", seed=0).with_weights_chosen()
    err = capsys.readouterr().err
    assert spec.weights == "random" and err.count("WARNING") == 1 and "RANDOM" in err
    unset = ModelSpec(model="vgg16", weights=None, seed=None).with_weights_chosen()  # extract's default
    assert (unset.weights, unset.seed) == ("random", 0) and capsys.readouterr().err == err


def test_explicit_random_warns_and_cached_imagenet_does_not(empty_torch_home, capsys):
    from featuremaps.cli import ModelSpec

    ModelSpec(model="vgg16", weights="random").with_weights_chosen()
    assert "RANDOM" in capsys.readouterr().err
    ckpt = empty_torch_home / "hub" / "checkpoints" / "vgg16-397923af.pth"
    ckpt.parent.mkdir(parents=True)
    ckpt.write_bytes(b"")
    spec = ModelSpec(model="vgg16", weights="auto").with_weights_chosen()
    assert spec.weights == "imagenet" and capsys.readouterr().err == ""


def test_an_onnx_file_keeps_its_metadata_weights(capsys):
    from featuremaps.cli import ModelSpec

    spec = ModelSpec(model="m.onnx", weights=None).with_weights_chosen()
    assert spec.weights is None and capsys.readouterr().err == ""


@pytest.mark.slow
def test_bench_warns_once_and_leaves_nothing_in_the_cache(tmp_path, monkeypatch, capsys):
    from featuremaps.cli import main

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))  # no ImageNet checkpoint: auto -> random
    rc = main(["bench", "--model", "vgg16", "--input-size", "32", "--layers", "0,5", "--backends", "ort-cpu",
               "--batch-sizes", "1", "--repeats", "1", "--warmup", "0", "--no-scaling", "--gemm-size", "64"])
    assert rc == 0
    err = capsys.readouterr().err
    assert err.count("WARNING") == 1 and "RANDOM weights" in err
    assert "exporting vgg16" in err  # it did export a model ...
    left = [p for p in (tmp_path / "cache" / "featuremaps").rglob("*") if p.is_file()]
    assert left == []  # ... and removed it
