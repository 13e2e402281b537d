"""Stores on object storage: ``extract -o s3://...`` against a real S3 API on 127.0.0.1 (moto's
server, tests/s3server.py) gives the store a local disk gives, with the same guarantees: resume,
kill -9, one writer (a lease), checksums, and no secret written or printed."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from featuremaps.cli import main
from featuremaps.engine.store import FeatureStore, open_store
from featuremaps.engine.store.remote import LEASE_NAME, Lease, RemoteIO, display_url
from featuremaps.errors import StoreError

sys.path.insert(0, str(Path(__file__).parent))
from stores import MODEL, extract  # noqa: E402


def _photos(sample_paths, folder: Path, n: int) -> Path:
    import cv2

    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        img = cv2.resize(cv2.imread(str(sample_paths[i % len(sample_paths)])), (40 + i, 36))
        cv2.imwrite(str(folder / f"img{i:03d}.jpg"), img)
    (folder / "bad.jpg").write_bytes(b"not a jpeg")
    return folder


@pytest.fixture(scope="module")
def photos(tmp_path_factory, sample_paths):
    return _photos(sample_paths, tmp_path_factory.mktemp("photos"), 7)


@pytest.fixture(scope="module")
def local_ref(tmp_path_factory, photos):
    out = tmp_path_factory.mktemp("ref") / "ref.zarr"
    assert extract(photos, out) == 1  # one bad image
    return open_store(out)


def _same(a: FeatureStore, b: FeatureStore) -> None:
    assert list(a.paths) == list(b.paths)
    np.testing.assert_array_equal(a.status_codes, b.status_codes)
    assert a.errors == b.errors
    assert a.outputs == b.outputs
    for name in a.outputs:
        np.testing.assert_array_equal(a[name][:], b[name][:], err_msg=name)


def test_extract_to_s3_equals_the_local_store(s3, photos, local_ref, capsys):
    url = s3.url("feats/f.zarr")
    assert extract(photos, url, "--shard-rows", "none") == 1  # unsharded, as the local store: file for file
    st = open_store(url)
    _same(st, local_ref)
    assert str(st.path) == url and st.remote
    keys = s3.keys()
    assert "feats/f.zarr/zarr.json" in keys
    assert not any(k.endswith(".partial") for k in keys)
    assert f"feats/f.zarr/{LEASE_NAME}" not in keys  # released at the end of the run
    # the same chunk bytes as the local store writes (file for file)
    root = Path(local_ref.path)
    local = sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and p.name != "featuremaps.lock")
    remote = sorted(k[len("feats/f.zarr/"):] for k in keys)
    assert remote == local
    fs = s3.fs()
    for rel in local:
        if rel.startswith(st.outputs[0]):
            assert fs.cat_file(f"{s3.bucket}/feats/f.zarr/{rel}") == (root / rel).read_bytes(), rel


def test_info_verify_and_show_read_the_url(s3, photos, tmp_path, capsys):
    url = s3.url("f.zarr")
    assert extract(photos, url) == 1
    capsys.readouterr()
    assert main(["info", url, "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["kind"] == "store" and d["path"] == url and d["counts"] == {"ok": 7, "error": 1, "pending": 0}
    assert d["missing_chunks"] == 0
    assert main(["verify", url]) == 0
    assert "all intact" in capsys.readouterr().out
    out = tmp_path / "figs"
    assert main(["show", "--store", url, "--index", "1", "-o", str(out)]) == 0
    assert list(out.glob("*.png"))


def test_an_existing_store_needs_resume_and_resume_completes_it(s3, photos, local_ref, capsys):
    url = s3.url("r.zarr")
    assert extract(photos, url) == 1
    capsys.readouterr()
    assert extract(photos, url) == 2
    assert "already exists; add --resume" in capsys.readouterr().err
    # a damaged batch: status back to pending and one chunk gone; --resume redoes exactly that
    st = FeatureStore.open(url, "r+", lock=True)
    st._group["status"][2:4] = np.zeros(2, np.uint8)
    st.close()
    name = local_ref.outputs[0]
    s3.fs().rm_file(f"{s3.bucket}/r.zarr/{name}/c/1/0/0/0")
    assert extract(photos, url, "--resume") == 1
    _same(open_store(url), local_ref)


def test_verify_finds_a_flipped_byte_and_repair_then_resume_restores(s3, photos, local_ref, capsys):
    url = s3.url("v.zarr")
    assert extract(photos, url, "--shard-rows", "none") == 1  # per inner chunk of a shard: test_store_sharded
    name = local_ref.outputs[0]
    key = f"{s3.bucket}/v.zarr/{name}/c/2/0/0/0"
    fs = s3.fs()
    data = bytearray(fs.cat_file(key))
    data[len(data) // 2] ^= 0xFF
    fs.pipe_file(key, bytes(data))
    capsys.readouterr()
    assert main(["verify", url]) == 1
    assert f"damaged: {name} chunk 2 (rows 4-5): checksum mismatch" in capsys.readouterr().out
    assert main(["verify", url, "--repair"]) == 1
    assert extract(photos, url, "--resume") == 1
    _same(open_store(url), local_ref)


def test_a_second_writer_is_refused_while_the_lease_is_live(s3, photos, capsys):
    url = s3.url("l.zarr")
    assert extract(photos, url) == 1
    io = RemoteIO(url)
    held = Lease.acquire(io)  # this process, alive: a live lease
    try:
        capsys.readouterr()
        assert extract(photos, url, "--resume") == 2
        err = capsys.readouterr().err.strip()
        assert f"is being written by another process (pid {os.getpid()}" in err and "\n" not in err
        with pytest.raises(StoreError, match="being written by another process"):
            Lease.acquire(io)
    finally:
        held.release()
    assert extract(photos, url, "--resume") == 1  # free again


def _lease_body(owner: str, host: str, pid: int, expires: float) -> bytes:
    return json.dumps({"owner": owner, "host": host, "pid": pid, "expires": expires, "term": 60}).encode()


def test_an_expired_lease_of_another_host_is_taken_over_a_live_one_is_not(s3, photos, capsys):
    url = s3.url("e.zarr")
    assert extract(photos, url) == 1
    fs, key = s3.fs(), f"{s3.bucket}/e.zarr/{LEASE_NAME}"
    fs.pipe_file(key, _lease_body("x", "other-host", 1, time.time() + 600))
    capsys.readouterr()
    assert main(["verify", url, "--repair"]) == 2
    assert "'other-host'" in capsys.readouterr().err
    fs.pipe_file(key, _lease_body("x", "other-host", 1, time.time() - 1))
    assert main(["verify", url, "--repair"]) == 0


def test_a_writer_that_lost_its_lease_stops_before_committing(s3, photos):
    url = s3.url("f.zarr")
    assert extract(photos, url) == 1
    st = FeatureStore.open(url, "r+", lock=True)
    s3.fs().pipe_file(f"{s3.bucket}/f.zarr/{LEASE_NAME}",
                      _lease_body("thief", socket.gethostname(), os.getpid(), time.time() + 600))
    before = np.asarray(open_store(url).status_codes)
    with pytest.raises(StoreError, match="lost its lease"):
        st.commit_batch(0, {0: "would overwrite"})
    np.testing.assert_array_equal(open_store(url).status_codes, before)
    st.close()


def _s3_status(s3, key: str) -> int:
    try:
        return sum(1 for code in s3.fs().cat_file(f"{s3.bucket}/{key}/status/c/0")[:-4] if code)
    except FileNotFoundError:
        return 0


@pytest.mark.slow
@pytest.mark.parametrize("shard_rows", ["none", "4"])  # a commit per batch; per shard of 4 batches
def test_kill_9_then_resume_on_s3_gives_an_identical_store(s3, sample_paths, tmp_path, shard_rows):
    imgs = _photos(sample_paths, tmp_path / "imgs", 30)
    args = [str(imgs), "--model", str(MODEL), "--provider", "cpu", "--batch-size", "1", "--workers", "0",
            "--threads", "1", "--no-progress"]
    assert main(["extract", *args, "-o", str(tmp_path / "ref.zarr")]) == 1  # unsharded, local
    url = s3.url("k.zarr")
    args += ["--shard-rows", shard_rows]
    proc = subprocess.Popen([sys.executable, "-m", "featuremaps", "extract", *args, "-o", url], env=s3.env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None and _s3_status(s3, "k.zarr") < 4:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    partial = open_store(url)
    assert (partial.status == "pending").any() and (partial.status == "ok").any()
    if shard_rows == "4":  # committed whole shards only
        assert (partial.status_codes != 0).sum() % 4 == 0
    assert f"k.zarr/{LEASE_NAME}" in s3.keys()  # the killed writer's lease is left behind ...
    assert main(["extract", *args, "-o", url, "--resume"]) == 1  # ... and its pid is gone: taken over at once
    _same(open_store(url), open_store(tmp_path / "ref.zarr"))


def test_no_secret_reaches_the_store_or_the_terminal(s3, photos, capsys, monkeypatch):
    secret = "SECRETVALUE1234"
    url = s3.url("s.zarr")
    opts = ["--storage-option", f"client_kwargs={json.dumps({'aws_session_token': secret})}"]
    monkeypatch.setattr(sys, "argv", ["featuremaps", "extract", str(photos), "-o", url, *opts])  # what is recorded
    # a wrong session token: refused by nobody (moto ignores it); what matters is where it ends up
    code = extract(photos, url, *opts)
    out = capsys.readouterr()
    assert code == 1, out.err
    assert secret not in out.out + out.err
    fs = s3.fs()
    for key in fs.find(f"{s3.bucket}/s.zarr"):
        assert secret.encode() not in fs.cat_file(key), key
    assert "client_kwargs=***" in open_store(url).metadata["command"]


def test_bad_urls_and_unreachable_endpoints_are_one_line(s3, photos, tmp_path, capsys, monkeypatch):
    assert extract(photos, f"s3://{s3.bucket}") == 2
    assert "not a bare bucket" in capsys.readouterr().err
    assert extract(photos, "http://127.0.0.1:9/f.zarr") == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "featuremaps" in err
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # nothing listens there
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "SECRETVALUE999")
    code = main(["info", "s3://nobucket/f.zarr", "--storage-option", "connect_timeout=1",
                 "--storage-option", "retries=0"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err and "SECRETVALUE999" not in err, err


def test_display_url_drops_credentials():
    assert display_url("s3://key:secret@bucket/a/f.zarr?token=x#y") == "s3://bucket/a/f.zarr"


def test_report_reads_the_url(s3, photos, tmp_path):
    url = s3.url("rep.zarr")
    assert extract(photos, url) == 1
    out = tmp_path / "report"
    assert main(["report", "--store", url, "--rows", "1-2", "-o", str(out)]) == 0
    assert (out / "index.html").is_file()


@pytest.mark.slow
def test_the_endpoint_going_away_mid_run_is_one_line_and_resume_completes(s3_server, sample_paths, tmp_path):
    """The object store becomes unreachable while extract writes: one line naming the fix, no
    traceback, the committed batches kept; once it is back, --resume gives the reference store."""
    from moto.server import ThreadedMotoServer

    imgs = _photos(sample_paths, tmp_path / "imgs", 30)
    args = [str(imgs), "--model", str(MODEL), "--provider", "cpu", "--batch-size", "1", "--workers", "0",
            "--threads", "1", "--no-progress"]
    assert main(["extract", *args, "-o", str(tmp_path / "ref.zarr")]) == 1
    bucket = s3_server.new_bucket()  # moto's buckets live in this process: a second server sees them
    second = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    second.start()
    endpoint = f"http://127.0.0.1:{second.get_host_and_port()[1]}"
    env = s3_server.env({**os.environ, "AWS_ENDPOINT_URL": endpoint})
    env.update(AWS_ENDPOINT_URL=endpoint, AWS_ENDPOINT_URL_S3=endpoint)
    url = f"s3://{bucket}/gone.zarr"
    proc = subprocess.Popen([sys.executable, "-m", "featuremaps", "extract", *args, "-o", url, "--shard-rows", "none",
                             "--storage-option", "config_kwargs={\"retries\": {\"max_attempts\": 1}}"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None and _s3_status(
            type("B", (), {"fs": s3_server.fs, "bucket": bucket})(), "gone.zarr") < 3:
        time.sleep(0.01)
    second.stop()
    try:
        err = proc.communicate(timeout=180)[1]
    finally:
        proc.kill()
    assert proc.returncode == 2, err
    lines = [ln for ln in err.strip().splitlines() if ln.startswith("featuremaps")]
    assert "Traceback" not in err and len(lines) == 1, err
    assert "--resume" in lines[0] or "check the URL" in lines[0], lines[0]
    partial = open_store(url)
    assert (partial.status != "pending").sum() >= 3 and (partial.status == "pending").any()
    assert main(["extract", *args, "-o", url, "--resume"]) == 1  # the session's server: the same buckets
    _same(open_store(url), open_store(tmp_path / "ref.zarr"))


def test_a_file_url_is_the_local_store_read_as_inputs_read_it(photos, local_ref, tmp_path, capsys):
    """``-o file:///...`` is a local store (flock, rename), its path percent-decoded as input URLs are;
    a file:// URL naming another host is refused in one line."""
    out = tmp_path / "a b.zarr"
    assert extract(photos, "file://" + str(out).replace(" ", "%20")) == 1
    assert out.is_dir() and not open_store(out).remote
    _same(open_store(f"file://{str(out).replace(' ', '%20')}"), local_ref)
    capsys.readouterr()
    assert main(["info", "file://elsewhere/x.zarr"]) == 2
    err = capsys.readouterr().err.strip()
    assert "file:// URLs name this machine's files" in err and "\n" not in err
