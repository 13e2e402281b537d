"""The featuremaps cache folder: ``$XDG_CACHE_HOME/featuremaps``, default ``~/.cache/featuremaps``.

Models exported on the fly live in ``models/`` (the CLI's model cache), TensorRT engines and
timing caches in ``tensorrt/``. An empty or relative ``XDG_CACHE_HOME`` is ignored, as the XDG
spec says: a relative one would put the cache (and ``cache --clear``) in whatever folder the
command runs from.
"""

from __future__ import annotations

import os
from pathlib import Path


def cache_home() -> Path:
    base = os.environ.get("XDG_CACHE_HOME", "")
    if not os.path.isabs(base):
        base = str(Path.home() / ".cache")
    return Path(base) / "featuremaps"
