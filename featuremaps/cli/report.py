"""``featuremaps report``: an interactive HTML report of every channel of every tap (the CLI side:
gathers maps from a model run or a store, then hands them to :mod:`featuremaps.report`)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from ..bench.parity import budget_for_model, load_reference_net
from ..engine.extractor import Extractor
from ..engine.inputs import collect_inputs, printable_path
from ..engine.preprocess import to_input
from ..engine.sources import row_name
from ..engine.store import open_store
from ..engine.validate import ModelRecord
from ..errors import ArgumentError, FeaturemapsError, StoreError, terminal_text
from ..export.reference import reference_features
from ..report import ReportImage, build_report, write_report
from ..viz.draw import load_image
from ._args import (ModelSpec, StoreRef, add_model_args, add_storage_args, check_writable_parent, folder_arg, int_in,
                    provider_choices)
from .cache import resolve_model

CLIError = ArgumentError


# Every map of every image is held in memory and drawn: a report is for browsing a few images.
MAX_IMAGES = 32


def _check_count(n: int) -> None:
    if n > MAX_IMAGES:
        raise CLIError(f"a report shows at most {MAX_IMAGES} images (got {n}); pick a few, or extract them all "
                       "with `featuremaps extract` and report some rows with `report --store S.zarr --rows 0-9`")


def register(sub) -> None:
    p = sub.add_parser(
        "report", help="write an interactive HTML report (every channel, sorted by energy, parity per tap)",
        description="Run the model on IMAGES (files, folders, @list.txt), or read rows of a store with --store, "
                    "and write a self-contained folder (index.html + local JS/CSS + PNG sprite sheets, no "
                    "network at view time; open index.html in a browser): pick an image and a tap, browse "
                    "every channel sorted by energy, hover for statistics, compare two images side by side, "
                    "and see parity vs the PyTorch reference per tap when it can be computed.")
    p.add_argument("images", nargs="*", metavar="IMAGE",
                   help="image files, folders, .tar shards, URLs, globs or @list.txt")
    add_model_args(p)
    p.add_argument("--store", default=None, help="read the maps from this store (a path or s3:// URL) instead of "
                   "running a model")
    add_storage_args(p)
    p.add_argument("--rows", default=None, help="store rows, e.g. 0,3,7 or 0-4 (default: the first 5 ok rows)")
    p.add_argument("-o", "--output", type=folder_arg, required=True, help="output folder (created; index.html inside)")
    p.add_argument("--tile-px", type=int_in(4, 512, "--tile-px"), default=32,
                   help="largest tile side in the sprite sheets; bigger maps are area-downsampled (default: 32)")
    p.add_argument("--pixel-values", action="store_true",
                   help="also ship grey value sheets so hovering an enlarged channel shows the value under the "
                        "cursor (about +50%% bytes)")
    p.add_argument("--no-parity", action="store_true", help="skip the PyTorch reference (parity 'not computed')")
    p.add_argument("--provider", default="cpu", choices=provider_choices(),
                   help="ONNX Runtime provider (default: cpu)")
    p.set_defaults(func=cmd_report)


def parse_rows(spec: str | None, store) -> list[int]:
    """``"0,3,7"`` / ``"0-4"`` -> row indices; None -> the first 5 ok rows."""
    n = len(store)
    if spec is None:
        rows = [int(i) for i in np.flatnonzero(np.asarray(store.status) == "ok")[:5]]
        if not rows:
            raise StoreError(f"{store.path} has no ok rows yet; finish it with `featuremaps extract --resume`")
        return rows
    spans = []
    try:
        for part in spec.split(","):
            a, dash, b = part.strip().partition("-")
            spans.append((int(a), int(b) if dash else int(a)))
    except ValueError:
        raise CLIError(f"--rows must look like 0,3,7 or 0-4, got {spec!r}") from None
    for a, b in spans:  # checked before any range is built: 0-200000000 must not allocate
        if not (0 <= a < n and 0 <= b < n):
            raise CLIError(f"--rows {spec!r}: the store has rows 0-{n - 1}")
        if b < a:
            raise CLIError(f"--rows {spec!r}: the range {a}-{b} is reversed; write it {b}-{a}")
    _check_count(sum(b - a + 1 for a, b in spans))
    return [r for a, b in spans for r in range(a, b + 1)]


def _image_or_blank(path: str, size) -> np.ndarray:
    try:
        return load_image(path, size)
    except FeaturemapsError:  # the photo moved since extraction: the maps are still worth showing
        return np.full((*size, 3), 200, np.uint8)


def _from_store(ref: StoreRef, rows_spec: str | None) -> tuple[list, tuple, ModelRecord, str]:
    store = open_store(ref.where, storage_options=ref.storage_options)
    rows = parse_rows(rows_spec, store)
    _check_count(len(rows))
    status = np.asarray(store.status)
    not_ok = [r for r in rows if status[r] != "ok"]
    if not_ok:
        raise StoreError(f"rows {', '.join(map(str, not_ok))} of {store.path} are not ok (error or pending)")
    size = store.image_size  # a store without a model record fails here, in one line
    taps = store.taps
    images = [ReportImage(name=f"{row_name(store.paths[r])} (row {r})", image=_image_or_blank(store.paths[r], size),
                          maps={t.name: store.read_row(t.name, r) for t in taps}) for r in rows]
    return images, taps, store.record, "maps read from a store; run `featuremaps parity` on its model"


def _reference(record: ModelRecord, batch: np.ndarray, taps) -> tuple[dict | None, str | None]:
    """The PyTorch clone-hook maps of ``batch``, or the reason they cannot be computed."""
    try:
        net, _ = load_reference_net(record)
        return reference_features(net, batch, taps), None
    except ImportError as e:
        return None, f"PyTorch is not installed ({e.name})"
    except Exception as e:  # noqa: BLE001 - FeaturemapsError and friends: say why, keep the report
        return None, str(e).splitlines()[0][:200] if str(e) else type(e).__name__


def _from_model(paths: list[str], spec: ModelSpec, *, provider: str,
                parity: bool) -> tuple[list, tuple, ModelRecord, str | None]:
    with Extractor(resolve_model(spec), provider=provider) as ex:
        record, taps, pre = ex.record, ex.taps, ex.preprocessing
        pictures = [load_image(p, pre.size) for p in paths]
        batch = np.stack([to_input(im, pre.float_input()) for im in pictures])  # the reference's input too
        out = ex.run(batch)
    ref, note = _reference(record, batch, taps) if parity else (None, "--no-parity")
    images = [ReportImage(name=row_name(p), image=pictures[i], maps={t.name: out[t.name][i] for t in taps},
                          reference=None if ref is None else {t.name: ref[t.name][i] for t in taps})
              for i, p in enumerate(paths)]
    return images, taps, record, note


def _image_list(items: list[str]) -> list[str]:
    """The IMAGE arguments' files, listed and counted before any model is exported."""
    if not items:
        raise CLIError("give IMAGE files/folders, or --store S.zarr")
    paths = collect_inputs(items)
    _check_count(len(paths))
    return paths


def cmd_report(args: argparse.Namespace) -> int:
    out = Path(args.output)
    if out.exists() and any(out.iterdir()):
        raise CLIError(f"{out} exists and is not empty; choose a new -o folder")
    check_writable_parent(out / "index.html")  # before any model run, not when the report is written
    if args.store:
        images, taps, record, note = _from_store(StoreRef.from_args(args), args.rows)
    else:  # a zoo model is exported with --layers; an .onnx file reports all of its taps
        paths, spec = _image_list(args.images), ModelSpec.from_args(args)
        images, taps, record, note = _from_model(paths, spec, provider=args.provider, parity=not args.no_parity)
    budget = budget_for_model(record).to_dict()
    title = f"featuremaps report: {record.model}, {len(images)} images, {len(taps)} taps"
    manifest, sprites = build_report(images, taps, record=record, title=title, tile_px=args.tile_px,
                                     parity_note=note, budget=budget, pixel_values=args.pixel_values)
    res = write_report(manifest, sprites, out)
    if note:
        print(f"parity not computed: {terminal_text(note)}", file=sys.stderr)
    print(f"wrote {printable_path(res.index)} ({res.files} files, {res.bytes / 1e6:.1f} MB); open it in a browser")
    return 0
