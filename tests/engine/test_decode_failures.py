"""Infrastructure failures are not verdicts on files: a decode worker stopped (SIGSTOP) past the
timeout or killed (SIGKILL) leaves its row pending, the run goes on, the summary says to resume,
and ``--resume`` completes those rows; a corrupt file is still an error row."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from hostile import small_jpeg  # noqa: E402

from featuremaps.engine import pipeline  # noqa: E402
from featuremaps.engine.decode_pool import DecodePool, default_decoder  # noqa: E402

NAMES = ["a.jpg", "stop.jpg", "c.jpg", "kill.jpg", "corrupt.jpg", "f.jpg"]


def announcing_decoder(path, pre, budget, out):
    """Runs in the workers: while ``faults-on`` exists next to a ``stop*``/``kill*`` file, say which
    worker holds it (a file named ``KIND-PID`` in ``pids/``) and take a moment before decoding."""
    p = Path(path)
    if p.name.startswith(("stop", "kill")) and (p.parent / "faults-on").exists():
        (p.parent / "pids" / f"{p.name[:4]}-{os.getpid()}").touch()
        time.sleep(1.5)
    default_decoder(path, pre, budget, out)


def _signaller(pids: Path, done: threading.Event) -> threading.Thread:
    """Sends SIGSTOP or SIGKILL to each worker that announces itself, as an operator (or the OOM
    killer, or a laptop going to sleep) would."""
    def run():
        seen = set()
        while not done.is_set():
            for entry in os.listdir(pids):
                if entry not in seen:
                    seen.add(entry)
                    kind, pid = entry.split("-")
                    os.kill(int(pid), signal.SIGSTOP if kind == "stop" else signal.SIGKILL)
            time.sleep(0.02)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


@pytest.fixture()
def flaky_pool(monkeypatch):
    """extract's decode pool with :func:`announcing_decoder` and a 2 s decode timeout."""
    def open_decoder(pre, workers, batch_size, prefetch, budget, timeout_s):
        return DecodePool(pre, workers=workers, batch_size=batch_size, slots=prefetch + 2, budget=budget,
                          timeout_s=2.0, decoder=announcing_decoder)

    monkeypatch.setattr(pipeline, "_open_decoder", open_decoder)


def test_stopped_and_killed_workers_leave_rows_pending_and_resume_completes_them(tmp_path, small_model, capsys,
                                                                               flaky_pool):
    from featuremaps.cli import main
    from featuremaps.engine.store import open_store

    folder = tmp_path / "in"
    (folder / "pids").mkdir(parents=True)
    for n in NAMES:
        (folder / n).write_bytes(small_jpeg() if n != "corrupt.jpg" else small_jpeg()[:300])
    (folder / "faults-on").touch()
    out = tmp_path / "o.zarr"
    argv = ["extract", str(folder), "--model", str(small_model.path), "-o", str(out), "--no-progress",
            "--workers", "2", "--batch-size", "3"]
    done = threading.Event()
    signaller = _signaller(folder / "pids", done)
    try:
        assert main(argv) == 1
    finally:
        done.set()
        signaller.join()
    err = capsys.readouterr().err
    assert "2 rows left pending after decoder failures; run --resume to retry" in err
    assert sorted(e.split("-")[0] for e in os.listdir(folder / "pids")) == ["kill", "kill", "stop", "stop"]  # 2 tries
    st = open_store(out)
    by_name = dict(zip((Path(p).name for p in st.paths), st.status))
    assert by_name == {"a.jpg": "ok", "c.jpg": "ok", "corrupt.jpg": "error", "f.jpg": "ok", "kill.jpg": "pending",
                       "stop.jpg": "pending"}
    assert [Path(e.path).name for e in st.errors] == ["corrupt.jpg"]
    assert not st.verify().damage  # pending is not damage, and nothing is wrongly "intact and done"

    (folder / "faults-on").unlink()  # the machine is fine again
    assert main([*argv, "--resume"]) == 1  # the corrupt file is still a bad file
    st = open_store(out)
    assert dict(zip((Path(p).name for p in st.paths), st.status)) == {**by_name, "kill.jpg": "ok", "stop.jpg": "ok"}
    assert "left pending" not in capsys.readouterr().err
