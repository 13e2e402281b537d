"""Where a run's inputs live: local files, WebDataset tar shards and fsspec URLs -> row ids, and the
bytes of one row read within the budget, never unpacking anything to disk.

Row ids (what a store keeps, one per row, and what ``--resume`` compares):

* a local file: its absolute path (as :mod:`.inputs` has always given it);
* a URL object: the URL (``s3://bucket/key.jpg``, ``gs://...``, ``https://...``; ``file://`` URLs
  become local paths);
* a member of a tar shard: ``SHARD#MEMBER``, SHARD the shard's absolute path or URL and MEMBER the
  member's name inside the tar, exactly as stored there (``/data/00001.tar#000017.jpg``).

The ``#`` rule. A local file may have ``#`` in its name, so a row id is a tar member only if:
the whole row id is *not* an existing regular file (a file found by a folder walk or named
directly keeps its name), and some ``#`` in it has before it a name ending in ``.tar``
(any case) that is a shard (locally: a regular file that opens as a tar), and that shard holds a
member named by what follows the ``#``. The ``#`` positions are tried from the last to the first,
so member names and shard names may both contain ``#``. So a file literally named ``x.tar#y.jpg``
next to a shard ``x.tar`` holding ``y.jpg`` is read as the file. For a URL the whole-name check is
not made (it would cost a request per row): ``s3://b/x.tar#y.jpg`` is the member ``y.jpg`` of
``s3://b/x.tar`` when that object opens as a tar; otherwise it is read as one object.

A shard's member index (each member's data offset and size, from its headers only) is built once
per process and kept for the last :data:`SHARD_CACHE` shards, keyed by the shard's id (and, for a
local shard, its size and modification time). A truncated shard keeps the members its headers
list; a member whose data runs past the end is an error row when read. Only regular members are
rows; links, devices and folders inside a tar are skipped, never followed.

Reading never raises anything but :class:`ImageDecodeError` (one line, the reason): a missing or
unreachable object or a network error is that row's error. Credentials never reach a message:
URLs are printed without their user info and query (:func:`redact`).
"""

from __future__ import annotations

import os
import posixpath
import re
import stat
import tarfile
import threading
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import PurePosixPath

from ..errors import ImageDecodeError, InputError, terminal_text
from .preprocess import DecodeBudget, read_file_bytes

# The extensions of the formats decoded (preprocess.IMAGE_FORMATS); the decoder goes by content.
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif",
                              ".ppm", ".pgm", ".pbm", ".pnm"})
SHARD_CACHE = 8  # member indexes kept per process (a batch rarely spans more than two shards)
SPAN_LIMIT = 64 * 2**20  # the most bytes one coalesced range read of several members may cover
READAHEAD = 2 * 2**20  # a remote member read alone brings the following members up to this span with it
LIST_LIMIT = 64 * 2**20  # the most bytes of a list file read from a URL
MAX_EXPANSION = 1_000_000  # names one brace pattern may expand to
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
_GLOB = re.compile(r"[*?[]")
_BRACE = re.compile(r"\{([^{}]*)\}")


# ---------------------------------------------------------------- names


def is_url(text: str) -> bool:
    """``scheme://...`` (s3, gs, http(s), file, ...)."""
    return bool(_URL.match(text))


def redact(text: str) -> str:
    """``text`` with every URL's user info (``user:secret@``) and query (``?X-Amz-Signature=...``)
    removed: what may be printed or stored in a message."""
    text = re.sub(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/\s@]*@", r"\1", text)
    return re.sub(r"(?i)(\b[a-z][a-z0-9+.-]*://[^\s?#'\"]*)\?[^\s#'\"]*", r"\1", text)


SECRET_ENV = ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_ACCESS_KEY_ID")


def blank_secrets(text: str) -> str:
    """``text`` with the values of the AWS credential variables of this environment replaced by
    ``***``: a client library's error may quote what it was given."""
    for name in SECRET_ENV:
        value = os.environ.get(name)
        if value and len(value) >= 4:
            text = text.replace(value, "***")
    return text


