"""``featuremaps cache``: list (with sizes) or clear the model cache.

Zoo models named with ``--model vgg16`` are exported once into
``$XDG_CACHE_HOME/featuremaps/models`` (default ``~/.cache/featuremaps/models``), keyed by
model, taps, weights, input size and featuremaps version. ``--clear`` deletes only the files the
cache names itself (``vgg16-<16 hex>.onnx`` and the like), never anything else in that folder:
a misconfigured ``XDG_CACHE_HOME`` must not cost a user their files.
"""

from __future__ import annotations

import argparse
import contextlib
import re
from pathlib import Path

from ..errors import ArgumentError
from ..export.taps import MODELS
from ._args import cache_root

# what resolve_model (MODEL-<key>.onnx), bench (MODEL-bench-<key>.onnx, its -int8 variant) and an
# interrupted atomic write (.partial) leave in the cache
CACHE_FILE = re.compile(rf"^(?:{'|'.join(map(re.escape, MODELS))})-(?:bench-)?[0-9a-f]{{16}}(?:-int8)?\.onnx"
                        r"(?:\.partial)?$")


def register(sub) -> None:
    p = sub.add_parser("cache", help="list or clear the model cache ($XDG_CACHE_HOME/featuremaps)",
                       description="List the models exported on the fly into the cache "
                                   "($XDG_CACHE_HOME/featuremaps/models, default ~/.cache/featuremaps/models) "
                                   "with their sizes, or delete them all with --clear (other files there "
                                   "are left alone).")
    p.add_argument("--clear", action="store_true", help="delete every cached model")
    p.set_defaults(func=cmd_cache)


def cache_entries(root: Path) -> tuple[list[tuple[Path, int]], int]:
    """``(file, bytes)`` of the models the cache made, largest first, and how many other entries
    the folder holds (left alone)."""
    if not root.is_dir():
        return [], 0
    try:
        children = list(root.iterdir())
    except OSError as e:
        raise ArgumentError(f"cannot read the model cache {str(root)!r}: {e.strerror or e}; "
                            "check XDG_CACHE_HOME") from None
    ours = [p for p in children if CACHE_FILE.match(p.name) and p.is_file() and not p.is_symlink()]
    files = [(p, p.stat().st_size) for p in ours]
    return sorted(files, key=lambda e: -e[1]), len(children) - len(ours)


def cmd_cache(args: argparse.Namespace) -> int:
    root = cache_root()
    entries, others = cache_entries(root)
    total = sum(n for _, n in entries)
    left = f"; {others} other entries left alone" if others else ""
    if args.clear:
        for path, _ in entries:
            try:
                path.unlink()
            except FileNotFoundError:  # another process cleared it first
                pass
            except OSError as e:
                raise ArgumentError(f"cannot delete {str(path)!r}: {e.strerror or e}") from None
        if not others:
            with contextlib.suppress(OSError):  # only an empty folder; a fresh export recreates it
                root.rmdir()
        print(f"removed {len(entries)} files ({total / 1e6:.1f} MB) from {root}{left}")
        return 0
    print(f"{root}: {len(entries)} files, {total / 1e6:.1f} MB{left}")
    for path, n in entries:
        print(f"  {n / 1e6:>9.1f} MB  {path.name}")
    return 0
