"""One model cache (featuremaps/cli/cache.py): whatever a command puts in the cache, `cache` lists and
`cache --clear` deletes (before: `--model VGG16` left a 59 MB file that neither saw)."""

from __future__ import annotations

import pytest

from featuremaps.cli import cache, main
from featuremaps.contracts import Tap
from featuremaps.export.taps import MODELS

TAPS = (Tap("features.0", 0, "conv1_1", "Conv2d", (64, 32, 32), 1, 2),)


@pytest.fixture()
def xdg(tmp_path, monkeypatch):
    """An empty featuremaps cache folder of this test's own."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))  # no ImageNet checkpoint: auto -> random
    return tmp_path / "xdg" / "featuremaps"


def _files(folder):
    return sorted(p for p in folder.rglob("*") if p.is_file())


def _listed(capsys) -> str:
    assert main(["cache"]) == 0
    return capsys.readouterr().out


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("kind", cache.KINDS, ids=["resolve", "bench"])
def test_every_name_the_cache_makes_is_one_it_lists(model, kind):
    path = cache.cached_model_path(model, TAPS, "random:0", 32, logits=kind == "bench-", kind=kind)
    assert path.parent == cache.cache_root()
    for name in (path.name, cache.variant_path(path, "int8").name, path.name + ".partial"):
        assert cache.CACHE_FILE.match(name), name


def test_names_outside_the_scheme_are_refused():
    with pytest.raises(ValueError, match="no cache name"):
        cache.cached_model_path("VGG16", TAPS, "random:0", 32, logits=False)
    with pytest.raises(ValueError, match="no cache name"):
        cache.variant_path(cache.cache_root() / "vgg16-0123456789abcdef.onnx", "int4")


@pytest.mark.slow
@pytest.mark.parametrize("command", ["extract", "show"])
def test_a_zoo_model_a_command_exports_is_listed_and_cleared(xdg, tmp_path, capsys, sample_paths, command):
    out = tmp_path / ("s.zarr" if command == "extract" else "figs")
    rc = main([command, str(sample_paths[0]), "--model", "VGG16", "--layers", "0", "--input-size", "32",
               "-o", str(out)] + (["--no-progress"] if command == "extract" else []))
    assert rc == 0
    made = _files(xdg)
    assert len(made) == 1 and made[0].parent == cache.cache_root() and made[0].name.startswith("vgg16-")
    capsys.readouterr()
    listed = _listed(capsys)
    assert "1 files" in listed and made[0].name in listed and "other entries" not in listed
    assert main(["cache", "--clear"]) == 0
    assert _files(xdg) == []


def test_bench_exports_into_the_cache_are_listed_and_cleared(xdg, monkeypatch, capsys):
    """bench exports into a temporary folder; given the cache as its folder, its files (and their int8
    variants) are ones the cache lists. The export itself is replaced by a file write."""
    from types import SimpleNamespace

    from featuremaps.cli import bench

    def fake_export(taps, path, **kw):
        path.write_bytes(b"x" * 1000)

    monkeypatch.setattr(cache, "export_model", fake_export)
    path = bench.export_cached(None, SimpleNamespace(sha256="ab" * 32), "resnet18", TAPS, 32, logits=True)
    assert path.is_file() and "exporting resnet18" in capsys.readouterr().err
    cache.variant_path(path, "int8").write_bytes(b"y" * 10)
    listed = _listed(capsys)
    assert "2 files" in listed and path.name in listed and "other entries" not in listed
    assert main(["cache", "--clear"]) == 0
    assert _files(xdg) == []


def test_tensorrt_engine_caches_are_listed_and_cleared(xdg, tmp_path, capsys):
    from featuremaps.engine.providers import cache_dir_for

    model = tmp_path / "m.onnx"
    model.write_bytes(b"model")
    engines = cache_dir_for(model, "profile")
    assert cache.TENSORRT_DIR.match(engines.name) and engines.parent == xdg / "tensorrt"
    engines.mkdir(parents=True)
    (engines / "TensorrtExecutionProvider_cache_sm90.engine").write_bytes(b"e" * 3_000_000)
    (engines / "timing.cache").write_bytes(b"t" * 1000)
    mine = xdg / "tensorrt" / "my-notes.txt"
    mine.write_text("keep me")
    listed = _listed(capsys)
    assert "1 files, 3.0 MB; 1 other entries left alone" in listed and f"tensorrt/{engines.name}/" in listed
    assert main(["cache", "--clear"]) == 0
    assert _files(xdg) == [mine]
