"""The input list of a bulk extraction: files, folders and ``@list.txt`` files -> sorted paths.

The list is fixed at the start of a run and stored with the results, so a resumed run means
the same images in the same rows.
"""

from __future__ import annotations

import os
from pathlib import Path
from ..errors import InputError

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
        raise InputError(f"list file {str(list_file)!r} not found; @FILE names a text file with one path per line")
    base = list_file.parent
    lines = (ln.strip() for ln in list_file.read_text().splitlines())
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


def read_image_bytes(path: str) -> bytes:
    """The bytes of an image file; raises ``OSError`` with the reason when it cannot be read.
    Empty and truncated files are caught where bytes are decoded (:func:`.preprocess.decode_image`)."""
    with open(path, "rb") as f:
        return f.read()
