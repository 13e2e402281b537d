"""The input list of a bulk extraction: files, folders, ``@list.txt`` files, WebDataset ``.tar``
shards, fsspec URLs, brace ranges and globs -> sorted row ids.

The list is fixed at the start of a run and stored with the results, so a resumed run means
the same images in the same rows. What a row id is, and how its bytes are read, is
:mod:`.sources`'s job (a local path, a URL, or ``SHARD#MEMBER`` for a tar member).

Paths are ``str`` as the OS gives them (:func:`os.fsdecode`, ``surrogateescape``): a file name
that is not valid UTF-8 keeps its bytes as lone surrogates, opens again as the same file, and
round-trips losslessly through :func:`path_to_bytes` / :func:`path_from_bytes` (what a store
should keep). For printing, :func:`printable_path` escapes such bytes and control characters.
"""

from __future__ import annotations

import glob
import os
import posixpath
import re
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from .preprocess import DecodeBudget, read_file_bytes
from .sources import (IMAGE_EXTENSIONS, SHARD_CACHE, ShardError, expand_braces, expand_url, extension, has_glob,
                      is_image_name, is_shard_name, is_url, local_path_of, member_row, printable_path, read_url_text,
                      shard_index, shard_rows)
from ..errors import InputError

__all__ = ["IMAGE_EXTENSIONS", "InputError", "collect_inputs", "images_in", "path_from_bytes", "path_from_text",
           "path_to_bytes", "path_to_text", "printable_path", "read_image_bytes", "skipped_note"]
FIX = "pass image files, folders, .tar shards, URLs or @list.txt"


def images_in(folder: str | Path) -> list[Path]:
    """Image files directly in ``folder`` (not recursive), sorted."""
    return sorted(p for p in Path(folder).iterdir() if p.is_file() and is_image_name(p.name))


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
            if is_image_name(f):
                found.append(os.path.join(root, f))
            else:
                skipped[extension(f)] += 1
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


def _list_lines(raw: bytes) -> list[str]:
    # Bytes, decoded as the OS decodes file names: any name (valid UTF-8 or not) survives.
    lines = (os.fsdecode(ln.strip()) for ln in raw.splitlines())
    return [ln for ln in lines if ln and not ln.startswith("#")]


def _read_list(list_file: Path) -> list[str]:
    if not list_file.is_file():
        raise InputError(f"list file {printable_path(list_file)} not found; @FILE names a text file with one "
                         "path per line")
    base = list_file.parent
    # Relative entries are relative to the list file, so a list travels with its images.
    return [ln if is_url(ln) else str(Path(ln) if os.path.isabs(ln) else base / ln)
            for ln in _list_lines(list_file.read_bytes())]


def _read_url_list(url: str) -> list[str]:
    """A list file at a URL: relative entries are relative to the list's own folder (prefix)."""
    base = posixpath.dirname(url)
    return [ln if is_url(ln) or os.path.isabs(ln) else f"{base}/{ln}" for ln in _list_lines(read_url_text(url))]


Rows = list[tuple[tuple, str]]  # (sort key, row id): a shard's members sort together, in tar order


def _plain(path: str) -> Rows:
    return [((path, -1), path)]


def _list_entry(entry: str, skipped: Counter) -> Rows:
    """An entry of a list file: kept as a row even if it does not exist (an error row), except a
    ``.tar`` shard, which stands for its image members."""
    row = entry if is_url(entry) else os.path.abspath(entry)
    if is_shard_name(row):
        try:
            shard_index(row)
        except ShardError:
            return _plain(row)
        return shard_rows(row, skipped)
    return _plain(row)


def _named(item: str, skipped: Counter, *, pattern: bool = False) -> Rows:
    """One local input that exists: a folder (walked), a shard (its image members) or a file.
    ``pattern``: it came from a glob or brace pattern, so a non-image file is skipped, not a row."""
    if os.path.isdir(item):
        return [x for f in _walk(Path(item), skipped) for x in _plain(os.path.abspath(f))]
    path = os.path.abspath(item)
    if is_shard_name(path) and os.path.isfile(path):
        return shard_rows(path, skipped)
    if pattern and not is_image_name(path):
        skipped[extension(path)] += 1
        return []
    return _plain(path)


def _local(item: str, skipped: Counter) -> Rows:
    try:
        os.stat(item)
    except FileNotFoundError:
        return _local_pattern(item, skipped)
    except OSError as e:  # a name over NAME_MAX/PATH_MAX, a loop of links, no permission on a parent
        raise InputError(f"input {printable_path(item)[:200]} cannot be read ({e.strerror}); {FIX}") from None
    return _named(item, skipped)


