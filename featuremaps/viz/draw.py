"""One image's figure set, and writing figures as PNG files.

The maps can come from anywhere (a model run, one row of a store): :func:`draw_figures` takes
``{tap: (C, H, W)}`` + taps + the model-size image and returns ``{file name: Figure}``;
:func:`save_figures` writes them (temporary name, then rename); :func:`show_maps` does both.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..contracts import Preprocessing, Tap
from ..engine.inputs import printable_path
from ..engine.preprocess import preprocess_file
from ..errors import ArgumentError, ImageDecodeError
from .figures import channel_figure, diff_figure, montage_figure, overview_figure
from .mapstats import select_channels

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


def load_image(path: str | Path, size: tuple[int, int]) -> np.ndarray:
    """Image file -> ``(H, W, 3) uint8`` RGB resized to the model's ``size`` by the engine's decode
    path (budget checks, strict decode, Pillow's bilinear resize)."""
    try:
        return preprocess_file(path, Preprocessing(size=tuple(size), input_layout="uint8_nhwc"))
    except ImageDecodeError as e:
        raise ImageDecodeError(f"cannot decode image {printable_path(path)}: {e}; pass a JPEG, PNG, BMP, TIFF "
                               "or WebP file") from None


def weights_label(weights: dict) -> str:
    """Export metadata ``weights`` -> the words every figure carries."""
    source = weights.get("source", "unknown")
    if source == "random":
        return f"random init (seed {weights.get('seed')}), untrained: not what VGG16 learned"
    if source == "imagenet":
        return "ImageNet (torchvision IMAGENET1K_V1)"
    sha = weights.get("file_sha256") or weights.get("sha256") or ""
    return f"{Path(source).name} (sha256 {sha[:12]})"


def _check_maps(maps: dict[str, np.ndarray], taps: tuple[Tap, ...]) -> None:
    for tap in taps:
        if tap.name not in maps:
            raise ArgumentError(f"no maps for {tap.name}; have {', '.join(maps)}")
        if np.ndim(maps[tap.name]) != 3 or min(np.shape(maps[tap.name])[1:]) < 1:
            raise ArgumentError(f"{tap.name} has shape {np.shape(maps[tap.name])}, not one image's (C, H, W) "
                                "map; figures need unreduced maps")


def draw_figures(maps: dict[str, np.ndarray], taps: tuple[Tap, ...], image: np.ndarray, *, name: str,
                 weights: str, options: ShowOptions, reference: dict[str, np.ndarray] | None = None,
                 model: str = "VGG16") -> dict[str, object]:
    """Every figure for one image: ``{file name: Figure}``.

    ``maps``: tap name -> ``(C, H, W)`` for this image (from a model or a store); ``taps``: the
    rows to draw; ``image``: ``(H, W, 3) uint8`` model input; ``name``: the image's file name;
    ``weights``: words for the weights (see :func:`weights_label`); ``reference``: PyTorch maps
    for the parity figure, or None.
    """
    _check_maps(maps, taps + options.montage)
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
    """Write every ``{file name: Figure}`` into ``out_dir``; returns the paths."""
    try:
        return [save_figure(fig, out_dir / fname, dpi) for fname, fig in figs.items()]
    except OSError as e:
        raise ArgumentError(f"cannot write figures to {str(out_dir)!r} ({e.strerror or e}); "
                            "pick another with -o") from None


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
