"""A hostile-input corpus for the decode budget, generated in a folder (shared by the decode tests)."""

from __future__ import annotations

import io
import os
import shutil
import struct
import zlib
from pathlib import Path

GOOD = ("good_a.jpg", "good_b.png")


def small_jpeg(w: int = 48, h: int = 32) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (w, h), (200, 30, 60)).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def jpeg_declaring(width: int, height: int) -> bytes:
    """A small real JPEG whose SOF0 header is patched to declare ``width x height``."""
    data = bytearray(small_jpeg())
    sof = data.index(b"\xff\xc0")
    struct.pack_into(">HH", data, sof + 5, height, width)  # FFC0, length(2), precision(1), height, width
    return bytes(data)


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)


def png_declaring(width: int, height: int) -> bytes:
    """A hand-built PNG: a valid IHDR declaring ``width x height`` RGB, a tiny IDAT, IEND."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", zlib.compress(b"\x00" * 64))
            + _chunk(b"IEND", b""))


def make_corpus(folder: Path, photo: Path, odd_name: bool = True) -> dict[str, str]:
    """Write good files and hostile ones into ``folder``; returns ``{file name: expected reason regex}``
    for the hostile ones (names are ``str``). ``odd_name``: also a good image named ``ODD_NAME``
    (not UTF-8, with a newline)."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(photo, folder / GOOD[0])
    Image.open(photo).convert("RGB").save(folder / GOOD[1])
    real = photo.read_bytes()
    cut = real[: len(real) // 2]
    files = {
        "bomb_jpeg.jpg": (jpeg_declaring(30000, 30000), r"declares (30000x30000 = )?900 megapixels, over"),
        "bomb_png.png": (png_declaring(60000, 60000), r"declares (60000x60000 = )?3600 megapixels, over"),
        "truncated.jpg": (cut, r"truncated JPEG \(the decoder says: Premature end"),
        "truncated_eoi.jpg": (cut + b"\xff\xd9", r"truncated JPEG \(the decoder says: Corrupt JPEG data: premature end"),
        "empty.jpg": (b"", r"empty file"),
        "text.png": (b"this is not an image\n" * 10, r"not a decodable image"),
    }
    expected = {}
    for name, (data, reason) in files.items():
        (folder / name).write_bytes(data)
        expected[name] = reason
    os.mkfifo(folder / "pipe.jpg")
    expected["pipe.jpg"] = r"named pipe \(FIFO\), not an image file"
    os.symlink("/dev/zero", folder / "zero.jpg")
    expected["zero.jpg"] = r"character device, not an image file"
    (folder / "dir.jpg").mkdir()
    expected["dir.jpg"] = r"a directory, not an image file"
    if odd_name:  # not UTF-8, and a newline: a good image under a hostile name
        shutil.copy(photo, os.path.join(os.fsencode(folder), os.fsencode(ODD_NAME)))
    return expected


ODD_NAME = os.fsdecode(b"caf\xe9\n.jpg")


def _fits() -> bytes:
    """A minimal FITS file: one 2880-byte header of 80-character cards, then 4x4 8-bit pixels."""
    cards = ["SIMPLE  =                    T", "BITPIX  =                    8", "NAXIS   =                    2",
             "NAXIS1  =                    4", "NAXIS2  =                    4", "END"]
    header = "".join(c.ljust(80) for c in cards).ljust(2880).encode("ascii")
    return header + bytes(range(16)).ljust(2880, b"\0")


def _psd() -> bytes:
    """A minimal Photoshop file: 4x4 RGB, 8 bits, no resources or layers, raw pixels."""
    head = b"8BPS" + struct.pack(">H6xHIIHH", 1, 3, 4, 4, 8, 3)  # version, channels, height, width, depth, RGB
    return head + struct.pack(">III", 0, 0, 0) + struct.pack(">H", 0) + bytes(3 * 16)


def _xpm() -> bytes:
    return b'/* XPM */\nstatic char *x[] = {\n"2 2 1 1",\n"a c #ff0000",\n"aa",\n"aa"\n};\n'


def _saved(fmt: str) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (10, 200, 30)).save(buf, fmt)
    return buf.getvalue()


def foreign_formats() -> dict[str, tuple[str, bytes]]:
    """Files in formats Pillow can open but featuremaps does not decode, under image extensions:
    ``{file name: (Pillow's format name, bytes)}``. Loading the EPS one runs Ghostscript."""
    return {"postscript.jpg": ("EPS", _saved("EPS")), "telescope.png": ("FITS", _fits()),
            "layers.jpg": ("PSD", _psd()), "pixmap.png": ("XPM", _xpm()), "texture.jpg": ("DDS", _saved("DDS"))}


def fake_ghostscript(folder: Path) -> Path:
    """A stand-in ``gs`` in ``folder`` (put it first on PATH): it records each call in
    ``folder/gs-ran`` and fails. Returns that record's path (absent: never ran)."""
    folder.mkdir(parents=True, exist_ok=True)
    record = folder / "gs-ran"
    gs = folder / "gs"
    gs.write_text(f'#!/bin/sh\necho "$@" >> "{record}"\n[ "$1" = --version ] && echo 10.0 && exit 0\nexit 1\n')
    gs.chmod(0o755)
    return record
