"""``featuremaps show IMAGE...`` / ``show --store OUT.zarr --index I``: draw feature maps to PNGs.

Two halves, so the maps can come from anywhere:

* getting maps: :func:`extract_samples` runs an exported model (or a zoo model exported on the
  fly) on each image; :func:`show_from_store` reads one row of a bulk store instead;
* drawing them: :func:`featuremaps.viz.draw.show_maps` draws every figure from maps + taps +
  image + labels and writes them (temporary name, then rename).

Several images (files, folders, ``@list.txt``) get a sub-folder of figures each plus one
comparison figure (the same channels of each tap across the images) in the output folder.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

from ..contracts import Tap
from ..engine.extractor import Extractor
from ..engine.inputs import collect_inputs, printable_path
from ..engine.sources import expand_braces, has_glob, is_shard_name, is_url, locate, member_row, row_name
from ..engine.preprocess import to_input
from ..engine.store import open_store
from ..engine.validate import ModelRecord
from ..errors import ArgumentError, InputError, StoreError, one_line, terminal_text
from ..export.reference import reference_features
from ..export.taps import parse_taps
from ..bench.parity import load_reference_net
from ..viz.draw import DPI, ShowOptions, load_photo, provenance, save_figure, show_maps
from ..viz.figures import Provenance, comparison_figure, nonfinite_note
from ..viz.mapstats import SCALE_MODES, SELECT_MODES, tap_stats
from ..families import default_taps
from ._args import (CHANNELS_MAX, DEFAULT_LAYERS, ModelSpec, StoreRef, add_model_args, add_storage_args,
                    check_not_both, folder_arg, int_in, is_onnx_path, provider_choices, removed_if_failed)
from .cache import resolve_model


# ---------------------------------------------------------------- inputs


def prepare_out_dir(path: str | Path) -> Path:
    """Create ``path`` and prove it writable now, before any slow work."""
    out = Path(path)
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out, prefix=".featuremaps-probe-"):
            pass
    except OSError as e:
        raise ArgumentError(f"cannot write to output folder {str(out)!r} ({e.strerror or e}); "
                            "pick another with -o") from None
    return out


def _pick(taps: tuple[Tap, ...], spec: str, model: str, input_size: int, model_path: Path,
          what: str) -> tuple[Tap, ...]:
    """The taps of ``spec`` that the exported file (or store) has, in ``spec`` order."""
    wanted = parse_taps(spec, model, input_size)
    have = {t.name: t for t in taps}
    missing = [t.name for t in wanted if t.name not in have]
    if missing:
        raise ArgumentError(f"{what} {', '.join(missing)} not in {model_path} (it has {', '.join(have)}); "
                       "re-export with `featuremaps export --layers ...` or pass --model vgg16")
    return tuple(have[t.name] for t in wanted)


def _pick_stored(st, spec: str, what: str) -> tuple[Tap, ...]:
    """:func:`_pick` for a store (its taps first: a store without model metadata is one line)."""
    taps = st.taps
    return _pick(taps, spec, st.record.model, st.record.input_size, Path(st.path), what)


@dataclasses.dataclass(frozen=True)
class Sample:
    """One image run through the model: ``maps`` ``{tap: (C, H, W) or reduced}``, ``image``
    ``(H, W, 3) uint8`` at model size, ``note`` how it was resized, ``batch`` the reference's
    ``(1, 3, H, W) float32`` input."""

    path: Path
    maps: dict
    image: np.ndarray
    note: str
    batch: np.ndarray


def extract_samples(model_path: Path, image_paths: list[Path], *, layers: str | None, montage: str | None,
                    provider: str = "cpu"):
    """Run the exported model on each image, one session for all.

    Returns ``(samples, drawn taps, montage taps, model record, math mode)``.
    """
    samples = []
    with Extractor(model_path, provider=provider) as ex:
        rec = ex.record
        drawn = _pick(rec.taps, layers, rec.model, rec.input_size, rec.path, "layer") if layers else ex.taps
        tiled = _pick(rec.taps, montage, rec.model, rec.input_size, rec.path, "montage layer") if montage else ()
        for path in image_paths:
            image, note = load_photo(path, ex.preprocessing.size)
            batch = to_input(image, ex.preprocessing.float_input())[None]
            out = ex.run(batch)
            maps = {t.name: out[t.name][0] for t in ex.taps}
            samples.append(Sample(Path(row_name(os.fspath(path))), maps, image, note, batch))
        math_mode = ex.math_mode
    return samples, drawn, tiled, rec, math_mode


def extract_maps(model_path: Path, image_path: Path, *, layers: str | None, montage: str | None,
                 provider: str = "cpu"):
    """Run the exported model on one image.

    Returns ``(maps {tap: (C, H, W)}, drawn taps, montage taps, image (H, W, 3) uint8 at model size,
    batch (1, 3, H, W) float32, model record)``.
    """
    samples, drawn, tiled, record, _ = extract_samples(model_path, [image_path], layers=layers, montage=montage,
                                                       provider=provider)
    return samples[0].maps, drawn, tiled, samples[0].image, samples[0].batch, record


def reference_maps(record: ModelRecord, batch: np.ndarray, taps: tuple[Tap, ...]) -> dict[str, np.ndarray]:
    """The PyTorch clone-hook reference for ``batch``, rebuilding the net from the record's
    weights (its SHA-256 must match, so the reference is the exported network)."""
    net, _ = load_reference_net(record)  # rebuilt from the record; its SHA-256 must match
    ref = reference_features(net, batch, taps)
    return {t.name: ref[t.name][0] for t in taps}




# ---------------------------------------------------------------- the command


def _pct(v) -> str:
    return "-" if v is None else f"{v:.1%}"


def _num(v) -> str:
    return "-" if v is None else f"{v:.4g}"


def format_stats(maps: dict[str, np.ndarray], taps: tuple[Tap, ...], prov: Provenance | None = None) -> str:
    """A table of per-tap statistics; ``-`` where a reduced tap's values would distort one."""
    width = max([len(t.name) for t in taps] + [3]) + 2
    awidth = max([len(t.alias) for t in taps] + [5]) + 2
    lines = [f"{'tap':<{width}}{'alias':<{awidth}}{'channels':>9}{'H x W':>10}{'active':>9}{'mean':>11}"]
    for t in taps:
        s = tap_stats(maps[t.name], t, prov.reduction(t.name) if prov else None)
        size = f"{s.height}x{s.width}" if s.height else "(C,)"
        lines.append(f"{t.name:<{width}}{t.alias:<{awidth}}{s.channels:>9}{size:>10}{_pct(s.fraction_active):>9}"
                     f"{_num(s.mean_activation):>11}" + ("  (ReLU applied)" * s.relu_applied)
                     + (f"  (reduced: {s.reduction})" if s.reduction else ""))
    return "\n".join(map(terminal_text, lines))  # alias and reduction come from metadata: escaped