def printable_path(path) -> str:
    """A path or row id for one output line: control characters, non-UTF-8 bytes and other
    unprintable characters escaped (a file name with a newline cannot forge a line), URL
    credentials removed (:func:`redact`)."""
    text = os.fsencode(os.fspath(path)).decode("utf-8", "backslashreplace")
    return terminal_text(redact(text) if is_url(text) else text)


def row_name(row_id: str) -> str:
    """The last name of a row id: ``img.jpg`` for ``/d/img.jpg``, ``s3://b/img.jpg`` and
    ``/d/x.tar#sub/img.jpg`` (for figure and folder names; not unique)."""
    found = _split_candidates(row_id)
    tail = row_id[found[0] + 1:] if found else row_id
    if is_url(tail):
        tail = redact(tail).split("://", 1)[1]
    name = posixpath.basename(tail.rstrip("/"))
    return name if name not in ("", ".", "..") else "image"  # never a folder name that leaves -o


def local_path_of(url: str) -> str:
    """``file:///abs/x.jpg`` -> ``/abs/x.jpg`` (percent-escapes decoded, as fsspec does)."""
    from urllib.parse import unquote, urlsplit

    parts = urlsplit(url)
    if parts.netloc not in ("", "localhost"):
        raise InputError(f"{printable_path(url)}: file:// URLs name this machine's files (file:///abs/path); "
                         "use the path itself")
    return os.fsdecode(unquote(parts.path, errors="surrogateescape").encode("utf-8", "surrogateescape"))


def expand_braces(text: str) -> list[str]:
    """Bash/WebDataset brace expansion: ``s/{00000..00002}.tar`` -> ``s/00000.tar, s/00001.tar,
    s/00002.tar`` (zero-padded when a bound is), ``{a,b}.jpg`` -> ``a.jpg, b.jpg``; several groups
    multiply; a group without ``,`` or ``..`` stays as written."""
    m = next((m for m in _BRACE.finditer(text) if "," in m.group(1) or _range(m.group(1))), None)
    if m is None:
        return [text]
    parts = _range(m.group(1)) or m.group(1).split(",")
    head, tail = text[:m.start()], expand_braces(text[m.end():])
    if len(parts) * len(tail) > MAX_EXPANSION:
        raise InputError(f"{printable_path(text)[:200]} expands to more than {MAX_EXPANSION} names; split it up")
    return [head + p + t for p in parts for t in tail]


def _range(body: str) -> list[str] | None:
    m = re.fullmatch(r"(\d+)\.\.(\d+)", body)
    if m is None:
        return None
    a, b = m.groups()
    lo, hi = int(a), int(b)
    if abs(hi - lo) >= MAX_EXPANSION:
        raise InputError(f"{{{body}}} is more than {MAX_EXPANSION} names; split it up")
    pad = max(len(a), len(b)) if (a.startswith("0") and len(a) > 1) or (b.startswith("0") and len(b) > 1) else 0
    step = 1 if hi >= lo else -1
    return [str(i).zfill(pad) for i in range(lo, hi + step, step)]


def has_glob(text: str) -> bool:
    return bool(_GLOB.search(text))


def extension(name: str) -> str:
    """The lower-case extension of a file, member or object name (``.jpg``), or ``(no extension)``:
    how names are told apart and how skipped ones are counted (:func:`.inputs.skipped_note`)."""
    return PurePosixPath(name).suffix.lower() or "(no extension)"


def is_image_name(name: str) -> bool:
    return extension(name) in IMAGE_EXTENSIONS


def _split_candidates(row_id: str) -> list[int]:
    """Positions of ``#`` after a name ending in ``.tar``, last first."""
    return sorted((m.start() for m in re.finditer("#", row_id) if row_id[:m.start()].lower().endswith(".tar")),
                  reverse=True)


# ---------------------------------------------------------------- shards


@dataclass(frozen=True)
class Member:
    """One regular member of a tar shard: its name and where its data lies (byte offset, size)."""

    name: str
    offset: int
    size: int

    @property
    def end(self) -> int:
        return self.offset + self.size


