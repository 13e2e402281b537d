"""DecodePool: worker processes writing into shared memory; crashes and hangs become error rows."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from hostile import GOOD, ODD_NAME, make_corpus  # noqa: E402

from featuremaps.engine.decode_pool import DecodePool, decode_paths, default_decoder  # noqa: E402
from featuremaps.engine.preprocess import DecodeBudget, ImageDecodeError, Preprocessing, preprocess_file  # noqa: E402

PRE = Preprocessing(size=(32, 32))


def faulty_decoder(path, pre, budget, out):
    """A decoder hook (runs in the workers): dies on 'crash', hangs on 'hang', else decodes."""
    name = os.path.basename(path)
    if name.startswith("crash"):
        os.kill(os.getpid(), signal.SIGKILL)
    if name.startswith("hang"):
        time.sleep(120)
    default_decoder(path, pre, budget, out)


def _shm_segments() -> set[str]:
    return {n for n in os.listdir("/dev/shm") if n.startswith("psm_")}


@pytest.mark.parametrize("layout", ["float_nchw", "uint8_nhwc"])
def test_pool_equals_in_process_decode(sample_paths, layout):
    pre = Preprocessing(size=(32, 32), input_layout=layout)
    paths = [str(p) for p in sample_paths]
    ref = np.stack([preprocess_file(p, pre) for p in paths])
    with DecodePool(pre, workers=2, batch_size=len(paths), slots=2) as pool:
        for _ in range(2):  # second round reuses the other slot
            got = pool.decode(paths)
            assert got.errors == {} and got.ok_rows == list(range(len(paths)))
            assert got.inputs.dtype == ref.dtype
            np.testing.assert_array_equal(got.inputs, ref)
            pool.release(got)


def test_shared_memory_is_released(sample_paths):
    before = _shm_segments()
    with DecodePool(PRE, workers=2, batch_size=4, slots=3) as pool:
        name = pool._shm.name.lstrip("/")
        assert name in _shm_segments()
        got = pool.decode([str(sample_paths[0])])
        view = got.inputs  # a view still held at close must not keep the segment
    assert name not in _shm_segments() and _shm_segments() <= before
    assert view.shape == (1, 3, 32, 32)


def test_hostile_corpus_in_the_pool_gives_error_rows(tmp_path, sample_paths):
    folder = tmp_path / "c"
    expected = make_corpus(folder, Path(sample_paths[0]))
    names = sorted(expected) + [*GOOD, ODD_NAME]
    paths = [os.path.join(folder, n) for n in names]
    with DecodePool(PRE, workers=2, batch_size=len(paths), timeout_s=30) as pool:
        got = pool.decode(paths)
    assert {names[r] for r in got.errors} == set(expected)
    for r, reason in got.errors.items():
        assert pytest.importorskip("re").search(expected[names[r]], reason), (names[r], reason)
    assert [names[r] for r in got.ok_rows] == [*GOOD, ODD_NAME]
    ref = np.stack([preprocess_file(os.path.join(folder, n), PRE) for n in (*GOOD, ODD_NAME)])
    np.testing.assert_array_equal(got.inputs, ref)


def test_worker_crash_and_hang_leave_rows_pending(tmp_path, sample_paths):
    """A worker killed or hung on a file twice (a fresh worker the second time) leaves the row
    pending, not an error: that is no verdict on the file."""
    data = Path(sample_paths[0]).read_bytes()
    names = ["a.jpg", "crash.jpg", "b.jpg", "hang.jpg", "c.jpg"]
    for n in names:
        (tmp_path / n).write_bytes(data)
    paths = [str(tmp_path / n) for n in names]
    with DecodePool(PRE, workers=2, batch_size=5, timeout_s=3, decoder=faulty_decoder) as pool:
        t0 = time.monotonic()
        got = pool.decode(paths)
        assert time.monotonic() - t0 < 60
        assert got.errors == {} and set(got.pending) == {1, 3}
        assert got.pending[1] == "the decoder process died (killed by signal 9), 2 times"
        assert got.pending[3] == "decoding took over 3 s (worker stopped or stuck), 2 times"
        assert got.ok_rows == [0, 2, 4]
        pool.release(got)
        again = pool.decode([paths[0], paths[2]])  # replaced workers carry on
        assert again.errors == {} and again.inputs.shape == (2, 3, 32, 32)


def test_load_batch_names_the_bad_file(tmp_path, sample_paths):
    bad = tmp_path / "bad\n.jpg"
    bad.write_bytes(b"nope")
    paths = [str(p) for p in sample_paths[:2]] + [str(bad)]
    with pytest.raises(ImageDecodeError, match=r"bad\\n\.jpg: not a decodable image"):
        decode_paths(paths, PRE, budget=DecodeBudget(), workers=1)
    out = decode_paths([str(sample_paths[0])] * 8, PRE, budget=DecodeBudget(), workers=2, pool_threshold=1)
    np.testing.assert_array_equal(out, np.stack([preprocess_file(str(sample_paths[0]), PRE)] * 8))


def _extract_cmd(model, inputs, out, *extra):
    return [sys.executable, "-m", "featuremaps", "extract", *map(str, inputs), "--model", str(model),
            "-o", str(out), "--no-progress", "--batch-size", "4", *extra]


def test_ctrl_c_ends_an_extract_with_a_fifo_quickly(tmp_path, small_model, sample_paths):
    """A FIFO is refused up front (never opened for a blocking read); SIGINT still ends the run in seconds."""
    folder = tmp_path / "in"
    folder.mkdir()
    os.mkfifo(folder / "pipe.jpg")
    for i, p in enumerate(sample_paths[:3]):
        (folder / f"img{i}{p.suffix}").write_bytes(p.read_bytes())
    proc = subprocess.Popen(_extract_cmd(small_model.path, [folder], tmp_path / "o.zarr", "--workers", "1"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(3)
    proc.send_signal(signal.SIGINT)
    t0 = time.monotonic()
    out, err = proc.communicate(timeout=30)
    assert time.monotonic() - t0 < 30
    # finished (the FIFO an error row) before the signal, interrupted (130), or hit while exiting (-2)
    assert proc.returncode in (1, 130, -signal.SIGINT), err
    if proc.returncode == 1:
        assert "pipe.jpg: a named pipe (FIFO)" in err


@pytest.mark.slow
def test_extract_over_bombs_stays_under_peak_rss(tmp_path, small_model, sample_paths):
    """Header bombs are refused before allocation: the largest process of the run (the CLI, or a
    decode worker) peaks under 600 MB RSS, where decoding the 30000x30000 bomb alone would need
    2.7 GB. Measured in a fresh interpreter so no other child of pytest counts."""
    folder = tmp_path / "bombs"
    make_corpus(folder, Path(sample_paths[0]), odd_name=False)  # (non-UTF-8 names: the store's part)
    cmd = _extract_cmd(small_model.path, [folder], tmp_path / "b.zarr", "--workers", "2")
    probe = ("import resource, subprocess, sys; r = subprocess.run(sys.argv[1:], capture_output=True, text=True); "
             "print(r.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); "
             "sys.stderr.write(r.stdout + r.stderr)")
    res = subprocess.run([sys.executable, "-c", probe, *cmd], capture_output=True, text=True, timeout=300)
    rc, peak_kb = map(int, res.stdout.split())
    assert rc == 1 and "2 ok, 8 errors" in res.stderr, res.stderr  # dir.jpg is a folder to walk
    assert peak_kb < 600_000, f"peak RSS {peak_kb / 1e3:.0f} MB"


def test_files_queued_behind_a_crash_are_redone(tmp_path, sample_paths):
    """One worker holds two tasks; when it dies on the first, the second is decoded by its replacement."""
    data = Path(sample_paths[0]).read_bytes()
    for n in ("crash.jpg", "after.jpg"):
        (tmp_path / n).write_bytes(data)
    with DecodePool(PRE, workers=1, batch_size=2, decoder=faulty_decoder) as pool:
        got = pool.decode([str(tmp_path / "crash.jpg"), str(tmp_path / "after.jpg")])
    assert list(got.pending) == [0] and got.errors == {} and got.ok_rows == [1]


def test_workers_are_capped_by_images_and_cores(tmp_path, small_model, sample_paths, monkeypatch, caplog):
    """--workers 512 on 3 images starts 3 decode processes (counted), with a note; the core cap is
    4 per usable core."""
    import logging

    from featuremaps.cli import main
    from featuremaps.engine import decode_pool

    started = []
    real_spawn = DecodePool._spawn
    monkeypatch.setattr(DecodePool, "_spawn", lambda self: started.append(1) or real_spawn(self))
    imgs = [str(p) for p in sample_paths[:3]]
    with caplog.at_level(logging.INFO, logger="featuremaps.engine.decode_pool"):
        assert main(["extract", *imgs, "--model", str(small_model.path), "-o", str(tmp_path / "o.zarr"),
                     "--no-progress", "--workers", "512"]) == 0
    assert len(started) == 3
    assert "--workers 512: starting 3 decode worker(s) (no more than 3 image(s))" in caplog.text
    monkeypatch.setattr(decode_pool, "usable_cores", lambda: 2)
    assert decode_pool.worker_count(512, 10_000) == 8 and decode_pool.worker_count(None, 10_000) == 2
    assert decode_pool.worker_count(0, 10) == 0 and decode_pool.worker_count(5, 0) == 0