def warn_nonfinite(maps: dict[str, np.ndarray], taps: tuple[Tap, ...]) -> None:
    """One stderr line when maps hold NaN or +-inf (an old store, a hostile model): the figures
    still draw, with those values marked."""
    note = nonfinite_note(maps, taps)
    if note:
        print(f"featuremaps: warning: {note.removeprefix('WARNING: ')}", file=sys.stderr)


def check_channels(channels: int, taps: tuple[Tap, ...]) -> None:
    """``--channels`` against the drawn taps, once they are known: more than the widest has is an error."""
    widest = max(t.channels for t in taps)
    if channels > widest:
        raise ArgumentError(f"--channels {channels} is more than the {widest} channels of the widest drawn tap; "
                            f"use --channels {widest} or less (--montage TAP shows every channel)")


def image_paths(items: list[str]) -> tuple[list[str], bool]:
    """IMAGE arguments (files, folders, .tar shards, URLs, patterns, @list.txt) -> ``(row ids,
    several)``; ``several`` is False only for exactly one image file named directly (its figures
    go straight into -o)."""
    one = items[0] if len(items) == 1 else ""
    if one and not one.startswith("@") and not is_url(one) and not Path(one).is_dir():
        if Path(one).is_file() and not is_shard_name(one):
            return [one], False
        member = member_row(os.path.abspath(one))
        if member is not None:  # SHARD#MEMBER named directly: one image too
            return [member[1]], False
        if not Path(one).exists() and not has_glob(one) and len(expand_braces(one)) == 1:
            raise InputError(f"image {one!r} not found; pass image files, folders or @list.txt")
    paths = collect_inputs(items)
    missing = [p for p in paths if not is_url(p) and locate(p).member is None and not Path(p).is_file()]
    if missing:
        raise InputError(f"image {printable_path(missing[0])} (from a list file) not found; fix the list")
    return paths, True


def sub_folders(paths: list, out_dir: Path) -> list[Path]:
    """One output folder per image, named after its file stem (``-2``, ``-3`` ... on clashes); a
    tar member or URL by its last name (:func:`~featuremaps.engine.sources.row_name`)."""
    seen: dict[str, int] = {}
    folders = []
    for p in paths:
        stem = Path(row_name(os.fspath(p))).stem
        seen[stem] = seen.get(stem, 0) + 1
        folders.append(out_dir / (stem if seen[stem] == 1 else f"{stem}-{seen[stem]}"))
    return folders


