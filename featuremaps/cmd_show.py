"""``featuremaps show IMAGE``: draw one image's feature maps to PNG files.

Two halves, so the maps can come from anywhere:

* getting maps: :func:`extract_maps` runs an exported model (or a zoo model exported on the
  fly) on the image; an already-extracted ``{tap: (C, H, W)}`` dict (from a store) works too;
* drawing them: :func:`show_maps` draws every figure from maps + taps + image + labels and
  writes them with :func:`save_figures` (temporary name, then rename).
"""

from __future__ import annotations

import argparse
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .cli import DEFAULT_LAYERS, CLIError, add_model_args, is_onnx_path, resolve_model
from .export.taps import Tap, parse_taps
from .mapstats import SCALE_MODES, SELECT_MODES, select_channels, tap_stats

DPI = 80
PALETTE_ABOVE = 600_000  # bytes


@dataclass(frozen=True)
class ShowOptions:
    """What to draw. ``montage``: taps to tile completely (may be outside the drawn rows)."""

    channels: int = 8
    select: str = "first"
    scale: str = "channel"
    montage: tuple[Tap, ...] = ()
    overview: bool = True


# ---------------------------------------------------------------- inputs


def prepare_out_dir(path: str | Path) -> Path:
    """Create ``path`` and prove it writable now, before any slow work."""
    out = Path(path)
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out, prefix=".featuremaps-probe-"):
            pass
    except OSError as e:
        raise CLIError(f"cannot write to output folder {str(out)!r} ({e.strerror or e}); pick another with -o")
    return out


def load_image(path: str | Path, size: tuple[int, int]) -> np.ndarray:
    """Image file -> ``(H, W, 3) uint8`` RGB resized to the model's ``size`` by the engine's decode
    path (budget checks, strict decode, Pillow's bilinear resize)."""
    from .engine.inputs import printable_path
    from .engine.preprocess import ImageDecodeError, Preprocessing, preprocess_file

    try:
        return preprocess_file(path, Preprocessing(size=tuple(size), input_layout="uint8_nhwc"))
    except ImageDecodeError as e:
        raise CLIError(f"cannot decode image {printable_path(path)}: {e}; pass a JPEG, PNG, BMP, TIFF or WebP file")


def weights_label(weights: dict) -> str:
    """Export metadata ``weights`` -> the words every figure carries."""
    source = weights.get("source", "unknown")
    if source == "random":
        return f"random init (seed {weights.get('seed')}), untrained: not what VGG16 learned"
    if source == "imagenet":
        return "ImageNet (torchvision IMAGENET1K_V1)"
    sha = weights.get("file_sha256") or weights.get("sha256") or ""
    return f"{Path(source).name} (sha256 {sha[:12]})"


def _pick(taps: tuple[Tap, ...], spec: str, meta: dict, model_path: Path, what: str) -> tuple[Tap, ...]:
    """The taps of ``spec`` that the exported file has, in ``spec`` order."""
    wanted = parse_taps(spec, meta["model"], int(meta["input_size"]))
    have = {t.name: t for t in taps}
    missing = [t.name for t in wanted if t.name not in have]
    if missing:
        raise CLIError(f"{what} {', '.join(missing)} not in {model_path} (it has {', '.join(have)}); "
                       "re-export with `featuremaps export --layers ...` or pass --model vgg16")
    return tuple(have[t.name] for t in wanted)


def extract_maps(model_path: Path, image_path: Path, *, layers: str | None, montage: str | None,
                 provider: str = "cpu"):
    """Run the exported model on one image.

    Returns ``(maps {tap: (C, H, W)}, drawn taps, montage taps, image (H, W, 3) uint8 at model size,
    batch (1, 3, H, W) float32, metadata)``.
    """
    from .engine.extractor import Extractor
    from .engine.preprocess import to_input

    with Extractor(model_path, provider=provider) as ex:
        meta = ex.metadata
        drawn = _pick(ex.taps, layers, meta, model_path, "layer") if layers else ex.taps
        tiled = _pick(ex.taps, montage, meta, model_path, "montage layer") if montage else ()
        image = load_image(image_path, ex.preprocessing.size)
        batch = to_input(image, ex.preprocessing)[None]
        out = ex.run(batch)
    maps = {t.name: out[t.name][0] for t in ex.taps}
    return maps, drawn, tiled, image, batch, meta


