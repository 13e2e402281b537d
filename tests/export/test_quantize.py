"""fp16 / int8 variants: the per-tap gate, int8 parity against PyTorch, ORT format, a torch-free runtime.

Small models (64x64). Gate defaults: cosine >= 0.99 and rel L2 <= 0.1 per tap against fp32.
"""

from __future__ import annotations

import json
import subprocess
import textwrap
from pathlib import Path

import numpy as np
import pytest

from conftest import SMALL

TAPS = ("features.0", "features.5", "features.10", "features.17", "features.28")
GATE_COSINE, GATE_REL_L2 = 0.99, 0.1


@pytest.fixture(scope="module")
def holdout_batch():
    from featuremaps.engine.preprocess import Preprocessing
    from featuremaps.engine.decode_pool import load_batch
    from featuremaps.export.calib import split_images

    _, hold = split_images()
    return load_batch(hold, Preprocessing(size=(SMALL, SMALL)))


@pytest.fixture(scope="module")
def int8_variant(tmp_path_factory, small_model):
    from featuremaps.export.variants import build_variant

    out = tmp_path_factory.mktemp("int8") / "vgg16-int8.onnx"
    return build_variant(small_model.path, out, precision="int8", fmt="ort")


@pytest.fixture(scope="module")
def fp16_variant(tmp_path_factory, small_model):
    from featuremaps.export.variants import build_variant

    out = tmp_path_factory.mktemp("fp16") / "vgg16-fp16.onnx"
    return build_variant(small_model.path, out, precision="fp16", fmt="ort")


# ------------------------------------------------------------------ calibration / hold-out split


def test_default_split_is_disjoint_real_photos():
    from featuremaps.export.calib import split_images
    from featuremaps.samples import sample_images

    cal, hold = split_images()
    assert cal == sample_images()
    assert len(hold) >= 2
    assert not {p.resolve() for p in cal} & {p.resolve() for p in hold}


def test_split_drops_calibration_files_from_holdout(sample_paths):
    from featuremaps.export.calib import split_images

    cal, hold = split_images(calib=[str(p) for p in sample_paths[:2]], holdout=list(sample_paths), min_holdout=1)
    assert cal == list(sample_paths[:2]) and hold == list(sample_paths[2:])


@pytest.mark.parametrize("kwargs, match", [
    ({"calib": "/nonexistent/photos"}, "not found"),
    ({"calib_count": 0}, "calib-count"),
    ({"holdout": []}, "held-back"),
    ({"holdout": "/nonexistent/photos"}, "^--holdout image or folder '/nonexistent/photos' not found"),
    ({"holdout": "NOTIMG"}, "^--holdout '.*notes.txt' is not an image file or a folder"),
    ({"holdout": "ONE"}, "found 1; pass more with --holdout"),
], ids=["missing-calib", "zero-count", "no-holdout", "missing-holdout", "holdout-not-image", "one-holdout"])
def test_split_errors_name_the_fix(kwargs, match, tmp_path, sample_paths):
    from featuremaps.export.calib import CalibrationError, split_images

    (tmp_path / "notes.txt").write_text("not a photo")
    (tmp_path / "one.jpg").write_bytes(sample_paths[0].read_bytes())  # not among the calibration photos
    stand_in = {"NOTIMG": str(tmp_path / "notes.txt"), "ONE": str(tmp_path / "one.jpg")}
    kwargs = {k: stand_in.get(v, v) if isinstance(v, str) else v for k, v in kwargs.items()}

    with pytest.raises(CalibrationError, match=match):
        split_images(**kwargs)


# ------------------------------------------------------------------ the naive failure and its fix


def test_tap_rerouting_gives_each_tap_two_consumers(small_model):
    import onnx

    from featuremaps.export.quantize import drop_tap_identities, route_taps_through_identity

    proto = onnx.load(str(small_model.path))
    rerouted = route_taps_through_identity(proto)
    assert rerouted == list(TAPS[:-1])  # features.28 is last: nothing reads it inside the graph
    readers = {t: [n.op_type for n in proto.graph.node if t + "__tap" in n.input] for t in rerouted}
    assert all(sorted(r) == ["Identity", "Relu"] for r in readers.values()), readers
    assert drop_tap_identities(proto) == 4
    assert not any(n.op_type == "Identity" for n in proto.graph.node)
    onnx.checker.check_model(proto)


def test_naive_quantization_misses_the_gate_and_is_not_written(tmp_path, small_model):
    """A model that misses the gate fails the export: quantize_static's own ReLU range folding
    clamps the pre-ReLU taps at 0 (rel L2 ~0.7), the gate catches it, nothing lands at ``out``."""
    from featuremaps.export.gate import GateError
    from featuremaps.export.quantize import Int8Options
    from featuremaps.export.variants import build_variant

    out = tmp_path / "naive.onnx"
    naive = Int8Options(fix_taps=False, reduce_range=False, float_first_conv=False)
    with pytest.raises(GateError, match="features.0") as info:
        build_variant(small_model.path, out, precision="int8", int8=naive)
    rows = {r.tap: r for r in info.value.result.rows}
    assert not out.exists()
    assert info.value.kept.is_file() and info.value.kept.name == "naive.gate-failed.onnx"
    for tap in TAPS[:-1]:
        assert rows[tap].rel_l2 > 0.5, (tap, rows[tap].rel_l2)
    assert rows["features.28"].rel_l2 < GATE_REL_L2


