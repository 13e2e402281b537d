"""``featuremaps cache``: list (with sizes) or clear the model cache.

Zoo models named with ``--model vgg16`` are exported once into
``$XDG_CACHE_HOME/featuremaps/models`` (default ``~/.cache/featuremaps/models``), keyed by
model, taps, weights, input size and featuremaps version.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from ._args import cache_root


def register(sub) -> None:
    p = sub.add_parser("cache", help="list or clear the model cache ($XDG_CACHE_HOME/featuremaps)",
                       description="List the models exported on the fly into the cache "
                                   "($XDG_CACHE_HOME/featuremaps/models, default ~/.cache/featuremaps/models) "
                                   "with their sizes, or delete them all with --clear.")
    p.add_argument("--clear", action="store_true", help="delete every cached model")
    p.set_defaults(func=cmd_cache)


def cache_entries(root: Path) -> list[tuple[Path, int]]:
    """``(file, bytes)`` of everything in the cache folder, largest first."""
    if not root.is_dir():
        return []
    files = [(p, p.stat().st_size) for p in root.rglob("*") if p.is_file()]
    return sorted(files, key=lambda e: -e[1])


def cmd_cache(args: argparse.Namespace) -> int:
    root = cache_root()
    entries = cache_entries(root)
    total = sum(n for _, n in entries)
    if args.clear:
        if root.is_dir():
            shutil.rmtree(root)
        print(f"removed {len(entries)} files ({total / 1e6:.1f} MB) from {root}")
        return 0
    print(f"{root}: {len(entries)} files, {total / 1e6:.1f} MB")
    for path, n in entries:
        print(f"  {n / 1e6:>9.1f} MB  {path.relative_to(root)}")
    return 0
