"""One image's figure set, and writing figures as PNG files.

The maps can come from anywhere (a model run, one row of a store): :func:`draw_figures` takes
``{tap: (C, H, W)}`` + taps + the model-size image and returns ``{file name: Figure}``;
:func:`save_figures` writes them (temporary name, then rename); :func:`show_maps` does both.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import __version__, families
from ..contracts import Tap
from ..engine.inputs import printable_path
from ..engine.preprocess import FORMATS_TEXT, decode_pil
from ..engine.sources import read_input_bytes
from ..engine.validate import ModelRecord
from ..errors import ArgumentError, ImageDecodeError
from .figures import LITERAL_TEXT, Provenance, channel_figure, diff_figure, montage_figure, overview_figure
from .mapstats import is_vector, select_channels

DPI = 80  # 13-inch montage -> 1040 px wide; --dpi 200 gives 2600 px (about 80 px a map at 512 channels)


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
    return load_photo(path, size)[0]


def load_photo(path: str | Path, size: tuple[int, int]) -> tuple[np.ndarray, str]:
    """Image file -> ``((H, W, 3) uint8 RGB at the model's size, how it was resized)``: the
    pixels :func:`load_image` gives plus the words for the input panel (:func:`resize_note`)."""
    from PIL import Image

    h, w = size
    try:
        im = decode_pil(read_input_bytes(os.fspath(path)))  # EXIF rotation applied: the size the viewer sees
        w0, h0 = im.size
        # as engine.preprocess.preprocess_image with full decode: Pillow's bilinear resize
        pixels = np.asarray(im if im.size == (w, h) else im.resize((w, h), Image.BILINEAR))
    except ImageDecodeError as e:
        raise ImageDecodeError(f"cannot decode image {printable_path(path)}: {e}; featuremaps reads "
                               f"{FORMATS_TEXT}") from None
    return pixels, resize_note((h0, w0), (h, w))


def resize_note(original: tuple[int, int], size: tuple[int, int]) -> str:
    """``(375, 500), (224, 224)`` -> ``"stretched to 224\u00d7224 from 500\u00d7375"`` (W\u00d7H, as
    image viewers say): the model input ignores the aspect ratio, as the seed's resize does."""
    (h0, w0), (h, w) = original, size
    if (h0, w0) == (h, w):
        return f"{w}\u00d7{h}, not resized"
    same_aspect = h0 * w == w0 * h
    how = "resized" if same_aspect else "stretched"
    return f"{how} to {w}\u00d7{h} from {w0}\u00d7{h0}"


def weights_label(weights: dict, model: str = "the network") -> str:
    """Export metadata ``weights`` -> the words every figure carries; ``model`` names the network."""
    source = weights.get("source", "unknown")
    if source == "random":
        return f"random init (seed {weights.get('seed')}), untrained: not what {model} learned"
    if source == "imagenet":
        return "ImageNet (torchvision IMAGENET1K_V1)"
    sha = weights.get("file_sha256") or weights.get("sha256") or ""
    return f"{Path(source).name} (sha256 {sha[:12]})"


def is_trained(weights: dict) -> bool:
    """True for ImageNet weights or a weights file; random or unrecorded weights are not."""
    return weights.get("source", "random") not in ("random", "unknown", "")


def provenance(record: ModelRecord, *, math_mode: str | None = None) -> Provenance:
    """What a figure states, from an exported model's (or a store's) record.

    ``math_mode``: the run's (``Extractor.math_mode``), or None when unknown (maps from a store
    that did not record it). The depth words count the family's tappable layers at the record's
    input size (none for a model no family knows).
    """
    weights = record.weights
    reductions = tuple((k, str(v.get("spec") or v.get("op"))) for k, v in record.reductions.items())
    return Provenance(model=str(record.model), weights=weights_label(weights, record.model),
                      trained=is_trained(weights), precision=str(record.precision), math_mode=math_mode,
                      reductions=reductions, layer_count=families.layer_count(record.model, record.input_size))


def _check_maps(maps: dict[str, np.ndarray], taps: tuple[Tap, ...]) -> None:
    for tap in taps:
        if tap.name not in maps:
            raise ArgumentError(f"no maps for {tap.name}; have {', '.join(maps)}")
        shape = np.shape(maps[tap.name])
        if len(shape) != len(tap.shape) or len(shape) not in (1, 3) or min(shape) < 1:
            raise ArgumentError(f"{tap.name} has shape {shape}, not one image's {tuple(tap.shape)} as the model "
                                "declares; pass the maps of one image, shaped as the exported outputs")


def draw_figures(maps: dict[str, np.ndarray], taps: tuple[Tap, ...], image: np.ndarray, *, name: str,
                 weights: str, options: ShowOptions, reference: dict[str, np.ndarray] | None = None,
                 model: str = "model", provenance: Provenance | None = None,
                 image_note: str | None = None) -> dict[str, object]:
    """Every figure for one image: ``{file name: Figure}``.

    ``maps``: tap name -> ``(C, H, W)`` (or a reduced tap's ``(C, H/K, W/K)`` / ``(C,)``) for this
    image (from a model or a store); ``taps``: the rows to draw; ``image``: ``(H, W, 3) uint8``
    model input; ``name``: the image's file name; ``weights``: words for the weights (see
    :func:`weights_label`); ``reference``: PyTorch maps for the parity figure, or None;
    ``provenance``: model, precision, math mode, reductions (see :func:`provenance`);
    ``image_note``: how the photo was resized (see :func:`resize_note`).
    """
    _check_maps(maps, taps + options.montage)
    prov = provenance or Provenance(model=model, weights=weights)
    flat = [t.name for t in options.montage if is_vector(maps[t.name])]
    if flat:
        raise ArgumentError(f"--montage {', '.join(flat)}: reduced to one value per channel, no maps to tile; "
                            "its channel figure draws it as a bar strip")
    stem = Path(name).stem
    name = printable_path(name)  # a file name that is not UTF-8 cannot be drawn as text: \xNN
    label = f"{name}: {prov.model}"
    spatial = tuple(t for t in taps if not is_vector(maps[t.name]))
    selection = {t.name: select_channels(maps[t.name], t, options.channels, options.select) for t in spatial}
    figs: dict[str, object] = {}
    what = {"first": "first", "top": "strongest (most activation energy after ReLU)",
            "spread": "evenly spread"}[options.select]
    figs[f"{stem}-layers-{options.select}-{options.scale}.png"] = channel_figure(
        maps, taps, channels=options.channels, select=options.select, scale=options.scale, selection=selection,
        suptitle=f"{label}; {what} {options.channels} channels per layer", provenance=prov)
    if options.overview:
        figs[f"{stem}-overview.png"] = overview_figure(
            maps, taps, image, weights=prov.weights, provenance=prov, image_note=image_note,
            title=f"{name}: what {prov.model} sees, from the first tap to the deepest")
    for tap in options.montage:
        figs[f"{stem}-montage-{tap.name}-{options.scale}.png"] = montage_figure(
            maps[tap.name], tap, scale=options.scale, provenance=prov, title=f"{label}, {tap.name}")
    if reference is not None and spatial:
        figs[f"{stem}-diff-{options.select}.png"] = diff_figure(maps, reference, spatial, selection=selection,
                                                                 suptitle=label + "\n" + prov.line("\n"))
    return figs


def png_bytes(fig, dpi: int = DPI) -> bytes:
    """``fig`` as a truecolour RGB PNG (colour type 2). Never palette-quantised: 256 colours band
    a smooth activation plot into false contours."""
    import io

    import matplotlib
    from PIL import Image

    buf = io.BytesIO()
    # tick labels are made here, so literal text applies here too; a file name in a script the font
    # lacks (CJK) is drawn as boxes;
    with warnings.catch_warnings(), matplotlib.rc_context(LITERAL_TEXT):
        warnings.filterwarnings("ignore", message="Glyph .* missing from", category=UserWarning)  # 4 lines each
        fig.savefig(buf, format="png", dpi=dpi)
    img = Image.open(io.BytesIO(buf.getvalue())).convert("RGB")  # alpha is always opaque here
    out = io.BytesIO()
    img.save(out, format="png", pnginfo=_png_info())
    return out.getvalue()


PNG_MARK = b"tEXtSoftware\x00featuremaps"  # the text chunk every figure we write carries


def _png_info():
    """A ``Software: featuremaps VERSION`` text chunk: how a later run knows the file is ours."""
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    info.add_text("Software", f"featuremaps {__version__}")
    return info


def made_by_featuremaps(path: Path) -> bool:
    """Whether ``path`` is a regular file holding a PNG this package wrote (its text chunk comes
    before the pixels, so the first 4 KB tell)."""
    try:
        if path.is_symlink() or not path.is_file():
            return False
        with open(path, "rb") as f:
            head = f.read(4096)
    except OSError:
        return False
    return head.startswith(b"\x89PNG") and PNG_MARK in head


def check_replaceable(path: Path) -> None:
    """Refuse to write over ``path`` unless it is absent or a figure featuremaps made: a user's
    own ``cat-overview.png`` in the output folder is never replaced."""
    if os.path.lexists(path) and not made_by_featuremaps(path):
        raise ArgumentError(f"{printable_path(path)} exists and was not made by featuremaps; move it away or "
                            "choose another output folder with -o")


def save_figure(fig, path: Path, dpi: int = DPI) -> Path:
    """Write ``fig`` as PNG via a temporary file in the same folder, then rename: an
    interrupted write never leaves a file that looks complete. A file already at ``path`` is
    replaced only if featuremaps made it (:func:`check_replaceable`)."""
    check_replaceable(path)
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
    """Write every ``{file name: Figure}`` into ``out_dir``; returns the paths. Every name is
    checked first, so a refused one leaves none of the set half written."""
    for fname in figs:
        check_replaceable(out_dir / fname)
    try:
        return [save_figure(fig, out_dir / fname, dpi) for fname, fig in figs.items()]
    except OSError as e:
        raise ArgumentError(f"cannot write figures to {str(out_dir)!r} ({e.strerror or e}); "
                            "pick another with -o") from None


def show_maps(maps: dict[str, np.ndarray], taps: tuple[Tap, ...], image: np.ndarray, *, name: str,
              weights: str, options: ShowOptions, out_dir: Path,
              reference: dict[str, np.ndarray] | None = None, model: str = "model",
              provenance: Provenance | None = None, image_note: str | None = None, dpi: int = DPI) -> list[Path]:
    """Draw every figure for one image's maps and write them into ``out_dir`` at ``dpi``; returns the paths.

    The entry point for maps from anywhere: ``maps`` is ``{tap name: (C, H, W)}`` for this
    image (a model run, or one row of a store), the other arguments as in :func:`draw_figures`.
    """
    import matplotlib

    matplotlib.use("Agg")
    figs = draw_figures(maps, taps, image, name=name, weights=weights, options=options, reference=reference,
                        model=model, provenance=provenance, image_note=image_note)
    return save_figures(figs, out_dir, dpi)
