"""Output files: a command never overwrites a file it did not make, and an output it cannot write
(read-only folder, a file in the way, full stdout) is one line on stderr and exit status 2."""

from __future__ import annotations

import errno
import hashlib
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from featuremaps.cli import main
from featuremaps.cli import _args, cache


from test_args import _exit_line  # noqa: E402 - tests/cli is on sys.path (pytest's prepend import mode)


def _digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def photo(tmp_path):
    path = tmp_path / "photo.png"
    path.write_bytes(b"\x89PNG not really, but the user's")
    return path


def test_parity_json_never_overwrites(capsys, photo):
    """Before: --json on the model being checked (or a photo) replaced it with JSON, exit 0."""
    before = _digest(photo)
    err = _exit_line(capsys, ["parity", "--model", "m.onnx", "--json", str(photo)])
    assert "exists and is never overwritten" in err and _digest(photo) == before


@pytest.mark.parametrize("out", ["photo.png", "photo", "photo.json"])
def test_bench_output_never_overwrites(capsys, photo, out):
    """Before: -o photo.png (or -o photo) replaced photo.png with the throughput chart, exit 0."""
    before = _digest(photo)
    err = _exit_line(capsys, ["bench", "-o", str(photo.parent / out)])
    assert "photo.png' exists and is never overwritten" in err and _digest(photo) == before


def test_export_never_overwrites_without_force(capsys, photo):
    """Before: export -o photo.png wrote a model over the photo without --force."""
    before = _digest(photo)
    assert main(["export", "--layers", "0", "--input-size", "32", "-o", str(photo), "--no-verify"]) == 2
    err = capsys.readouterr().err.strip()
    assert "exists and is never overwritten" in err and "--force" in err and len(err.splitlines()) == 1
    assert _digest(photo) == before


def test_export_never_writes_over_its_weights_file(capsys, photo):
    """Even --force does not turn the --weights file into the output."""
    before = _digest(photo)
    assert main(["export", "--weights", str(photo), "-o", str(photo), "--force", "--no-verify"]) == 2
    assert "is the input file" in capsys.readouterr().err and _digest(photo) == before


@pytest.mark.parametrize("argv", [["export", "-o", "OUT"], ["parity", "--json", "OUT"], ["bench", "-o", "OUT"]],
                         ids=["export", "parity", "bench"])
def test_unwritable_destination_is_one_line(capsys, tmp_path, monkeypatch, argv):
    """Before: a read-only folder gave an OSError traceback after the run (or the export)."""
    real_access = os.access
    monkeypatch.setattr(_args.os, "access", lambda p, mode: False if str(p) == str(tmp_path) else real_access(p, mode))
    err = _exit_line(capsys, [str(tmp_path / "new") if a == "OUT" else a for a in argv])
    assert "is not writable" in err


def test_destination_under_a_file_is_one_line(capsys, photo):
    err = _exit_line(capsys, ["parity", "--json", str(photo / "p.json")])
    assert "is a file, not a folder" in err


def test_write_new_file_refuses_an_existing_file(photo):
    before = _digest(photo)
    with pytest.raises(_args.ArgumentError, match="never overwritten"):
        _args.write_new_file(photo, "{}")
    assert _digest(photo) == before


def test_write_new_file_on_a_full_disk_leaves_no_partial_file(tmp_path, monkeypatch):
    out = tmp_path / "full.json"
    real_open = open

    class Full:
        """The file ``open`` made, whose writes fail as on a full disk."""

        def __init__(self, f):
            self.f = f

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

        def write(self, data):
            raise OSError(errno.ENOSPC, "No space left on device")

    def fake_open(path, mode="r", *a, **k):
        f = real_open(path, mode, *a, **k)
        return Full(f) if Path(path) == out else f

    monkeypatch.setattr("builtins.open", fake_open)
    with pytest.raises(_args.ArgumentError, match="No space left on device"):
        _args.write_new_file(out, "{}")
    assert not out.exists()


# ---------------------------------------------------------------- the model cache


