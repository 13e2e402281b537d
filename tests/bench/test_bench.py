"""Benchmark statistics on known arrays, result structure, and one tiny end-to-end bench run.

No wall-clock assertions: timings are only checked for shape and sign.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np
import pytest

from featuremaps.bench.backends import Backend, Skipped, time_box
from featuremaps.bench.stats import (bound_images_per_s, cosine_similarity, max_abs_error, percentile, ratio,
                                     rel_l2_error, summarize_latency)
from featuremaps.bench.suite import (BenchConfig, ScalingModel, assemble, flops_per_image, format_markdown,
                                     json_ready, output_bytes_per_image, run_scaling)
from featuremaps.bench.timing import GemmRate, interleaved
from featuremaps.export.taps import parse_taps

# ---------------------------------------------------------------- statistics on known arrays


@pytest.mark.parametrize("values, q, expected", [
    ([1, 2, 3, 4], 50, 2.5),
    (list(range(1, 101)), 90, 90.1),
    (list(range(1, 101)), 99, 99.01),
    ([5.0], 99, 5.0),
    ([3, 1, 2], 0, 1.0),
    ([3, 1, 2], 100, 3.0),
], ids=["median-even", "p90-1..100", "p99-1..100", "single", "p0-min", "p100-max"])
def test_percentile_known_values(values, q, expected):
    assert percentile(values, q) == pytest.approx(expected, rel=1e-12)


def test_percentile_rejects_bad_input():
    with pytest.raises(ValueError, match="at least one repeat"):
        percentile([], 50)
    with pytest.raises(ValueError, match="outside 0..100"):
        percentile([1.0], 101)


def test_summarize_latency_known_array():
    s = summarize_latency([0.4, 0.1, 1.0, 0.3, 0.2], batch=8)
    assert (s.n, s.batch) == (5, 8)
    assert s.median_s == pytest.approx(0.3)
    assert s.p90_s == pytest.approx(0.76)  # sorted index 3.6: 0.4 + 0.6 * (1.0 - 0.4)
    assert s.p99_s == pytest.approx(0.976)
    assert s.min_s == pytest.approx(0.1) and s.mean_s == pytest.approx(0.4)
    assert s.images_per_s == pytest.approx(8 / 0.3)
    assert set(s.to_dict()) >= {"median_s", "p90_s", "p99_s", "images_per_s", "n"}


def test_summarize_latency_rejects_empty_and_bad_batch():
    with pytest.raises(ValueError, match="no timings"):
        summarize_latency([], 1)
    with pytest.raises(ValueError, match="batch must be"):
        summarize_latency([1.0], 0)


def test_ratio_and_bound():
    assert ratio(10.0, 4.0) == 2.5
    assert math.isnan(ratio(1.0, 0.0)) and math.isnan(ratio(1.0, None))
    # the design's anchor: 300 GFLOP/s over 30.9 GFLOP per image is about 9.7 images/s
    assert bound_images_per_s(300.0, 30.9e9) == pytest.approx(9.7087, rel=1e-4)
    with pytest.raises(ValueError, match="flops_per_image"):
        bound_images_per_s(1.0, 0.0)


def test_relative_errors_on_known_arrays():
    ref = np.array([3.0, 4.0], np.float32)
    out = np.array([3.0, 4.5], np.float32)
    assert rel_l2_error(out, ref) == pytest.approx(0.1)  # |(0, 0.5)| / |(3, 4)| = 0.5 / 5
    assert max_abs_error(out, ref) == pytest.approx(0.5)
    assert cosine_similarity(np.array([1.0, 0.0]), np.array([0.0, 2.0])) == pytest.approx(0.0)
    assert cosine_similarity(np.array([1.0, 2.0]), np.array([2.0, 4.0])) == pytest.approx(1.0)
    assert rel_l2_error(np.zeros(3), np.zeros(3)) == 0.0
    assert rel_l2_error(np.ones(3), np.zeros(3)) == float("inf")


def test_vgg16_flops_match_published_macs():
    taps = parse_taps("0,5,10,17,28", "vgg16", 224)
    # VGG16 convolutions: 15.35 GMACs at 224x224; the classifier adds 0.12 GMACs
    assert flops_per_image(taps) / 2 == pytest.approx(15.35e9, rel=5e-3)
    assert flops_per_image(taps, full=True) / 2 == pytest.approx(15.47e9, rel=5e-3)
    # features.10 needs well under half the compute of the full network (the cut-graph argument)
    assert flops_per_image(parse_taps("10", "vgg16", 224)) / flops_per_image(taps, full=True) < 0.4
    # 64x224x224 + 128x112x112 + 256x56x56 + 512x28x28 + 512x14x14 floats, 4 bytes each
    assert output_bytes_per_image(taps) == 4 * (64 * 224 * 224 + 128 * 112 * 112 + 256 * 56 * 56
                                                + 512 * 28 * 28 + 512 * 14 * 14)


# ---------------------------------------------------------------- interleaving


def test_interleaved_rotates_order_and_counts_calls():
    calls: list[str] = []
    fns = {n: (lambda n=n: calls.append(n)) for n in "abc"}
    times = interleaved(fns, warmup=1, repeats=3)
    assert calls[:3] == ["a", "b", "c"]  # warm-up round
    assert calls[3:] == ["a", "b", "c", "b", "c", "a", "c", "a", "b"]  # each round starts one later
    assert {k: len(v) for k, v in times.items()} == {"a": 3, "b": 3, "c": 3}
    assert all(t >= 0 for v in times.values() for t in v)


def test_interleaved_needs_a_repeat():
    with pytest.raises(ValueError, match="repeats"):
        interleaved({"a": lambda: None}, repeats=0)


def test_time_box_interrupts_a_long_block():
    with pytest.raises(TimeoutError, match="longer than"):
        with time_box(0.05):
            while True:
                time.sleep(0.01)


# ---------------------------------------------------------------- result structure


def _fake_result(with_scaling: bool = True) -> dict:
    taps = parse_taps("0,5,10,17,28", "vgg16", 224)
    cfg = BenchConfig(batch_sizes=(1, 8), repeats=3, threads=2)
    times = {1: {"torch-hooks": [0.5, 0.6, 0.55], "ort-cpu": [0.1, 0.12, 0.11]},
             8: {"torch-hooks": [2.0, 2.2, 2.0], "ort-cpu": [0.5, 0.5, 0.6]}}
    gemm = GemmRate(gflops=300.0, size=2048, by_library={"numpy": 300.0})
    backends = [Backend("torch-hooks", lambda x: None, 0.0, "hooks"), Backend("ort-cpu", lambda x: None, 0.1, "ort"),
                Skipped("ort-cuda", "no NVIDIA driver")]
    scaling = None
    if with_scaling:
        def fake(name):
            return Backend(name, lambda x: None, 0.0, name)

        models = [ScalingModel("depth", f"to features.{d}", parse_taps(str(d), "vgg16", 224), fake(f"d{d}"))
                  for d in (0, 10)]
        models.append(ScalingModel("taps", "broken", taps, Skipped("broken", "export failed")))
        models.append(ScalingModel("full", "full", taps, fake("full"), full=True))
        scaling = run_scaling(models, batch=2, input_size=32, warmup=0, repeats=2, gemm=gemm)
    env = {"date": "2026-01-01T00:00:00+00:00", "cpu": "test cpu", "usable_cpus": 2, "threads": 2,
           "versions": {"torch": "x", "onnxruntime": "y"}, "gpu": None}
    return assemble(cfg=cfg, model="vgg16", taps=taps, weights={"source": "random"}, env=env, gemm=gemm,
                    backends=backends, times=times, scaling=scaling)


def test_assemble_ratios_bound_share_and_headline():
    res = _fake_result(with_scaling=False)
    row = next(r for r in res["results"] if r["backend"] == "ort-cpu" and r["batch"] == 8)
    assert row["images_per_s"] == pytest.approx(8 / 0.5)
    assert row["vs_torch_hooks"] == pytest.approx(2.0 / 0.5)
    bound = 300e9 / flops_per_image(parse_taps("28", "vgg16", 224))
    assert res["bound"]["images_per_s"] == pytest.approx(bound)
    assert row["bound_share"] == pytest.approx(16.0 / bound)
    hooks = next(r for r in res["results"] if r["backend"] == "torch-hooks" and r["batch"] == 8)
    assert hooks["vs_torch_hooks"] == pytest.approx(1.0)
    # torch-hooks runs the classifier too: its executed GFLOP/s counts the full network
    assert hooks["achieved_gflops"] == pytest.approx(4.0 * flops_per_image(parse_taps("28"), full=True) / 1e9)
    h = res["headline"]
    assert h["batch"] == 8 and h["ort_cpu_vs_torch_hooks"] == pytest.approx(4.0)
    assert h["taps_to_features10_vs_full"] is None
    assert {b["name"]: b.get("skipped") for b in res["backends"]}["ort-cuda"] == "no NVIDIA driver"


def test_bound_uses_the_interleaved_sgemm():
    from featuremaps.bench.suite import summarize_main
    from featuremaps.bench.timing import GEMM_KEY

    taps = parse_taps("28", "vgg16", 224)
    gemm = GemmRate(gflops=50.0, size=1024, by_library={"numpy": 50.0})
    # the probe took 0.02 s for 2 * 1024^3 FLOP in these rounds: 107.4 GFLOP/s beats the 50 measured alone
    # (numpy's best round, 0.02 s, beats torch's 0.03 s; the slower 0.05 s round does not count)
    times = {8: {"ort-cpu": [2.0, 2.0], GEMM_KEY + "numpy": [0.05, 0.02], GEMM_KEY + "torch": [0.03, 0.04]}}
    (row,) = summarize_main(times, taps, gemm)  # the probes are not backend rows
    g = 2 * 1024 ** 3 / 0.02 / 1e9
    assert row["gemm_gflops"] == pytest.approx(g)
    assert row["bound_images_per_s"] == pytest.approx(g * 1e9 / flops_per_image(taps))
    assert row["bound_share"] == pytest.approx(4.0 / row["bound_images_per_s"])
    # and a faster sgemm measured alone wins over a slow interleaved one (a bound is never lowered)
    (row,) = summarize_main(times, taps, GemmRate(gflops=500.0, size=1024, by_library={"numpy": 500.0}))
    assert row["gemm_gflops"] == 500.0


def test_scaling_rows_and_json_roundtrip(tmp_path):
    res = _fake_result()
    rows = {r["label"]: r for r in res["scaling"]["rows"]}
    assert rows["broken"]["skipped"] == "export failed"
    assert rows["full"]["vs_full"] == pytest.approx(1.0)
    assert rows["to features.0"]["flops_per_image"] < rows["to features.10"]["flops_per_image"]
    assert res["headline"]["taps_to_features10_vs_full"] == pytest.approx(rows["to features.10"]["vs_full"])
    text = json.dumps(json_ready(res), allow_nan=False)  # strict JSON: NaN ratios become null
    back = json.loads(text)
    assert back["format"] == "featuremaps-bench/1"
    assert set(back) >= {"environment", "config", "model", "gemm", "bound", "backends", "results", "scaling",
                         "headline"}
    assert json_ready({"r": float("nan"), "x": np.float32(2.0)}) == {"r": None, "x": 2.0}


def test_markdown_and_plot():
    res = _fake_result()
    md = format_markdown(res)
    assert "| ort-cpu | 8 |" in md and "4.00x" in md
    assert "ort-cuda: no NVIDIA driver" in md
    assert "## Scaling" in md and "skipped: export failed" in md
    from featuremaps.bench.plot import throughput_figure

    fig = throughput_figure(res)
    assert len(fig.axes) == 2
    assert {line.get_label() for line in fig.axes[0].get_lines()} >= {"torch-hooks", "ort-cpu"}


# ---------------------------------------------------------------- end to end (tiny)


@pytest.mark.slow
def test_bench_cli_writes_json_markdown_png(small_model, tmp_path, capsys):
    from featuremaps.cli import main

    out = tmp_path / "res" / "tiny.json"
    rc = main(["bench", "--model", str(small_model.path), "--batch-sizes", "2", "--repeats", "2",
               "--warmup", "0", "--backends", "torch-hooks,ort-cpu,ort-cuda", "--no-scaling",
               "--gemm-size", "256", "-o", str(out)])
    assert rc == 0
    res = json.loads(out.read_text())
    assert out.with_suffix(".md").is_file() and out.with_suffix(".png").stat().st_size > 1000
    assert res["model"]["input_size"] == 64 and res["model"]["deepest"] == "features.28"
    assert {(r["backend"], r["batch"]) for r in res["results"]} == {
        ("torch-hooks", 2), ("ort-cpu", 2)}
    assert all(r["n"] == 2 and r["images_per_s"] > 0 for r in res["results"])
    assert res["environment"]["threads"] >= 1 and res["environment"]["versions"]["numpy"]
    cuda = next(b for b in res["backends"] if b["name"] == "ort-cuda")
    assert "skipped" in cuda or cuda["provider"] == "cuda"
    assert "| ort-cpu |" in capsys.readouterr().out


def test_int8_backend_model_is_built_once_and_gated(tmp_path):
    """On the checked-in features.0 model at 32x32: calibrating and gating the five-tap 64x64
    model took half a minute, and building once is the point here, not the quantizer."""
    import shutil

    from featuremaps.cli.bench import int8_cached
    from featuremaps.export.onnx_export import read_metadata

    fp32 = tmp_path / "cut.onnx"
    shutil.copyfile(Path(__file__).parents[1] / "models" / "vgg16-features0-32.onnx", fp32)
    int8 = int8_cached(fp32)
    assert int8 == tmp_path / "cut-int8.onnx" and int8.is_file()
    assert read_metadata(int8)["precision"] == "int8"
    mtime = int8.stat().st_mtime_ns
    assert int8_cached(fp32) == int8 and int8.stat().st_mtime_ns == mtime  # cached, not rebuilt


def test_torch_hooks_backend_for_a_gpu_builds_on_a_cpu():
    """The GPU branch of the seed's backend is built (not run) here: it used to import a name a
    shim no longer exported, an ImportError on the first GPU machine."""
    from featuremaps.bench.backends import make_torch_hooks

    backend = make_torch_hooks(None, (), device="cuda:0")
    assert backend.name == "torch-hooks" and callable(backend.run)


def test_hooked_forward_stops_after_the_deepest_tap_and_clones():
    import torch
    from torch import nn

    from featuremaps.export.reference import hooked_forward

    calls = []
    net = nn.Sequential()
    net.features = nn.Sequential(nn.Conv2d(3, 2, 1), nn.ReLU(inplace=True), nn.Conv2d(2, 2, 1))
    net.features[2].register_forward_hook(lambda *a: calls.append("features.2"))
    taps = parse_taps("0", "vgg16", 32)  # features.0, the first conv
    x = torch.randn(1, 3, 4, 4)
    with torch.inference_mode():
        got = hooked_forward(net, x, taps, full=False)["features.0"]
        conv = net.features[0](x)
    assert calls == []  # stopped after features.0: features.2 never ran
    np.testing.assert_array_equal(got.numpy(), conv.numpy())  # the clone, before the in-place ReLU
    assert (got < 0).any()
