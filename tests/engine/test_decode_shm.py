"""A /dev/shm smaller than the decode batch buffers (Docker's default 64 MiB): fewer buffers or
decoding in a thread, with a warning; never SIGBUS. Faked with a statvfs stand-in, and for real
with a small tmpfs over /dev/shm in a private mount namespace where that is permitted."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from featuremaps.engine import decode_pool
from featuremaps.engine.decode_pool import DecodePool, SharedMemoryError, decode_paths
from featuremaps.engine.preprocess import DecodeBudget, Preprocessing, preprocess_file

PRE = Preprocessing(size=(32, 32))
SLOT = 8 * 3 * 32 * 32 * 4  # bytes of one batch buffer: batch 8, (3, 32, 32) float32


@pytest.fixture()
def shm_free(monkeypatch):
    """``set(n)``: /dev/shm reports ``n`` bytes free to os.statvfs (other paths unchanged)."""
    real = os.statvfs

    def set_free(n: int):
        fake = os.statvfs_result((4096, 1, 0, 0, n, 0, 0, 0, 0, 255))  # f_frsize 1: f_bavail = bytes

        monkeypatch.setattr(os, "statvfs", lambda p: fake if str(p) == decode_pool.SHM_DIR else real(p))

    return set_free


def test_room_for_fewer_buffers_uses_fewer_and_says_so(shm_free, sample_paths, caplog):
    shm_free(int(2.5 * SLOT / 0.9))
    paths = [str(p) for p in sample_paths[:2]]
    with caplog.at_level(logging.WARNING), DecodePool(PRE, workers=1, batch_size=8, slots=4) as pool:
        assert pool.slots == 2 and pool._shm.size == 2 * SLOT
        for _ in range(3):
            got = pool.decode(paths)
            np.testing.assert_array_equal(got.inputs, np.stack([preprocess_file(p, PRE) for p in paths]))
            pool.release(got)
    assert "room for 2 of the 4 decode batch buffers" in caplog.text and "docker run --shm-size=" in caplog.text


def test_no_room_for_one_buffer_is_one_line(shm_free):
    shm_free(SLOT // 2)
    with pytest.raises(SharedMemoryError, match=r"/dev/shm has 48 KiB free, less than one decode batch buffer "
                                                 r"\(96 KiB\); give it at least 384 KiB \(docker run --shm-size=1m\)"):
        DecodePool(PRE, workers=1, batch_size=8, slots=4).start()


def test_load_batch_and_extract_decode_in_a_thread_when_there_is_no_room(shm_free, sample_paths, small_model,
                                                                          tmp_path, caplog, monkeypatch):
    from featuremaps.cli import main
    from featuremaps.engine.store import open_store

    shm_free(1000)
    spawned = []
    monkeypatch.setattr(DecodePool, "_spawn", lambda self: spawned.append(1))
    paths = [str(p) for p in sample_paths[:2]] * 4
    with caplog.at_level(logging.WARNING):
        out = decode_paths(paths, PRE, budget=DecodeBudget(), workers=2, pool_threshold=1)
        np.testing.assert_array_equal(out, np.stack([preprocess_file(p, PRE) for p in paths]))
        assert main(["extract", *paths[:2], "--model", str(small_model.path), "-o", str(tmp_path / "o.zarr"),
                     "--no-progress", "--workers", "2"]) == 0
    assert list(open_store(tmp_path / "o.zarr").status) == ["ok", "ok"] and spawned == []
    assert "decoding in a thread instead of 2 worker processes (slower)" in caplog.text


_IN_NAMESPACE = textwrap.dedent("""
    import multiprocessing as mp, sys
    from multiprocessing import shared_memory
    from featuremaps.engine import decode_pool
    from featuremaps.engine.decode_pool import DecodePool, SharedMemoryError
    from featuremaps.engine.preprocess import Preprocessing

    def touch(name, n):
        shm = shared_memory.SharedMemory(name=name)
        shm.buf[:n] = b"x" * n

    if __name__ == "__main__":
        paths, n = sys.argv[1:], 3 * 2**20
        sparse = shared_memory.SharedMemory(create=True, size=n)  # what the pool made before: no reservation
        p = mp.get_context("fork").Process(target=touch, args=(sparse.name, n))
        p.start(); p.join()
        sparse.close(); sparse.unlink()
        print("sparse block, child exit", p.exitcode)
        pre = Preprocessing(size=(64, 64))  # 48 KiB per image; batch 16: 768 KiB per buffer
        with DecodePool(pre, workers=2, batch_size=16, slots=4) as pool:
            for _ in range(3):
                got = pool.decode(paths)
                pool.release(got)
            print("pool slots", pool.slots, "ok rows", len(got.ok_rows))
        decode_pool.shm_free_bytes = lambda: None  # the check cannot tell: the reservation must catch it
        try:
            DecodePool(pre, workers=1, batch_size=16, slots=4).start()
        except SharedMemoryError as e:
            print("refused:", e)
""")


def test_real_small_dev_shm_in_a_private_mount_namespace(sample_paths, tmp_path):
    """A 2 MiB tmpfs over /dev/shm: a plain sparse block of 3 MiB dies of SIGBUS when touched (the
    control), the pool makes 2 of 4 buffers and decodes; with the free-space check blinded, the
    reservation refuses in one line instead of SIGBUS."""
    if shutil.which("unshare") is None or subprocess.run(["unshare", "-m", "true"], capture_output=True).returncode:
        pytest.skip("unshare -m is not permitted here (needs root or user namespaces)")
    script = tmp_path / "ns.py"
    script.write_text(_IN_NAMESPACE)
    paths = [str(p) for p in sample_paths[:2]] * 8
    cmd = ("mount --make-rprivate / && mount -t tmpfs -o size=2m fm-test /dev/shm && exec \"$0\" \"$@\"")
    res = subprocess.run(["unshare", "-m", "sh", "-c", cmd, sys.executable, str(script), *paths],
                         capture_output=True, text=True, timeout=180, cwd=tmp_path)
    if "mount:" in res.stderr and "permission denied" in res.stderr.lower():
        pytest.skip(f"mounting a tmpfs is not permitted here: {res.stderr.strip()}")
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert lines[0] == "sparse block, child exit -7"  # SIGBUS: the threat is real in this namespace
    assert lines[1] == "pool slots 2 ok rows 16"
    assert lines[2].startswith("refused: /dev/shm has no room for the decode batch buffers (3 MiB); give it at "
                               "least 3 MiB (docker run --shm-size=4m)")
    assert "room for 2 of the 4 decode batch buffers" in res.stderr
