"""A model that never returns (an ONNX Loop of 2**63 - 1 iterations) stops on Ctrl-C and SIGTERM.

ONNX Runtime never hands control back to Python during such a run, so before this the signal
waited for ever. The model now runs in a thread of its own while the main thread waits; the
signal stops the run (``RunOptions.terminate``) and extract ends as on any interrupt: batches
already computed committed, the resume line printed, exit 130.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import hostile_models as hm  # noqa: E402 - tests/engine is on sys.path (pytest's prepend import mode)
from featuremaps import open_store
from featuremaps.cli import main
from featuremaps.engine.extractor import Extractor
from featuremaps.engine.openvino_backend import unavailable_reason as openvino_unavailable

STOP_LIMIT_S = 10


def _images(folder: Path) -> Path:
    """Two black images (their batch finishes: the Loop runs 0 times) sorted before four bright ones."""
    import cv2

    folder.mkdir()
    for i in range(2):
        cv2.imwrite(str(folder / f"a{i}.png"), np.zeros((12, 12, 3), np.uint8))
    for i in range(4):
        cv2.imwrite(str(folder / f"b{i}.png"), np.full((12, 12, 3), 200 + i, np.uint8))
    return folder


def _start(argv: list[str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "featuremaps", *argv], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _wait_for(predicate, proc, limit_s: float = 60) -> None:
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline and proc.poll() is None and not predicate():
        time.sleep(0.02)
    assert proc.poll() is None, proc.communicate()
    assert predicate(), "the run did not get as far as the hanging batch"


def _stop(proc, sig) -> tuple[float, str]:
    """Send ``sig``; seconds until ``proc`` exited, and its stderr."""
    proc.send_signal(sig)
    t0 = time.monotonic()
    try:
        _, err = proc.communicate(timeout=STOP_LIMIT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail(f"{sig.name} did not stop the run within {STOP_LIMIT_S} s: {proc.communicate()}")
    return time.monotonic() - t0, err


@pytest.mark.slow
@pytest.mark.parametrize("provider, sig", [("cpu", signal.SIGINT), ("cpu", signal.SIGTERM), ("openvino", signal.SIGINT)],
                         ids=["ctrl-c", "sigterm", "openvino-ctrl-c"])
def test_extract_of_a_never_returning_model_stops_and_keeps_the_store_resumable(provider, sig, tmp_path):
    """OpenVINO cannot stop a running Loop node (InferRequest.cancel waits for it): its run is left
    behind after 2 s (OpenVINO copied the batch in, so nothing of ours is still read)."""
    if provider == "openvino" and openvino_unavailable() is not None:
        pytest.skip(openvino_unavailable())
    model = hm.loop_forever(tmp_path / "loop.onnx", bright_only=True)
    imgs, out = _images(tmp_path / "imgs"), tmp_path / "out.zarr"
    argv = ["extract", str(imgs), "--model", str(model), "-o", str(out), "--provider", provider, "--batch-size", "2",
            "--workers", "0", "--no-progress"]
    proc = _start(argv)
    # batch 0 (black) is committed; batch 1 (bright) is in the Loop for good
    _wait_for(lambda: (out / "status" / "c").is_dir() and len(os.listdir(out / "status" / "c")) >= 1, proc)
    time.sleep(0.5)
    seconds, err = _stop(proc, sig)
    assert proc.returncode == 130, (seconds, err)
    assert "Resume with: " in err and "--resume" in err and "Traceback" not in err, err
    store = open_store(out)
    assert list(store.status) == ["ok", "ok", "pending", "pending", "pending", "pending"]
    assert main(["verify", str(out)]) == 0  # every chunk on disk reads back as written


@pytest.mark.slow
def test_show_of_a_never_returning_model_stops_on_ctrl_c(tmp_path):
    model = hm.loop_forever(tmp_path / "loop.onnx")
    imgs = _images(tmp_path / "imgs")
    proc = _start(["show", str(imgs / "b0.png"), "--model", str(model), "-o", str(tmp_path / "figs"),
                   "--provider", "cpu"])
    time.sleep(4)  # imports, session, then the Loop
    assert proc.poll() is None, proc.communicate()
    seconds, err = _stop(proc, signal.SIGINT)
    assert proc.returncode == 130 and "interrupted" in err and "Traceback" not in err, err


def test_extractor_run_raises_keyboard_interrupt_and_the_next_run_works(tmp_path):
    """In a library caller's main thread: Ctrl-C ends ``run`` with KeyboardInterrupt within a
    second, the hung run is stopped (not left computing), and the Extractor stays usable."""
    model = hm.loop_forever(tmp_path / "loop.onnx", bright_only=True)
    with Extractor(model, provider="cpu") as ex:
        timer = threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGINT))
        timer.start()
        t0 = time.monotonic()
        with pytest.raises(KeyboardInterrupt):
            ex.run(np.full((1, 8, 8, 3), 255, np.uint8))
        assert time.monotonic() - t0 < 5
        watchdog = threading.Timer(10, os.kill, (os.getpid(), signal.SIGINT))
        watchdog.start()
        try:  # the model thread serves the next run: the Loop was stopped, not left computing
            black = ex.run(np.zeros((2, 8, 8, 3), np.uint8))
        except KeyboardInterrupt:
            pytest.fail("the interrupted run was left computing: the next run never started")
        finally:
            watchdog.cancel()
        assert black["features.0"].shape == (2, 3, 8, 8)
