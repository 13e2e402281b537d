"""``featuremaps demo``: the whole job in one command on a fresh machine."""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from ..bench.stats import median_rate
from ..bench.timing import interleaved
from ..compare import PRECISION_BUDGETS, compare, format_parity_table
from ..contracts import read_metadata
from ..engine.inputs import printable_path
from ..errors import ArgumentError, FeaturemapsError
from ..engine.extractor import Extractor
from ..engine.decode_pool import load_batch
from ..export.onnx_export import export_model
from ..export.reference import reference_features
from ..export.taps import parse_taps
from ..export.zoo import build_model
from ..samples import sample_images
from ..viz.draw import ShowOptions, draw_figures, load_photo, provenance, save_figure, save_figures
from ..viz.figures import overview_figure, seed_figure
from ._args import (DEFAULT_LAYERS, ModelSpec, check_weights_file, folder_arg, need_export_extra, removed_if_failed,
                    seed_arg)

FP32_REL_L2_TOL = PRECISION_BUDGETS["fp32"].rel_l2


def register(sub) -> None:
    p = sub.add_parser("demo", help="export VGG16, extract from sample photos, check parity, time it, draw",
                       description="The whole job on a fresh machine: export VGG16 with taps 0,5,10,17,28 "
                                   "(ImageNet weights if cached, else seeded random weights with a warning), "
                                   "extract from the sample photos shipped with installed packages, print the "
                                   "parity table and ONNX Runtime vs PyTorch-hooks timing, write figures.")
    p.add_argument("--layers", default=DEFAULT_LAYERS, help=f"taps (default: {DEFAULT_LAYERS})")
    p.add_argument("--weights", default="auto",
                   help="auto (imagenet if available, else random), imagenet, random, or a state_dict path")
    p.add_argument("--seed", type=seed_arg, default=0, help="seed for random weights (default: 0)")
    p.add_argument("-o", "--output", type=folder_arg, default="featuremaps-demo",
                   help="output folder (default: ./featuremaps-demo)")
    p.set_defaults(func=cmd_demo)


def cmd_demo(args: argparse.Namespace) -> int:
    check_weights_file(args.weights)  # a missing file is one line before torch loads
    need_export_extra("featuremaps demo")
    with removed_if_failed(args.output):  # bad weights leave no new empty -o folder
        return run_demo(out_dir=Path(args.output), layers=args.layers, weights=args.weights, seed=args.seed)


def _choose_weights(weights: str, model: str, seed: int) -> str:
    """The one weights default every command shares (:meth:`ModelSpec.with_weights_chosen`):
    auto is imagenet when the checkpoint is cached, else random with one warning line."""
    return ModelSpec(model=model, weights=weights, seed=seed).with_weights_chosen().weights


def _check_model_replaceable(path: Path) -> None:
    """The demo rewrites its own model file on every run, never a user's file of the same name."""
    if not os.path.lexists(path):
        return
    try:
        ours = path.is_file() and not path.is_symlink() and bool(read_metadata(path))
    except FeaturemapsError:
        ours = False
    if not ours:
        raise ArgumentError(f"{printable_path(path)} exists and is not a model featuremaps exported; move it away or "
                            "choose another folder with -o")


def run_demo(out_dir: Path, layers: str = "0,5,10,17,28", weights: str = "auto", seed: int = 0,
             model: str = "vgg16", repeats: int = 3) -> int:
    import matplotlib

    matplotlib.use("Agg")

    taps = parse_taps(layers, model)  # argument errors before the output folder exists
    onnx_path = out_dir / f"{model}-taps.onnx"
    _check_model_replaceable(onnx_path)  # before minutes of work, not after
    out_dir.mkdir(parents=True, exist_ok=True)
    weights = _choose_weights(weights, model, seed)
    net, info = build_model(model, weights, seed, need_classifier=True)
    t0 = time.perf_counter()
    res = export_model(taps, onnx_path, model=model, seed=seed, net=net, weights_info=info)
    print(f"exported {res.path} ({res.size_bytes / 1e6:.1f} MB, {len(taps)} taps, cut after "
          f"{max(taps, key=lambda t: t.index).name}, weights {info.source}) in {time.perf_counter() - t0:.1f} s")

    images = sample_images()
    with Extractor(res.path) as ex:
        print(f"engine: {ex.info.note}")
        prov = provenance(ex.record, math_mode=ex.math_mode)
        pixels = load_batch(images, ex.preprocessing)  # what the model takes: uint8 (N, H, W, 3)
        batch = load_batch(images, ex.preprocessing.float_input())  # the same pixels, normalized
        maps = ex.run(pixels)
        ref = reference_features(net, batch, taps)
        rows = compare(maps, ref)
        print(f"\nparity on {len(images)} sample photos ({', '.join(p.name for p in images)}), "
              f"ONNX Runtime vs PyTorch clone-hook reference, same input tensor:")
        print(format_parity_table(rows, FP32_REL_L2_TOL))
        import torch

        times = interleaved({"ort": lambda: ex.run(pixels),
                             "torch": lambda: reference_features(net, batch, taps, full=True)}, repeats=repeats)
        rates = {k: median_rate(len(images), v) for k, v in times.items()}
    print(f"\ntiming (batch {len(images)}, 224x224, {torch.get_num_threads()} threads, median of {repeats}): "
          f"ONNX Runtime {rates['ort']:.1f} img/s vs PyTorch eager + hooks (the seed's approach) "
          f"{rates['torch']:.1f} img/s -> {rates['ort'] / rates['torch']:.2f}x")

    print("\nfigures:")
    wlabel = prov.weights
    for i, path in enumerate(images):
        one = {k: v[i] for k, v in maps.items()}
        fig = seed_figure(one, taps, suptitle=f"{path.name}: {model} feature maps, first 8 channels per layer",
                          provenance=prov)
        png = save_figure(fig, out_dir / f"{path.stem}-layers.png")
        print(f"  {png}")
        image, note = load_photo(path, ex.preprocessing.size)
        fig = overview_figure(one, taps, image, weights=wlabel, provenance=prov, image_note=note,
                              title=f"{path.name}: what {model} sees, from the first conv to the deepest tap")
        print(f"  {save_figure(fig, out_dir / f'{path.stem}-overview.png')}")
        if i == 0:  # the other figures once: strongest channels, one full montage, parity
            opts = ShowOptions(select="top", scale="layer", montage=taps[1:2] or taps[:1], overview=False)
            figs = draw_figures(one, taps, image, name=path.name, weights=wlabel, options=opts, provenance=prov,
                                image_note=note,
                                reference={k: v[i] for k, v in ref.items()})
            for png in save_figures(figs, out_dir):
                print(f"  {png}")
    failed = [r.tap for r in rows if not r.passes(FP32_REL_L2_TOL)]
    if failed:
        print(f"featuremaps: error: parity failed for {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0
