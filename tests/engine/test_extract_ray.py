"""--engine ray: the same store as the local engine, on a local Ray instance with 2 CPUs (127.0.0.1)."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("ray.data")

from featuremaps.cli import main  # noqa: E402
from featuremaps.engine.store import open_store  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def kill_marker(tmp_path_factory):
    """Marker file of the injected actor death (see ``_maybe_die_for_test``); set in the
    environment before Ray starts so its workers inherit it, armed only when a test deletes it."""
    marker = tmp_path_factory.mktemp("fault") / "actor-killed"
    marker.write_text("disarmed")
    return marker


@pytest.fixture(scope="module")
def local_ray(kill_marker):
    import os

    import ray

    from featuremaps.engine.ray_cluster import init_ray
    from featuremaps.engine.ray_engine import _FAULT_ENV

    os.environ[_FAULT_ENV] = str(kill_marker)
    started = init_ray(None, num_cpus=2)
    yield
    del os.environ[_FAULT_ENV]
    if started:
        ray.shutdown()


@pytest.fixture(scope="module")
def images(photo_folder):
    return photo_folder("ray-images", 7, 90, 80)


def _same_store(a, b) -> None:
    assert a.paths == b.paths
    np.testing.assert_array_equal(a.status_codes, b.status_codes)
    assert a.errors == b.errors
    for name in a.outputs:
        np.testing.assert_array_equal(a[name][:], b[name][:], err_msg=name)


def test_ray_store_equals_local_store(local_ray, small_model, images, tmp_path):
    args = ["extract", str(images), "--model", str(small_model.path), "--batch-size", "3", "--no-progress"]
    assert main([*args, "-o", str(tmp_path / "local.zarr")]) == 1
    assert main([*args, "-o", str(tmp_path / "ray.zarr"), "--engine", "ray", "--actors", "1"]) == 1
    local, ray_store = open_store(tmp_path / "local.zarr"), open_store(tmp_path / "ray.zarr")
    assert len(ray_store.errors) == 2 and (ray_store.status == "ok").sum() == 7
    _same_store(local, ray_store)


def test_ray_resume_completes_a_partial_store(local_ray, small_model, images, tmp_path):
    """A job that stopped part-way (batches left pending, as after a killed worker that Ray gave
    up on) is completed by --resume with the Ray engine to the local engine's store."""
    from featuremaps.engine.extractor import Extractor
    from featuremaps.engine.pipeline import run_extraction
    from featuremaps.engine.inputs import collect_inputs
    from featuremaps.engine.hashing import file_sha256
    from featuremaps.engine.store import FeatureStore, output_shapes

    out = tmp_path / "partial.zarr"
    with Extractor(small_model.path, provider="cpu") as ex:
        st = FeatureStore.create(out, paths=collect_inputs([images]), metadata=ex.metadata,
                                 shapes=output_shapes(ex.record, ex.session), batch_size=3,
                                 model_path=small_model.path.resolve(),
                                 model_sha256=file_sha256(small_model.path))
        calls = []

        def stop_after_one(batch):
            calls.append(1)
            if len(calls) == 2:
                raise KeyboardInterrupt
            return ex.run(batch)

        assert run_extraction(st, stop_after_one, ex.preprocessing).interrupted
        st.close()  # release the writer's lock before --resume
    assert (open_store(out).status == "pending").any()
    args = ["extract", str(images), "--model", str(small_model.path), "--batch-size", "3", "--no-progress"]
    assert main([*args, "-o", str(out), "--engine", "ray", "--resume"]) == 1
    assert main([*args, "-o", str(tmp_path / "local.zarr")]) == 1
    _same_store(open_store(out), open_store(tmp_path / "local.zarr"))


