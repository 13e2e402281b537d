"""TensorRT/CUDA library lookup and `featuremaps doctor`, on a CPU: a fake pip package folder
(``site-packages/tensorrt_libs``) holding small shared libraries compiled here stands in for
TensorRT's wheels."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest

from featuremaps.cli import main
from featuremaps.engine.gpu_libs import TRT_LIBS, find_tensorrt, gpu_info, preload, tensorrt_version
from featuremaps.engine.providers import PROVIDER_TABLE

needs_cc = pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc to build the stand-in libraries")


def _compile(folder, soname: str, body: str) -> None:
    src = folder / f"{soname}.c"
    src.write_text(body)
    subprocess.run(["gcc", "-shared", "-fPIC", "-o", str(folder / soname), str(src)], check=True)
    src.unlink()


def test_nothing_installed_names_each_missing_library_and_the_install(tmp_path):
    libs = find_tensorrt([str(tmp_path)], system=False)
    assert not libs.ok and libs.missing == TRT_LIBS
    assert libs.reason() == ("TensorRT libraries not found: libnvinfer.so.10, libnvonnxparser.so.10; "
                             "pip install 'featuremaps[tensorrt]' (TensorRT 10 for CUDA 13, matching onnxruntime-gpu 1.31)")
    assert preload(libs) == libs.reason()


@needs_cc
def test_libraries_in_the_pip_package_folder_are_found_preloaded_and_versioned(tmp_path):
    pkg = tmp_path / "tensorrt_libs"
    pkg.mkdir()
    _compile(pkg, "libnvinfer.so.10", "int getInferLibVersion(void) { return 101302; }\n")
    _compile(pkg, "libnvonnxparser.so.10", "int nvonnxparser_stub(void) { return 0; }\n")
    (tmp_path / "other").mkdir()  # a site-packages entry without the folder is skipped
    libs = find_tensorrt([str(tmp_path / "other"), str(tmp_path)], system=False)
    assert libs.ok and libs.found == {s: str(pkg / s) for s in TRT_LIBS}
    assert preload(libs) is None
    assert tensorrt_version(libs) == "10.13.2"
    assert libs.summary() == f"libnvinfer.so.10, libnvonnxparser.so.10 in {pkg}"


def test_a_library_that_does_not_load_is_one_line_naming_it(tmp_path):
    pkg = tmp_path / "tensorrt_libs"
    pkg.mkdir()
    for soname in TRT_LIBS:
        (pkg / soname).write_text("not an ELF file\n")
    msg = preload(find_tensorrt([str(tmp_path)], system=False))
    assert msg.startswith(f"TensorRT library libnvinfer.so.10 was found at {pkg / 'libnvinfer.so.10'} but does not load (")
    assert "\n" not in msg and msg.endswith("pip install 'featuremaps[tensorrt]' (TensorRT 10 for CUDA 13, "
                                            "matching onnxruntime-gpu 1.31)")


def test_no_driver_is_reported_not_raised():
    info = gpu_info("libcuda-that-does-not-exist.so.1")
    assert info.devices == () and info.problem == "no NVIDIA driver (libcuda.so.1 not found)"


def test_doctor_reports_every_provider_and_what_auto_picks(capsys):
    assert main(["doctor"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "featuremaps doctor: what this machine can run"
    rows = {line.split()[0]: line.split()[1] for line in out[1:] if line.startswith("  ") and
            line.split()[0] in PROVIDER_TABLE}
    assert set(rows) == set(PROVIDER_TABLE) and rows["cpu"] == "yes"
    assert any(line.startswith("  --provider auto picks: ") for line in out)
    assert any(line.startswith("  with --fast: ") for line in out)


def test_doctor_json_agrees_with_the_provider_probes(capsys):
    assert main(["doctor", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    for name, spec in PROVIDER_TABLE.items():
        assert report["providers"][name]["ok"] is (spec.probe() is None)
    assert report["auto"]["provider"] in PROVIDER_TABLE and report["cpu"]["cores"] >= 1


def test_tensorrt_caches_live_in_the_featuremaps_cache_keyed_by_gpu_and_version(tmp_path, monkeypatch, small_model):
    from featuremaps.engine import providers
    from featuremaps.engine.gpu_libs import GpuInfo

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    keys = {}
    for gpu, trt in (("NVIDIA H200", "10.13.2"), ("NVIDIA L4", "10.13.2"), ("NVIDIA H200", "10.16.1")):
        monkeypatch.setattr(providers, "gpu_info", lambda g=gpu: GpuInfo("13.0", ((g, "9.0"),)))
        monkeypatch.setattr(providers, "tensorrt_version", lambda libs, t=trt: t)
        path = providers.cache_dir_for(small_model.path, "profile")
        assert path.parent == tmp_path / "xdg" / "featuremaps" / "tensorrt"
        keys[(gpu, trt)] = path
    assert len(set(keys.values())) == 3  # another GPU or TensorRT release never loads this engine
    # the same everything gives the same folder (a second run loads instead of rebuilding)
    assert providers.cache_dir_for(small_model.path, "profile") == keys[("NVIDIA H200", "10.16.1")]
