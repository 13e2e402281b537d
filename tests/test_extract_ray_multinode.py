"""--engine ray across nodes: a simulated cluster (Ray's own ``ray.cluster_utils.Cluster``: a head
and two worker nodes, 1 CPU each) inside a private network namespace with only loopback, and
bounded joins (an address that cannot be joined fails with one line, exit 2, in well under 30 s).

The cluster scenarios run in one child process (tests/ray_cluster_scenarios.py, one cluster
start-up for all three); each store is compared, array by array, with the local engine's.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("ray")

from featuremaps.cli import main  # noqa: E402
from featuremaps.engine.store import open_store  # noqa: E402

pytestmark = pytest.mark.long_module  # minutes: scheduled first (tests/conftest.py)

SCRIPT = Path(__file__).with_name("ray_cluster_scenarios.py")
BATCH = 1
JOIN_LIMIT_S = 30


def _netns_prefix() -> list[str] | None:
    """The command prefix that gives a child a loopback-only network namespace, or None. A PID
    namespace too where allowed: when the script ends, however it ends, no Ray process outlives it."""
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        return None
    pid = ["-p", "-f", "--mount-proc"]
    candidates = [["-n", *pid], ["-rn", *pid], ["-n"], ["-rn"]] if os.geteuid() == 0 else [["-rn", *pid], ["-rn"]]
    for flags in candidates:
        if subprocess.run(["unshare", *flags, "true"], capture_output=True).returncode == 0:
            return ["unshare", *flags]
    return None


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory, vgg_net):
    """VGG16 taps 0,5 at 32x32: the cluster tests measure placement and recovery, not the model."""
    from featuremaps.export.onnx_export import export_model

    net, info = vgg_net
    path = tmp_path_factory.mktemp("models") / "vgg16-tiny.onnx"
    return export_model("0,5", path, input_size=32, net=net, weights_info=info).path


@pytest.fixture(scope="module")
def images(photo_folder):
    """14 small photos plus two bad files (an empty file and a text file named .png)."""
    return photo_folder("cluster-images", 14, 60, 50)


@pytest.fixture(scope="module")
def local_store(tiny_model, images, tmp_path_factory):
    out = tmp_path_factory.mktemp("local") / "local.zarr"
    assert main(["extract", str(images), "--model", str(tiny_model), "-o", str(out), "--batch-size", str(BATCH),
                 "--no-progress", "--provider", "cpu"]) == 1
    return open_store(out)


@pytest.fixture(scope="module")
def cluster_runs(tiny_model, images, tmp_path_factory):
    """Run the three scenarios on one simulated cluster in a loopback-only namespace: results.json."""
    prefix = _netns_prefix()
    if prefix is None:
        pytest.skip("network namespaces are not permitted here (`unshare -n` and `unshare -rn` failed), so a "
                    "simulated cluster cannot be kept off the real network")
    work = tmp_path_factory.mktemp("cluster")
    inner = (f"ip link set lo up && exec {sys.executable} {SCRIPT} --model {tiny_model} --images {images} "
             f"--work {work} --batch-size {BATCH}")
    t0 = time.time()
    proc = subprocess.run([*prefix, "sh", "-c", inner], capture_output=True, text=True, timeout=900)
    results_file = work / "results.json"
    assert results_file.exists(), f"the scenario script failed (rc {proc.returncode}): {proc.stderr[-3000:]}"
    results = json.loads(results_file.read_text())
    print(f"simulated cluster, all scenarios: {time.time() - t0:.0f} s; {json.dumps(results)}")
    return results


def _same_store(a, b) -> None:
    """Every input path, status, error message and every tap array, exactly."""
    assert a.paths == b.paths
    np.testing.assert_array_equal(a.status_codes, b.status_codes)
    assert [(e.path, e.message) for e in a.errors] == [(e.path, e.message) for e in b.errors]
    assert a.outputs == b.outputs
    for name in a.outputs:
        np.testing.assert_array_equal(a[name][:], b[name][:], err_msg=name)


@pytest.mark.slow
def test_cluster_store_equals_local_and_actors_span_nodes(cluster_runs, local_store):
    run = cluster_runs["spread"]
    assert run["rc"] == 1, run["tail"]  # two bad files: exit 1
    assert len(set(run["nodes"])) >= 2, f"both actors ran on one node: {run['nodes']}"
    assert len(cluster_runs["nodes"]) == 3
    store = open_store(run["store"])
    assert len(store.errors) == 2
    _same_store(store, local_store)


@pytest.mark.slow
def test_worker_node_lost_mid_run_gives_the_local_store(cluster_runs, local_store):
    run = cluster_runs["node_lost"]
    assert "note" not in run, run.get("note")
    assert run["removed_actor_node"], "the removed node hosted no model actor"
    assert 0 < run["committed_at_removal"] < len(local_store)
    print(f"node lost after {run['committed_at_removal']} rows: {run['outcome']} (first run {run['first']})")
    final = run["resume"] if run["outcome"] == "resumed" else run["first"]
    assert final["rc"] == 1, final["tail"]
    _same_store(open_store(run["store"]), local_store)


@pytest.mark.slow
def test_driver_killed_then_resume_gives_the_local_store(cluster_runs, local_store):
    run = cluster_runs["driver_killed"]
    assert run["killed"], "the driver finished before it could be killed"
    assert 0 < run["committed_at_kill"] < len(local_store)
    assert run["resume"]["rc"] == 1, run["resume"]["tail"]
    _same_store(open_store(run["store"]), local_store)


# ------------------------------------------------------------------------------ bounded joins


def _join(address: str, tmp_path: Path) -> tuple[int, list[str], float]:
    """``featuremaps extract --engine ray --ray-address ADDRESS`` in a child: rc, stderr lines, seconds.
    The join is checked before the model is opened, so a model path that does not exist never matters."""
    cmd = [sys.executable, "-m", "featuremaps", "extract", str(SCRIPT), "--model", str(tmp_path / "unused.onnx"),
           "-o", str(tmp_path / "out.zarr"), "--engine", "ray", "--ray-address", address, "--no-progress"]
    t0 = time.time()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    return proc.returncode, proc.stderr.strip().splitlines(), time.time() - t0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def listener():
    """A TCP port on every interface that accepts connections and never speaks (not a GCS)."""
    with socket.socket() as s:
        s.bind(("", 0))
        s.listen(8)
        yield s.getsockname()[1]


def _assert_one_line(rc, lines, seconds, address, fix):
    assert rc == 2
    assert len(lines) == 1, lines
    assert address in lines[0] and fix in lines[0], lines[0]
    assert seconds < JOIN_LIMIT_S


def test_join_where_no_cluster_answers(tmp_path):
    address = f"127.0.0.1:{_free_port()}"
    rc, lines, seconds = _join(address, tmp_path)
    _assert_one_line(rc, lines, seconds, address, "ray start --head")
    assert "no Ray cluster answers" in lines[0]
    assert not (tmp_path / "out.zarr").exists()  # checked before a store is made


def test_join_on_a_port_that_is_not_a_gcs(tmp_path, listener):
    from ray._private.services import resolve_ip_for_localhost

    address = f"{resolve_ip_for_localhost('127.0.0.1')}:{listener}"
    rc, lines, seconds = _join(address, tmp_path)
    _assert_one_line(rc, lines, seconds, address, "default port 6379")
    assert "no Ray GCS replied" in lines[0]


def test_join_loopback_head_that_ray_would_rewrite(tmp_path):
    """A head bound to 127.0.0.1 only: Ray joins it at this machine's own address, where nothing
    listens. Stood in for by a loopback-only listener (a real head behaves the same: see README)."""
    from ray._private.services import resolve_ip_for_localhost

    rewritten = resolve_ip_for_localhost("127.0.0.1")
    if rewritten.startswith("127.") or rewritten == "::1":
        pytest.skip("this machine has no non-loopback address, so Ray does not rewrite 127.0.0.1")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(8)
        address = f"127.0.0.1:{s.getsockname()[1]}"
        rc, lines, seconds = _join(address, tmp_path)
    _assert_one_line(rc, lines, seconds, address, f"--node-ip-address {rewritten}")
    assert "rewrites loopback" in lines[0]


@pytest.mark.parametrize("address", ["127.0.0.1:notaport", "ray://head", "nonsense"])
def test_malformed_address_is_one_cluster_error(address):
    from featuremaps.engine.ray_cluster import check_cluster_address
    from featuremaps.errors import ClusterError, FeaturemapsError

    with pytest.raises(ClusterError, match=r"--ray-address .*(HOST:PORT|Invalid address)") as err:
        check_cluster_address(address)
    assert isinstance(err.value, ConnectionError) and isinstance(err.value, FeaturemapsError)


# ------------------------------------------------------------------ the README's rehearsal commands

REHEARSAL = """set -e
ip link set lo up
export HOME="$WORK/home" RAY_AUTH_MODE=token PATH="$WORK/bin:$PATH"
ray get-auth-token --generate > /dev/null
ray start --head --node-ip-address 127.0.0.1 --port 6379 --num-cpus 1 --include-dashboard false
ray start --address 127.0.0.1:6379 --node-ip-address 127.0.0.1 --num-cpus 1
ray start --address 127.0.0.1:6379 --node-ip-address 127.0.0.1 --num-cpus 1
featuremaps -v extract "$IMAGES" --model "$MODEL" -o "$WORK/out.zarr" --batch-size 2 --no-progress \\
    --engine ray --ray-address 127.0.0.1:6379 --actors 2 > "$WORK/extract.log" 2>&1 || true