@dataclasses.dataclass(frozen=True)
class Drawing:
    """How ``show`` draws, read once from its options: ``channels`` per row, which (``select``),
    colour ``scale``, ``montage`` taps to tile whole (a spec, parsed against the model), ``diff``
    against the PyTorch reference, PNG ``dpi``."""

    channels: int = 8
    select: str = "first"
    scale: str = "channel"
    montage: str | None = None
    diff: bool = False
    dpi: int = DPI

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> "Drawing":
        return cls(channels=args.channels, select=args.select, scale=args.scale, montage=args.montage,
                   diff=args.diff, dpi=args.dpi)

    def options(self, tiled: tuple[Tap, ...]) -> ShowOptions:
        """The figure options, once the montage taps are known."""
        return ShowOptions(channels=self.channels, select=self.select, scale=self.scale, montage=tiled)


def _resolve(spec: ModelSpec, montage: str | None) -> tuple[Path, str | None]:
    """The .onnx to run and the ``--layers`` to draw; a zoo model is exported with exactly the
    taps asked for (montage taps included)."""
    layers = spec.layers
    if is_onnx_path(spec.model):
        return resolve_model(spec), layers
    drawn = parse_taps(layers or default_taps(spec.model, spec.input_size), spec.model, spec.input_size)
    tiled = parse_taps(montage, spec.model, spec.input_size) if montage else ()
    spec = dataclasses.replace(spec, layers=",".join(dict.fromkeys(t.name for t in drawn + tiled)))
    return resolve_model(spec), ",".join(t.name for t in drawn)


def cmd_show(args: argparse.Namespace) -> int:
    check_not_both(" ".join(args.image) if args.image else None, args.store)
    drawing = Drawing.from_args(args)
    if args.store:  # maps from a bulk store: no model run
        store = StoreRef.from_args(args)
        with removed_if_failed(args.output):  # a bad layer or row leaves no new empty -o folder
            return show_from_store(store, args.index, args.layers, drawing, prepare_out_dir(args.output))
    spec = ModelSpec.from_args(args)
    with removed_if_failed(args.output):  # a bad layer or model leaves no new empty -o folder
        return _show(args.image, spec, drawing, args.provider, prepare_out_dir(args.output))


def _show(images: list[str], spec: ModelSpec, drawing: Drawing, provider: str, out_dir: Path) -> int:
    paths, several = image_paths(images)
    model_path, layers = _resolve(spec, drawing.montage)
    samples, taps, tiled, record, math_mode = extract_samples(model_path, paths, layers=layers,
                                                              montage=drawing.montage, provider=provider)
    check_channels(drawing.channels, taps)
    prov = provenance(record, math_mode=math_mode)
    print(terminal_text(prov.line()))
    options = drawing.options(tiled)
    folders = sub_folders(paths, out_dir) if several else [out_dir]
    for sample, folder in zip(samples, folders):
        folder.mkdir(exist_ok=True)
        _show_sample(sample, taps, record, prov, options, folder, diff=drawing.diff, dpi=drawing.dpi)
    if len(samples) > 1:
        _save_comparison(samples, taps, prov, drawing, out_dir)
    return 0


def _show_sample(sample: Sample, taps, record: ModelRecord, prov: Provenance, options: ShowOptions,
                 folder: Path, *, diff: bool, dpi: int) -> None:
    """Print one image's statistics (and parity with --diff), then draw and save its figures."""
    print(f"{printable_path(sample.path.name)}: {terminal_text(record.model)} input {sample.note}")
    print(format_stats(sample.maps, taps, prov))
    warn_nonfinite(sample.maps, taps)
    reference = None
    if diff:
        spatial = tuple(t for t in taps if np.ndim(sample.maps[t.name]) == 3 and not prov.reduction(t.name))
        reference = reference_maps(record, sample.batch, spatial)
        for t in spatial:
            err = float(np.abs(sample.maps[t.name] - reference[t.name]).max())
            print(f"parity {t.name}: max |ONNX Runtime - PyTorch| = {err:.3g}")
    for path in show_maps(sample.maps, taps, sample.image, name=sample.path.name, weights=prov.weights,
                          options=options, out_dir=folder, reference=reference, provenance=prov,
                          image_note=sample.note, dpi=dpi):
        print(printable_path(path))


