"""``featuremaps show IMAGE`` / ``show --store OUT.zarr --index I``: draw one image's feature maps to PNGs.

Two halves, so the maps can come from anywhere:

* getting maps: :func:`extract_maps` runs an exported model (or a zoo model exported on the
  fly) on the image; :func:`show_from_store` reads one row of a bulk store instead;
* drawing them: :func:`featuremaps.viz.draw.show_maps` draws every figure from maps + taps +
  image + labels and writes them (temporary name, then rename).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
from pathlib import Path

import numpy as np

from ..contracts import Tap
from ..engine.extractor import Extractor
from ..engine.preprocess import to_input
from ..engine.store import open_store
from ..errors import ArgumentError, InputError, StoreError
from ..export.reference import reference_features
from ..export.taps import parse_taps
from ..bench.parity import load_reference_net
from ..viz.draw import ShowOptions, load_image, show_maps, weights_label
from ..viz.mapstats import SCALE_MODES, SELECT_MODES, tap_stats
from ._args import (CHANNELS_MAX, DEFAULT_LAYERS, ModelSpec, add_model_args, check_not_both, folder_arg,
                    int_in, is_onnx_path, provider_choices, resolve_model)


# ---------------------------------------------------------------- inputs


def prepare_out_dir(path: str | Path) -> Path:
    """Create ``path`` and prove it writable now, before any slow work."""
    out = Path(path)
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out, prefix=".featuremaps-probe-"):
            pass
    except OSError as e:
        raise ArgumentError(f"cannot write to output folder {str(out)!r} ({e.strerror or e}); pick another with -o")
    return out


def _pick(taps: tuple[Tap, ...], spec: str, meta: dict, model_path: Path, what: str) -> tuple[Tap, ...]:
    """The taps of ``spec`` that the exported file has, in ``spec`` order."""
    wanted = parse_taps(spec, meta["model"], int(meta["input_size"]))
    have = {t.name: t for t in taps}
    missing = [t.name for t in wanted if t.name not in have]
    if missing:
        raise ArgumentError(f"{what} {', '.join(missing)} not in {model_path} (it has {', '.join(have)}); "
                       "re-export with `featuremaps export --layers ...` or pass --model vgg16")
    return tuple(have[t.name] for t in wanted)


def extract_maps(model_path: Path, image_path: Path, *, layers: str | None, montage: str | None,
                 provider: str = "cpu"):
    """Run the exported model on one image.

    Returns ``(maps {tap: (C, H, W)}, drawn taps, montage taps, image (H, W, 3) uint8 at model size,
    batch (1, 3, H, W) float32, metadata)``.
    """
    with Extractor(model_path, provider=provider) as ex:
        meta = ex.metadata
        drawn = _pick(ex.taps, layers, meta, model_path, "layer") if layers else ex.taps
        tiled = _pick(ex.taps, montage, meta, model_path, "montage layer") if montage else ()
        image = load_image(image_path, ex.preprocessing.size)
        batch = to_input(image, ex.preprocessing.float_input())[None]
        out = ex.run(batch)
    maps = {t.name: out[t.name][0] for t in ex.taps}
    return maps, drawn, tiled, image, batch, meta


def reference_maps(meta: dict, batch: np.ndarray, taps: tuple[Tap, ...]) -> dict[str, np.ndarray]:
    """The PyTorch clone-hook reference for ``batch``, rebuilding the net from the metadata's
    weights (its SHA-256 must match, so the reference is the exported network)."""
    net, _ = load_reference_net(meta)  # rebuilt from the metadata; its SHA-256 must match
    ref = reference_features(net, batch, taps)
    return {t.name: ref[t.name][0] for t in taps}


# ---------------------------------------------------------------- the command


def format_stats(maps: dict[str, np.ndarray], taps: tuple[Tap, ...]) -> str:
    lines = [f"{'tap':<13}{'alias':<9}{'channels':>9}{'H x W':>10}{'active':>9}{'mean':>11}"]
    for t in taps:
        s = tap_stats(maps[t.name], t)
        lines.append(f"{t.name:<13}{t.alias:<9}{s.channels:>9}{f'{s.height}x{s.width}':>10}"
                     f"{s.fraction_active:>9.1%}{s.mean_activation:>11.4g}" + ("  (ReLU applied)" * s.relu_applied))
    return "\n".join(lines)


def check_channels(channels: int, taps: tuple[Tap, ...]) -> None:
    """``--channels`` against the drawn taps, once they are known: more than the widest has is an error."""
    widest = max(t.channels for t in taps)
    if channels > widest:
        raise ArgumentError(f"--channels {channels} is more than the {widest} channels of the widest drawn tap; "
                            f"use --channels {widest} or less (--montage TAP shows every channel)")


def cmd_show(args: argparse.Namespace) -> int:
    check_not_both(args.image, args.store)
    out_dir = prepare_out_dir(args.output)
    if args.store:  # maps from a bulk store: no model run
        return show_from_store(args, out_dir)
    image_path = Path(args.image)
    if not image_path.is_file():
        raise InputError(f"image {args.image!r} not found")
    spec = ModelSpec.from_args(args)
    layers, montage = args.layers, args.montage
    if not is_onnx_path(spec.model):
        # a zoo model is exported with exactly the taps asked for (montage taps included)
        drawn = parse_taps(layers or DEFAULT_LAYERS, spec.model, spec.input_size)
        tiled = parse_taps(montage, spec.model, spec.input_size) if montage else ()
        spec = dataclasses.replace(spec, layers=",".join(dict.fromkeys(t.name for t in drawn + tiled)))
        layers = ",".join(t.name for t in drawn)
    maps, taps, tiled, image, batch, meta = extract_maps(resolve_model(spec), image_path, layers=layers,
                                                         montage=montage, provider=args.provider)
    check_channels(args.channels, taps)
    weights = weights_label(meta["weights"])
    print(f"{image_path.name}: {meta['model']} at {image.shape[1]}x{image.shape[0]}, weights {weights}")
    print(format_stats(maps, taps))
    reference = None
    if args.diff:
        reference = reference_maps(meta, batch, taps)
        for t in taps:
            err = float(np.abs(maps[t.name] - reference[t.name]).max())
            print(f"parity {t.name}: max |ONNX Runtime - PyTorch| = {err:.3g}")
    options = ShowOptions(channels=args.channels, select=args.select, scale=args.scale, montage=tiled)
    for path in show_maps(maps, taps, image, name=image_path.name, weights=weights, options=options,
                          out_dir=out_dir, reference=reference, model=meta["model"].upper()):
        print(path)
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "show", help="draw one image's feature maps (channel rows, overview, montage, parity) to PNGs",
        description="Draw one image's feature maps: per-layer channel rows (the seed's figure with "
                    "--select first), an overview (input, per-layer channel-mean overlays, and channels / "
                    "size / fraction active / mean activation across depth), optional full montages of "
                    "chosen layers and a parity panel against the PyTorch reference. Writes PNGs to -o and "
                    "prints their paths.")
    p.add_argument("image", nargs="?", help="image file (JPEG, PNG, ...); or draw stored maps with --store")
    add_store_args(p)
    add_model_args(p, layers_default=None,
                   layers_help=f"taps to draw (default: {DEFAULT_LAYERS} for a zoo model, every tap of an .onnx "
                               "file); indices, features.17 or aliases, see `featuremaps layers`")
    p.add_argument("--channels", type=int_in(1, CHANNELS_MAX, "--channels"), default=8,
                   help=f"channels per layer row, 1..{CHANNELS_MAX} (default: 8)")
    p.add_argument("--select", choices=SELECT_MODES, default="first",
                   help="which channels: first (the seed's), top (most activation energy for this image), "
                        "spread (evenly over the layer) (default: first)")
    p.add_argument("--scale", choices=SCALE_MODES, default="channel",
                   help="colour: channel (each tile its own min..max, the seed's look) or layer (one scale "
                        "per layer, so dark means weak for that layer) (default: channel)")
    p.add_argument("--montage", metavar="TAP",
                   help="also tile every channel of these taps (e.g. features.5 or 5,28) in one image each")
    p.add_argument("--diff", action="store_true",
                   help="also draw |ONNX Runtime - PyTorch reference| for the shown channels (needs torch)")
    p.add_argument("--provider", default="cpu", choices=provider_choices(),
                   help="ONNX Runtime provider (default: cpu; one image does not repay a GPU engine build)")
    p.add_argument("-o", "--output", type=folder_arg, default="featuremaps-show",
                   help="output folder (default: ./featuremaps-show)")
    p.set_defaults(func=cmd_show)


# ---------------------------------------------------------------- --store: maps from a bulk store


def add_store_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("maps from a bulk store (featuremaps extract)")
    g.add_argument("--store", metavar="OUT.zarr", help="draw stored maps instead of running a model on IMAGE")
    g.add_argument("--index", type=int_in(0, None, "--index"), default=0, help="row of the store to draw (default: 0)")


def _blank(size) -> np.ndarray:
    return np.full((*size, 3), 128, np.uint8)


def show_from_store(args: argparse.Namespace, out_dir: Path) -> int:
    """``featuremaps show --store OUT.zarr --index I``: draw one stored image's maps without a model."""
    if args.diff:
        raise ArgumentError("--diff runs the model on the image; use it with IMAGE, not --store")
    st = open_store(args.store)
    n = len(st)
    if not 0 <= args.index < n:
        raise ArgumentError(f"--index {args.index} is outside the store (0..{n - 1})")
    status, path = st.status[args.index], st.paths[args.index]
    if status != "ok":
        why = next((e.message for e in st.errors if e.index == args.index), "not extracted yet; run --resume")
        raise StoreError(f"row {args.index} ({path}) is {status}: {why}")
    meta = st.metadata
    spatial = tuple(t for t in st.taps if len(t.shape) == 3)
    if not spatial:
        raise StoreError(f"{args.store} holds only globally reduced maps ({', '.join(st.outputs)}); "
                         "figures need (C, H, W) maps")
    taps = _pick(spatial, args.layers, meta, Path(args.store), "layer") if args.layers else spatial
    tiled = _pick(spatial, args.montage, meta, Path(args.store), "montage layer") if args.montage else ()
    check_channels(args.channels, taps)
    maps = {t.name: np.asarray(st[t.name][args.index], np.float32) for t in dict.fromkeys(taps + tiled)}
    size = tuple(meta["preprocessing"]["size"])
    try:
        image = load_image(path, size)
    except InputError as e:
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