def reference_maps(meta: dict, batch: np.ndarray, taps: tuple[Tap, ...]) -> dict[str, np.ndarray]:
    """The PyTorch clone-hook reference for ``batch``, rebuilding the net from the metadata's
    weights (its SHA-256 must match, so the reference is the exported network)."""
    from .bench.reference import reference_features
    from .export.zoo import WeightsError, build_model, state_dict_sha256

    w = meta["weights"]
    source = w.get("source")
    if source not in ("random", "imagenet") and not Path(str(source)).is_file():
        raise CLIError(f"--diff needs the PyTorch weights the model was exported with ({source}); "
                       "that file is not here")
    try:
        net, info = build_model(meta["model"], source, w.get("seed") or 0, need_classifier=bool(meta["logits"]))
    except WeightsError as e:
        raise CLIError(f"--diff cannot rebuild the PyTorch reference: {e}")
    # the export hashed either the features alone or features + classifier (when it was handed
    # a full net); accept either, so the reference is provably the exported network
    if w.get("sha256") != info.sha256:
        other = ("features.",) if meta["logits"] else ("features.", "classifier.")
        if w.get("sha256") != state_dict_sha256({k: v for k, v in net.state_dict().items() if k.startswith(other)}):
            raise CLIError(f"--diff: rebuilt {source} weights do not match the exported ones "
                           f"(sha256 {info.sha256[:12]} vs {str(w.get('sha256'))[:12]})")
    ref = reference_features(net, batch, taps)
    return {t.name: ref[t.name][0] for t in taps}


# ---------------------------------------------------------------- drawing and saving


def draw_figures(maps: dict[str, np.ndarray], taps: tuple[Tap, ...], image: np.ndarray, *, name: str,
                 weights: str, options: ShowOptions, reference: dict[str, np.ndarray] | None = None,
                 model: str = "VGG16") -> dict[str, object]:
    """Every figure for one image: ``{file name: Figure}``.

    ``maps``: tap name -> ``(C, H, W)`` for this image (from a model or a store); ``taps``: the
    rows to draw; ``image``: ``(H, W, 3) uint8`` model input; ``name``: the image's file name;
    ``weights``: words for the weights (see :func:`weights_label`); ``reference``: PyTorch maps
    for the parity figure, or None.
    """
    from .figures import channel_figure, diff_figure, montage_figure, overview_figure

    for tap in taps + options.montage:
        if tap.name not in maps:
            raise CLIError(f"no maps for {tap.name}; have {', '.join(maps)}")
        if np.ndim(maps[tap.name]) != 3 or min(np.shape(maps[tap.name])[1:]) < 1:
            raise CLIError(f"{tap.name} has shape {np.shape(maps[tap.name])}, not one image's (C, H, W) map; "
                           "figures need unreduced maps")
    stem = Path(name).stem
    label = f"{name}: {model}, weights {weights}"
    selection = {t.name: select_channels(maps[t.name], t, options.channels, options.select) for t in taps}
    figs: dict[str, object] = {}
    what = {"first": "first", "top": "strongest (most activation energy after ReLU)",
            "spread": "evenly spread"}[options.select]
    figs[f"{stem}-layers-{options.select}-{options.scale}.png"] = channel_figure(
        maps, taps, channels=options.channels, select=options.select, scale=options.scale, selection=selection,
        suptitle=f"{label}\n{what} {options.channels} channels per layer")
    if options.overview:
        figs[f"{stem}-overview.png"] = overview_figure(
            maps, taps, image, weights=weights, title=f"{name}: what {model} sees, from the first conv to the deepest tap")
    for tap in options.montage:
        figs[f"{stem}-montage-{tap.name}-{options.scale}.png"] = montage_figure(
            maps[tap.name], tap, scale=options.scale, title=f"{label}\n{tap.name} ({tap.alias})")
    if reference is not None:
        figs[f"{stem}-diff-{options.select}.png"] = diff_figure(maps, reference, taps, selection=selection,
                                                                 suptitle=label)
    return figs


def png_bytes(fig, dpi: int = DPI, max_bytes: int = PALETTE_ABOVE) -> bytes:
    """``fig`` as an RGB PNG; one larger than ``max_bytes`` (a 64-channel montage at 224x224 is
    1.4 MB) is stored with a 256-colour palette instead, about 4x smaller."""
    import io

    from PIL import Image

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    img = Image.open(io.BytesIO(buf.getvalue())).convert("RGB")  # alpha is always opaque here
    out = io.BytesIO()
    img.save(out, format="png")
    if out.tell() > max_bytes:
        out = io.BytesIO()
        img.quantize(colors=256, method=Image.Quantize.FASTOCTREE).save(out, format="png")
    return out.getvalue()