@dataclass(frozen=True)
class ShardIndex:
    """A shard's regular members in tar order, from its headers only. ``size``: the shard's bytes;
    ``skipped``: ``(kind, count)`` of members that are not regular files (links, devices, folders);
    ``damage``: why the listing stopped early (a truncated or corrupt header), or None."""

    shard: str
    size: int
    members: tuple[Member, ...]
    skipped: tuple[tuple[str, int], ...] = ()
    damage: str | None = None
    _by_name: dict = field(default_factory=dict, compare=False, repr=False)
    _position: dict = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self):
        for i, m in enumerate(self.members):
            self._by_name.setdefault(m.name, m)
            self._position.setdefault(m.offset, i)

    def readahead_end(self, m: Member, limit: int) -> int:
        """The end of the last member from ``m`` on (in tar order) whose end lies within ``limit``
        bytes of ``m``'s start and inside the shard (at least ``m``'s own end)."""
        end = m.end
        for nxt in self.members[self._position.get(m.offset, len(self.members)) + 1:]:
            if nxt.end > self.size or nxt.end - m.offset > limit:
                break
            end = nxt.end
        return end

    def member(self, name: str) -> Member | None:
        return self._by_name.get(name)


class ShardError(InputError):
    """A shard that cannot be opened or is not an uncompressed tar."""


class ShardUnreachable(ShardError):
    """A shard URL that could not be read for a reason other than its absence (network, access)."""


_KINDS = ((tarfile.TarInfo.isdir, None), (tarfile.TarInfo.issym, "(symbolic link)"),
          (tarfile.TarInfo.islnk, "(hard link)"), (tarfile.TarInfo.isdev, "(device or FIFO)"))


def _list_tar(fileobj, size: int, shard: str) -> ShardIndex:
    """Read the headers of the tar in ``fileobj`` (seekable: member data is skipped by seeking)."""
    try:
        tf = tarfile.open(fileobj=fileobj, mode="r:")
    except tarfile.ReadError as e:
        raise ShardError(f"{printable_path(shard)} is not an uncompressed tar ({e}); pass .tar shards "
                         "(WebDataset), image files, folders or @list.txt") from None
    members, skipped, damage = [], Counter(), None
    while True:
        try:
            info = tf.next()
        except (tarfile.ReadError, EOFError) as e:  # a header cut off or corrupt: keep what came before
            damage = f"the shard is damaged after {len(members)} member(s) ({e})"
            break
        if info is None:
            break
        if info.isreg() and not info.issparse():
            members.append(Member(info.name, info.offset_data, info.size))
            continue
        kind = next((k for test, k in _KINDS if test(info)), "(other member)")
        if kind is not None:
            skipped[kind] += 1
    return ShardIndex(shard, size, tuple(members), tuple(sorted(skipped.items())), damage)


def _open_regular(path: str):
    """``path`` opened for reading if it is a regular file (a FIFO never blocks: O_NONBLOCK)."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise IsADirectoryError(0, "not a regular file")
        return os.fdopen(fd, "rb"), st
    except BaseException:
        os.close(fd)
        raise


@lru_cache(maxsize=SHARD_CACHE)
def _local_index(path: str, size: int, mtime_ns: int) -> ShardIndex:
    try:
        f, st = _open_regular(path)
    except OSError as e:
        raise ShardError(f"shard {printable_path(path)} cannot be read ({e.strerror or e}); check the path") from None
    with f:
        try:
            return _list_tar(f, st.st_size, path)
        except OSError as e:
            raise ShardError(f"shard {printable_path(path)} cannot be read ({e.strerror or e})") from None


@lru_cache(maxsize=SHARD_CACHE)
def _url_index(url: str) -> ShardIndex:
    fs, path = _fs(url)
    try:
        size = _object_size(fs, path)
        # Small blocks: listing reads the headers, not the members between them.
        with fs.open(path, "rb", block_size=2**16, cache_type="readahead") as f:
            return _list_tar(f, size, url)
    except ShardError:
        raise
    except FileNotFoundError:
        raise ShardError(f"shard {printable_path(url)} not found; check the URL") from None
    except Exception as e:  # noqa: BLE001 - network and permission errors: one line, no traceback
        raise ShardUnreachable(f"shard {printable_path(url)} cannot be read ({_storage_reason(e)})") from None


def shard_index(shard: str) -> ShardIndex:
    """The member index of the shard at ``shard`` (an absolute local path or a URL), cached per
    process. Raises :class:`ShardError` (an :class:`InputError`) with the reason."""
    if is_url(shard):
        return _url_index(shard)
    try:
        st = os.stat(shard)
    except OSError as e:
        raise ShardError(f"shard {printable_path(shard)} cannot be read ({e.strerror or e}); check the path") from None
    return _local_index(shard, st.st_size, st.st_mtime_ns)


def _is_regular(path: str) -> bool:
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except (OSError, ValueError):
        return False


@dataclass(frozen=True)
class Where:
    """Where a row's bytes are: ``member`` of shard ``index``, or the whole object ``source``."""

    source: str
    index: ShardIndex | None = None
    member: Member | None = None


