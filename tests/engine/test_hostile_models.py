"""Hostile model files: every refusal is one line naming the file (exit 2), memory stays bounded.

Each model has valid featuremaps metadata and a graph whose declared input and outputs agree with
it (so the open-time checks of test_validate.py pass); the attack is in what the graph needs or
does (tests/engine/hostile_models.py builds them).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import hostile_models as hm  # noqa: E402 - tests/engine is on sys.path (pytest's prepend import mode)
from featuremaps.cli import main
from featuremaps.engine.extractor import Extractor
from featuremaps.engine.session import MEMORY_ENV, model_memory_limit, parse_size
from featuremaps.errors import ArgumentError, ModelFileError

REFUSED = {  # name: (builder, what the line says)
    "custom-domain": (hm.custom_domain, r"ONNX Runtime cannot load .*com\.evil:Evil.* not a registered"),
    "opset-99": (hm.opset, r"ONNX Runtime cannot load .*(opset|official)"),
    "huge-initializer": (hm.huge_initializer, r"ONNX Runtime cannot load .*Initializer 'w' declares a size of 4294967296"),
    "external-data": (lambda p: hm.external_initializer(p, "w.bin", 2**32),
                      r"tensor 'w' keeps its data in another file \('w\.bin'\); featuremaps reads single-file"),
    "external-data-abs": (lambda p: hm.external_initializer(p, "/etc/passwd", 16),
                          r"keeps its data in another file \('/etc/passwd'\)"),
    "wrong-shape": (hm.wrong_shape, r"tap 'features\.0' is computed as \[\d, 6, 8, 8\] for a batch of \d but declared "
                                    r"\[\d, 3, 8, 8\]"),
}


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    import cv2

    root = tmp_path_factory.mktemp("imgs")
    for i in range(2):
        cv2.imwrite(str(root / f"i{i}.png"), np.full((12, 12, 3), 40 * i, np.uint8))
    return root


def _one_line(capsys) -> str:
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert err and err[-1].startswith("featuremaps: error: ") and "Traceback" not in "\n".join(err), err
    assert not any(line.startswith(("featuremaps: error", "[E:", "\x1b")) for line in err[:-1]), err  # no ORT log
    return err[-1]


@pytest.mark.parametrize("command", ["extract", "show"])
@pytest.mark.parametrize("case", list(REFUSED))
def test_hostile_model_is_one_line_exit_2(case, command, images, tmp_path, capsys):
    build, match = REFUSED[case]
    model = build(tmp_path / f"{case}.onnx")
    argv = ([command, str(images), "--model", str(model), "-o", str(tmp_path / "out.zarr"), "--provider", "cpu",
             "--no-progress", "--workers", "0"] if command == "extract"
            else [command, str(images / "i1.png"), "--model", str(model), "-o", str(tmp_path / "figs"),
                  "--provider", "cpu"])
    assert main(argv) == 2
    line = _one_line(capsys)
    assert str(model) in line, line
    assert __import__("re").search(match, line), line


def test_external_data_is_never_read(tmp_path):
    """The check is on the graph: the file the initializer names is not opened (a FIFO would block)."""
    os.mkfifo(tmp_path / "w.bin")
    model = hm.external_initializer(tmp_path / "m.onnx", "w.bin", 64)
    with pytest.raises(ModelFileError, match="keeps its data in another file"):
        Extractor(model, provider="cpu")


def test_computed_shape_is_checked_without_io_binding_too(tmp_path):
    """``run`` (OpenVINO's path, show, parity) and ``run_into`` (extract) both refuse it."""
    with Extractor(hm.wrong_shape(tmp_path / "m.onnx"), provider="cpu") as ex:
        batch = np.zeros((2, 8, 8, 3), np.uint8)
        with pytest.raises(ModelFileError, match=r"computed as \[2, 6, 8, 8\] for a batch of 2 but declared"):
            ex.run(batch)
        ring = ex.output_ring(2, slots=1)
        with pytest.raises(ModelFileError, match=r"computed as \[1, 6, 8, 8\] for a batch of 1 but declared"):
            ex.run_into(batch, ring.acquire())


def test_memory_limit_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv(MEMORY_ENV, "64MiB")
    assert model_memory_limit() == 64 << 20
    monkeypatch.delenv(MEMORY_ENV)
    assert model_memory_limit() >= 256 << 20
    assert parse_size("2GiB") == 2 << 30 and parse_size("1.5k") == 1536
    for bad in ("lots", "-1G", "0"):
        with pytest.raises(ArgumentError, match=MEMORY_ENV):
            parse_size(bad)


def _peak_rss(argv: list[str], limit: str) -> tuple[int, str, int]:
    """``(exit status, stderr, peak RSS in bytes)`` of ``featuremaps argv`` in a child process."""
    env = dict(os.environ, **{MEMORY_ENV: limit})
    # through a fresh, small interpreter: a child's ru_maxrss counts the RSS of the process that
    # forked it (Linux carries the high-water mark across exec), and pytest's own may be gigabytes
    probe = ("import resource, subprocess, sys; r = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, "
             "stderr=subprocess.PIPE, text=True); sys.stderr.write(r.stderr); "
             "print(r.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")
    res = subprocess.run([sys.executable, "-c", probe, sys.executable, "-m", "featuremaps", *argv],
                         capture_output=True, text=True, env=env, timeout=600)
    rc, peak_kb = map(int, res.stdout.split())
    return rc, res.stderr, peak_kb * 1024


@pytest.mark.slow
@pytest.mark.parametrize("command", ["extract", "show"])
def test_an_expand_bomb_is_refused_within_the_memory_bound(command, images, tmp_path):
    """With the bound at 64 MiB, graphs that expand a value to 512 MiB (computed from the input,
    or constant: ONNX Runtime would fold that while building the session, outside any arena) are
    refused in one line, and the process never holds the 512 MiB: its peak RSS stays within
    128 MiB of the same command on a harmless model."""
    def argv(model: Path, tag: str) -> list[str]:
        out = tmp_path / f"{tag}-{command}"
        if command == "extract":
            return [command, str(images), "--model", str(model), "-o", str(out) + ".zarr", "--provider", "cpu",
                    "--no-progress", "--workers", "0"]
        return [command, str(images / "i1.png"), "--model", str(model), "-o", str(out), "--provider", "cpu",
                "--channels", "3"]

    status, err, control = _peak_rss(argv(hm.relu(tmp_path / "relu.onnx"), "relu"), "64MiB")
    assert status == 0, err
    for constant in (False, True):
        model = hm.expand(tmp_path / f"expand-{constant}.onnx", 512 << 20, constant=constant)
        status, err, peak = _peak_rss(argv(model, f"expand-{constant}"), "64MiB")
        lines = err.strip().splitlines()
        assert status == 2 and "Traceback" not in err, err
        assert lines[-1].startswith(f"featuremaps: error: {model}: a batch of ") and "(64 MiB)" in lines[-1], err
        assert peak < control + (128 << 20), (peak >> 20, control >> 20)
