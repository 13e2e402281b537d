"""The input list of a bulk extraction: files, folders and ``@list.txt`` files -> sorted paths.

The list is fixed at the start of a run and stored with the results, so a resumed run means
the same images in the same rows.

Paths are ``str`` as the OS gives them (:func:`os.fsdecode`, ``surrogateescape``): a file name
that is not valid UTF-8 keeps its bytes as lone surrogates, opens again as the same file, and
round-trips losslessly through :func:`path_to_bytes` / :func:`path_from_bytes` (what a store
should keep). For printing, :func:`printable_path` escapes such bytes and control characters.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from .preprocess import DecodeBudget, read_file_bytes
from ..errors import InputError, terminal_text

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm",
                              ".pbm", ".jp2"})


def _is_image_name(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS


def images_in(folder: str | Path) -> list[Path]:
    """Image files directly in ``folder`` (not recursive), sorted."""
    return sorted(p for p in Path(folder).iterdir() if p.is_file() and _is_image_name(p))


def _walk(folder: Path) -> list[str]:
    found = []
    for root, dirs, files in os.walk(folder, followlinks=False):
        dirs.sort()
        found.extend(os.path.join(root, f) for f in files if _is_image_name(Path(f)))
    return found


def _read_list(list_file: Path) -> list[str]:
    if not list_file.is_file():
        raise InputError(f"list file {printable_path(list_file)} not found; @FILE names a text file with one "
                         "path per line")
    base = list_file.parent
    # Bytes, decoded as the OS decodes file names: any name (valid UTF-8 or not) survives.
    lines = (os.fsdecode(ln.strip()) for ln in list_file.read_bytes().splitlines())
    # Relative entries are relative to the list file, so a list travels with its images.
    return [str(Path(ln) if os.path.isabs(ln) else base / ln) for ln in lines if ln and not ln.startswith("#")]


def collect_inputs(items) -> list[str]:
    """``items`` (image files, folders searched recursively for image extensions, case-insensitive,
    or ``@list.txt`` with one path per line) -> sorted, de-duplicated absolute paths.

    Entries of a list file that do not exist are kept (they become error rows); a file or
    folder named directly that does not exist is an :class:`InputError`.
    """
    paths: set[str] = set()
    for item in items:
        item = str(item)
        if item.startswith("@"):
            paths.update(os.path.abspath(p) for p in _read_list(Path(item[1:])))
            continue
        p = Path(item)
        if p.is_dir():
            paths.update(os.path.abspath(f) for f in _walk(p))
        elif p.exists():
            paths.add(os.path.abspath(p))
        else:
            raise InputError(f"input {item!r} not found; pass image files, folders or @list.txt")
    if not paths:
        raise InputError("no images found in the inputs (extensions: "
                         f"{', '.join(sorted(IMAGE_EXTENSIONS))}); pass image files, folders or @list.txt")
    return sorted(paths)


def read_image_bytes(path: str, max_file_bytes: int = DecodeBudget.max_file_bytes) -> bytes:
    """The bytes of a regular image file of at most ``max_file_bytes`` (FIFOs, devices and
    directories are refused without reading); raises :class:`ImageDecodeError` with the reason."""
    return read_file_bytes(path, max_file_bytes)


def path_to_bytes(path: str) -> bytes:
    """A path as the exact bytes of the file name (lossless for names that are not UTF-8)."""
    return os.fsencode(path)


def path_from_bytes(raw: bytes) -> str:
    """Inverse of :func:`path_to_bytes`: the ``str`` path that opens the same file."""
    return os.fsdecode(raw)


def path_to_text(path: str) -> str:
    """A path as valid UTF-8 text (for JSON and Zarr string arrays), lossless: a byte that is not
    UTF-8 becomes ``\\xNN`` and a backslash becomes ``\\\\``; every other path is unchanged.
    Inverse: :func:`path_from_text`."""
    chunks = os.fsencode(path).split(b"\\")
    return "\\\\".join(c.decode("utf-8", "backslashreplace") for c in chunks)


def path_from_text(text: str) -> str:
    """Inverse of :func:`path_to_text`: the ``str`` path (surrogateescape) that opens the same file."""
    out, pos = bytearray(), 0
    for m in re.finditer(r"\\(\\|x([0-9a-fA-F]{2}))", text):
        out += text[pos:m.start()].encode("utf-8")
        out += b"\\" if m.group(2) is None else bytes([int(m.group(2), 16)])
        pos = m.end()
    out += text[pos:].encode("utf-8")
    return os.fsdecode(bytes(out))


def printable_path(path) -> str:
    """A path for one output line: control characters, non-UTF-8 bytes and other unprintable
    characters escaped (a file name with a newline cannot forge a line)."""
    return terminal_text(os.fsencode(os.fspath(path)).decode("utf-8", "backslashreplace"))