def locate(row_id: str) -> Where:
    """Apply the ``#`` rule (module docstring) to ``row_id``. Raises :class:`ImageDecodeError` when
    the row names a shard that does not hold that member, or the shard cannot be read."""
    cuts = _split_candidates(row_id)
    url = is_url(row_id)
    if not cuts or (not url and _is_regular(row_id)):
        return Where(row_id)
    found = None
    for cut in cuts:
        shard = row_id[:cut]
        if not url and not _is_regular(shard):
            continue
        try:
            index = shard_index(shard)
        except ShardUnreachable as e:  # a network error: this row's error
            raise ImageDecodeError(str(e)) from None
        except ShardError:
            continue  # not a tar (or gone): maybe an earlier '#' splits it right
        member = index.member(row_id[cut + 1:])
        if member is not None:
            return Where(shard, index, member)
        found = found or shard
    if found is not None:
        raise ImageDecodeError(f"shard {printable_path(found)} has no member {printable_path(row_id[len(found) + 1:])}")
    return Where(row_id)


def member_row(row_id: str) -> tuple[tuple, str] | None:
    """``(sort key, row id)`` when ``row_id`` names an existing member of a shard by the ``#``
    rule (a member named directly as an input), else None."""
    if not _split_candidates(row_id):
        return None
    try:
        where = locate(row_id)
    except ImageDecodeError:
        return None
    if where.member is None:
        return None
    return (where.source, where.index.members.index(where.member)), row_id


# ---------------------------------------------------------------- URLs


def _fs(url: str):
    """``(filesystem, path)`` for ``url`` (fsspec; credentials from the standard environment)."""
    try:
        import fsspec
    except ImportError:
        raise InputError(f"{printable_path(url)}: URLs need fsspec and its backend (pip install "
                         "'featuremaps[s3]' or 'featuremaps[gcs]')") from None
    try:
        # no listings cache: an object added or removed since a listing must be seen as it is now
        return fsspec.core.url_to_fs(url, use_listings_cache=False)
    except (ImportError, ValueError) as e:
        raise InputError(f"{printable_path(url)}: no filesystem for this URL ({redact(str(e))[:200]}); for s3:// "
                         "pip install 'featuremaps[s3]', for gs:// 'featuremaps[gcs]'") from None


def _storage_reason(e: BaseException) -> str:
    """A storage or network exception -> a short reason without credentials."""
    if isinstance(e, FileNotFoundError):
        return "not found"
    if isinstance(e, PermissionError):
        return "access denied; check the credentials (AWS_*/GOOGLE_* environment)"
    text = " ".join(blank_secrets(str(e)).split())[:200]
    return redact(f"{type(e).__name__}: {text}" if text else type(e).__name__)


def _object_size(fs, path: str) -> int | None:
    info = fs.info(path)
    if info.get("type") == "directory":
        raise IsADirectoryError(0, "a folder (prefix), not an object")
    size = info.get("size")
    return None if size is None else int(size)


