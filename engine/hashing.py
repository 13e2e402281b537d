"""Content hashes of files (models, weights), shared by export, engine and store."""

from __future__ import annotations

import hashlib
from pathlib import Path


def file_sha256(path: str | Path, extra: bytes = b"") -> str:
    """SHA-256 hex digest of the file's bytes (then ``extra``), read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    h.update(extra)
    return h.hexdigest()