def test_actor_killed_mid_job_does_not_corrupt_the_store(local_ray, kill_marker, small_model, images, tmp_path):
    """An actor dies hard (os._exit) after writing a batch's tap chunks, before the driver commits
    it. Ray either retries the batch on a new actor or the job fails with it left pending; after
    at most one --resume the store equals the local engine's."""
    args = ["extract", str(images), "--model", str(small_model.path), "--batch-size", "3", "--no-progress"]
    out = tmp_path / "killed.zarr"
    kill_marker.unlink()  # arm: the next actor to finish a batch (other than batch 0) dies
    rc = main([*args, "-o", str(out), "--engine", "ray", "--actors", "1"])
    assert kill_marker.exists(), "the fault was not injected"
    status = open_store(out).status
    print(f"after the actor death: rc={rc}, pending={(status == 'pending').sum()}")
    assert rc == 1 or (status == "pending").any()  # finished (bad images: rc 1) or left work pending
    if (status == "pending").any():
        assert main([*args, "-o", str(out), "--engine", "ray", "--resume"]) == 1
    assert main([*args, "-o", str(tmp_path / "local.zarr")]) == 1
    _same_store(open_store(out), open_store(tmp_path / "local.zarr"))


def test_ray_address_needs_absolute_store(small_model, images, capsys):
    rc = main(["extract", str(images), "--model", str(small_model.path), "-o", "rel.zarr", "--engine", "ray",
               "--ray-address", "auto"])
    assert rc == 2
    assert "is relative; on a Ray cluster pass an absolute path" in capsys.readouterr().err