def _read_url(url: str, max_file_bytes: int) -> bytes:
    fs, path = _fs(url)
    try:
        size = _object_size(fs, path)
        if size is not None and size > max_file_bytes:
            raise ImageDecodeError(f"object is {size} bytes, over the {max_file_bytes}-byte limit; raise "
                                   "--max-file-bytes to accept it")
        with fs.open(path, "rb", cache_type="none") as f:
            data = f.read(max_file_bytes + 1)
    except ImageDecodeError:
        raise
    except IsADirectoryError:
        raise ImageDecodeError("a folder (prefix), not an image object") from None
    except FileNotFoundError:
        raise ImageDecodeError("not found (removed since the inputs were listed?)") from None
    except Exception as e:  # noqa: BLE001 - an unreachable object is this row's error, never a traceback
        raise ImageDecodeError(f"unreadable: {_storage_reason(e)}") from None
    if len(data) > max_file_bytes:
        raise ImageDecodeError(f"object grew over the {max_file_bytes}-byte limit while being read")
    return data


def read_url_text(url: str) -> bytes:
    """The bytes of a small object (a list file) at ``url``; :class:`InputError` when it cannot be read."""
    try:
        return _read_url(url, LIST_LIMIT)
    except ImageDecodeError as e:
        raise InputError(f"list file {printable_path(url)}: {e}") from None


def expand_url(url: str, skipped: Counter) -> list[tuple[tuple, str]]:
    """One URL input -> ``(sort key, row id)`` pairs: an object (a row; a ``.tar`` one: its image
    members), a prefix (its image objects, recursively), or a glob over either. Others found in a
    prefix or a shard are counted in ``skipped``. :class:`InputError` when nothing is there."""
    fs, path = _fs(url)
    try:
        if has_glob(path) and not url.lower().startswith(("http://", "https://")):  # there '?' starts a query
            found = sorted(fs.glob(path))
            if not found:
                raise InputError(f"input {printable_path(url)} matches nothing; check the pattern")
            out = []
            for p in found:
                out += _url_item(fs, p, skipped, named=False)
            return out
        return _url_item(fs, path, skipped, named=True, given=url)
    except InputError:
        raise
    except FileNotFoundError:
        raise InputError(f"input {printable_path(url)} not found; check the URL (credentials come from the "
                         "AWS_*/GOOGLE_* environment)") from None
    except Exception as e:  # noqa: BLE001 - network, permission: one line
        raise InputError(f"input {printable_path(url)} cannot be listed ({_storage_reason(e)})") from None


def _url_item(fs, path: str, skipped: Counter, *, named: bool, given: str | None = None) -> list[tuple[tuple, str]]:
    info = fs.info(path)
    url = given if given is not None else fs.unstrip_protocol(path)
    if info.get("type") == "directory":
        out = []
        for p in sorted(fs.find(path)):
            if p.lower().endswith(".tar") or not is_image_name(p):
                skipped[extension(p)] += 1
            else:
                out.append(((fs.unstrip_protocol(p), -1), fs.unstrip_protocol(p)))
        return out
    if path.lower().endswith(".tar"):
        return shard_rows(url, skipped)
    if not named and not is_image_name(path):
        skipped[extension(path)] += 1
        return []
    return [((url, -1), url)]


# ---------------------------------------------------------------- rows of a shard


def shard_rows(shard: str, skipped: Counter) -> list[tuple[tuple, str]]:
    """``(sort key, row id)`` of each image member of ``shard`` in tar order; the other members
    are counted in ``skipped`` (by extension; links and devices by kind)."""
    index = shard_index(shard)
    out = []
    for i, m in enumerate(index.members):
        if is_image_name(m.name):
            out.append(((shard, i), f"{shard}#{m.name}"))
        else:
            skipped[extension(m.name)] += 1
    for kind, n in index.skipped:
        skipped[kind] += n
    return out


def is_shard_name(name: str) -> bool:
    return name.lower().endswith(".tar")


# ---------------------------------------------------------------- reading


def read_input_bytes(row_id: str, max_file_bytes: int = DecodeBudget.max_file_bytes) -> bytes:
    """The bytes of one row (a local file, a tar member or a URL object) of at most
    ``max_file_bytes`` (the limit is checked before reading); else :class:`ImageDecodeError`."""
    return _read(locate(row_id), max_file_bytes)


