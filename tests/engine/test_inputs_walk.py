"""The input walk: extensions of the decoded formats, skipped files counted, paths over
PATH_MAX / NAME_MAX as error rows (never dropped without a word)."""

from __future__ import annotations

import os
import sys
from collections import Counter
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from hostile import small_jpeg  # noqa: E402

from featuremaps.engine.inputs import InputError, collect_inputs, skipped_note  # noqa: E402

LONG = 5000  # bytes: over PATH_MAX (4096)


def _gif() -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (1, 2, 3)).save(buf, "GIF")
    return buf.getvalue()


def test_walk_takes_the_decoded_formats_and_counts_the_rest(tmp_path):
    (tmp_path / "a.jpg").write_bytes(small_jpeg())
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.GIF").write_bytes(_gif())
    (tmp_path / "sub" / "notes.txt").write_text("x")
    (tmp_path / "c.xcf").write_bytes(b"gimp")
    (tmp_path / "d.txt").write_text("y")
    (tmp_path / "e\x1b[2J.\x1b[8m").write_text("hostile extension")
    skipped = Counter()
    paths = collect_inputs([tmp_path], skipped)
    assert [Path(p).name for p in paths] == ["a.jpg", "b.GIF"]
    assert skipped == {".txt": 2, ".xcf": 1, ".\x1b[8m": 1}
    assert skipped_note(skipped) == "4 files skipped: .txt x2, .\\x1b[8m x1, .xcf x1 (not image extensions)"
    assert skipped_note(Counter()) == ""


def _deep_folder(top: Path, depth_bytes: int) -> Path:
    """Nested folders whose full path exceeds ``depth_bytes``, made with relative calls (dir_fd),
    an image at the bottom; returns the deepest folder's path (too long to open by name)."""
    part = "d" * 200
    fd = os.open(top, os.O_RDONLY | os.O_DIRECTORY)
    path = top
    try:
        while len(os.fsencode(path)) < depth_bytes:
            os.mkdir(part, dir_fd=fd)
            nxt = os.open(part, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd, path = nxt, path / part
        img = os.open("deep.jpg", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd)
        os.write(img, small_jpeg())
        os.close(img)
    finally:
        os.close(fd)
    return path


def test_folder_beyond_path_max_is_an_input_not_silence(tmp_path):
    """os.walk drops a folder it cannot list; the walk keeps it as an input (an error row later)."""
    (tmp_path / "top").mkdir()
    deep = _deep_folder(tmp_path / "top", LONG)
    (tmp_path / "top" / "a.jpg").write_bytes(small_jpeg())
    paths = collect_inputs([tmp_path / "top"])
    assert str(tmp_path / "top" / "a.jpg") in paths
    too_long = [p for p in paths if len(os.fsencode(p)) >= 4096]  # PATH_MAX counts the NUL: 4096 bytes fail
    assert len(too_long) == 1 and str(deep).startswith(too_long[0])


def test_named_input_with_a_too_long_name_is_one_line(tmp_path):
    with pytest.raises(InputError, match=r"cannot be read \(File name too long\)"):
        collect_inputs([tmp_path / ("x" * 300 + ".jpg")])
    with pytest.raises(InputError, match="not found; pass image files"):
        collect_inputs([tmp_path / "nope.jpg"])


def test_extract_makes_error_rows_of_too_long_paths(tmp_path, small_model):
    """An @list entry of 5000 bytes, a name of 300 bytes and a folder walk past PATH_MAX: each is an
    error row saying why, next to a good image."""
    from featuremaps.cli import main
    from featuremaps.engine.store import open_store

    (tmp_path / "good.jpg").write_bytes(small_jpeg())
    lst = tmp_path / "list.txt"
    lst.write_text("good.jpg\n" + "/" + "a/" * (LONG // 2) + "x.jpg\n" + "n" * 300 + ".jpg\n")
    walk = tmp_path / "walk"
    walk.mkdir()
    _deep_folder(walk, LONG)
    out = tmp_path / "o.zarr"
    assert main(["extract", f"@{lst}", str(walk), "--model", str(small_model.path), "-o", str(out),
                 "--no-progress", "--workers", "0"]) == 1
    st = open_store(out)
    assert list(st.status).count("ok") == 1 and len(st.errors) == 3
    assert {e.message for e in st.errors} == {"unreadable: File name too long"}
    assert sorted(len(os.fsencode(e.path)) > 4096 for e in st.errors) == [False, True, True]
