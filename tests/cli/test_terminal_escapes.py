"""Hostile strings reach the terminal escaped: a model name, alias, seed or version string, a
store attribute or a file name holding ``ESC[2J`` (clear screen), ``ESC[8m`` (hide text), a
carriage return, a C1 CSI or a bidi override prints as ``\\x1b[2J`` ..., never raw.

The model is the 10 KB tests/models file with its metadata edited; the store is extracted from it.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest

from featuremaps.cli import main
from featuremaps.errors import terminal_lines, terminal_text

GOOD = Path(__file__).parent.parent / "models" / "vgg16-features0-32.onnx"
HOSTILE = "\x1b[2J\x1b[8m\rFAKE\u202e\x9b"
RAW = ("\x1b", "\r", "\u202e", "\x9b")  # none of these may reach stdout or stderr
SHOWN = "\\x1b[2J\\x1b[8m\\rFAKE\\u202e\\x9b"  # what the user sees instead


def hostile_model(folder: Path) -> Path:
    """The tiny model with ``HOSTILE`` in its model name, tap alias, a tool version and ``created``."""
    import onnx

    proto = onnx.load(str(GOOD))
    entry = next(p for p in proto.metadata_props if p.key == "featuremaps")
    meta = json.loads(entry.value)
    meta["model"] = "vgg16" + HOSTILE
    meta["taps"][0]["alias"] = "conv1_1" + HOSTILE
    meta["versions"]["onnx"] = "1" + HOSTILE
    meta["created"] = "2026" + HOSTILE
    entry.value = json.dumps(meta)
    out = folder / "hostile.onnx"
    onnx.save(proto, str(out))
    return out


def _run(capsys, *argv) -> tuple[int, str]:
    rc = main([str(a) for a in argv])
    cap = capsys.readouterr()
    return rc, cap.out + cap.err


def _assert_escaped(text: str, expect_shown: bool = True) -> None:
    leaked = [repr(c) for c in RAW if c in text]
    assert not leaked, f"raw {leaked} reached the terminal:\n{text!r}"
    if expect_shown:
        assert SHOWN in text, text


def test_terminal_text_escapes_controls_bidi_and_line_breaks():
    assert terminal_text("a" + HOSTILE) == "a" + SHOWN
    for c in "\x00\x07\x7f\x85\u200e\u200f\u202a\u202d\u2066\u2069\u2028\ufeff":
        assert terminal_text(c) == c.encode("unicode_escape").decode("ascii") != c
    assert terminal_text("caf\u00e9 \u732b \\x.jpg") == "caf\u00e9 \u732b \\x.jpg"  # printable text unchanged
    assert terminal_lines("a\x1bb\nc\rd") == "a\\x1bb\nc\\rd"  # kept newlines are ours, not the data's


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    """``(folder, model, image)``: the hostile model and a small image whose name holds ``HOSTILE``."""
    import cv2

    folder = tmp_path_factory.mktemp("hostile")
    image = folder / f"a{HOSTILE}.png"
    cv2.imwrite(str(image), np.full((20, 20, 3), 90, np.uint8))
    return folder, hostile_model(folder), image


@pytest.mark.parametrize("argv", [["info", "{model}"], ["layers", "--model", "{model}"],
                                  ["show", "{image}", "--model", "{model}", "-o", "{out}"]],
                         ids=["info", "layers", "show"])
def test_model_metadata_is_escaped(hostile, argv, tmp_path, capsys):
    folder, model, image = hostile
    rc, text = _run(capsys, *(a.format(model=model, image=image, out=tmp_path / "o") for a in argv))
    assert rc == 0, text
    _assert_escaped(text)
    assert f"vgg16{SHOWN}" in text  # the model name, shown in full with its escapes


def test_info_json_escapes_control_characters(hostile, capsys):
    rc, text = _run(capsys, "info", "--json", hostile[1])
    assert rc == 0
    _assert_escaped(text, expect_shown=False)
    assert json.loads(text)["model"] == "vgg16" + HOSTILE  # still the exact string, as JSON escapes


@pytest.mark.slow
def test_store_attributes_and_stored_paths_are_escaped(hostile, tmp_path, capsys):
    folder, model, image = hostile
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    (imgs / image.name).write_bytes(image.read_bytes())
    (imgs / "b\rc.png").write_bytes(b"")  # an error row whose stored path holds a CR
    store = tmp_path / "s.zarr"
    rc, _ = _run(capsys, "extract", imgs, "--model", model, "-o", store, "--no-progress")
    assert rc == 1  # one bad image
    for argv in (["info", store], ["show", "--store", store, "--index", "0", "-o", tmp_path / "o"],
                 ["verify", store]):
        rc, text = _run(capsys, *argv)
        assert rc == 0, text
        _assert_escaped(text, expect_shown=argv[0] != "verify")
    # the error row: one line on stderr, not cut at the CR of its stored path, the CR shown as \r
    rc = main(["show", "--store", str(store), "--index", "1", "-o", str(tmp_path / "o2")])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "\r" not in err, repr(err)
    assert "b\\rc.png) is error: empty file" in err, err


@pytest.mark.slow
def test_report_parity_note_quoting_the_model_name_is_escaped(hostile, tmp_path, capsys):
    folder, model, image = hostile
    rc, text = _run(capsys, "report", image, "--model", model, "-o", tmp_path / "r")
    assert rc == 0, text
    _assert_escaped(text)  # "parity not computed: the model's metadata names 'vgg16\x1b[2J...'"
    assert "parity not computed" in text


def test_log_lines_are_escaped():
    """A library log line quoting a hostile path is escaped by the CLI's log formatter."""
    from featuremaps.cli import _EscapingFormatter

    record = logging.LogRecord("featuremaps.engine", logging.WARNING, __file__, 1, "decode of %s failed",
                               (f"/x/a{HOSTILE}.jpg",), None)
    line = _EscapingFormatter("%(levelname)s %(name)s: %(message)s").format(record)
    assert line == f"WARNING featuremaps.engine: decode of /x/a{SHOWN}.jpg failed"
