"""What gets installed: the wheel holds every package folder, and the base install (no torch, no
onnx) runs `extract` and `show` on an exported model."""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest

from test_layering import ROOT, package_dirs


def source_packages() -> set[str]:
    """Every folder with an ``__init__.py`` under the package-dir mapping, as a dotted name (from
    the filesystem, not from ``packages``: that list is what is being checked)."""
    out = set()
    for pkg, folder in package_dirs().items():
        for init in folder.rglob("__init__.py"):
            rel = init.parent.relative_to(folder).parts
            if "__pycache__" not in rel:
                out.add(".".join((pkg, *rel)))
    return out


def test_every_package_folder_is_found():
    pkgs = source_packages()
    assert {"featuremaps", "featuremaps.cli", "featuremaps.viz", "featuremaps.engine", "featuremaps.export",
            "featuremaps.bench"} <= pkgs


@pytest.mark.slow
def test_wheel_holds_every_package(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    ignore = shutil.ignore_patterns("__pycache__", "results", "*.pyc")
    for folder in {d.relative_to(ROOT).parts[0] for d in package_dirs().values()}:
        shutil.copytree(ROOT / folder, src / folder, ignore=ignore)
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                           "-w", str(tmp_path / "dist"), str(src)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    wheel, = (tmp_path / "dist").glob("featuremaps-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    missing = sorted(p for p in source_packages() if p.replace(".", "/") + "/__init__.py" not in names)
    assert not missing, f"package folders missing from the wheel (add them to [tool.setuptools] packages): {missing}"
    assert "featuremaps/cli/extract.py" in names and "featuremaps/engine/store/core.py" in names


# A meta-path finder that refuses the export extra: what a base install (no torch, no onnx) sees.
_BLOCK = textwrap.dedent("""
    import sys
    class Block:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("torch", "torchvision", "onnx", "onnxscript", "safetensors"):
                raise ImportError(f"{name} is blocked: base install")
    sys.meta_path.insert(0, Block())
    from featuremaps.cli import main
    rc = main(sys.argv[1:])
    leaked = sorted(m for m in ("torch", "torchvision", "onnx", "onnxscript") if m in sys.modules)
    print("leaked:", ",".join(leaked))
    raise SystemExit(rc)
""")


def _base_install(*argv: str, cwd: Path):
    return subprocess.run([sys.executable, "-c", _BLOCK, *argv], capture_output=True, text=True, timeout=300,
                          cwd=cwd, env={"PATH": "/usr/bin:/bin", "MPLBACKEND": "Agg", "HOME": str(cwd)})


@pytest.mark.slow
def test_base_install_extracts_and_shows_an_exported_model(tmp_path, small_model, sample_paths):
    store = tmp_path / "s.zarr"
    proc = _base_install("extract", str(sample_paths[0]), str(sample_paths[1]), "--model", str(small_model.path),
                         "-o", str(store), "--no-progress", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().endswith("leaked:") and "2 ok, 0 errors" in proc.stdout
    proc = _base_install("show", str(sample_paths[0]), "--model", str(small_model.path), "-o", str(tmp_path / "f"),
                         cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().endswith("leaked:") and len(list((tmp_path / "f").glob("*.png"))) >= 2
    proc = _base_install("show", "--store", str(store), "--index", "1", "-o", str(tmp_path / "g"), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().endswith("leaked:")


@pytest.mark.slow
@pytest.mark.parametrize("argv", [
    ["export", "--layers", "0", "-o", "x.onnx", "--input-size", "32"],
    ["extract", "IMG", "--model", "vgg16", "-o", "s.zarr"],
], ids=["export", "extract-zoo-model"])
def test_base_install_names_the_extra_in_one_line(tmp_path, sample_paths, argv):
    argv = [str(sample_paths[0]) if a == "IMG" else a for a in argv]
    proc = _base_install(*argv, cwd=tmp_path)
    err = proc.stderr.strip()
    assert proc.returncode == 2 and len(err.splitlines()) == 1, err
    assert "pip install 'featuremaps[export]'" in err


def test_tests_without_the_package_installed_say_so_in_one_line():
    """Before: `python -m pytest` in a clone without `pip install -e .` imported the bare
    featuremaps/ folder from the current directory and failed 33 test files with
    `No module named 'featuremaps.bench'`. -S drops site-packages' .pth files (the editable
    install's import hook) while PYTHONPATH still finds pytest and numpy."""
    import site

    import featuremaps.engine

    if not Path(featuremaps.engine.__file__).resolve().is_relative_to(ROOT):
        pytest.skip("featuremaps is installed as a copy in site-packages, not editable: -S cannot hide it")
    paths = dict.fromkeys([str(Path(pytest.__file__).parents[1]), *site.getsitepackages()])
    res = subprocess.run([sys.executable, "-S", "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_compare.py"],
                         cwd=ROOT, env={"PATH": "/usr/bin:/bin", "PYTHONPATH": ":".join(paths)},
                         capture_output=True, text=True, timeout=120)
    lines = (res.stdout + res.stderr).strip().splitlines()
    assert res.returncode == 2, lines
    assert len(lines) == 1 and "featuremaps is not installed" in lines[0] and ". .venv/bin/activate" in lines[0], lines
