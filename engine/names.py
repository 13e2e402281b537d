"""The safe-name grammar for tap and output names (they become folder names inside a store).

A name is dot-separated words of letters, digits and ``_`` (``features.17``, ``layer4.2.relu_2``,
``logits``), at most 128 characters, and not one of the names a store keeps for itself. So
``../x``, ``/tmp/x``, ``zarr.json`` and ``status`` are refused before anything is created.
"""

from __future__ import annotations

import re

_WORD = r"[A-Za-z0-9_]+"
SAFE_NAME = re.compile(rf"^[A-Za-z_]{_WORD[:-1]}*(\.{_WORD})*$")
RESERVED_NAMES = frozenset({"paths", "path_bytes", "status", "errors", "zarr.json", "c"})
MAX_NAME = 128


def unsafe_name_reason(name) -> str | None:
    """Why ``name`` cannot name a stored output, or None when it can.

    >>> unsafe_name_reason("features.17") is None, unsafe_name_reason("../x")
    (True, "'../x' is not a safe name (dot-separated words of letters, digits and _)")
    """
    if not isinstance(name, str):
        return f"{name!r} is not a string"
    if name in RESERVED_NAMES:
        return f"{name!r} is reserved inside a store"
    if len(name) > MAX_NAME or not SAFE_NAME.match(name):
        return f"{name!r} is not a safe name (dot-separated words of letters, digits and _)"
    return None