def test_strict_gate_fails_cli_export_with_table(tmp_path, capsys):
    from featuremaps.cli import main

    out = tmp_path / "m.onnx"
    code = main(["export", "--input-size", str(SMALL), "--layers", "0", "--no-verify", "--precision", "fp16",
                 "--gate-rel-l2", "1e-9", "-o", str(out)])
    captured = capsys.readouterr()
    assert code == 1
    assert "fp16 vs fp32" in captured.out and "FAIL" in captured.out
    assert "misses the parity gate" in captured.err
    assert (tmp_path / "m.gate-failed.onnx").is_file()


# ------------------------------------------------------------------ int8 parity


@pytest.mark.parametrize("tap", TAPS)
def test_int8_tap_inside_gate_vs_fp32(int8_variant, tap):
    row = next(r for r in int8_variant.gate.rows if r.tap == tap)
    assert row.cosine >= GATE_COSINE and row.rel_l2 <= GATE_REL_L2, row
    assert int8_variant.gate.images >= 2


@pytest.fixture(scope="module")
def torch_reference(vgg_net, holdout_batch):
    from featuremaps.export.reference import reference_features
    from featuremaps.export.taps import parse_taps

    net, _ = vgg_net
    return reference_features(net, holdout_batch, parse_taps(",".join(TAPS), "vgg16", SMALL))


@pytest.fixture(scope="module")
def int8_outputs(int8_variant, holdout_batch):
    from featuremaps.engine.extractor import Extractor

    with Extractor(int8_variant.path, provider="cpu") as ex:
        return ex.run(holdout_batch)


@pytest.mark.parametrize("tap", TAPS)
def test_int8_tap_close_to_pytorch_reference(int8_outputs, torch_reference, tap):
    """Against the independent clone-hook PyTorch reference, not just the fp32 ONNX model."""
    from featuremaps.compare import cosine_similarity, rel_l2_error

    assert rel_l2_error(int8_outputs[tap], torch_reference[tap]) <= GATE_REL_L2
    assert cosine_similarity(int8_outputs[tap], torch_reference[tap]) >= GATE_COSINE


def test_int8_model_is_smaller_and_says_what_it_is(int8_variant):
    from featuremaps.export.onnx_export import read_metadata

    meta = read_metadata(int8_variant.path)
    assert meta["precision"] == "int8"
    assert meta["quantization"]["per_channel"] and meta["quantization"]["calibration_images"] == 5
    assert meta["quantization"]["taps_rerouted"] == list(TAPS[:-1])
    assert int8_variant.size_bytes < 0.3 * int8_variant.fp32_size_bytes


def test_int8_ort_format_loads_with_metadata_and_matches(int8_variant, holdout_batch):
    from featuremaps.engine.extractor import Extractor

    assert int8_variant.ort_path.suffix == ".ort" and int8_variant.ort_gate.ok
    with Extractor(int8_variant.ort_path, provider="cpu") as ex_ort, \
            Extractor(int8_variant.path, provider="cpu") as ex_onnx:
        assert ex_ort.metadata["precision"] == "int8"
        a, b = ex_ort.run(holdout_batch[:2]), ex_onnx.run(holdout_batch[:2])
    for tap in TAPS:
        np.testing.assert_allclose(a[tap], b[tap], rtol=0, atol=0.05 * float(np.abs(b[tap]).max()))


# ------------------------------------------------------------------ fp16


@pytest.mark.parametrize("tap", TAPS)
def test_fp16_tap_parity(fp16_variant, tap):
    row = next(r for r in fp16_variant.gate.rows if r.tap == tap)
    assert row.rel_l2 <= 2e-3 and row.cosine >= 0.99999, row


def test_fp16_keeps_fp32_io_unless_asked(tmp_path, small_model, fp16_variant):
    import onnxruntime as ort

    from featuremaps.export.quantize import convert_fp16

    sess = ort.InferenceSession(str(fp16_variant.path), providers=["CPUExecutionProvider"])
    assert [i.type for i in sess.get_inputs()] == ["tensor(uint8)"]  # pixels; the graph normalizes
    assert {o.type for o in sess.get_outputs()} == {"tensor(float)"}
    assert fp16_variant.size_bytes < 0.55 * fp16_variant.fp32_size_bytes
    assert fp16_variant.ort_size_bytes < 0.55 * fp16_variant.fp32_size_bytes  # weights not folded back to fp32
    half_io = convert_fp16(small_model.path, tmp_path / "h.onnx", keep_io_types=False)
    sess = ort.InferenceSession(str(half_io), providers=["CPUExecutionProvider"])
    assert [i.type for i in sess.get_inputs()] == ["tensor(uint8)"]
    assert {o.type for o in sess.get_outputs()} == {"tensor(float16)"}


