"""The featuremaps cache folder: ``$XDG_CACHE_HOME/featuremaps``, default ``~/.cache/featuremaps``.

Models exported on the fly live in ``models/`` (the CLI's model cache, ``featuremaps/cli/cache.py``),
TensorRT engines and timing caches in ``tensorrt/<16 hex>/`` (:func:`tensorrt_root`). ``featuremaps
cache`` lists and clears both. An empty or relative ``XDG_CACHE_HOME`` is ignored, as the XDG
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


def models_root() -> Path:
    """Where zoo models exported on the fly are kept."""
    return cache_home() / "models"


def tensorrt_root() -> Path:
    """Where TensorRT engine and timing caches are kept, one folder per model, profile and GPU."""
    return cache_home() / "tensorrt"
