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
from collections import Counter
from pathlib import Path

from .preprocess import DecodeBudget, read_file_bytes
from ..errors import InputError, terminal_text

# The extensions of the formats decoded (preprocess.IMAGE_FORMATS); the decoder goes by content.
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif",
                              ".ppm", ".pgm", ".pbm", ".pnm"})


def _is_image_name(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS


def images_in(folder: str | Path) -> list[Path]:
    """Image files directly in ``folder`` (not recursive), sorted."""
    return sorted(p for p in Path(folder).iterdir() if p.is_file() and _is_image_name(p))


def _walk(folder: Path, skipped: Counter) -> list[str]:
    """Image files under ``folder``; other files are counted in ``skipped`` by extension. A folder
    that cannot be listed (a path over PATH_MAX, no permission) is kept as an input, so it becomes
    an error row with the reason instead of vanishing from the run."""
    found = []

    def unlisted(e: OSError) -> None:
        found.append(os.fsdecode(e.filename) if e.filename is not None else str(folder))

    for root, dirs, files in os.walk(folder, onerror=unlisted, followlinks=False):
        dirs.sort()
        for f in files:
            if _is_image_name(Path(f)):
                found.append(os.path.join(root, f))
            else:
                skipped[Path(f).suffix.lower() or "(no extension)"] += 1
    return found


def skipped_note(skipped: Counter) -> str:
    """``2 files skipped: .txt x1, .xcf x1 (not image extensions)`` (what folder walks left out), or ""."""
    n = sum(skipped.values())
    if not n:
        return ""
    common = sorted(skipped.items(), key=lambda e: (-e[1], e[0]))
    kinds = ", ".join(f"{printable_path(ext)} x{k}" for ext, k in common[:8])  # names are data: escaped
    kinds += f", {len(common) - 8} more kinds" if len(common) > 8 else ""
    return f"{n} file{'s' if n > 1 else ''} skipped: {kinds} (not image extensions)"


def _read_list(list_file: Path) -> list[str]:
    if not list_file.is_file():
        raise InputError(f"list file {printable_path(list_file)} not found; @FILE names a text file with one "
                         "path per line")
    base = list_file.parent
    # Bytes, decoded as the OS decodes file names: any name (valid UTF-8 or not) survives.
    lines = (os.fsdecode(ln.strip()) for ln in list_file.read_bytes().splitlines())
    # Relative entries are relative to the list file, so a list travels with its images.
    return [str(Path(ln) if os.path.isabs(ln) else base / ln) for ln in lines if ln and not ln.startswith("#")]


def collect_inputs(items, skipped: Counter | None = None) -> list[str]:
    """``items`` (image files, folders searched recursively for image extensions, case-insensitive,
    or ``@list.txt`` with one path per line) -> sorted, de-duplicated absolute paths.

    Entries of a list file that do not exist are kept (they become error rows); a file or
    folder named directly that does not exist is an :class:`InputError`. ``skipped`` (optional)
    counts the files folder walks left out, by extension (see :func:`skipped_note`).
    """
    skipped = Counter() if skipped is None else skipped
    paths: set[str] = set()
    for item in items:
        item = str(item)
        if item.startswith("@"):
            paths.update(os.path.abspath(p) for p in _read_list(Path(item[1:])))
            continue
        p = Path(item)
        try:
            os.stat(p)
        except FileNotFoundError:
            raise InputError(f"input {printable_path(item)} not found; pass image files, folders or "
                             "@list.txt") from None
        except OSError as e:  # a name over NAME_MAX/PATH_MAX, a loop of links, no permission on a parent
            raise InputError(f"input {printable_path(item)[:200]} cannot be read ({e.strerror}); pass image files, "
                             "folders or @list.txt") from None
        if p.is_dir():
            paths.update(os.path.abspath(f) for f in _walk(p, skipped))
        else:
            paths.add(os.path.abspath(p))
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
