"""Input paths in a store: lossless (the exact bytes, base64) and displayable (valid UTF-8), and
:class:`StoredPaths`, the lazy sequence a store's ``paths`` returns."""

from __future__ import annotations

import base64
import os
from collections.abc import Sequence

from ...errors import FeaturemapsError, StoreError


def encode_path(p) -> tuple[str, str]:
    """``(display, base64)`` of a path: the exact bytes (``os.fsencode``) in base64, and a
    display string with undecodable bytes as ``\\xNN`` (zarr strings must be valid UTF-8)."""
    raw = os.fsencode(p)
    return raw.decode("utf-8", "backslashreplace"), base64.b64encode(raw).decode("ascii")


def displayable(text: str) -> str:
    """``text`` as valid UTF-8 for a zarr string: a path's undecodable bytes (surrogate-escaped
    by ``os.fsdecode``) become ``\\xNN``."""
    return os.fsencode(text).decode("utf-8", "backslashreplace") if isinstance(text, str) else str(text)


def decode_path(b64: str) -> str:
    """The path as Python's ``os`` functions take it (``os.fsdecode``: surrogate-escaped)."""
    return os.fsdecode(base64.b64decode(b64))


class StoredPaths(Sequence):
    """A store's input paths, read lazily: ``paths[i]`` decodes the one chunk holding row ``i``
    (the last two chunks are kept, so a walk in order reads each chunk once); iterating or
    comparing reads them all once. A store of millions of rows need not decode millions of
    strings to show one row."""

    def __init__(self, store):  # a FeatureStore
        self._store = store
        self._lossless = "path_bytes" in store._group
        self._arr = store._group["path_bytes" if self._lossless else "paths"]
        self._rows = self._arr.chunks[0]
        self._chunks: dict[int, list[str]] = {}
        self._all: list[str] | None = None

    def __len__(self) -> int:
        return len(self._store)

    def _decode(self, values) -> list[str]:
        return [decode_path(str(s)) for s in values] if self._lossless else [str(p) for p in values]

    def _read(self, sel):
        try:
            return self._arr[sel]
        except FeaturemapsError:
            raise
        except Exception as e:  # noqa: BLE001 - checksum or decode failure
            raise StoreError(f"{self._store.path}: the stored paths are damaged ({type(e).__name__}); "
                             "re-create the store") from None

    def _list(self) -> list[str]:
        if self._all is None:
            self._all = self._decode(self._read(slice(None)))
        return self._all

    def __getitem__(self, i):
        if self._all is not None:
            return self._all[i]
        if isinstance(i, slice):  # only the chunks holding the slice
            start, stop, step = i.indices(len(self))
            return self._decode(self._read(slice(start, max(start, stop))))[::step] if step > 0 else self._list()[i]
        i = range(len(self))[i]  # IndexError, negative indices
        ci = i // self._rows
        if ci not in self._chunks:
            if len(self._chunks) >= 2:
                self._chunks.pop(next(iter(self._chunks)))
            start = ci * self._rows
            self._chunks[ci] = self._decode(self._read(slice(start, min(start + self._rows, len(self)))))
        return self._chunks[ci][i - ci * self._rows]

    def __iter__(self):
        return iter(self._list())

    def __eq__(self, other) -> bool:
        return isinstance(other, (list, tuple, Sequence)) and not isinstance(other, str) and \
            len(other) == len(self) and self._list() == list(other)

    __hash__ = None

    def __repr__(self) -> str:
        return f"StoredPaths({len(self)} paths of {str(self._store.path)!r})"