def _local_pattern(item: str, skipped: Counter) -> Rows:
    """A local input that does not exist as named: a tar member (``SHARD#MEMBER``), a brace pattern
    (every name must exist) or a glob (must match something); else not found."""
    member = member_row(os.path.abspath(item))
    if member is not None:
        return [member]
    names = expand_braces(item)
    if len(names) > 1:
        return [x for name in names for x in _local(name, skipped)]
    if has_glob(item):
        found = sorted(glob.glob(item, recursive=True))
        if not found:
            raise InputError(f"input {printable_path(item)} matches nothing; check the pattern ({FIX})")
        return [x for f in found for x in _named(f, skipped, pattern=True)]
    raise InputError(f"input {printable_path(item)} not found; {FIX}")


def _url(item: str, skipped: Counter) -> Rows:
    if item.lower().startswith("file://"):
        return _local(local_path_of(item), skipped)
    member = member_row(item)
    if member is not None:
        return [member]
    names = expand_braces(item)
    rows: Rows = []
    for start in range(0, len(names), SHARD_CACHE):  # list a window of shards at once, then take their rows
        window = names[start:start + SHARD_CACHE]
        _prefetch_indexes([n for n in window if is_shard_name(n)])
        rows += [x for name in window for x in expand_url(name, skipped)]
    return rows


def _prefetch_indexes(shards: list[str]) -> None:
    """Read the member indexes of remote ``shards`` concurrently (each is a few dozen range requests
    of headers: serial, they would dominate planning); failures are left for the caller to meet."""
    if len(shards) < 2:
        return

    def index(shard: str) -> None:
        try:
            shard_index(shard)
        except Exception:  # noqa: BLE001 - reported when the shard's rows are taken, in order
            pass

    with ThreadPoolExecutor(max_workers=len(shards), thread_name_prefix="fm-list") as pool:
        list(pool.map(index, shards))


def _expand(item: str, skipped: Counter) -> Rows:
    if item.startswith("@"):
        source = item[1:]
        entries = _read_url_list(source) if is_url(source) and not source.lower().startswith("file://") else \
            _read_list(Path(local_path_of(source) if is_url(source) else source))
        return [x for e in entries for x in _list_entry(e, skipped)]
    return _url(item, skipped) if is_url(item) else _local(item, skipped)


_SECRET_KEYS = ("signature", "token", "credential", "password", "secret", "sig", "key")


def _refuse_secrets(url: str) -> None:
    """A URL row that carries credentials (``user:secret@``, or a signed query) would write them into
    the store's row ids: refused, naming the standard way instead."""
    from urllib.parse import parse_qsl, urlsplit

    parts = urlsplit(url)
    keys = [k.lower() for k, _ in parse_qsl(parts.query, keep_blank_values=True)]
    if parts.username or parts.password or any(s in k for k in keys for s in _SECRET_KEYS):
        raise InputError(f"input {printable_path(url)} carries credentials in the URL (user info or a signed "
                         "query), which a store would keep in its row ids; give the URL without them and the "
                         "credentials through the environment (AWS_ACCESS_KEY_ID, ..., or --storage-option)")


def collect_inputs(items, skipped: Counter | None = None) -> list[str]:
    """``items`` -> sorted, de-duplicated row ids (:mod:`.sources`). An item is an image file, a
    folder (searched recursively for image extensions, case-insensitive), a ``.tar`` shard (its
    image members, ``SHARD#MEMBER``, in tar order), ``@list.txt`` (one entry per line; a list may
    itself be a URL), a URL (``s3://``, ``gs://``, ``http(s)://``, ``file://``) of any of these
    or of a prefix (listed recursively), or a brace range / glob of any of these
    (``shards/{00000..00099}.tar``, ``shards/*.tar``; a local name that exists as written wins).

    Entries of a list file that do not exist are kept (they become error rows); an input named
    directly that does not exist (or a shard that is not a tar) is an :class:`InputError`.
    ``skipped`` (optional) counts what folder walks, prefixes and shards left out, by extension
    (see :func:`skipped_note`). Rows sort by path, a shard's members together in tar order.
    """
    skipped = Counter() if skipped is None else skipped
    rows: dict[str, tuple] = {}
    for item in items:
        for key, row in _expand(os.fspath(item), skipped):
            rows.setdefault(row, key)
    for row in rows:
        if ("@" in row or "?" in row) and is_url(row):
            _refuse_secrets(row)
    if not rows:
        raise InputError("no images found in the inputs (extensions: "
                         f"{', '.join(sorted(IMAGE_EXTENSIONS))}); {FIX}")
    return sorted(rows, key=rows.__getitem__)


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
