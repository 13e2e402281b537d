"""The model cache, in one module: naming, where it lives, lookup, export on a miss, listing, clearing.

Zoo models named with ``--model vgg16`` are exported once into ``models/`` of the featuremaps
cache folder (``$XDG_CACHE_HOME/featuremaps``, default ``~/.cache/featuremaps``; see
:mod:`featuremaps.engine.cache_home`), keyed by model, taps, weights, input size, logits and
featuremaps version. Every command that puts a model there goes through :func:`cached_model_path`,
whose names :data:`CACHE_FILE` matches, so ``featuremaps cache`` lists every such file and
``cache --clear`` deletes it. TensorRT engine caches (``tensorrt/<16 hex>/``, written by the
engine when a model runs on TensorRT) are listed and cleared too.

``--clear`` deletes only what the cache names itself (``vgg16-<16 hex>.onnx`` and the like, and
``tensorrt/<16 hex>`` folders), never anything else in those folders: a misconfigured
``XDG_CACHE_HOME`` must not cost a user their files.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import re
import shutil
import sys
from pathlib import Path

from .. import __version__
from ..engine.cache_home import models_root, tensorrt_root
from ..engine.hashing import file_sha256
from ..errors import ArgumentError, ModelFileError
from ..families import default_taps
from ..export.onnx_export import export_model
from ..export.taps import MODELS, parse_taps
from ._args import ModelSpec, need_export_extra

# The kinds of file the cache holds: what resolve_model exports (MODEL-<key>.onnx), what bench
# exports (MODEL-bench-<key>.onnx, when given the cache as its folder), a quantized variant of either
# (-int8), and an interrupted atomic write (.partial).
KINDS = ("", "bench-")
VARIANTS = ("", "-int8")
CACHE_FILE = re.compile(rf"^(?:{'|'.join(map(re.escape, MODELS))})-(?:{'|'.join(k for k in KINDS if k)})?"
                        rf"[0-9a-f]{{16}}(?:{'|'.join(v for v in VARIANTS if v)})?\.onnx(?:\.partial)?$")
TENSORRT_DIR = re.compile(r"^[0-9a-f]{16}$")  # engine/providers.cache_dir_for


def cache_root() -> Path:
    """``$XDG_CACHE_HOME/featuremaps/models``, default ``~/.cache/featuremaps/models``. An empty or
    relative ``XDG_CACHE_HOME`` is ignored, as the XDG spec says: a relative one would put the
    cache (and ``cache --clear``) in whatever folder the command runs from."""
    return models_root()


def ensure_cache_root() -> Path:
    """The cache folder, created if needed; one line when it cannot be (a file in the way, read-only)."""
    root = cache_root()
    fix = "set XDG_CACHE_HOME to a writable folder, or pass an exported .onnx file as --model"
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ModelFileError(f"cannot create the model cache {str(root)!r}: {e.strerror or e}; {fix}") from None
    if not os.access(root, os.W_OK | os.X_OK):
        raise ModelFileError(f"the model cache {str(root)!r} is not writable; {fix}")
    return root


# ---------------------------------------------------------------- naming and lookup


def cached_model_path(model: str, taps, weights_id: str, input_size: int, *, logits: bool, kind: str = "",
                      folder: Path | None = None) -> Path:
    """Where the export of ``model`` with ``taps`` (a tuple of :class:`~featuremaps.contracts.Tap`),
    weights ``weights_id`` (a content hash, or ``random:SEED``/``imagenet:SEED``), ``input_size``
    and ``logits`` lives: ``folder`` (default: the cache) / ``MODEL-[KIND]<16 hex>.onnx``."""
    if kind not in KINDS or model not in MODELS:
        raise ValueError(f"no cache name for model {model!r} of kind {kind!r}")
    key = "|".join([model, ",".join(t.name for t in taps), weights_id, str(input_size), str(logits),
                    __version__, "uint8_nhwc"])  # input layout of new exports
    path = (folder or cache_root()) / f"{model}-{kind}{hashlib.sha256(key.encode()).hexdigest()[:16]}.onnx"
    assert CACHE_FILE.match(path.name), path.name  # `cache` lists and clears what it names
    return path


def variant_path(path: Path, precision: str) -> Path:
    """The quantized variant of a cached export, kept next to it (``MODEL-<key>-int8.onnx``)."""
    variant = f"-{precision}"
    if variant not in VARIANTS:
        raise ValueError(f"no cache name for a {precision} variant")
    return path.with_name(path.stem + variant + ".onnx")


def export_cached(path: Path, taps, *, model: str, input_size: int, logits: bool, say: str, **export_kw) -> Path:
    """``path`` (from :func:`cached_model_path`), exported with ``export_model`` first unless it is
    there; ``say`` is printed on stderr before an export."""
    if not path.is_file():
        if path.parent == cache_root():
            ensure_cache_root()
        print(say, file=sys.stderr, flush=True)
        export_model(taps, path, model=model, input_size=input_size, logits=logits, **export_kw)
    return path


def resolve_model(spec: ModelSpec) -> Path:
    """The .onnx file ``spec.model`` names, exporting a zoo model into the cache first if needed."""
    if spec.is_file:
        path = Path(spec.model)
        if not path.is_file():
            what = ("is a folder" if path.is_dir() else "is not a regular file") if path.exists() else "not found"
            raise ModelFileError(f"model file {spec.model!r} {what}; export one with "
                                 "`featuremaps export -o PATH.onnx` or pass a zoo name (vgg16)")
        return path
    need_export_extra(f"exporting zoo model {spec.model!r} (or pass an exported .onnx file)")
    taps = parse_taps(spec.layers or default_taps(spec.model, spec.input_size), spec.model,
                      spec.input_size)  # argument errors first
    spec = spec.with_weights_chosen()
    weights, seed = spec.weights, spec.seed
    weights_id = file_sha256(weights) if Path(weights).is_file() else f"{weights}:{seed}"
    path = cached_model_path(spec.model, taps, weights_id, spec.input_size, logits=spec.logits)
    say = f"exporting {spec.model} ({', '.join(t.name for t in taps)}, weights {weights}) to {path} ..."
    return export_cached(path, taps, model=spec.model, input_size=spec.input_size, logits=spec.logits, say=say,
                         weights=weights, seed=seed)


# ---------------------------------------------------------------- listing and clearing


def _children(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    try:
        return list(folder.iterdir())
    except OSError as e:
        raise ArgumentError(f"cannot read the cache folder {str(folder)!r}: {e.strerror or e}; "
                            "check XDG_CACHE_HOME") from None


def _tree_bytes(folder: Path) -> int:
    total = 0
    for base, _, files in os.walk(folder):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(base, name)).st_size
    return total


def cache_entries(root: Path | None = None) -> tuple[list[tuple[Path, int]], int]:
    """``(file or folder, bytes)`` of everything the cache made (models in ``root``, default the
    model cache; TensorRT engine folders), largest first, and how many other entries those
    folders hold (left alone)."""
    root = root or cache_root()
    trt = root.parent / tensorrt_root().name
    models, engines = _children(root), _children(trt)
    ours = [p for p in models if CACHE_FILE.match(p.name) and p.is_file() and not p.is_symlink()]
    dirs = [p for p in engines if TENSORRT_DIR.match(p.name) and p.is_dir() and not p.is_symlink()]
    entries = [(p, p.stat().st_size) for p in ours] + [(p, _tree_bytes(p)) for p in dirs]
    others = len(models) - len(ours) + len(engines) - len(dirs)
    return sorted(entries, key=lambda e: -e[1]), others


def clear_cache(root: Path | None = None) -> tuple[list[tuple[Path, int]], int]:
    """Delete what :func:`cache_entries` lists; returns what it listed. Folders left empty are removed."""
    root = root or cache_root()
    entries, others = cache_entries(root)
    for path, _ in entries:
        try:
            shutil.rmtree(path) if path.is_dir() else path.unlink()
        except FileNotFoundError:  # another process cleared it first
            pass
        except OSError as e:
            raise ArgumentError(f"cannot delete {str(path)!r}: {e.strerror or e}") from None
    for folder in (root, root.parent / tensorrt_root().name):
        with contextlib.suppress(OSError):  # only an empty folder; a fresh export recreates it
            folder.rmdir()
    return entries, others


def _shown(path: Path, root: Path) -> str:
    return path.name if path.parent == root else f"{path.parent.name}/{path.name}/"


def register(sub) -> None:
    p = sub.add_parser("cache", help="list or clear the model cache ($XDG_CACHE_HOME/featuremaps)",
                       description="List the models exported on the fly into the cache "
                                   "($XDG_CACHE_HOME/featuremaps/models, default ~/.cache/featuremaps/models) "
                                   "and the TensorRT engine caches (…/featuremaps/tensorrt) with their sizes, "
                                   "or delete them all with --clear (other files there are left alone).")
    p.add_argument("--clear", action="store_true", help="delete every cached model and TensorRT engine")
    p.set_defaults(func=cmd_cache)


def cmd_cache(args: argparse.Namespace) -> int:
    root = cache_root()
    entries, others = clear_cache(root) if args.clear else cache_entries(root)
    total = sum(n for _, n in entries)
    left = f"; {others} other entries left alone" if others else ""
    if args.clear:
        print(f"removed {len(entries)} files ({total / 1e6:.1f} MB) from {root.parent}{left}")
        return 0
    print(f"{root}: {len(entries)} files, {total / 1e6:.1f} MB{left}")
    for path, n in entries:
        print(f"  {n / 1e6:>9.1f} MB  {_shown(path, root)}")
    return 0
