"""Bulk extraction: input list, Zarr store, pipeline, bad files, resume after kill -9, CLI."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from featuremaps.cli import main
from featuremaps.engine.inputs import InputError, collect_inputs
from featuremaps.engine.store import FeatureStore, StoreError, open_store

BAD = {"empty.jpg": "empty file", "text.png": "not a decodable image", "trunc.jpg": "truncated JPEG",
       "trunc.png": "truncated PNG"}


def _small_copies(sample_paths, folder: Path, n: int, size: int = 96) -> list[Path]:
    """``n`` small real photos (JPEG and PNG) so decoding costs ~1 ms each."""
    import cv2

    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(n):
        bgr = cv2.imread(str(sample_paths[i % len(sample_paths)]))
        img = cv2.resize(bgr, (size + 7 * (i % 5), size), interpolation=cv2.INTER_AREA)
        path = folder / (f"img{i:03d}.jpg" if i % 2 else f"img{i:03d}.PNG")
        cv2.imwrite(str(path), img)
        out.append(path)
    return out


@pytest.fixture(scope="module")
def image_dir(tmp_path_factory, sample_paths):
    """A folder tree of good images plus one of each kind of bad file."""
    root = tmp_path_factory.mktemp("images")
    _small_copies(sample_paths, root / "sub", 5)
    (root / "a.jpg").write_bytes(Path(sample_paths[0]).read_bytes())
    (root / "empty.jpg").write_bytes(b"")
    (root / "text.png").write_text("not an image\n")
    (root / "trunc.jpg").write_bytes(Path(sample_paths[0]).read_bytes()[:20000])
    (root / "trunc.png").write_bytes((root / "sub" / "img000.PNG").read_bytes()[:3000])
    (root / "notes.txt").write_text("ignored: not an image extension")
    return root


def _extract(*args) -> int:
    return main(["extract", *map(str, args), "--no-progress"])


def _same_store(a: FeatureStore, b: FeatureStore) -> None:
    assert a.paths == b.paths
    np.testing.assert_array_equal(a.status_codes, b.status_codes)
    assert a.errors == b.errors
    assert a.outputs == b.outputs
    for name in a.outputs:
        np.testing.assert_array_equal(a[name][:], b[name][:], err_msg=name)


# ---------------------------------------------------------------- input list


def test_collect_inputs_recursive_sorted_case_insensitive(image_dir):
    paths = collect_inputs([image_dir])
    names = [Path(p).name for p in paths]
    assert paths == sorted(paths) and all(os.path.isabs(p) for p in paths)
    assert "img000.PNG" in names and "notes.txt" not in names
    assert len(paths) == 10


def test_collect_inputs_list_file_and_missing(image_dir, tmp_path):
    lst = tmp_path / "list.txt"
    lst.write_text(f"{image_dir / 'a.jpg'}\n# comment\n\n{image_dir / 'a.jpg'}\nmissing.jpg\n")
    paths = collect_inputs([f"@{lst}"])
    assert paths == sorted([str(image_dir / "a.jpg"), str(tmp_path / "missing.jpg")])
    with pytest.raises(InputError, match="not found; pass image files"):
        collect_inputs([tmp_path / "nope.jpg"])
    (tmp_path / "empty-dir").mkdir()
    with pytest.raises(InputError, match="no images found"):
        collect_inputs([tmp_path / "empty-dir"])


# ---------------------------------------------------------------- end to end


@pytest.fixture(scope="module")
def extracted(tmp_path_factory, small_model, image_dir):
    out = tmp_path_factory.mktemp("stores") / "out.zarr"
    rc = _extract(image_dir, "--model", small_model.path, "-o", out, "--batch-size", "3", "--workers", "2")
    return rc, open_store(out)


def test_extract_good_images_equal_extractor(extracted, small_model):
    from featuremaps.engine.extractor import Extractor

    rc, st = extracted
    assert rc == 1  # some images failed
    ok = [i for i, s in enumerate(st.status) if s == "ok"]
    assert len(ok) == 6
    with Extractor(small_model.path, provider="cpu") as ex:
        for i in ok:
            ref = ex.run_files([st.paths[i]])
            for name in st.outputs:
                np.testing.assert_allclose(st[name][i], ref[name][0], rtol=1e-4, atol=1e-5, err_msg=name)


def test_extract_bad_files_become_error_rows(extracted):
    _, st = extracted
    errors = {Path(e.path).name: e.message for e in st.errors}
    assert set(errors) == set(BAD)
    for name, reason in BAD.items():
        assert reason in errors[name]
    for e in st.errors:  # error rows hold zeros, not stale data
        assert not np.any(st["features.28"][e.index])


def test_open_store_api(extracted, small_model):
    _, st = extracted
    assert [t.name for t in st.taps] == [t.name for t in small_model.taps]
    assert st.metadata["weights"] == small_model.metadata["weights"]
    assert st["features.17"].shape == (len(st.paths), *small_model.taps[3].shape)
    assert st.batch_size == 3 and 3 % st["features.17"].chunks[0] == 0  # a batch owns whole chunks
    assert st.maps(0)["features.0"].shape == small_model.taps[0].shape
    with pytest.raises(KeyError, match="no output 'features.3'"):
        st["features.3"]


def test_existing_store_without_resume_is_an_error(extracted, small_model, image_dir, capsys):
    _, st = extracted
    before = st.status_codes.copy()
    assert _extract(image_dir, "--model", small_model.path, "-o", st.path) == 2
    assert "already exists; add --resume" in capsys.readouterr().err
    np.testing.assert_array_equal(open_store(st.path).status_codes, before)


def test_resume_rejects_other_inputs(extracted, small_model, image_dir, capsys):
    _, st = extracted
    assert _extract(image_dir / "sub", "--model", small_model.path, "-o", st.path, "--resume") == 2
    assert "inputs differ" in capsys.readouterr().err


def test_strict_stops_at_first_bad_image(small_model, image_dir, tmp_path, capsys):
    rc = _extract(image_dir, "--model", small_model.path, "-o", tmp_path / "s.zarr", "--strict",
                  "--batch-size", "2")
    assert rc == 2
    assert "--strict stops at the first bad image" in capsys.readouterr().err
    assert (open_store(tmp_path / "s.zarr").status == "pending").any()


def test_fp16_store(small_model, image_dir, extracted, tmp_path):
    _, ref = extracted
    assert _extract(image_dir, "--model", small_model.path, "-o", tmp_path / "h.zarr", "--dtype", "fp16",
                    "--compression", "none", "--batch-size", "3") == 1
    st = open_store(tmp_path / "h.zarr")
    assert st["features.5"].dtype == np.float16
    np.testing.assert_array_equal(st.status_codes, ref.status_codes)
    a, b = st["features.5"][:].astype(np.float32), ref["features.5"][:]
    np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-3 * np.abs(b).max())


def test_store_create_refuses_existing(tmp_path):
    (tmp_path / "x.zarr").mkdir()
    with pytest.raises(StoreError, match="already exists; add --resume"):
        FeatureStore.create(tmp_path / "x.zarr", paths=["a"], metadata={}, shapes={}, batch_size=1)


# ---------------------------------------------------------------- interruption


def test_interrupted_run_resumes_identically(small_model, image_dir, extracted, tmp_path):
    """Ctrl-C inside the model loop: committed batches stay, the rest resumes to the same store."""
    from featuremaps.engine.extractor import Extractor
    from featuremaps.engine.pipeline import run_extraction

    _, ref = extracted
    out = tmp_path / "i.zarr"
    with Extractor(small_model.path, provider="cpu") as ex:
        st = FeatureStore.create(out, paths=ref.paths, metadata=ex.metadata, shapes=dict(
            (k, tuple(v)) for k, v in ref.info["outputs"].items()), batch_size=3)
        calls = []

        def flaky(batch):
            calls.append(len(batch))
            if len(calls) == 2:
                raise KeyboardInterrupt
            return ex.run(batch)

        s = run_extraction(st, flaky, ex.preprocessing)
        assert s.interrupted and 0 < s.pending < len(ref.paths)
        s = run_extraction(FeatureStore.open(out, "r+"), ex.run, ex.preprocessing)
        assert not s.interrupted and s.pending == 0
    _same_store(open_store(out), ref)


@pytest.mark.slow
def _wait_for_commits(proc, out: Path, n: int, limit_s: float = 120) -> None:
    """Poll until ``n`` rows of ``out`` are committed (batch size 1) or ``proc`` ends. The status
    array's first chunk holds every row here (uint8 codes, then a 4-byte CRC), replaced atomically."""
    chunk = out / "status" / "c" / "0"
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if sum(1 for code in chunk.read_bytes()[:-4] if code) >= n:
                return
        except FileNotFoundError:
            pass
        time.sleep(0.005)


