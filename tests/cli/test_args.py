"""Arguments are checked when parsed: each bad value is one line on stderr and exit status 2,
before any model is built or file written."""

from __future__ import annotations

import pytest

from featuremaps.cli import main
from featuremaps.cli.show import check_channels
from featuremaps.contracts import Tap
from featuremaps.errors import ArgumentError


def _exit_line(capsys, argv) -> str:
    """Run ``argv``; the usage error must exit 2 with one line on stderr, which is returned."""
    with pytest.raises(SystemExit) as e:
        main(argv)
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and len(err.splitlines()) == 1, err
    return err


@pytest.mark.parametrize("seed", ["-1", str(2**32), "1e26", "x"])
def test_seed_out_of_range(capsys, seed):
    err = _exit_line(capsys, ["export", "--seed", seed, "-o", "never.onnx"])
    assert "--seed" in err and "seed must be" in err


def test_seed_limits_are_accepted():
    from featuremaps.cli._args import seed_arg

    assert seed_arg("0") == 0 and seed_arg(str(2**32 - 1)) == 2**32 - 1


@pytest.mark.parametrize("size", ["31", "4097", "100000", "0"])
@pytest.mark.parametrize("command", ["layers", "export", "extract"])
def test_input_size_out_of_range(capsys, tmp_path, command, size):
    argv = {"layers": ["layers"], "export": ["export", "-o", str(tmp_path / "m.onnx")],
            "extract": ["extract", "x.jpg", "-o", str(tmp_path / "s.zarr")]}[command]
    err = _exit_line(capsys, argv + ["--input-size", size])
    assert "input size must be in 32..4096" in err and size in err


def test_export_output_that_is_a_folder(capsys, tmp_path):
    err = _exit_line(capsys, ["export", "-o", str(tmp_path)])
    assert "is a folder" in err


@pytest.mark.parametrize("argv", [["bench", "-o", "DIR"], ["parity", "--json", "DIR"]], ids=["bench", "parity"])
def test_other_output_files_that_are_folders(capsys, tmp_path, argv):
    err = _exit_line(capsys, [str(tmp_path) if a == "DIR" else a for a in argv])
    assert "is a folder" in err


@pytest.mark.parametrize("argv", [["demo", "-o", "FILE"], ["show", "img.jpg", "-o", "FILE"],
                                  ["extract", "img.jpg", "-o", "FILE"]], ids=["demo", "show", "extract"])
def test_output_folders_that_are_files(capsys, tmp_path, argv):
    f = tmp_path / "a-file"
    f.write_text("keep me")
    err = _exit_line(capsys, [str(f) if a == "FILE" else a for a in argv])
    assert "is an existing file" in err and f.read_text() == "keep me"


