"""The writer pool: chunks written in parallel, the status chunk of a batch only after all of its
tap chunks, the fp16 cast in the pool, and the ring path equal to the plain one."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

import featuremaps.engine.unit as unit
from featuremaps.engine.extractor import Extractor
from featuremaps.engine.pipeline import run_extraction
from featuremaps.engine.store import FeatureStore, output_shapes
from featuremaps.engine.unit import ExtractSettings

SIZE = 32


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, vgg_net):
    """A 3-tap model at 32x32 and 7 small PNG photos (batches of 2: the last one short)."""
    import cv2

    from featuremaps.export.onnx_export import export_model

    net, info = vgg_net
    root = tmp_path_factory.mktemp("wp")
    res = export_model("0,5,10", root / "m.onnx", input_size=SIZE, net=net, weights_info=info)
    rng = np.random.RandomState(0)
    paths = []
    for i in range(7):
        p = root / f"img{i}.png"
        cv2.imwrite(str(p), rng.randint(0, 256, (40, 48, 3)).astype(np.uint8))
        paths.append(str(p))
    return res.path, paths


def _store(ex, path, paths, dtype="fp32"):
    return FeatureStore.create(path, paths=paths, metadata=ex.metadata, shapes=output_shapes(ex.record, ex.session),
                               batch_size=2, dtype=dtype, compression="none")


def test_status_chunk_written_after_all_tap_chunks(tiny, tmp_path, monkeypatch):
    model, paths = tiny
    events, lock = [], threading.Lock()
    real_write = unit.write_tap

    def slow_write(store, name, b, maps, ok_rows, *rest):
        time.sleep(0.03 if name == "features.0" else 0.0)  # the first tap finishes last
        n = real_write(store, name, b, maps, ok_rows, *rest)
        with lock:
            events.append(("chunk", b, name, threading.current_thread().name))
        return n

    monkeypatch.setattr(unit, "write_tap", slow_write)
    with Extractor(model, provider="cpu") as ex:
        st = _store(ex, tmp_path / "s.zarr", paths)
        real_commit = st.commit_batch

        def commit(b, errors, pending=()):
            with lock:
                events.append(("commit", b, None, None))
            real_commit(b, errors, pending)

        st.commit_batch = commit
        summary = run_extraction(st, ex, ex.preprocessing, ExtractSettings(writers=3))
    assert summary.ok == 7 and summary.pending == 0
    for b in range(4):
        at = events.index(("commit", b, None, None))
        chunks = [i for i, e in enumerate(events) if e[0] == "chunk" and e[1] == b]
        assert len(chunks) == 3 and max(chunks) < at, f"batch {b} committed before its chunks"
    assert len({e[3] for e in events if e[0] == "chunk"}) > 1  # more than one writer thread wrote


def test_failed_chunk_write_leaves_its_batch_pending(tiny, tmp_path, monkeypatch):
    model, paths = tiny
    real_write = unit.write_tap

    def failing(store, name, b, maps, ok_rows, *rest):
        if b == 2 and name == "features.5":
            raise OSError(28, "No space left on device")
        return real_write(store, name, b, maps, ok_rows, *rest)

    monkeypatch.setattr(unit, "write_tap", failing)
    with Extractor(model, provider="cpu") as ex:
        st = _store(ex, tmp_path / "f.zarr", paths)
        with pytest.raises(OSError, match="No space left"):
            run_extraction(st, ex, ex.preprocessing, ExtractSettings(writers=2))
    status = FeatureStore.open(tmp_path / "f.zarr").status
    assert list(status[4:6]) == ["pending", "pending"]


def test_fp16_store_from_fp32_model_is_the_cast_of_its_maps(tiny, tmp_path):
    model, paths = tiny
    with Extractor(model, provider="cpu") as ex:
        st = _store(ex, tmp_path / "h.zarr", paths, dtype="fp16")
        run_extraction(st, ex, ex.preprocessing, ExtractSettings(writers=2))
        direct = ex.run_files(paths)
    st = FeatureStore.open(tmp_path / "h.zarr")
    for name, maps in direct.items():
        stored = np.asarray(st[name][:])
        assert maps.dtype == np.float32 and stored.dtype == np.float16
        np.testing.assert_array_equal(stored, maps.astype(np.float16))


def test_ring_path_equals_plain_calls(tiny, tmp_path):
    model, paths = tiny
    with Extractor(model, provider="cpu") as ex:
        run_extraction(_store(ex, tmp_path / "ring.zarr", paths), ex, ex.preprocessing, ExtractSettings(ring_slots=2))
        run_extraction(_store(ex, tmp_path / "plain.zarr", paths), ex.run, ex.preprocessing, ExtractSettings(writers=1))
    a, b = FeatureStore.open(tmp_path / "ring.zarr"), FeatureStore.open(tmp_path / "plain.zarr")
    for name in a.outputs:
        np.testing.assert_array_equal(np.asarray(a[name][:]), np.asarray(b[name][:]))
    assert list(a.status) == list(b.status) == ["ok"] * 7


def test_error_rows_chunks_land_on_disk_so_verify_finds_no_damage(tiny, tmp_path):
    """A batch whose only image fails is written as zeros: its chunks must exist on disk, or verify
    (and --resume) would call the finished batch damaged and redo it on every run."""
    model, paths = tiny
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    with Extractor(model, provider="cpu") as ex:
        st = FeatureStore.create(tmp_path / "e.zarr", paths=[*paths[:2], str(bad)], metadata=ex.metadata,
                                 shapes=output_shapes(ex.record, ex.session), batch_size=1, dtype="fp32",
                                 compression="none")
        summary = run_extraction(st, ex, ex.preprocessing, ExtractSettings(writers=2, workers=0))
        st.close()
    assert (summary.ok, summary.errors) == (2, 1)
    report = FeatureStore.open(tmp_path / "e.zarr").verify()
    assert report.damage == () and report.batches == ()