def test_kill_9_then_resume_gives_identical_store(small_model, sample_paths, tmp_path):
    imgs = tmp_path / "imgs"
    _small_copies(sample_paths, imgs, 40, size=72)
    (imgs / "img017.jpg").write_bytes(b"")
    # one intra-op thread and batch 1: many small commits, and CPU left for this test to poll
    args = [imgs, "--model", small_model.path, "--batch-size", "1", "--workers", "1", "--threads", "1",
            "--compression", "none"]
    assert _extract(*args, "-o", tmp_path / "ref.zarr") == 1

    out = tmp_path / "killed.zarr"
    cmd = [sys.executable, "-m", "featuremaps", "extract", *map(str, args), "-o", str(out), "--no-progress"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _wait_for_commits(proc, out, 3)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    partial = open_store(out)
    assert (partial.status == "pending").any() and (partial.status == "ok").any()

    assert _extract(*args, "-o", out) == 2  # not without --resume
    assert _extract(*args, "-o", out, "--resume") == 1
    _same_store(open_store(out), open_store(tmp_path / "ref.zarr"))
    assert not list(out.rglob("*.partial"))


@pytest.mark.slow
def test_sigterm_then_a_second_ctrl_c_stop_cleanly_and_resume(small_model, sample_paths, tmp_path):
    """SIGTERM (a scheduler, `kill`) stops like Ctrl-C: batches in flight committed, the resume
    command printed, exit 130. A Ctrl-C while stopping only says so: no traceback, no leaked
    shared memory (it used to end in a BufferError and a resource_tracker warning)."""
    imgs = tmp_path / "imgs"
    _small_copies(sample_paths, imgs, 40, size=72)
    args = [imgs, "--model", small_model.path, "--batch-size", "1", "--workers", "1", "--threads", "1"]
    assert _extract(*args, "-o", tmp_path / "ref.zarr") == 0
    out = tmp_path / "term.zarr"
    script = Path(sys.executable).with_name("featuremaps")
    cmd = [str(script) if script.is_file() else sys.executable, *([] if script.is_file() else ["-m", "featuremaps"]),
           "extract", *map(str, args), "-o", str(out), "--no-progress"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for_commits(proc, out, 3)
    proc.send_signal(signal.SIGTERM)
    time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode in (130, -signal.SIGINT), err  # -SIGINT: the second signal landed after the exit line
    assert "Resume with: " in err and "Traceback" not in err and "leaked shared_memory" not in err, err
    assert (open_store(out).status == "pending").any()
    assert _extract(*args, "-o", out, "--resume") == 0
    _same_store(open_store(out), open_store(tmp_path / "ref.zarr"))


# ---------------------------------------------------------------- show --store


def test_show_from_store_draws_without_model(extracted, tmp_path, capsys):
    _, st = extracted
    ok = int(np.flatnonzero(st.status == "ok")[0])
    assert main(["show", "--store", str(st.path), "--index", str(ok), "-o", str(tmp_path), "--layers", "0,17"]) == 0
    pngs = sorted(p.name for p in tmp_path.glob("*.png"))
    stem = Path(st.paths[ok]).stem
    assert pngs == sorted([f"{stem}-layers-first-channel.png", f"{stem}-overview.png"])
    assert all((tmp_path / p).stat().st_size > 10_000 for p in pngs)
    bad = st.errors[0]
    assert main(["show", "--store", str(st.path), "--index", str(bad.index), "-o", str(tmp_path)]) == 2
    assert f"is error: {bad.message}" in capsys.readouterr().err


# ---------------------------------------------------------------- one store, one arithmetic


def test_store_checks_the_math_mode_it_records(tmp_path):
    model = {"model": "m", "input": "input", "outputs": [], "taps": [],
             "preprocessing": {"size": [8, 8], "mean": [0, 0, 0], "std": [1, 1, 1]}}
    st = FeatureStore.create(tmp_path / "m.zarr", paths=["a"], shapes={}, batch_size=1,
                             metadata=dict(model, extraction={"provider": "cuda", "math_mode": "tf32", "device": 0}))
    assert FeatureStore.open(tmp_path / "m.zarr").record.extraction["math_mode"] == "tf32"
    st.check_arithmetic("tensorrt", "tf32")  # another provider, the same arithmetic: allowed
    with pytest.raises(StoreError, match=r"computed in tf32 \(cuda\), but this run computes fp32 \(cpu\).*--no-tf32"):
        st.check_arithmetic("cpu", "fp32")
    old = FeatureStore.create(tmp_path / "old.zarr", paths=["a"], shapes={}, batch_size=1, metadata={})
    old.check_arithmetic("cpu", "fp32")  # stores of earlier versions record no mode: not checked


def test_resume_in_another_math_mode_is_refused(small_model, image_dir, tmp_path, capsys):
    """A TF32 GPU job resumed on a machine that computes strict fp32: one line, exit 2, nothing written."""
    from featuremaps.engine.extractor import Extractor
    from featuremaps.engine.hashing import file_sha256
    from featuremaps.engine.store import output_shapes

    out = tmp_path / "gpu.zarr"
    with Extractor(small_model.path, provider="cpu") as ex:
        meta = dict(ex.metadata, extraction={"provider": "cuda", "math_mode": "tf32", "device": 0})
        FeatureStore.create(out, paths=collect_inputs([image_dir]), metadata=meta, batch_size=3,
                            shapes=output_shapes(ex.record, ex.session), model_path=small_model.path.resolve(),
                            model_sha256=file_sha256(small_model.path)).close()
    rc = _extract(image_dir, "--model", small_model.path, "-o", out, "--batch-size", "3", "--resume",
                  "--provider", "cpu")
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and err[-1].startswith("featuremaps: error: ")
    assert "computed in tf32 (cuda), but this run computes fp32 (cpu)" in err[-1]
    assert (open_store(out).status == "pending").all()


# ---------------------------------------------------------------- options that would be ignored


@pytest.mark.parametrize("extra", [["--layers", "10"], ["--input-size", "64"], ["--weights", "random"],
                                   ["--seed", "3"]], ids=["layers", "input-size", "weights", "seed"])
def test_zoo_options_with_an_onnx_file_are_refused(small_model, image_dir, tmp_path, capsys, extra):
    """They build a zoo model; with an .onnx file they were silently ignored (--layers 10 gave a store
    of the file's own taps)."""
    rc = _extract(image_dir, "--model", small_model.path, "-o", tmp_path / "s.zarr", *extra)
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and f"{extra[0]} build a zoo model" in err[0] and "drop" in err[0], err
    assert not (tmp_path / "s.zarr").exists()


@pytest.mark.parametrize("extra", [["--actors", "2"], ["--ray-address", "auto"], ["--gpus-per-actor", "1"]],
                         ids=["actors", "ray-address", "gpus-per-actor"])
def test_ray_options_without_engine_ray_are_refused(small_model, image_dir, tmp_path, capsys, extra):
    rc = _extract(image_dir, "--model", small_model.path, "-o", tmp_path / "s.zarr", *extra)
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and f"{extra[0]} apply to --engine ray" in err[0], err
    assert not (tmp_path / "s.zarr").exists()


@pytest.mark.parametrize("option,value", [("--max-file-bytes", "9223372036854775807"), ("--threads", "100000"),
                                          ("--max-pixels", str(10**13)), ("--writers", "100000")])
def test_huge_limits_are_refused_at_parse_time(capsys, option, value):
    """--max-file-bytes 2**63-1 used to be accepted and then blamed every image (OverflowError);
    --threads 100000 hung."""
    with pytest.raises(SystemExit) as exit_:
        _extract("x.jpg", "-o", "never.zarr", option, value)
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_.value.code == 2 and len(err) == 1 and f"{option} must be in 1.." in err[0] and value in err[0], err


def test_a_folder_named_featuremaps_where_the_user_stands_does_not_break_decoding(small_model, sample_paths,
                                                                                  tmp_path, monkeypatch):
    """Python 3.11's forkserver starts as `python -c` with the current folder first on sys.path and
    preloads before applying the parent's path: a folder named `featuremaps` there shadowed the
    package, every decode worker died, and every image became an error row."""
    import shutil
    import subprocess
    import sys

    work = tmp_path / "here"
    (work / "featuremaps").mkdir(parents=True)
    img = tmp_path / "a.jpg"
    shutil.copy(sample_paths[0], img)
    script = Path(sys.executable).with_name("featuremaps")  # `python -m` would itself put the folder first
    if not script.is_file():
        pytest.skip("no featuremaps console script next to this interpreter")
    proc = subprocess.run([str(script), "extract", str(img), "--model", str(small_model.path),
                           "-o", "s.zarr", "--no-progress", "--workers", "1"], cwd=work, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "1 ok, 0 errors" in proc.stdout


def test_decode_mode_is_recorded_and_resume_keeps_it(small_model, image_dir, tmp_path, capsys):
    """--resume --decode reduced on a store decoded in full used to mix two pixel pipelines silently."""
    out = tmp_path / "r.zarr"
    assert _extract(image_dir, "--model", small_model.path, "-o", out, "--decode", "reduced") == 1
    assert open_store(out).metadata["preprocessing"]["decode"] == "reduced"
    assert open_store(out).record.preprocessing.decode == "reduced"  # what Ray's decode tasks are given
    before = open_store(out).status_codes.copy()
    capsys.readouterr()
    assert _extract(image_dir, "--model", small_model.path, "-o", out, "--resume", "--decode", "full") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "was decoded with --decode reduced, not full" in err[0], err
    assert _extract(image_dir, "--model", small_model.path, "-o", out, "--resume") == 1  # takes the store's
    np.testing.assert_array_equal(open_store(out).status_codes, before)


def test_an_empty_folder_as_output_is_named_as_such(small_model, image_dir, tmp_path, capsys):
    """It used to say "already exists; add --resume", and --resume then said there was no store."""
    (tmp_path / "empty.zarr").mkdir()
    for extra in ([], ["--resume"]):
        assert _extract(image_dir, "--model", small_model.path, "-o", tmp_path / "empty.zarr", *extra) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "is an empty folder; choose a new -o path" in err[0], err


def test_resume_opens_the_store_once_and_sizes_the_model_by_it(small_model, sample_paths, tmp_path, monkeypatch):
    """Before: --resume opened the store once to read its batch size and again, locked, to resume."""
    import featuremaps.cli.extract as cli_extract

    out = tmp_path / "s.zarr"
    args = (sample_paths[0], sample_paths[1], sample_paths[2], "--model", small_model.path, "-o", out)
    assert _extract(*args, "--batch-size", "2") == 0
    opens, batches = [], []
    real_open, real_extractor = FeatureStore.open.__func__, cli_extract.Extractor
    monkeypatch.setattr(FeatureStore, "open", classmethod(lambda cls, *a, **k: opens.append(k) or
                                                          real_open(cls, *a, **k)))
    monkeypatch.setattr(cli_extract, "Extractor", lambda *a, **k: batches.append(k["max_batch"]) or
                        real_extractor(*a, **k))
    assert _extract(*args, "--resume") == 0
    assert opens == [{"mode": "r+", "lock": True}] and batches == [2]


def test_tensorrt_cache_key_reuses_the_records_hash(small_model, monkeypatch, tmp_path):
    from featuremaps.engine import providers, validate

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    by_path = providers.cache_dir_for(small_model.path, "profile")
    record = validate.read_model_record(small_model.path)
    assert record.sha256  # hashed once, here
    monkeypatch.setattr(providers, "file_sha256", lambda *a: pytest.fail("hashed the model file again"))
    assert providers.cache_dir_for(record, "profile") == by_path
    opts = providers._tensorrt_options(providers.OptionRequest(model_path=record))
    assert opts["trt_engine_cache_path"].startswith(str(tmp_path / "featuremaps" / "tensorrt"))