@pytest.mark.parametrize("value", ["", "relative/cache"], ids=["empty", "relative"])
def test_cache_ignores_empty_or_relative_xdg(tmp_path, monkeypatch, capsys, value):
    """Before: XDG_CACHE_HOME= made `cache --clear` delete ./featuremaps/models in the cwd."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_CACHE_HOME", value)
    mine = tmp_path / "featuremaps" / "models"
    mine.mkdir(parents=True)
    (mine / "vgg16-0123456789abcdef.onnx").write_bytes(b"my model")
    assert cache.cache_root() == tmp_path / "home" / ".cache" / "featuremaps" / "models"
    assert main(["cache", "--clear"]) == 0
    assert (mine / "vgg16-0123456789abcdef.onnx").read_bytes() == b"my model"


def test_cache_clear_deletes_only_files_the_cache_made(tmp_path, monkeypatch, capsys):
    """Before: --clear ran rmtree on the folder, notes and hand-placed models included."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    root = tmp_path / "featuremaps" / "models"
    root.mkdir(parents=True)
    made = [root / "vgg16-0123456789abcdef.onnx", root / "resnet50-bench-fedcba9876543210-int8.onnx",
            root / "vgg16_bn-00000000ffffffff.onnx.partial"]
    for p in made:
        p.write_bytes(b"x" * 1000)
    kept = [root / "my_precious.onnx", root / "notes.txt", root / "vgg16-abc.onnx"]
    for p in kept:
        p.write_text("keep me")
    assert main(["cache"]) == 0
    out = capsys.readouterr().out
    assert "3 files" in out and "3 other entries left alone" in out and "my_precious" not in out
    assert main(["cache", "--clear"]) == 0
    assert not any(p.exists() for p in made) and all(p.read_text() == "keep me" for p in kept)


def test_cache_that_is_a_file_is_one_line(tmp_path, monkeypatch):
    """Before: exporting a zoo model into a cache under a file gave a NotADirectoryError traceback."""
    (tmp_path / "xdgfile").write_text("not a folder")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdgfile"))
    with pytest.raises(cache.ModelFileError, match="cannot create the model cache .*XDG_CACHE_HOME"):
        cache.ensure_cache_root()


def test_read_only_cache_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr(cache.os, "access", lambda p, mode: False)
    with pytest.raises(cache.ModelFileError, match="is not writable; set XDG_CACHE_HOME"):
        cache.ensure_cache_root()


# ---------------------------------------------------------------- stdout, encodings, Ctrl-C


def _run_cli(*argv, env_extra=None, stdout=subprocess.PIPE):
    env = dict(os.environ, **(env_extra or {}))
    return subprocess.run([sys.executable, "-m", "featuremaps", *argv], stdout=stdout, stderr=subprocess.PIPE,
                          env=env, text=True, timeout=120)


@pytest.mark.parametrize("argv", [["layers"], ["--help"], ["--version"]], ids=["layers", "help", "version"])
def test_full_stdout_is_one_line(argv):
    """Before: `featuremaps layers >/dev/full` ended in an OSError traceback; --help exited 0."""
    with open("/dev/full", "w") as full:
        res = _run_cli(*argv, stdout=full)
    err = res.stderr.strip()
    assert res.returncode == 2 and "No space left on device" in err and len(err.splitlines()) == 1, err


def test_ascii_stdout_escapes_what_it_cannot_encode(tmp_path):
    """Before: PYTHONIOENCODING=ascii gave a UnicodeEncodeError traceback on the first non-ASCII character."""
    res = _run_cli("cache", env_extra={"PYTHONIOENCODING": "ascii", "XDG_CACHE_HOME": str(tmp_path / "café")})
    assert res.returncode == 0 and not res.stderr, res.stderr
    assert "caf\\xe9" in res.stdout


def test_ctrl_c_that_breaks_an_import_exits_130(monkeypatch, capsys):
    """Ctrl-C while onnxruntime initialises surfaces as ImportError('initialization failed'): exit 130."""
    def cmd(args):
        try:
            os.kill(os.getpid(), signal.SIGINT)
        except KeyboardInterrupt:
            raise ImportError("initialization failed") from None

    monkeypatch.setattr("featuremaps.cli.layers.cmd_layers", cmd)
    assert main(["layers"]) == 130
    assert capsys.readouterr().err.strip() == "featuremaps: interrupted"


def test_second_ctrl_c_does_not_break_the_cleanup(monkeypatch, capsys):
    """Before: a second Ctrl-C interrupted the first one's cleanup (BufferError traceback)."""
    cleaned = []

    def cmd(args):
        try:
            os.kill(os.getpid(), signal.SIGINT)
        finally:
            os.kill(os.getpid(), signal.SIGINT)  # lands in the cleanup
            cleaned.append(True)

    monkeypatch.setattr("featuremaps.cli.layers.cmd_layers", cmd)
    assert main(["layers"]) == 130 and cleaned
    assert capsys.readouterr().err.strip() == "featuremaps: interrupted"
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # put back for the next caller


