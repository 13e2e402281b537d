"""OpenVINO backend: same taps and shapes as ONNX Runtime, parity per math mode against the PyTorch
clone-hook reference (on a uint8-input model, fed pixels or floats), int8 QDQ within the int8
budget, one-line errors, one ``--device`` for GPU indices and OpenVINO device names, the
optional-extra fallback, ``auto --fast`` decisions, no IO binding (the pipeline's plain path), and a
store that records provider and math mode."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest

from featuremaps.bench.parity import looser, model_parity
from featuremaps.compare import PRECISION_BUDGETS, Budget, budget_for, cosine_similarity, rel_l2_error
from featuremaps.engine.choice import choose_backend
from featuremaps.engine.cpu_features import CpuFeatures, parse_cpuinfo
from featuremaps.errors import ArgumentError, DependencyError, ProviderError

SIZE = 32
TAPS = "0,5,10"
needs_openvino = pytest.mark.skipif(
    __import__("importlib").util.find_spec("openvino") is None,
    reason="openvino not installed (pip install 'featuremaps[openvino]')")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, vgg_net):
    """VGG16 taps 0,5,10 at 32x32 (seeded random weights): ExportResult."""
    from featuremaps.export.onnx_export import export_model

    net, info = vgg_net
    path = tmp_path_factory.mktemp("ov") / "vgg16-tiny.onnx"
    return export_model(TAPS, path, input_size=SIZE, net=net, weights_info=info)


@pytest.fixture(scope="module")
def photos(sample_paths):
    """Three real photos preprocessed to (3, 3, 32, 32) float32 (the reference's input; the
    Extractor maps it to the uint8 model's pixels exactly)."""
    from featuremaps.contracts import Preprocessing
    from featuremaps.engine.decode_pool import load_batch

    return load_batch(sample_paths[:3], Preprocessing(size=(SIZE, SIZE)))


@pytest.fixture(scope="module")
def reference(vgg_net, tiny, photos):
    """PyTorch clone-hook reference on ``photos``: tap -> (3, C, H, W)."""
    from featuremaps.bench.reference import reference_features

    return reference_features(vgg_net[0], photos, tiny.taps)


def _run(path, photos, **kw):
    from featuremaps.engine.extractor import Extractor

    with Extractor(path, provider="openvino", **kw) as ex:
        return ex.run(photos), ex.math_mode, ex.info


# ------------------------------------------------------------------ running and parity


@needs_openvino
def test_same_keys_and_shapes_as_onnxruntime_any_batch(tiny, photos):
    from featuremaps.engine.extractor import Extractor

    with Extractor(tiny.path, provider="cpu") as ort_ex, \
            Extractor(tiny.path, provider="openvino", math_mode="fp32") as ov_ex:
        ort, ov = ort_ex.run(photos), ov_ex.run(photos)
        single = ov_ex.run(photos[1:2])  # the same compiled model, another batch size
        assert ov_ex.taps == ort_ex.taps and ov_ex.provider == "openvino"
    assert list(ov) == list(ort) == ["features.0", "features.5", "features.10"]
    assert {k: v.shape for k, v in ov.items()} == {k: v.shape for k, v in ort.items()}
    assert all(v.dtype == np.float32 for v in ov.values())
    for k in ov:
        np.testing.assert_allclose(single[k][0], ov[k][1], rtol=1e-5, atol=1e-5)


@needs_openvino
def test_outputs_are_not_overwritten_by_the_next_run(tiny, photos):
    from featuremaps.engine.extractor import Extractor

    with Extractor(tiny.path, provider="openvino", math_mode="fp32") as ex:
        first = ex.run(photos)
        kept = {k: v.copy() for k, v in first.items()}
        ex.run(np.ascontiguousarray(photos[::-1]))  # other photos into the same request
    for k in kept:
        np.testing.assert_array_equal(first[k], kept[k])


@needs_openvino
def test_fp32_mode_is_exact_vs_pytorch_reference(tiny, photos, reference):
    outs, mode, info = _run(tiny.path, photos, math_mode="fp32")
    assert mode == "fp32" and "fp32" in info.note
    for tap, ref in reference.items():
        assert rel_l2_error(outs[tap], ref) <= 1e-5, tap


@needs_openvino
def test_default_mode_within_the_budget_of_the_mode_it_reports(tiny, photos, reference):
    import openvino as ov

    outs, mode, _ = _run(tiny.path, photos)
    has_bf16 = "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    assert mode == ("bf16" if has_bf16 else "fp32")
    budget = budget_for(mode)
    errors = [rel_l2_error(outs[t], r) for t, r in reference.items()]
    for tap, ref in reference.items():
        assert rel_l2_error(outs[tap], ref) <= budget.rel_l2, tap
        if budget.cosine is not None:
            assert cosine_similarity(outs[tap], ref) >= budget.cosine, tap
    if mode == "bf16":  # really bf16 arithmetic, not fp32 relabelled: errors are far above fp32's
        assert min(errors) > 1e-4


@needs_openvino
def test_model_parity_judges_each_provider_by_its_mode(tiny, photos, reference):
    results, _ = model_parity(tiny.path, reference, photos, ("cpu", "openvino", "openvino:fp32"),
                              budget_for("fp32"))
    by = {r.provider: r for r in results}
    assert all(r.status == "ok" for r in results), [(r.provider, r.reason) for r in results]
    assert by["cpu"].math_mode == "fp32" and by["cpu"].budget.rel_l2 == 1e-5
    assert by["openvino:fp32"].math_mode == "fp32" and by["openvino:fp32"].budget.rel_l2 == 1e-5
    assert by["openvino"].budget is PRECISION_BUDGETS[by["openvino"].math_mode]


@needs_openvino
@pytest.mark.slow
def test_parity_cli_names_the_mode(tiny, tmp_path, capsys):
    from featuremaps.cli import main

    out = tmp_path / "p.json"
    rc = main(["parity", "--model", str(tiny.path), "--providers", "cpu,openvino,openvino:fp32",
               "--max-images", "2", "--json", str(out)])
    text = capsys.readouterr().out
    assert rc == 0, text
    rep = json.loads(out.read_text())
    ov = next(p for p in rep["providers"] if p["provider"] == "openvino")
    assert ov["status"] == "ok" and ov["math_mode"] in ("bf16", "fp32")
    assert ov["budget"]["rel_l2"] == budget_for(ov["math_mode"]).rel_l2
    assert set(rep["cpu"]) >= {"amx", "avx512", "bf16", "vnni"}  # the report says what CPU judged the mode
    assert f"[openvino] OK math mode {ov['math_mode']}" in text and f"openvino ({ov['math_mode']})" in text


@needs_openvino
def test_int8_qdq_export_runs_on_openvino_within_the_int8_budget(tiny, tmp_path, photos, reference, sample_paths):
    from featuremaps.contracts import Preprocessing
    from featuremaps.engine.decode_pool import load_batch
    from featuremaps.export.quantize import quantize_int8

    calib = load_batch(sample_paths[3:8], Preprocessing(size=(SIZE, SIZE)))
    path = quantize_int8(tiny.path, tmp_path / "int8.onnx", calib)
    outs, mode, _ = _run(path, photos)
    assert mode.startswith("int8+")
    budget = budget_for("int8")
    for tap, ref in reference.items():
        assert rel_l2_error(outs[tap], ref) <= budget.rel_l2, tap
        assert cosine_similarity(outs[tap], ref) >= budget.cosine, tap


# ------------------------------------------------------------------ errors and the optional extra


@needs_openvino
def test_unknown_device_is_one_line(tiny):
    with pytest.raises(ProviderError, match=r"OpenVINO device 'XPU' is not present here; use one of .*CPU"):
        _run(tiny.path, np.zeros((1, 3, SIZE, SIZE), np.float32), device="XPU")


@needs_openvino
def test_unknown_math_mode_is_one_line(tiny):
    with pytest.raises(ProviderError, match=r"unknown OpenVINO math mode 'fp8'; use one of default, bf16, fp32"):
        _run(tiny.path, np.zeros((1, 3, SIZE, SIZE), np.float32), math_mode="fp8")


@pytest.fixture
def no_openvino(monkeypatch):
    """Behave as if the openvino package were not installed (``import openvino`` raises)."""
    monkeypatch.setitem(sys.modules, "openvino", None)


def test_missing_openvino_names_the_extra(no_openvino, tiny):
    from featuremaps.engine.extractor import Extractor
    from featuremaps.engine.openvino_backend import available, devices, unavailable_reason

    assert not available() and devices() == ()
    assert unavailable_reason() == "the openvino package is not installed (pip install 'featuremaps[openvino]')"
    with pytest.raises(DependencyError, match=r"^provider 'openvino' cannot run here: .*featuremaps\[openvino\]"):
        Extractor(tiny.path, provider="openvino")


def test_missing_openvino_parity_skips_it_with_the_reason(no_openvino, tiny, photos, reference):
    results, _ = model_parity(tiny.path, reference, photos, ("cpu", "openvino"), budget_for("fp32"))
    assert [r.status for r in results] == ["ok", "skipped"]
    assert "featuremaps[openvino]" in results[1].reason


def test_missing_openvino_extract_is_one_line_exit_2(no_openvino, tiny, tmp_path, sample_paths, capsys):
    from featuremaps.cli import main

    rc = main(["extract", str(sample_paths[0]), "--model", str(tiny.path), "-o", str(tmp_path / "s.zarr"),
               "--provider", "openvino", "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "pip install 'featuremaps[openvino]'" in err[0]
    assert not (tmp_path / "s.zarr").exists()


def test_missing_openvino_in_a_fresh_interpreter(tmp_path):
    """The import is blocked by a meta-path finder, as on a machine without the package."""
    import subprocess

    code = ("import sys\n"
            "class Block:\n"
            "    def find_spec(self, name, path=None, target=None):\n"
            "        if name == 'openvino' or name.startswith('openvino.'): raise ImportError(name)\n"
            "sys.meta_path.insert(0, Block())\n"
            "from featuremaps.engine.openvino_backend import unavailable_reason\n"
            "print(unavailable_reason())\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "the openvino package is not installed (pip install 'featuremaps[openvino]')"


# ------------------------------------------------------------------ budgets and the auto choice


def test_bf16_budget_row_and_judging_by_mode():
    bf16 = budget_for("bf16")
    assert (bf16.rel_l2, bf16.cosine) == (1e-2, 0.9999) and bf16.why
    assert looser(budget_for("bf16"), budget_for("fp32")) is bf16
    assert looser(budget_for("fp32"), budget_for("fp32")) is budget_for("fp32")
    # an int8 model run with bf16 elsewhere keeps the (looser) int8 budget
    assert looser(budget_for("bf16"), budget_for("int8")) is budget_for("int8")
    assert budget_for("int8+bf16") is budget_for("int8")  # OpenVINO's mixed mode: the loosest part
    assert (budget_for("int8").rel_l2, budget_for("int8").cosine) == (0.1, 0.99)
    assert Budget(1e-2, 0.9999, "x").passes(_row(7.3e-3, 0.99997))


def _row(rel_l2, cosine):
    from featuremaps.compare import TapError

    return TapError(tap="t", shape=(1,), max_abs=0.0, rel_l2=rel_l2, cosine=cosine, ref_max_abs=1.0)


AMX = CpuFeatures("Xeon 8481C", frozenset({"amx_tile", "amx_bf16", "amx_int8", "avx512f", "avx512_vnni"}), 2)
ZEN4 = CpuFeatures("EPYC 9B14", frozenset({"avx512f", "avx512_bf16", "avx512_vnni", "avx2"}), 2)
AVX2 = CpuFeatures("EPYC 7B12", frozenset({"avx2", "fma"}), 2)
CPU_OV = frozenset({"cpu", "openvino"})


@pytest.mark.parametrize("fast, available, cpu, precision, provider, mode, why", [
    (False, CPU_OV, AMX, "fp32", "cpu", "default", "exact fp32"),
    (True, CPU_OV, AMX, "fp32", "openvino", "bf16", "AMX"),
    (True, CPU_OV, ZEN4, "fp32", "openvino", "bf16", "AVX-512 BF16"),
    (True, CPU_OV, AVX2, "fp32", "cpu", "default", "no bf16 units"),
    (True, frozenset({"cpu"}), AMX, "fp32", "cpu", "default", "openvino is not installed"),
    (True, CPU_OV, AMX, "int8", "openvino", "default", "AMX"),
    (True, CPU_OV, ZEN4, "int8", "cpu", "default", "no AMX"),
    (False, CPU_OV, AMX, "int8", "cpu", "default", "int8 as exported"),
    (True, CPU_OV | {"cuda"}, AMX, "fp32", "cuda", "default", "GPU"),
    (False, CPU_OV | {"cuda", "tensorrt"}, AMX, "fp32", "tensorrt", "default", "GPU"),
], ids=["exact-by-default", "fast-amx", "fast-avx512-bf16", "fast-avx2-stays-ort", "fast-no-openvino",
        "fast-int8-model-amx", "fast-int8-model-no-amx", "int8-model-not-fast", "fast-gpu", "gpu"])
def test_choose_backend(fast, available, cpu, precision, provider, mode, why):
    choice = choose_backend(fast, available=available, cpu=cpu, model_precision=precision)
    assert (choice.provider, choice.math_mode) == (provider, mode)
    assert why in choice.reason and "\n" not in choice.reason


def test_cpu_features_from_cpuinfo_text():
    text = ("processor\t: 0\nmodel name\t: Intel Xeon Platinum 8481C\n"
            "flags\t\t: fpu avx2 avx512f avx512_vnni amx_bf16 amx_tile amx_int8 avx512_bf16\n"
            "processor\t: 1\nflags\t\t: fpu\n")
    cpu = parse_cpuinfo(text, cores=2)
    assert cpu.model == "Intel Xeon Platinum 8481C" and cpu.amx and cpu.bf16 and cpu.vnni
    assert "fpu" not in cpu.flags and cpu.to_dict()["avx512"] is True
    assert cpu.summary() == "Intel Xeon Platinum 8481C, 2 cores: AMX, AVX-512, bf16, VNNI"
    plain = parse_cpuinfo("model name : X\nflags : avx2 fma\n")
    assert not (plain.amx or plain.bf16 or plain.vnni)


# ------------------------------------------------------------------ bulk extraction


@needs_openvino
def test_extract_with_openvino_records_provider_and_mode(tiny, tmp_path, sample_paths, reference, capsys):
    import featuremaps
    from featuremaps.cli import main

    out = tmp_path / "s.zarr"
    rc = main(["extract", *map(str, sample_paths[:3]), "--model", str(tiny.path), "-o", str(out),
               "--provider", "openvino", "--math-mode", "fp32", "--batch-size", "2", "--no-progress"])
    assert rc == 0, capsys.readouterr().err
    store = featuremaps.open_store(out)
    import openvino as ov  # what OpenVINO itself chooses for this file in throughput mode

    compiled = ov.Core().compile_model(str(tiny.path), "CPU", {"PERFORMANCE_HINT": "THROUGHPUT",
                                                               "INFERENCE_PRECISION_HINT": "f32"})
    assert store.metadata["extraction"] == {
        "provider": "openvino", "math_mode": "fp32", "device": "CPU",
        "batches_in_flight": int(compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS")),
        "streams": int(compiled.get_property("NUM_STREAMS"))}
    # the store holds the engine-preprocessed photos' taps: same input as the reference fixture
    for tap, ref in reference.items():
        assert rel_l2_error(np.asarray(store[tap][:]), ref) <= 1e-5, tap


@needs_openvino
def test_extract_auto_fast_says_what_it_chose(tiny, tmp_path, sample_paths, capsys):
    import featuremaps
    from featuremaps.cli import main
    from featuremaps.engine.cpu_features import cpu_features

    out = tmp_path / "s.zarr"
    rc = main(["extract", str(sample_paths[0]), "--model", str(tiny.path), "-o", str(out), "--fast",
               "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 0, err
    (line,) = [x for x in err.splitlines() if x.startswith("auto --fast: ")]
    engine = featuremaps.open_store(out).metadata["extraction"]
    if cpu_features().bf16:  # this CPU has bf16 units: OpenVINO bf16 is the measured faster engine
        assert engine["provider"] == "openvino" and engine["math_mode"] == "bf16" and "bf16" in line
    else:
        assert engine["provider"] == "cpu" and engine["math_mode"] == "fp32"


def test_extract_ray_refuses_a_gpu_index(tiny, tmp_path, sample_paths, capsys):
    """Ray gives each actor its GPU: --device N (a GPU of the driver's machine) is refused in one line
    before anything starts; math modes and OpenVINO device names do reach the actors (test_extract_ray)."""
    from featuremaps.cli import main

    rc = main(["extract", str(sample_paths[0]), "--model", str(tiny.path), "-o", str(tmp_path / "s.zarr"),
               "--provider", "cuda", "--device", "1", "--gpus-per-actor", "1", "--engine", "ray", "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "--device 1 picks a GPU of this machine" in err[0], err
    assert "--gpus-per-actor" in err[0] and not (tmp_path / "s.zarr").exists()


# ------------------------------------------------------------------ bench


@needs_openvino
def test_bench_backends_run_and_name_their_mode(tiny, photos, reference):
    from featuremaps.bench.backends import BACKENDS, Backend, make_openvino

    assert {"openvino-cpu", "openvino-cpu-f32"} <= set(BACKENDS)
    f32 = make_openvino("openvino-cpu-f32", tiny.path, math_mode="fp32")
    assert isinstance(f32, Backend) and f32.provider == "openvino-fp32" and "fp32" in f32.note
    outs = f32.run(photos)
    assert rel_l2_error(outs["features.10"], reference["features.10"]) <= 1e-5


def test_bench_backend_skipped_without_openvino(no_openvino, tiny):
    from featuremaps.bench.backends import Skipped, make_openvino

    skipped = make_openvino("openvino-cpu", tiny.path)
    assert isinstance(skipped, Skipped) and "featuremaps[openvino]" in skipped.reason


def test_bench_environment_reports_cpu_matrix_units():
    from featuremaps.bench.suite import _cpu_line, environment

    cpu = environment(None)["cpu_features"]
    assert set(cpu) >= {"amx", "avx512", "bf16", "vnni", "flags", "model"}
    assert _cpu_line({"amx": False, "avx512": True, "bf16": True, "vnni": True, "flags": ["avx512f"]}) == \
        "CPU matrix units: AMX no · AVX-512 yes · bf16 yes · VNNI yes (flags: avx512f)"


def test_extract_math_mode_needs_the_openvino_provider(tiny, tmp_path, sample_paths, capsys):
    from featuremaps.cli import main

    rc = main(["extract", str(sample_paths[0]), "--model", str(tiny.path), "-o", str(tmp_path / "s.zarr"),
               "--provider", "cpu", "--math-mode", "bf16", "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "add --provider openvino" in err[0]


# ------------------------------------------------------------------ uint8 input, no IO binding, one --device


@pytest.fixture(scope="module")
def pixels(sample_paths):
    """The same three photos as ``photos``, as the uint8 (3, 32, 32, 3) RGB pixels the model takes."""
    from featuremaps.contracts import Preprocessing
    from featuremaps.engine.decode_pool import load_batch

    return load_batch(sample_paths[:3], Preprocessing(size=(SIZE, SIZE), input_layout="uint8_nhwc"))


@needs_openvino
def test_uint8_model_on_openvino_takes_pixels_exactly(tiny, pixels, photos, reference):
    from featuremaps.engine.extractor import Extractor

    assert pixels.dtype == np.uint8 and pixels.shape == (3, SIZE, SIZE, 3)
    with Extractor(tiny.path, provider="openvino", math_mode="fp32") as ex:
        assert ex.input_layout == "uint8_nhwc" and ex.input_shape == (SIZE, SIZE, 3)
        from_pixels, from_floats = ex.run(pixels), ex.run(photos)
    for tap, ref in reference.items():  # normalization in the graph, on OpenVINO too
        assert rel_l2_error(from_pixels[tap], ref) <= 1e-5, tap
        np.testing.assert_array_equal(from_pixels[tap], from_floats[tap])


@needs_openvino
@pytest.mark.parametrize("throughput", [False, True])
def test_openvino_writes_into_the_ring_and_runs_lanes_at_once(tiny, photos, throughput):
    """OpenVINO's outputs land in the output ring's own buffers (no copy), and with ``throughput``
    as many batches as it has requests run at once; every run gives run()'s bits."""
    from featuremaps.engine.extractor import Extractor

    with Extractor(tiny.path, provider="openvino", math_mode="fp32", throughput=throughput) as ex:
        assert ex.binds_outputs and ex.device == "CPU"
        assert ex.lanes == (ex.session.lanes if throughput else 1) and ex.lanes >= 1
        want = ex.run(photos)
        ring = ex.output_ring(len(photos), slots=ex.lanes + 1)
        batches = [photos if i % 2 == 0 else photos[::-1].copy() for i in range(ex.lanes + 1)]
        slots = [ring.acquire() for _ in batches]
        runs = [ex.submit_into(b, s) for b, s in zip(batches[:-1], slots)]  # every lane busy
        with pytest.raises(RuntimeError, match="requests are busy"):
            ex.session.start(photos, slots[-1].views(len(photos)))
        got = [ex.collect(r) for r in runs] + [ex.run_into(batches[-1], slots[-1])]
        for i, (maps, slot) in enumerate(zip(got, slots)):
            for tap in want:
                assert np.shares_memory(maps[tap], slot.arrays[tap])
                expect = want[tap] if i % 2 == 0 else want[tap][::-1]
                np.testing.assert_array_equal(maps[tap], expect)


@pytest.mark.parametrize("provider, device, expected", [
    ("openvino", None, "CPU"), ("openvino", "gpu.1", "GPU.1"), ("openvino", "NPU", "NPU"),
    ("cuda", None, 0), ("cuda", 1, 1), ("cuda", "2", 2), ("cpu", None, 0), ("auto", 3, 3),
])
def test_one_device_option_for_both_kinds(provider, device, expected):
    from featuremaps.engine.extractor import resolve_device

    assert resolve_device(provider, device) == expected


@pytest.mark.parametrize("provider, device, message", [
    ("openvino", 0, r"--device 0 is a GPU index; OpenVINO takes a device name \(--device CPU, GPU or NPU\)"),
    ("cuda", "GPU", r"--device GPU is an OpenVINO device name; use it with --provider openvino"),
    ("auto", "CPU", r"--device CPU is an OpenVINO device name"),
])
def test_device_of_the_wrong_kind_is_one_line(provider, device, message):
    from featuremaps.engine.extractor import resolve_device

    with pytest.raises(ArgumentError, match=message):
        resolve_device(provider, device)


def test_device_argument_parses_index_or_name():
    import argparse

    from featuremaps.cli._args import device_arg

    assert device_arg("1") == 1 and device_arg("npu") == "NPU" and device_arg("GPU.0") == "GPU.0"
    for bad in ("64", "XPU", "cuda:0"):
        with pytest.raises(argparse.ArgumentTypeError, match=r"--device must be"):
            device_arg(bad)


def test_extract_openvino_device_name_with_cpu_provider_is_one_line(tiny, tmp_path, sample_paths, capsys):
    from featuremaps.cli import main

    rc = main(["extract", str(sample_paths[0]), "--model", str(tiny.path), "-o", str(tmp_path / "s.zarr"),
               "--provider", "cpu", "--device", "NPU", "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "--device NPU is an OpenVINO device name" in err[0]
    assert not (tmp_path / "s.zarr").exists()


def test_openvino_is_in_the_provider_table_but_never_auto():
    from featuremaps.engine.providers import MATH_MODES, PROVIDER_TABLE, auto_order, provider_names
    from featuremaps.engine.session import PROVIDERS, make_session

    spec = PROVIDER_TABLE["openvino"]
    assert spec.backend == "openvino" and spec.auto_rank is None and not spec.gpu
    assert "openvino" in provider_names() and "openvino" not in auto_order()
    assert "openvino" not in PROVIDERS and "bf16" in MATH_MODES
    with pytest.raises(ProviderError, match=r"provider 'openvino' is not an ONNX Runtime provider"):
        make_session("unused.onnx", "openvino")
