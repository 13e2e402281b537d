"""--engine ray on tar shards (local and S3): decode tasks read members where they live, one range
read per run of a shard's members in a store batch, and the store equals the local engine's."""

from __future__ import annotations

import json

import numpy as np
import pytest

import shards as wds
from featuremaps.cli import main
from featuremaps.engine import sources
from featuremaps.engine.inputs import collect_inputs
from featuremaps.engine.preprocess import Preprocessing
from featuremaps.engine.store import open_store


@pytest.fixture(scope="module")
def shard_set(tmp_path_factory, sample_paths):
    made = wds.webdataset(sample_paths, tmp_path_factory.mktemp("ray-wds") / "shards", shards=2, per_shard=4)
    last = made["shards"][-1]
    off, size = wds.member_offsets(last)[made["images"][-1][1]]
    last.write_bytes(last.read_bytes()[:off + size // 2])  # the last member cut short: an error row
    return made


def _store_of(rows: list[str], folder, batch_size: int) -> str:
    from featuremaps.engine.store import FeatureStore

    st = FeatureStore.create(folder / "s.zarr", paths=rows, metadata={}, shapes={"t": (2,)}, batch_size=batch_size,
                             check_memory=False)
    st.close()
    return st.location


def test_a_ray_decode_task_reads_each_shards_members_in_one_range_read(shard_set, monkeypatch, tmp_path):
    pytest.importorskip("ray")
    from featuremaps.engine.ray_engine import _decode_row

    rows = collect_inputs(shard_set["shards"])
    location = _store_of(rows, tmp_path, batch_size=8)
    spans = []
    real = sources._read_span
    monkeypatch.setattr(sources, "_read_span", lambda idx, a, b: spans.append(idx.shard) or real(idx, a, b))
    got = _decode_row({"batch": 0}, pre=Preprocessing(size=(32, 32)), store=location)
    assert json.loads(got["ok_rows"]) == list(range(7))
    assert list(json.loads(got["errors"])) == ["7"] and "truncated shard" in json.loads(got["errors"])["7"]
    assert spans == [str(s) for s in shard_set["shards"]]  # the cut member is refused before any read


@pytest.fixture(scope="module")
def local_ray(s3_server):
    """A local Ray instance started after the S3 fixture set the environment its workers inherit."""
    pytest.importorskip("ray.data")
    import ray

    from featuremaps.engine.ray_cluster import init_ray

    started = init_ray(None, num_cpus=2)
    yield
    if started:
        ray.shutdown()


@pytest.mark.slow
def test_ray_store_of_local_and_s3_shards_equals_the_local_engines(local_ray, s3_server, small_model, shard_set,
                                                                   tmp_path):
    import s3server

    bucket = s3server.Bucket(s3_server, s3_server.new_bucket())
    for p in shard_set["shards"]:
        bucket.fs().pipe(f"{bucket.bucket}/wds/{p.name}", p.read_bytes())
    folder = shard_set["shards"][0].parent
    args = ["--model", str(small_model.path), "--batch-size", "3", "--no-progress"]
    assert main(["extract", f"{folder}/*.tar", *args, "-o", str(tmp_path / "local.zarr")]) == 1
    assert main(["extract", f"{folder}/*.tar", *args, "-o", str(tmp_path / "ray.zarr"), "--engine", "ray"]) == 1
    assert main(["extract", bucket.url("wds/{00000..00001}.tar"), *args, "-o", str(tmp_path / "s3.zarr"),
                 "--engine", "ray"]) == 1
    local = open_store(tmp_path / "local.zarr")
    assert local.counts() == {"ok": 7, "error": 1, "pending": 0}
    for other in (open_store(tmp_path / "ray.zarr"), open_store(tmp_path / "s3.zarr")):
        np.testing.assert_array_equal(other.status_codes, local.status_codes)
        assert [e.message for e in other.errors] == [e.message for e in local.errors]
        for name in local.outputs:
            assert np.array_equal(other[name][:], local[name][:]), name
    assert list(open_store(tmp_path / "ray.zarr").paths) == list(local.paths)


def test_a_ray_decode_task_reads_its_batchs_row_ids_from_the_store(shard_set, tmp_path):
    """The driver ships batch numbers; a task reads its rows' ids from the store (a local path or URL)."""
    pytest.importorskip("ray")
    from featuremaps.engine.preprocess import DecodeBudget
    from featuremaps.engine.ray_engine import _decode_row
    from featuremaps.engine.unit import decode_batch

    rows = collect_inputs(shard_set["shards"])
    location = _store_of(rows, tmp_path, batch_size=3)
    pre = Preprocessing(size=(32, 32))
    for b, (start, stop) in enumerate([(0, 3), (3, 6), (6, 8)]):
        by_store = _decode_row({"batch": b}, pre=pre, store=location)
        want = decode_batch(b, rows[start:stop], pre, DecodeBudget())  # the rows this batch must be
        assert by_store["n"] == stop - start and json.loads(by_store["ok_rows"]) == want.ok_rows
        assert {int(k): v for k, v in json.loads(by_store["errors"]).items()} == want.errors
        np.testing.assert_array_equal(by_store["inputs"], want.inputs)
    assert list(open_store(location).paths[2:7]) == rows[2:7]  # a slice reads only its chunks
