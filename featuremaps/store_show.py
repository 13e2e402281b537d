"""``featuremaps show --store OUT.zarr --index I``: draw one stored image's maps without running a model."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from .cli import CLIError


def add_store_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("maps from a bulk store (featuremaps extract)")
    g.add_argument("--store", metavar="OUT.zarr", help="draw stored maps instead of running a model on IMAGE")
    g.add_argument("--index", type=int, default=0, help="row of the store to draw (default: 0)")


def _blank(size) -> np.ndarray:
    return np.full((*size, 3), 128, np.uint8)


def show_from_store(args: argparse.Namespace, out_dir: Path) -> int:
    from .cmd_show import ShowOptions, _pick, format_stats, load_image, show_maps, weights_label
    from .engine.store import StoreError, open_store

    if not args.store:
        raise CLIError("pass an IMAGE file, or --store OUT.zarr --index I to draw stored maps")
    if args.diff:
        raise CLIError("--diff runs the model on the image; use it with IMAGE, not --store")
    try:
        st = open_store(args.store)
    except StoreError as e:
        raise CLIError(str(e)) from None
    n = len(st)
    if not 0 <= args.index < n:
        raise CLIError(f"--index {args.index} is outside the store (0..{n - 1})")
    status, path = st.status[args.index], st.paths[args.index]
    if status != "ok":
        why = next((e.message for e in st.errors if e.index == args.index), "not extracted yet; run --resume")
        raise CLIError(f"row {args.index} ({path}) is {status}: {why}")
    meta = st.metadata
    spatial = tuple(t for t in st.taps if len(t.shape) == 3)
    if not spatial:
        raise CLIError(f"{args.store} holds only globally reduced maps ({', '.join(st.outputs)}); "
                       "figures need (C, H, W) maps")
    taps = _pick(spatial, args.layers, meta, Path(args.store), "layer") if args.layers else spatial
    tiled = _pick(spatial, args.montage, meta, Path(args.store), "montage layer") if args.montage else ()
    maps = {t.name: np.asarray(st[t.name][args.index], np.float32) for t in dict.fromkeys(taps + tiled)}
    size = tuple(meta["preprocessing"]["size"])
    try:
        image = load_image(path, size)
    except CLIError as e:
        print(f"featuremaps: warning: {e}; the overview shows a blank input", file=sys.stderr)
        image = _blank(size)
    weights = weights_label(meta["weights"])
    reduced = ", ".join(f"{k}={v['spec']}" for k, v in (meta.get("reductions") or {}).items())
    print(f"{Path(path).name} (row {args.index} of {args.store}): {meta['model']}, weights {weights}, "
          f"stored {st.dtype}" + (f", reduced: {reduced}" if reduced else ""))
    print(format_stats(maps, taps))
    options = ShowOptions(channels=args.channels, select=args.select, scale=args.scale, montage=tiled)
    for p in show_maps(maps, taps, image, name=Path(path).name, weights=weights, options=options,
                       out_dir=out_dir, model=meta["model"].upper()):
        print(p)
    return 0