def _read(where: Where, max_file_bytes: int) -> bytes:
    if where.member is None:
        if is_url(where.source):
            return _read_url(where.source, max_file_bytes)
        return read_file_bytes(where.source, max_file_bytes)
    _check_member(where, max_file_bytes)
    m, index = where.member, where.index
    if not is_url(index.shard):
        return _read_span(index, m.offset, m.end)
    # A decode worker gets every other row of a batch: one request per member would be one per image
    # on the network. Read ahead, and serve the following members from that span (one per thread).
    span = getattr(_READ_AHEAD, "span", None)
    if span is None or span[0] is not index or not span[1] <= m.offset <= m.end <= span[2]:
        end = index.readahead_end(m, READAHEAD)
        span = (index, m.offset, end, _read_span(index, m.offset, end))
        _READ_AHEAD.span = span
    return span[3][m.offset - span[1]:m.end - span[1]]


_READ_AHEAD = threading.local()


def _check_member(where: Where, max_file_bytes: int) -> None:
    m, index = where.member, where.index
    if m.size > max_file_bytes:
        raise ImageDecodeError(f"member is {m.size} bytes, over the {max_file_bytes}-byte limit; raise "
                               "--max-file-bytes to accept it")
    if m.end > index.size:
        raise ImageDecodeError(f"truncated shard: the member ends at byte {m.end} of a {index.size}-byte shard")


def _read_span(index: ShardIndex, start: int, end: int) -> bytes:
    """Bytes ``start:end`` of the shard: one pread locally, one range request remotely."""
    try:
        if is_url(index.shard):
            fs, path = _fs(index.shard)
            data = fs.cat_file(path, start=start, end=end)
        else:
            f, _ = _open_regular(index.shard)
            with f:
                data = os.pread(f.fileno(), end - start, start)
    except FileNotFoundError:
        raise ImageDecodeError(f"shard {printable_path(index.shard)} not found (removed since it was "
                               "listed?)") from None
    except OSError as e:
        raise ImageDecodeError(f"shard unreadable: {e.strerror or e}") from None
    except Exception as e:  # noqa: BLE001 - network errors: this row's error, one line
        raise ImageDecodeError(f"shard unreadable: {_storage_reason(e)}") from None
    if len(data) < end - start:
        raise ImageDecodeError(f"truncated shard: {len(data)} of {end - start} bytes could be read")
    return bytes(data)


def iter_input_bytes(row_ids: Iterable[str], max_file_bytes: int = DecodeBudget.max_file_bytes
                     ) -> Iterator[bytes | ImageDecodeError]:
    """Each row's bytes (or its :class:`ImageDecodeError`), in order, as :func:`read_input_bytes`
    gives them, with one range read for each run of consecutive members of one shard whose span
    is at most twice their bytes (and at most :data:`SPAN_LIMIT`); rows are read as they are
    consumed, so a batch of large files never sits in memory at once."""
    pending: list[Where] = []
    for row_id in row_ids:
        try:
            where = locate(row_id)
            if where.member is not None:
                _check_member(where, max_file_bytes)
        except ImageDecodeError as e:
            yield from _flush(pending, max_file_bytes)
            yield e
            continue
        if pending and not _joins(pending, where):
            yield from _flush(pending, max_file_bytes)
        pending.append(where)
        if where.member is None:
            yield from _flush(pending, max_file_bytes)
    yield from _flush(pending, max_file_bytes)


def _joins(run: list[Where], nxt: Where) -> bool:
    first, last = run[0], run[-1]
    if nxt.member is None or last.member is None or nxt.index is not last.index:
        return False
    if nxt.member.offset < last.member.end:
        return False
    span = nxt.member.end - first.member.offset
    return span <= SPAN_LIMIT and span <= 2 * (sum(w.member.size for w in run) + nxt.member.size)


def _flush(run: list[Where], max_file_bytes: int) -> Iterator[bytes | ImageDecodeError]:
    if not run:
        return
    todo = list(run)
    run.clear()
    if len(todo) == 1:
        try:
            yield _read(todo[0], max_file_bytes)
        except ImageDecodeError as e:
            yield e
        return
    base = todo[0].member.offset
    try:
        span = _read_span(todo[0].index, base, todo[-1].member.end)
    except ImageDecodeError as e:
        yield from (e for _ in todo)
        return
    for w in todo:
        yield span[w.member.offset - base:w.member.end - base]
