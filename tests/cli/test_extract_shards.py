"""`featuremaps extract` on WebDataset tar shards (brace ranges, S3) gives the maps the same images
give as files; --resume means the same rows; bad and hostile members are error rows printed escaped;
`show` draws a member."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import shards as wds
from featuremaps.cli import main
from featuremaps.engine.store import open_store


def _extract(*args) -> int:
    return main(["extract", *map(str, args), "--no-progress"])


def _same_maps(a, b) -> None:
    assert a.outputs == b.outputs and len(a.paths) == len(b.paths)
    np.testing.assert_array_equal(a.status_codes, b.status_codes)
    for name in a.outputs:
        assert np.array_equal(a[name][:], b[name][:]), name


@pytest.fixture(scope="module")
def dataset(tmp_path_factory, sample_paths):
    """3 shards x 3 samples (image + .cls + .json), and the same images unpacked into a folder."""
    root = tmp_path_factory.mktemp("wds")
    made = wds.webdataset(sample_paths, root / "shards")
    unpacked = root / "unpacked"
    unpacked.mkdir()
    for _, name, data in made["images"]:
        (unpacked / name).write_bytes(data)
    return root, made


@pytest.fixture(scope="module")
def from_files(dataset, small_model, tmp_path_factory):
    root, _ = dataset
    out = tmp_path_factory.mktemp("stores") / "files.zarr"
    assert _extract(root / "unpacked", "--model", small_model.path, "-o", out, "--batch-size", "2") == 0
    return open_store(out)


@pytest.fixture(scope="module")
def from_shards(dataset, small_model, tmp_path_factory):
    root, _ = dataset
    out = tmp_path_factory.mktemp("stores") / "shards.zarr"
    assert _extract(f"{root}/shards/{{00000..00002}}.tar", "--model", small_model.path, "-o", out,
                    "--batch-size", "2", "--workers", "2") == 0
    return open_store(out)


def test_shards_give_the_maps_of_the_unpacked_files(dataset, from_files, from_shards):
    _, made = dataset
    assert list(from_shards.paths) == [f"{shard}#{name}" for shard, name, _ in made["images"]]
    assert [Path(p).name for p in from_files.paths] == [name for _, name, _ in made["images"]]
    assert from_shards.counts()["ok"] == 9
    _same_maps(from_shards, from_files)


def test_inline_decoding_gives_the_same_maps(dataset, small_model, from_shards, tmp_path, capsys):
    root, _ = dataset
    out = tmp_path / "inline.zarr"
    assert _extract(f"{root}/shards/*.tar", "--model", small_model.path, "-o", out, "--batch-size", "2",
                    "--workers", "0") == 0
    assert "18 files skipped: .cls x9, .json x9 (not image extensions)" in capsys.readouterr().out
    _same_maps(open_store(out), from_shards)


def test_an_interrupted_run_resumes_to_the_same_rows(dataset, small_model, from_shards, tmp_path, monkeypatch):
    import featuremaps.cli.extract as cli_extract

    root, _ = dataset
    real = cli_extract.run_extraction
    calls = []

    def stop_at_second_batch(store, ex, pre, settings, progress=None):
        def model(batch):
            calls.append(len(batch))
            if len(calls) == 2:
                raise KeyboardInterrupt
            return ex.run(batch)
        return real(store, model, pre, settings, progress=progress)

    out = tmp_path / "r.zarr"
    args = (f"{root}/shards/{{00000..00002}}.tar", "--model", small_model.path, "-o", out, "--batch-size", "2")
    monkeypatch.setattr(cli_extract, "run_extraction", stop_at_second_batch)
    assert _extract(*args) == 130
    assert 0 < open_store(out).counts()["pending"] < 9
    monkeypatch.setattr(cli_extract, "run_extraction", real)
    assert _extract(f"{root}/shards/*.tar", *args[1:], "--resume") == 0  # another pattern, the same rows
    st = open_store(out)
    assert list(st.paths) == list(from_shards.paths)
    _same_maps(st, from_shards)
    # other shards are other rows: refused
    assert _extract(f"{root}/shards/{{00000..00001}}.tar", *args[1:], "--resume") == 2


def test_bad_and_hostile_members_are_error_rows_printed_escaped(sample_paths, small_model, tmp_path, capsys):
    _, photo = wds.photo_bytes(sample_paths, 0)
    _, big = wds.photo_bytes(sample_paths, 2, width=400)
    shard = wds.write_shard(tmp_path / "in" / "s.tar", [
        ("../../etc/passwd.jpg", photo), ("line\nbreak\x1b[2J.jpg", b"not an image\n"),
        ("big.jpg", big), ("ok.jpg", photo), ("ok.cls", b"1")])
    before = sorted(p for p in tmp_path.rglob("*"))
    out = tmp_path / "out.zarr"
    limit = len(big) - 1
    assert len(photo) < limit
    assert _extract(shard, "--model", small_model.path, "-o", out, "--max-file-bytes", limit) == 1
    err = capsys.readouterr().err
    st = open_store(out)
    assert list(st.paths) == [f"{shard}#{n}" for n in ("../../etc/passwd.jpg", "line\nbreak\x1b[2J.jpg",
                                                       "big.jpg", "ok.jpg")]
    assert st.counts() == {"ok": 2, "error": 2, "pending": 0}
    reasons = {e.path.partition("#")[2]: e.message for e in st.errors}
    assert reasons["big.jpg"].startswith(f"member is {len(big)} bytes, over the {limit}-byte limit")
    assert "not a decodable image" in reasons["line\nbreak\x1b[2J.jpg"]
    assert "s.tar#line\\nbreak\\x1b[2J.jpg: not a decodable image" in err and "\x1b" not in err
    assert sorted(p for p in tmp_path.rglob("*") if out not in p.parents and p != out) == before
    np.testing.assert_array_equal(st["features.0"][0], st["features.0"][3])  # the same photo twice


def test_show_draws_a_member(dataset, small_model, tmp_path, capsys):
    _, made = dataset
    shard, name, _ = made["images"][0]
    assert main(["show", f"{shard}#{name}", "--model", str(small_model.path), "-o", str(tmp_path / "figs"),
                 "--layers", "features.0", "--channels", "2"]) == 0
    assert sorted(p.suffix for p in (tmp_path / "figs").iterdir()) == [".png", ".png"]  # one image: into -o
    out = capsys.readouterr().out
    assert f"\n{name}: vgg16 input" in out
    assert main(["show", str(shard), "--model", str(small_model.path), "-o", str(tmp_path / "all"),
                 "--layers", "features.0", "--channels", "2"]) == 0
    stems = [Path(n).stem for sh, n, _ in made["images"] if sh == shard]
    assert sorted(p.name for p in (tmp_path / "all").iterdir() if p.is_dir()) == stems  # a folder per member


def test_s3_shards_through_the_command_line(dataset, small_model, from_shards, s3, tmp_path):
    """A separate process, as a user runs it: credentials and endpoint from the environment."""
    _, made = dataset
    for p in made["shards"]:
        s3.fs().pipe(f"{s3.bucket}/wds/{p.name}", p.read_bytes())
    out = tmp_path / "s3.zarr"
    cmd = [sys.executable, "-m", "featuremaps", "extract", s3.url("wds/{00000..00002}.tar"), "--model",
           str(small_model.path), "-o", str(out), "--batch-size", "2", "--workers", "2", "--no-progress"]
    proc = subprocess.run(cmd, env=s3.env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    st = open_store(out)
    assert list(st.paths) == [f"{s3.url('wds/' + sh.name)}#{n}" for sh, n, _ in made["images"]]
    _same_maps(st, from_shards)