def _save_comparison(samples: list[Sample], taps, prov: Provenance, drawing: Drawing, out_dir: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    names = [printable_path(p.name) for p in sub_folders([s.path for s in samples], out_dir)]
    fig = comparison_figure([s.maps for s in samples], names, taps, channels=min(drawing.channels, 8),
                            select=drawing.select, provenance=prov)
    print(printable_path(save_figure(fig, out_dir / f"compare-{drawing.select}.png", drawing.dpi)))


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "show", help="draw feature maps of images (channel rows, overview, montage, parity, comparison) to PNGs",
        description="Draw each image's feature maps: per-layer channel rows (the seed's figure with "
                    "--select first), an overview (input, per-layer channel-mean overlays, and channels / "
                    "size / fraction active / mean activation across depth), optional full montages of "
                    "chosen layers and a parity panel against the PyTorch reference. Several images (or a folder, or "
                    "@list.txt) get a sub-folder each plus compare-SELECT.png with the same channels of each tap "
                    "across the images. Every figure names the model, weights, precision, math mode and "
                    "reductions. Writes PNGs to -o and prints their paths.")
    p.add_argument("image", nargs="*", metavar="IMAGE",
                   help="image files, folders (searched recursively), .tar shards, URLs, globs or @list.txt "
                        "(one entry per line); or draw stored maps with --store")
    add_store_args(p)
    add_model_args(p, layers_default=None,
                   layers_help=f"taps to draw (default: {DEFAULT_LAYERS} for vgg16, conv1,layer1..layer4 for a "
                               "ResNet, every tap of an .onnx file); names, aliases or VGG indices, see "
                               "`featuremaps layers`")
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
    p.add_argument("--dpi", type=int_in(30, 600, "--dpi"), default=DPI,
                   help=f"PNG resolution, 30..600 (default: {DPI}; a montage is 13 inches wide, so --dpi 200 "
                        "gives 2600 px)")
    p.add_argument("-o", "--output", type=folder_arg, default="featuremaps-show",
                   help="output folder (default: ./featuremaps-show)")
    p.set_defaults(func=cmd_show)


# ---------------------------------------------------------------- --store: maps from a bulk store


def add_store_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("maps from a bulk store (featuremaps extract)")
    g.add_argument("--store", metavar="OUT.zarr", help="draw stored maps instead of running a model on IMAGE "
                   "(a path or s3:// URL)")
    add_storage_args(g)
    g.add_argument("--index", type=int_in(0, None, "--index"), default=0, help="row of the store to draw (default: 0)")


def _blank(size) -> np.ndarray:
    return np.full((*size, 3), 128, np.uint8)


def show_from_store(store: StoreRef, index: int, layers: str | None, drawing: Drawing, out_dir: Path) -> int:
    """``featuremaps show --store OUT.zarr --index I``: draw one stored image's maps without a model."""
    if drawing.diff:
        raise ArgumentError("--diff runs the model on the image; use it with IMAGE, not --store")
    st = open_store(store.where, storage_options=store.storage_options)
    n = len(st)
    if not 0 <= index < n:
        raise ArgumentError(f"--index {index} is outside the store (0..{n - 1})")
    status, path = st.status[index], st.paths[index]
    if status != "ok":
        why = next((e.message for e in st.errors if e.index == index), "not extracted yet; run --resume")
        raise StoreError(f"row {index} ({printable_path(path)}) is {status}: {terminal_text(why)}")
    taps = _pick_stored(st, layers, "layer") if layers else st.taps  # a store without a record fails here
    tiled = _pick_stored(st, drawing.montage, "montage layer") if drawing.montage else ()
    check_channels(drawing.channels, taps)
    maps = {t.name: np.asarray(st.read_row(t.name, index), np.float32) for t in dict.fromkeys(taps + tiled)}
    size = st.image_size
    try:
        image, note = load_photo(path, size)
    except InputError as e:
        print(f"featuremaps: warning: {one_line(e)}; the overview shows a blank input", file=sys.stderr)
        image, note = _blank(size), "image file unreadable now: blank"
    prov = provenance(st.record, math_mode=st.record.math_mode)
    print(f"{printable_path(Path(path).name)} (row {index} of {printable_path(store.where)}), stored {st.dtype}: "
          f"{terminal_text(prov.line())}")
    print(format_stats(maps, taps, prov))
    warn_nonfinite(maps, tuple(dict.fromkeys(taps + tiled)))
    for p in show_maps(maps, taps, image, name=Path(path).name, weights=prov.weights, options=drawing.options(tiled),
                       out_dir=out_dir, provenance=prov, image_note=note, dpi=drawing.dpi):
        print(printable_path(p))
    return 0
