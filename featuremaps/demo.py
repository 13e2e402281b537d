"""``featuremaps demo``: the whole job in one command on a fresh machine."""

from __future__ import annotations

import sys
import time
from pathlib import Path


def _choose_weights(weights: str, model: str, seed: int) -> str:
    """The one weights default every command shares (``featuremaps.cli.resolve_weights``): auto is
    imagenet when the checkpoint is cached (never a silent 528 MB download), else random with
    one warning line."""
    import argparse

    from .cli import resolve_weights

    args = argparse.Namespace(model=model, weights=weights, seed=seed)
    resolve_weights(args)
    return args.weights


def run_demo(out_dir: Path, layers: str = "0,5,10,17,28", weights: str = "auto", seed: int = 0,
             model: str = "vgg16", repeats: int = 3) -> int:
    import matplotlib

    matplotlib.use("Agg")
    from .bench.reference import reference_features
    from .bench.stats import compare, format_parity_table, median_rate
    from .engine.extractor import Extractor
    from .engine.preprocess import load_batch
    from .export.onnx_export import export_model
    from .export.taps import parse_taps
    from .export.verify import FP32_REL_L2_TOL
    from .export.zoo import build_model
    from .figures import seed_figure
    from .samples import sample_images

    out_dir.mkdir(parents=True, exist_ok=True)
    taps = parse_taps(layers, model)
    weights = _choose_weights(weights, model, seed)
    net, info = build_model(model, weights, seed, need_classifier=True)
    t0 = time.perf_counter()
    res = export_model(taps, out_dir / f"{model}-taps.onnx", model=model, seed=seed, net=net, weights_info=info)
    print(f"exported {res.path} ({res.size_bytes / 1e6:.1f} MB, {len(taps)} taps, cut after "
          f"{max(taps, key=lambda t: t.index).name}, weights {info.source}) in {time.perf_counter() - t0:.1f} s")

    images = sample_images()
    with Extractor(res.path) as ex:
        print(f"engine: {ex.info.note}")
        batch = load_batch(images, ex.preprocessing)
        maps = ex.run(batch)
        ref = reference_features(net, batch, taps)
        rows = compare(maps, ref)
        print(f"\nparity on {len(images)} sample photos ({', '.join(p.name for p in images)}), "
              f"ONNX Runtime vs PyTorch clone-hook reference, same input tensor:")
        print(format_parity_table(rows, FP32_REL_L2_TOL))
        import torch

        from .bench.timing import interleaved

        times = interleaved({"ort": lambda: ex.run(batch),
                             "torch": lambda: reference_features(net, batch, taps, full=True)}, repeats=repeats)
        rates = {k: median_rate(len(images), v) for k, v in times.items()}
    print(f"\ntiming (batch {len(images)}, 224x224, {torch.get_num_threads()} threads, median of {repeats}): "
          f"ONNX Runtime {rates['ort']:.1f} img/s vs PyTorch eager + hooks (the seed's approach) "
          f"{rates['torch']:.1f} img/s -> {rates['ort'] / rates['torch']:.2f}x")

    print("\nfigures:")
    from .cmd_show import ShowOptions, draw_figures, load_image, save_figure, save_figures, weights_label
    from .figures import overview_figure

    wlabel = weights_label(info.to_dict())
    for i, path in enumerate(images):
        one = {k: v[i] for k, v in maps.items()}
        fig = seed_figure(one, taps, suptitle=f"{path.name}: VGG16 feature maps, first 8 channels per layer "
                                              f"(weights: {wlabel})")
        png = save_figure(fig, out_dir / f"{path.stem}-layers.png")
        print(f"  {png}")
        image = load_image(path, ex.preprocessing.size)
        fig = overview_figure(one, taps, image, weights=wlabel,
                              title=f"{path.name}: what VGG16 sees, from the first conv to the deepest tap")
        print(f"  {save_figure(fig, out_dir / f'{path.stem}-overview.png')}")
        if i == 0:  # the other figures once: strongest channels, one full montage, parity
            opts = ShowOptions(select="top", scale="layer", montage=taps[1:2] or taps[:1], overview=False)
            figs = draw_figures(one, taps, image, name=path.name, weights=wlabel, options=opts,
                                reference={k: v[i] for k, v in ref.items()})
            for png in save_figures(figs, out_dir):
                print(f"  {png}")
    failed = [r.tap for r in rows if not r.passes(FP32_REL_L2_TOL)]
    if failed:
        print(f"featuremaps: error: parity failed for {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0