def test_actors_the_cluster_cannot_place_fail_in_one_line(local_ray, small_model, images, tmp_path, capsys,
                                                          monkeypatch):
    """An actor pool that cannot start (a GPU per actor on a CPU-only cluster) ends in one line that
    names the fix, exit 2, within the start limit, the store left pending for --resume."""
    import time

    from featuremaps.engine import ray_engine

    monkeypatch.setattr(ray_engine, "ACTOR_START_LIMIT_S", 5)
    out = tmp_path / "gpu.zarr"
    t0 = time.time()
    rc = main(["extract", str(images), "--model", str(small_model.path), "--batch-size", "3", "--no-progress",
               "-o", str(out), "--engine", "ray", "--actors", "1", "--gpus-per-actor", "1"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and time.time() - t0 < 60
    assert len(err) >= 1 and "did not start 1 model actor(s) within 5 s" in err[-1] and "--actors" in err[-1]
    assert "Traceback" not in "\n".join(err)
    assert (open_store(out).status == "pending").all()


def test_ray_actors_run_the_math_mode_asked_for(local_ray, small_model, images, tmp_path):
    """--math-mode reaches the actors: OpenVINO strict fp32 on Ray gives the local engine's maps and
    records the same provider and mode."""
    pytest.importorskip("openvino")
    from featuremaps.compare import rel_l2_error

    args = ["extract", str(images), "--model", str(small_model.path), "--batch-size", "3", "--no-progress",
            "--provider", "openvino", "--math-mode", "fp32"]
    assert main([*args, "-o", str(tmp_path / "local.zarr")]) == 1
    assert main([*args, "-o", str(tmp_path / "ray.zarr"), "--engine", "ray", "--actors", "1"]) == 1
    local, ray_store = open_store(tmp_path / "local.zarr"), open_store(tmp_path / "ray.zarr")
    assert ray_store.metadata["extraction"]["math_mode"] == "fp32" == local.metadata["extraction"]["math_mode"]
    np.testing.assert_array_equal(local.status_codes, ray_store.status_codes)
    ok = local.status == "ok"
    for name in local.outputs:
        assert rel_l2_error(ray_store[name][:][ok], local[name][:][ok]) <= 1e-6, name


def test_actor_that_would_compute_another_math_mode_writes_nothing(local_ray, small_model, images, tmp_path):
    """The store records how its maps are computed (here: TF32 on a GPU); an actor on a node that
    computes otherwise (strict fp32 on a CPU) refuses in one line before writing, the rows stay pending."""
    from featuremaps.engine.extractor import Extractor
    from featuremaps.engine.hashing import file_sha256
    from featuremaps.engine.inputs import collect_inputs
    from featuremaps.engine.ray_engine import run_extraction_ray
    from featuremaps.engine.store import FeatureStore, output_shapes
    from featuremaps.errors import FeaturemapsError, one_line

    out = tmp_path / "tf32.zarr"
    with Extractor(small_model.path, provider="cpu") as ex:
        meta = dict(ex.metadata, extraction={"provider": "cuda", "math_mode": "tf32", "device": 0})
        st = FeatureStore.create(out, paths=collect_inputs([images]), metadata=meta, batch_size=3,
                                 shapes=output_shapes(ex.record, ex.session), model_path=small_model.path.resolve(),
                                 model_sha256=file_sha256(small_model.path))
    with pytest.raises(FeaturemapsError) as err:
        run_extraction_ray(st, small_model.path, provider="cpu", actors=1)
    line = one_line(err.value)
    assert "computed in tf32 (cuda), but Ray node " in line and "computes fp32 (cpu)" in line and "\\n" not in line
    st.close()
    assert (open_store(out).status == "pending").all()


def test_other_ray_failures_become_one_line_that_says_resume():
    import ray

    from featuremaps.engine.ray_engine import _user_error_from
    from featuremaps.errors import ClusterError, StoreError, one_line

    died = _user_error_from(ray.exceptions.ActorDiedError())  # a system failure, no exception of ours
    assert isinstance(died, ClusterError) and "the Ray job failed: " in one_line(died)
    assert one_line(died).endswith("re-run with --resume") and "\\n" not in one_line(died)
    ours = _user_error_from(ray.exceptions.RayError("Traceback ...\n  File x\nfeaturemaps.errors.StoreError: disk full\n"))
    assert isinstance(ours, StoreError) and str(ours) == "disk full"


_GPU_CLUSTER = """
import json, subprocess, sys
import ray
model, images, out = sys.argv[1:4]
# a node that declares a GPU Ray hands to the actor, on a machine whose onnxruntime cannot use one
ray.init(address="local", num_cpus=2, num_gpus=1, include_dashboard=False, _node_ip_address="127.0.0.1",
         log_to_driver=False)
base = [sys.executable, "-m", "featuremaps", "extract", images, "--model", model, "-o", out, "--batch-size", "3",
        "--no-progress", "--engine", "ray", "--ray-address", ray.get_runtime_context().gcs_address]
runs = [subprocess.run(base + extra, capture_output=True, text=True, timeout=240)
        for extra in (["--provider", "cuda", "--gpus-per-actor", "1"], ["--provider", "cpu", "--resume"])]
print(json.dumps([[r.returncode, r.stderr] for r in runs]))
"""


def test_driver_without_the_gpu_plans_on_its_cpu_and_records_what_actors_run(small_model, images, tmp_path):
    """Joining a cluster with --provider cuda from a driver with no GPU (a CPU head node): the driver
    reads shapes on its CPU and records cuda/tf32. The cluster's GPU node here cannot run CUDA
    either, so the actor's one-line refusal, naming its node, ends the run (exit 2) with the rows
    pending; a --resume that would compute fp32 is refused."""
    import json
    import subprocess
    import sys

    from featuremaps.engine.choice import available_providers

    if "cuda" in available_providers():
        pytest.skip("this machine has CUDA: the actors would run")
    out = tmp_path / "cuda.zarr"
    proc = subprocess.run([sys.executable, "-c", _GPU_CLUSTER, str(small_model.path), str(images), str(out)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (rc, err), (rc_resume, err_resume) = json.loads(proc.stdout.strip().splitlines()[-1])
    last = err.strip().splitlines()[-1]
    assert rc == 2 and last.startswith("featuremaps: error: Ray node ") and "'cuda' cannot run here" in last, err
    assert "Traceback" not in err
    store = open_store(out)
    assert store.metadata["extraction"]["provider"] == "cuda" and store.metadata["extraction"]["math_mode"] == "tf32"
    assert (store.status == "pending").all()
    assert rc_resume == 2 and "computed in tf32 (cuda), but this run computes fp32 (cpu)" in err_resume


def test_gpu_provider_on_ray_needs_gpus_per_actor(small_model, images, tmp_path, capsys):
    rc = main(["extract", str(images), "--model", str(small_model.path), "-o", str(tmp_path / "s.zarr"),
               "--engine", "ray", "--provider", "cuda", "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "needs --gpus-per-actor" in err[0], err
    assert not (tmp_path / "s.zarr").exists()


def test_ray_address_port_out_of_range(small_model, images, capsys):
    rc = main(["extract", str(images), "--model", str(small_model.path), "-o", "/tmp/never.zarr", "--engine", "ray",
               "--ray-address", "127.0.0.1:99999", "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "port 99999 is not a TCP port (1..65535)" in err[0], err


def test_ray_client_address_without_the_client_extra(small_model, images, tmp_path, capsys):
    """ray:// needs `ray[client]`; without it Ray raised a ValueError traceback."""
    import socket
    import subprocess
    import sys

    from ray._private.utils import get_ray_client_dependency_error as missing  # Ray's own check

    if missing() is None:
        pytest.skip("ray[client] is installed here")
    with socket.socket() as server:  # something answers the TCP probe, as a client server would
        server.bind(("127.0.0.1", 0))
        server.listen()
        address = f"ray://127.0.0.1:{server.getsockname()[1]}"
        # a fresh process: this one may already hold a local Ray instance (the module's fixture)
        proc = subprocess.run([sys.executable, "-m", "featuremaps", "extract", str(images), "--model",
                               str(small_model.path), "-o", str(tmp_path / "c.zarr"), "--engine", "ray",
                               "--ray-address", address, "--no-progress"], capture_output=True, text=True, timeout=120)
    err = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(err) == 1 and "pip install 'ray[client]'" in err[0], err
    assert not (tmp_path / "c.zarr").exists()


def test_ray_keeps_the_decode_budget(local_ray, small_model, tmp_path):
    """--max-pixels and --max-file-bytes reach Ray's decode tasks: a 2000x2000 image is the same
    error row as in the local engine (it was decoded, budget ignored)."""
    import cv2

    folder = tmp_path / "big"
    folder.mkdir()
    cv2.imwrite(str(folder / "big.png"), np.full((2000, 2000, 3), 90, np.uint8))
    cv2.imwrite(str(folder / "small.png"), np.full((40, 40, 3), 90, np.uint8))
    args = ["extract", str(folder), "--model", str(small_model.path), "--no-progress", "--max-pixels", "1000000"]
    assert main([*args, "-o", str(tmp_path / "local.zarr")]) == 1
    assert main([*args, "-o", str(tmp_path / "ray.zarr"), "--engine", "ray"]) == 1
    local, ray_store = open_store(tmp_path / "local.zarr"), open_store(tmp_path / "ray.zarr")
    assert [e.message for e in ray_store.errors] == [
        "image declares 4 megapixels, over the 1-megapixel limit; raise --max-pixels to accept it"]
    _same_store(local, ray_store)


def test_without_an_address_ray_starts_an_instance_of_its_own(monkeypatch):
    """Another Ray instance on this machine (another user's, another test run) must not be joined:
    Ray joins the newest one by default, and refuses ``num_cpus`` there."""
    import ray

    from featuremaps.engine import ray_cluster

    calls = []
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", lambda **kw: calls.append(kw))
    assert ray_cluster.init_ray(None, num_cpus=2) is True
    assert calls and calls[0]["address"] == "local" and calls[0]["num_cpus"] == 2