# ------------------------------------------------------------------ torch-free runtime

_RUNNER = textwrap.dedent("""
    import importlib.util, json, sys
    import numpy as np
    missing = [m for m in ("torch", "torchvision", "onnx", "onnxscript", "matplotlib", "skimage")
               if importlib.util.find_spec(m) is not None]
    assert not missing, f"not a minimal environment: {missing}"
    from featuremaps.engine.extractor import Extractor
    jobs = json.loads(sys.argv[1])
    report = {}
    for model, npz in jobs:
        data = np.load(npz)
        with Extractor(model, provider="cpu") as ex:
            out = ex.run(data["input"])
            report[model] = {"precision": ex.metadata["precision"],
                             "max_abs": {k: float(np.abs(out[k] - data[k]).max()) for k in ex.output_names}}
    print(json.dumps(report))
""")


def _minimal_env(root: Path) -> Path:
    """A fresh venv (no system site-packages, no pip) whose site-packages holds only onnxruntime,
    numpy, opencv-python-headless (linked from this environment, so no download) and featuremaps
    laid out as a wheel would install it. Returns its python."""
    import venv

    import cv2
    import numpy
    import onnxruntime

    venv.EnvBuilder(system_site_packages=False, with_pip=False, symlinks=True).create(root)
    site = next((root / "lib").glob("python3*/site-packages"))
    for mod in (numpy, onnxruntime, cv2):
        pkg = Path(mod.__file__).parent
        (site / pkg.name).symlink_to(pkg)
        for extra in pkg.parent.glob(f"{pkg.name}*.libs"):
            (site / extra.name).symlink_to(extra)
    for libs in Path(cv2.__file__).parent.parent.glob("opencv_python_headless*.libs"):
        if not (site / libs.name).exists():
            (site / libs.name).symlink_to(libs)
    repo = Path(__file__).resolve().parents[2]
    pkg = site / "featuremaps"
    pkg.mkdir()
    for f in (repo / "featuremaps").iterdir():  # modules and subpackages (cli/, viz/)
        if f.suffix == ".py" or (f / "__init__.py").is_file():
            (pkg / f.name).symlink_to(f)
    for sub in ("engine", "export", "bench"):
        (pkg / sub).symlink_to(repo / sub)
    return root / "bin" / "python"


@pytest.mark.slow
def test_variants_run_without_torch_or_onnx(tmp_path, small_model, int8_variant, fp16_variant, holdout_batch):
    from featuremaps.engine.extractor import Extractor

    batch = holdout_batch[:2]
    jobs = []
    for model in (small_model.path, int8_variant.path, int8_variant.ort_path, fp16_variant.path,
                  fp16_variant.ort_path):
        with Extractor(model, provider="cpu") as ex:
            expected = ex.run(batch)
        npz = tmp_path / f"{Path(model).name}.npz"
        np.savez(npz, input=batch, **expected)
        jobs.append([str(model), str(npz)])
    python = _minimal_env(tmp_path / "venv")
    proc = subprocess.run([str(python), "-I", "-c", _RUNNER, json.dumps(jobs)], capture_output=True, text=True,
                          timeout=120, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert [report[m]["precision"] for m, _ in jobs] == ["fp32", "int8", "int8", "fp16", "fp16"]
    for model, _ in jobs:
        assert set(report[model]["max_abs"]) == set(TAPS)
        assert max(report[model]["max_abs"].values()) == 0.0, (model, report[model])


def test_parity_command_judges_int8_by_its_budget(int8_variant, tmp_path, capsys):
    """`featuremaps parity` on the int8 file: against the PyTorch reference, with the int8 budget
    (rel L2 <= 0.1, cosine >= 0.99) that its metadata's precision selects, and passing."""
    from featuremaps.cli import main

    out = tmp_path / "parity.json"
    rc = main(["parity", "--model", str(int8_variant.path), "--providers", "cpu", "--max-images", "2",
               "--json", str(out)])
    assert rc == 0, capsys.readouterr().err
    rep = json.loads(out.read_text())
    assert rep["precision"] == "int8"
    assert rep["budget"]["rel_l2"] == GATE_REL_L2 and rep["budget"]["cosine"] == GATE_COSINE
    (cpu,) = rep["providers"]
    assert [t["tap"] for t in cpu["taps"]] == list(TAPS)
    for t in cpu["taps"]:
        assert t["ok"] and t["rel_l2"] <= GATE_REL_L2 and t["cosine"] >= GATE_COSINE
    assert max(t["rel_l2"] for t in cpu["taps"]) > 1e-5  # really quantized, not an fp32 copy