env -u RAY_AUTH_MODE HOME="$WORK/nohome" featuremaps extract "$IMAGES" --model "$MODEL" -o "$WORK/no.zarr" \\
    --engine ray --ray-address 127.0.0.1:6379 --no-progress > "$WORK/notoken.log" 2>&1 || echo $? > "$WORK/notoken.rc"
ray stop > /dev/null 2>&1
"""


@pytest.mark.slow
def test_readme_loopback_rehearsal_commands(tmp_path, tiny_model, images, local_store):
    """`ray start --head` / `ray start --address` on 127.0.0.1 in a loopback-only namespace (with
    its own PIDs, so `ray stop` reaches only these nodes), token auth on every node, as the README
    says; a driver without the token gets one line."""
    prefix = _netns_prefix()
    if prefix is None or "-p" not in prefix:
        pytest.skip("network + PID namespaces are not permitted here (`ray stop` must not reach other Ray nodes)")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    entry_points = {"ray": "from ray.scripts.scripts import main", "featuremaps": "from featuremaps.cli import main"}
    for name, code in entry_points.items():
        (bin_dir / name).write_text(f"#!{sys.executable}\nimport sys\n{code}\nsys.exit(main())\n")
        (bin_dir / name).chmod(0o755)
    env = {**os.environ, "WORK": str(tmp_path), "IMAGES": str(images), "MODEL": str(tiny_model)}
    proc = subprocess.run([*prefix, "sh", "-c", REHEARSAL], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    log = (tmp_path / "extract.log").read_text()
    assert "14 ok, 2 errors, 0 pending" in log, log[-3000:]
    assert "batches per Ray node" in log
    store = open_store(tmp_path / "out.zarr")
    np.testing.assert_array_equal(store.status_codes, local_store.status_codes)
    for name in store.outputs:  # batch size 2 here, 1 in the local store: same values, other chunks
        np.testing.assert_array_equal(store[name][:], local_store[name][:], err_msg=name)
    assert (tmp_path / "notoken.rc").read_text().strip() == "2"
    lines = (tmp_path / "notoken.log").read_text().strip().splitlines()
    assert len(lines) == 1 and "wants an authentication token" in lines[0], lines