def save_figure(fig, path: Path, dpi: int = DPI) -> Path:
    """Write ``fig`` as PNG via a temporary file in the same folder, then rename: an
    interrupted write never leaves a file that looks complete."""
    data = png_bytes(fig, dpi)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.partial")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def save_figures(figs: dict[str, object], out_dir: Path, dpi: int = DPI) -> list[Path]:
    try:
        return [save_figure(fig, out_dir / fname, dpi) for fname, fig in figs.items()]
    except OSError as e:
        raise CLIError(f"cannot write figures to {str(out_dir)!r} ({e.strerror or e}); pick another with -o")


def show_maps(maps: dict[str, np.ndarray], taps: tuple[Tap, ...], image: np.ndarray, *, name: str,
              weights: str, options: ShowOptions, out_dir: Path,
              reference: dict[str, np.ndarray] | None = None, model: str = "VGG16") -> list[Path]:
    """Draw every figure for one image's maps and write them into ``out_dir``; returns the paths.

    The entry point for maps from anywhere: ``maps`` is ``{tap name: (C, H, W)}`` for this
    image (a model run, or one row of a store), the other arguments as in :func:`draw_figures`.
    """
    import matplotlib

    matplotlib.use("Agg")
    return save_figures(draw_figures(maps, taps, image, name=name, weights=weights, options=options,
                                     reference=reference, model=model), out_dir)


# ---------------------------------------------------------------- the command


def format_stats(maps: dict[str, np.ndarray], taps: tuple[Tap, ...]) -> str:
    lines = [f"{'tap':<13}{'alias':<9}{'channels':>9}{'H x W':>10}{'active':>9}{'mean':>11}"]
    for t in taps:
        s = tap_stats(maps[t.name], t)
        lines.append(f"{t.name:<13}{t.alias:<9}{s.channels:>9}{f'{s.height}x{s.width}':>10}"
                     f"{s.fraction_active:>9.1%}{s.mean_activation:>11.4g}" + ("  (ReLU applied)" * s.relu_applied))
    return "\n".join(lines)


def cmd_show(args: argparse.Namespace) -> int:
    out_dir = prepare_out_dir(args.output)
    if args.store or args.image is None:  # maps from a bulk store: no model run
        from .store_show import show_from_store

        return show_from_store(args, out_dir)
    image_path = Path(args.image)
    if not image_path.is_file():
        raise CLIError(f"image {args.image!r} not found")
    layers, montage = args.layers, args.montage
    if not is_onnx_path(args.model):
        # a zoo model is exported with exactly the taps asked for (montage taps included)
        drawn = parse_taps(layers or DEFAULT_LAYERS, args.model, args.input_size)
        tiled = parse_taps(montage, args.model, args.input_size) if montage else ()
        args.layers = ",".join(dict.fromkeys(t.name for t in drawn + tiled))
        layers = ",".join(t.name for t in drawn)
    maps, taps, tiled, image, batch, meta = extract_maps(resolve_model(args), image_path, layers=layers,
                                                         montage=montage, provider=args.provider)
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


def _positive(text: str) -> int:
    n = int(text)
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {n}")
    return n


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "show", help="draw one image's feature maps (channel rows, overview, montage, parity) to PNGs",
        description="Draw one image's feature maps: per-layer channel rows (the seed's figure with "
                    "--select first), an overview (input, per-layer channel-mean overlays, and channels / "
                    "size / fraction active / mean activation across depth), optional full montages of "
                    "chosen layers and a parity panel against the PyTorch reference. Writes PNGs to -o and "
                    "prints their paths.")
    p.add_argument("image", nargs="?", help="image file (JPEG, PNG, ...); or draw stored maps with --store")
    from .store_show import add_store_args

    add_store_args(p)
    add_model_args(p, layers_default=None)
    for action in p._actions:
        if action.dest == "layers":
            action.help = (f"taps to draw (default: {DEFAULT_LAYERS} for a zoo model, every tap of an .onnx "
                           "file); indices, features.17 or aliases, see `featuremaps layers`")
    p.add_argument("--channels", type=_positive, default=8, help="channels per layer row (default: 8)")
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
    p.add_argument("--provider", default="cpu", choices=("auto", "cpu", "cuda", "tensorrt"),
                   help="ONNX Runtime provider (default: cpu; one image does not repay a GPU engine build)")
    p.add_argument("-o", "--output", default="featuremaps-show", help="output folder (default: ./featuremaps-show)")
    p.set_defaults(func=cmd_show)