def test_show_never_replaces_a_users_file_but_redraws_its_own(tmp_path, small_model, sample_paths, capsys):
    """`show` writes IMAGE-overview.png etc. into -o: a user's file of that name stays as it was
    (one line, exit 2, nothing of the set written); a figure featuremaps drew is replaced."""
    from PIL import Image

    from featuremaps.viz.draw import made_by_featuremaps

    out = tmp_path / "figs"
    out.mkdir()
    image = Path(sample_paths[0])
    argv = ["show", str(image), "--model", str(small_model.path), "-o", str(out)]
    assert main(argv) == 0
    drawn = sorted(out.iterdir())
    assert drawn and all(made_by_featuremaps(p) for p in drawn)
    before = {p.name: _digest(p) for p in drawn}
    assert main(argv) == 0  # our own figures: redrawn in place
    assert sorted(p.name for p in out.iterdir()) == sorted(before)

    users = drawn[-1]
    Image.new("RGB", (8, 8), (1, 2, 3)).save(users)  # the user's own picture under that name
    mine = _digest(users)
    others = {p.name: p.stat().st_mtime_ns for p in drawn if p != users}
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].endswith("exists and was not made by featuremaps; move it away or choose "
                                             "another output folder with -o")
    assert _digest(users) == mine
    assert {p.name: p.stat().st_mtime_ns for p in drawn if p != users} == others  # none of the set rewritten


def test_demo_never_replaces_a_users_model_file(tmp_path, capsys):
    out = tmp_path / "demo"
    out.mkdir()
    users = out / "vgg16-taps.onnx"
    users.write_bytes(b"the user's own model, not an export")
    assert main(["demo", "-o", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "vgg16-taps.onnx exists and is not a model featuremaps exported" in err[0]
    assert users.read_bytes() == b"the user's own model, not an export"


# ---------------------------------------------------------------- a failed command leaves no new empty folder


@pytest.mark.parametrize("argv", [
    ["show", "{image}", "--layers", "conv9_9", "--input-size", "32", "-o", "{out}"],
    ["show", "{image}", "--model", "{missing}", "-o", "{out}"],
    ["show", "--store", "{missing}", "-o", "{out}"],
    ["demo", "--weights", "{missing}", "-o", "{out}"],
], ids=["show-bad-layer", "show-missing-model", "show-missing-store", "demo-missing-weights"])
def test_failed_command_removes_the_folder_it_made(tmp_path, sample_paths, capsys, argv):
    """Before: `show`/`demo` created -o (and its missing parents) first, then failed with exit 2 and
    left the empty folders behind. A folder that was there before stays."""
    kept = tmp_path / "was-there"
    kept.mkdir()
    out = kept / "new" / "deeper"
    values = {"image": str(sample_paths[0]), "missing": str(tmp_path / "missing.onnx"), "out": str(out)}
    assert main([a.format(**values) for a in argv]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
    assert not (kept / "new").exists() and kept.is_dir()


def test_failed_export_removes_the_folder_it_made(tmp_path, monkeypatch, capsys):
    """export_model creates the .onnx file's folder before the slow torch export; an export that
    fails (or is interrupted) after that leaves no new empty folder."""
    from featuremaps.errors import ModelFileError

    def failing_export(taps, output, **kw):
        Path(output).parent.mkdir(parents=True)
        raise ModelFileError("the export failed")

    monkeypatch.setattr("featuremaps.cli.export.export_model", failing_export)
    out = tmp_path / "models" / "sub" / "m.onnx"
    assert main(["export", "--layers", "0", "--input-size", "32", "--weights", "random", "-o", str(out)]) == 2
    assert capsys.readouterr().err.strip().endswith("featuremaps: error: the export failed")
    assert not (tmp_path / "models").exists()


def test_removed_if_failed_keeps_what_it_should(tmp_path):
    """Only folders that were missing on entry and are still empty go; success removes nothing."""
    made, full = tmp_path / "a" / "b", tmp_path / "c" / "d"
    with pytest.raises(RuntimeError), _args.removed_if_failed(made), _args.removed_if_failed(full):
        made.mkdir(parents=True)
        full.mkdir(parents=True)
        (full / "result.png").write_bytes(b"written before the failure")
        raise RuntimeError
    assert not (tmp_path / "a").exists()
    assert (full / "result.png").is_file()
    with _args.removed_if_failed(made):
        made.mkdir(parents=True)
    assert made.is_dir()