def test_export_without_o_never_overwrites(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "models").mkdir()
    existing = tmp_path / "models" / "vgg16.onnx"
    existing.write_bytes(b"an earlier export")
    rc = main(["export", "--layers", "0", "--input-size", "32", "--no-verify"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1
    assert "'models/vgg16.onnx' exists" in err and "-o" in err and "--force" in err
    assert existing.read_bytes() == b"an earlier export"


@pytest.mark.slow
def test_export_force_overwrites_the_default(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "models").mkdir()
    existing = tmp_path / "models" / "vgg16.onnx"
    existing.write_bytes(b"an earlier export")
    assert main(["export", "--layers", "0", "--input-size", "32", "--no-verify", "--force"]) == 0
    assert existing.read_bytes()[:20] != b"an earlier export"[:20]


def test_show_image_and_store_conflict(capsys, tmp_path, sample_paths):
    rc = main(["show", str(sample_paths[0]), "--store", str(tmp_path / "s.zarr"), "-o", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and "not both" in err


def test_show_needs_image_or_store(capsys, tmp_path):
    rc = main(["show", "-o", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "pass an IMAGE file, or --store" in err


@pytest.mark.parametrize("n", ["0", "65", "1000"])
def test_show_channels_out_of_range_at_parse_time(capsys, n):
    err = _exit_line(capsys, ["show", "img.jpg", "--channels", n])
    assert "--channels must be in 1..64" in err


def test_show_channels_larger_than_the_widest_tap():
    narrow = Tap(name="t", index=0, alias="t", kind="Conv2d", shape=(8, 4, 4), macs=1, total_macs=2)
    check_channels(8, (narrow,))
    with pytest.raises(ArgumentError, match="--channels 9 is more than the 8 channels"):
        check_channels(9, (narrow,))


def test_errors_are_one_line_not_usage(capsys):
    """A usage error names the command and points to --help, in one line (no usage block)."""
    err = _exit_line(capsys, ["layers", "--model", "nope"])
    assert err.startswith("featuremaps layers: error:") and err.endswith("(see featuremaps layers --help)")


@pytest.mark.parametrize("argv, match", [
    (["extract", "x.jpg", "-o", "s.zarr", "--batch-size", "0"], "value must be >= 1, got 0"),
    (["extract", "x.jpg", "-o", "s.zarr", "--actors", "0"], "value must be >= 1, got 0"),
    (["bench", "--repeats", "0"], "--repeats must be in 1..10000, got 0"),
    (["bench", "--warmup", "-1"], "--warmup must be in 0..10000, got -1"),
    (["show", "--store", "s.zarr", "--index", "-1"], "--index must be >= 0, got -1"),
    (["parity", "--max-images", "0"], "value must be >= 1, got 0"),
], ids=["batch-size", "actors", "repeats", "warmup", "index", "max-images"])
def test_counts_out_of_range(capsys, argv, match):
    assert match in _exit_line(capsys, argv)


@pytest.mark.parametrize("argv,value", [
    (["extract", "x.jpg", "-o", "s.zarr", "--gpus-per-actor"], "-1"),
    (["extract", "x.jpg", "-o", "s.zarr", "--gpus-per-actor"], "nan"),
    (["export", "-o", "m.onnx", "--gate-cosine"], "1.5"),
    (["export", "-o", "m.onnx", "--gate-rel-l2"], "inf"),
    (["bench", "--compile-budget"], "-5"),
    (["bench", "--compile-budget"], "soon"),
], ids=["gpus-negative", "gpus-nan", "cosine-above-1", "rel-l2-inf", "budget-negative", "budget-text"])
def test_numbers_out_of_range_at_parse_time(capsys, argv, value):
    """Before: --gpus-per-actor -1 reached Ray and ended in a ValueError traceback; nan passed every check."""
    err = _exit_line(capsys, [*argv, value])
    assert f"{argv[-1]} must be a" in err and value in err


def test_float_in_accepts_its_limits():
    from featuremaps.cli._args import float_in

    assert float_in(-1, 1, "--x")("-1") == -1.0 and float_in(-1, 1, "--x")("1") == 1.0
    assert float_in(0, None, "--x")("0.25") == 0.25


@pytest.mark.parametrize("argv, match", [
    (["extract", "x.jpg", "-o", "s.zarr", "--threads", "100000"], "--threads must be in 1..1024"),
    (["extract", "x.jpg", "-o", "s.zarr", "--threads", str(2**31)], "--threads must be in 1..1024"),
    (["bench", "--threads", "99999999999999999999"], "--threads must be in 1..1024"),
    (["bench", "--batch-sizes=1,100000"], "--batch-sizes must be integers in 1..256 (256 images at 224²"),
    (["bench", "--batch-sizes=99999999999999999999"], "24 GB machine"),
    (["bench", "--scaling-batch", "100000"], "--scaling-batch must be in 1..256"),
    (["bench", "--gemm-size", "99999999999999999999"], "--gemm-size must be in 1..16384 (three n x n fp32"),
    (["bench", "--repeats", "99999999999999999999"], "--repeats must be in 1..10000"),
    (["bench", "--warmup", "99999999999999999999"], "--warmup must be in 0..10000"),
], ids=["extract-threads", "extract-threads-2**31", "bench-threads", "batch-sizes", "batch-sizes-huge",
        "scaling-batch", "gemm-size", "repeats", "warmup"])
def test_sizes_with_an_upper_bound(capsys, argv, match):
    """Before: --threads 100000 hung, 2**31 and a huge --gemm-size were tracebacks, --batch-sizes=100000
    was OOM-killed, a huge --repeats ran until killed."""
    assert match in _exit_line(capsys, argv)


def test_batch_memory_scales_with_the_input_size():
    from featuremaps.cli.bench import check_batch_memory

    check_batch_memory((1, 256), 8, 224)
    with pytest.raises(ArgumentError, match="at 448² use batch sizes up to 64"):
        check_batch_memory((1, 65), 8, 448)


def test_bench_backend_named_twice(capsys):
    """Before: --backends ort-cpu,ort-cpu built and timed the same backend twice."""
    assert main(["bench", "--backends", "ort-cpu,ort-cpu", "--no-scaling"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "featuremaps: error: --backends names ort-cpu more than once; list each backend once"


def test_paths_that_exist_but_are_the_wrong_kind_are_named_as_such(tmp_path, capsys, sample_paths):
    """They used to be reported as "not found"."""
    from featuremaps.cli import main

    (tmp_path / "dir.onnx").mkdir()
    (tmp_path / "notes.txt").write_text("x")
    assert main(["extract", str(sample_paths[0]), "--model", str(tmp_path / "dir.onnx"), "-o", str(tmp_path / "s.zarr")]) == 2
    assert "dir.onnx' is a folder; export one with" in capsys.readouterr().err
    assert main(["parity", "--images", str(tmp_path / "notes.txt")]) == 2
    assert "notes.txt' is not a folder; pass a folder of JPEG/PNG files" in capsys.readouterr().err


def test_demo_with_bad_layers_leaves_no_output_folder(tmp_path, capsys):
    from featuremaps.cli import main

    assert main(["demo", "--layers", "99", "-o", str(tmp_path / "demo")]) == 2
    assert "99" in capsys.readouterr().err and not (tmp_path / "demo").exists()


def test_zoo_model_names_are_case_insensitive():
    """`--model VGG16` is vgg16: one cache file, named so that `cache` lists and clears it."""
    import argparse

    from featuremaps.cli._args import ModelSpec

    ns = argparse.Namespace(model="VGG16", layers=None, weights=None, seed=None, input_size=64)
    assert ModelSpec.from_args(ns).model == "vgg16"
    ns.model = "Models/My.onnx"
    assert ModelSpec.from_args(ns).model == "Models/My.onnx"  # a path keeps its case
