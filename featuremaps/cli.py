"""The ``featuremaps`` command line. Prints and writes files; the library only computes and draws."""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
import sys
import time
from pathlib import Path

from .errors import ArgumentError, FeaturemapsError, one_line
from .export.taps import MODELS, model_layers, parse_taps

DEFAULT_LAYERS = "0,5,10,17,28"
log = logging.getLogger("featuremaps")

# Subcommands that live in their own modules: each has register(subparsers), which adds its
# parser and sets func. Keep one module per line.
COMMAND_MODULES: list[str] = [
    "featuremaps.cmd_parity",
    "featuremaps.cmd_bench",
    "featuremaps.cmd_extract",
    "featuremaps.cmd_show",
    "featuremaps.cmd_info",
    "featuremaps.cmd_cache",
    "featuremaps.cmd_report",
]


class CLIError(ArgumentError):
    """A command-line usage error: printed as one line, exit status 2."""


# ---------------------------------------------------------------- model resolution


def add_model_args(p: argparse.ArgumentParser, *, layers_default: str | None = DEFAULT_LAYERS) -> None:
    """``--model/--layers/--weights/--seed/--input-size``: the convention every command shares."""
    p.add_argument("--model", default="vgg16",
                   help=f"zoo name ({', '.join(MODELS)}; exported on the fly) or an exported .onnx file "
                        "(default: vgg16)")
    p.add_argument("--layers", default=layers_default,
                   help="taps for a zoo model: indices (0,5,17), features.17 or aliases (conv4_1, relu4_1, "
                        f"pool4); see `featuremaps layers` (default: {layers_default})")
    p.add_argument("--weights", default="auto",
                   help="zoo weights: auto (imagenet if torchvision's checkpoint is cached, else random with a "
                        "warning), random (seeded), imagenet, or a .pth/.safetensors state_dict (default: auto)")
    p.add_argument("--seed", type=int, default=0, help="seed for --weights random (default: 0)")
    p.add_argument("--input-size", type=int, default=224, help="square input size (default: 224)")


def is_onnx_path(model: str) -> bool:
    return model.endswith(".onnx") or os.sep in model or Path(model).is_file()


def cache_root() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "featuremaps" / "models"


# ---------------------------------------------------------------- weights (one default, never silent)


def _imagenet_cached(model: str) -> bool:
    """Whether torchvision's ImageNet checkpoint for ``model`` is on disk (no torch import:
    the same folder torch.hub.get_dir() uses)."""
    from .export.zoo import IMAGENET_FILES

    torch_home = os.environ.get("TORCH_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", str(Path.home() / ".cache")), "torch")
    name = IMAGENET_FILES.get(model)
    return bool(name) and (Path(torch_home) / "hub" / "checkpoints" / name).is_file()


def resolve_weights(args: argparse.Namespace) -> None:
    """Make ``args.weights`` concrete for a zoo model (``auto``/None -> imagenet when cached, else
    random) and print ONE warning line to stderr whenever the weights are random: an untrained
    network must never be a surprise. Idempotent (warns once per command)."""
    if getattr(args, "weights_resolved", False):
        return
    args.weights_resolved = True
    auto = args.weights in (None, "auto")
    if auto:
        args.weights = "imagenet" if _imagenet_cached(args.model) else "random"
    if getattr(args, "seed", None) is None:
        args.seed = 0
    if args.weights == "random":
        why = "ImageNet weights are not cached; " if auto else ""
        print(f"featuremaps: WARNING: {args.model} has seeded RANDOM weights (seed {args.seed}): the maps show "
              f"an untrained network. {why}use --weights imagenet (needs the checkpoint) or --weights PATH.pth",
              file=sys.stderr)


def resolve_model(args: argparse.Namespace) -> Path:
    """The .onnx file ``--model`` names, exporting a zoo model into the cache first if needed."""
    if is_onnx_path(args.model):
        path = Path(args.model)
        if not path.is_file():
            raise CLIError(f"model file {args.model!r} not found; export one with "
                           "`featuremaps export -o PATH.onnx` or pass a zoo name (vgg16)")
        return path
    from . import __version__
    from .export.onnx_export import export_model
    from .engine.hashing import file_sha256

    resolve_weights(args)
    taps = parse_taps(args.layers, args.model, args.input_size)
    weights_key = file_sha256(args.weights) if Path(args.weights).is_file() else f"{args.weights}:{args.seed}"
    key = "|".join([args.model, ",".join(t.name for t in taps), weights_key, str(args.input_size),
                    str(getattr(args, "logits", False)), __version__])
    path = cache_root() / f"{args.model}-{hashlib.sha256(key.encode()).hexdigest()[:16]}.onnx"
    if not path.is_file():
        print(f"exporting {args.model} ({', '.join(t.name for t in taps)}, weights {args.weights}) "
              f"to {path} ...", file=sys.stderr)
        export_model(taps, path, model=args.model, weights=args.weights, seed=args.seed,
                     input_size=args.input_size, logits=getattr(args, "logits", False))
    return path


# ---------------------------------------------------------------- layers


def cmd_layers(args: argparse.Namespace) -> int:
    layers = model_layers(args.model, args.input_size)
    print(f"{args.model} at {args.input_size}x{args.input_size}: tap with --layers INDEX, features.INDEX or ALIAS")
    print(f"{'layer':<13}{'alias':<10}{'type':<11}{'output (C, H, W)':<20}{'MACs to here':>14}{'share':>8}")
    for t in layers:
        shape = "x".join(map(str, t.shape))
        print(f"{t.name:<13}{t.alias:<10}{t.kind:<11}{shape:<20}{t.macs / 1e9:>12.2f} G{t.mac_share:>8.1%}")
    print(f"full network incl. classifier: {layers[0].total_macs / 1e9:.2f} GMACs per image")
    return 0


# ---------------------------------------------------------------- export


def _print_verification(ver) -> None:
    from .bench.stats import format_parity_table

    print(f"parity vs PyTorch clone-hook reference ({ver.provider}, fp32, rel L2 <= {ver.tolerance:g}):")
    print(format_parity_table(ver.rows, ver.tolerance))


def _verify_on_photo(path: Path, net, taps, input_size: int):
    from .engine.preprocess import Preprocessing, load_batch
    from .export.verify import verify_export
    from .samples import sample_images

    pre = Preprocessing(size=(input_size, input_size))
    return verify_export(path, net, taps, load_batch(sample_images()[:1], pre))


def cmd_export(args: argparse.Namespace) -> int:
    from .export.onnx_export import export_model
    from .export.zoo import build_model

    if is_onnx_path(args.model):
        raise CLIError("export takes a zoo model name (--model vgg16), not an .onnx file")
    taps = parse_taps(args.layers, args.model, args.input_size)
    from .cmd_extract import check_reduce_args, export_reduced

    reductions = check_reduce_args(args, taps)  # before the slow part: a bad spec fails at once
    resolve_weights(args)
    net, info = build_model(args.model, args.weights, args.seed, need_classifier=args.logits)
    res = export_model(taps, args.output, model=args.model, seed=args.seed, input_size=args.input_size,
                       logits=args.logits, net=net, weights_info=info)
    cut = "full network with logits" if args.logits else f"cut after {max(taps, key=lambda t: t.index).name}"
    print(f"wrote {res.path} ({res.size_bytes / 1e6:.1f} MB; outputs {', '.join(res.metadata['outputs'])}; "
          f"{cut}; weights {info.source}, sha256 {info.sha256[:12]})")
    if reductions is not None:  # in-graph reductions: verify, reduce, check again
        return export_reduced(args, res, net, taps, reductions)
    from .precision_cli import run_precision_step  # --precision/--format: convert, gate, size report

    if args.no_verify:
        return run_precision_step(args, res)
    ver = _verify_on_photo(res.path, net, taps, args.input_size)
    _print_verification(ver)
    if not ver.ok:
        print(f"featuremaps: error: {', '.join(ver.failures)} exceed the fp32 tolerance; "
              f"the exported file is kept at {res.path} for inspection", file=sys.stderr)
        return 1
    return run_precision_step(args, res)


# ---------------------------------------------------------------- demo


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    return run_demo(out_dir=Path(args.output), layers=args.layers, weights=args.weights, seed=args.seed)


# ---------------------------------------------------------------- main


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="featuremaps",
        description="Export CNN intermediate layers as ONNX outputs, extract them with ONNX Runtime, "
                    "check them against PyTorch, draw them.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log what happens (INFO)")
    from . import __version__

    parser.add_argument("--version", action="version", version=f"featuremaps {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("layers", help="list every tappable layer with shapes and compute share",
                       description="List every tappable layer: canonical name, alias, module type, output "
                                   "shape at the input size, and the share of the network's MACs needed to reach it.")
    p.add_argument("--model", default="vgg16", choices=MODELS, help="zoo model (default: vgg16)")
    p.add_argument("--input-size", type=int, default=224, help="square input size (default: 224)")
    p.set_defaults(func=cmd_layers)

    p = sub.add_parser("export", help="export a model with taps as ONNX outputs, then verify it",
                       description="Export a zoo model with the chosen taps as ONNX outputs named features.i "
                                   "(dynamic batch), cut after the deepest tap unless --logits, with JSON "
                                   "metadata inside; then verify every tap against the PyTorch clone-hook "
                                   "reference on a real photo (exit 1 if any fp32 tap has rel L2 > 1e-5).")
    add_model_args(p)
    p.add_argument("--logits", action="store_true", help="keep the classifier and add a 'logits' output")
    p.add_argument("-o", "--output", default="models/vgg16.onnx", help="output .onnx path (default: models/vgg16.onnx)")
    p.add_argument("--no-verify", action="store_true", help="skip the parity check after writing")
    from .precision_cli import add_precision_args

    add_precision_args(p)
    from .cmd_extract import add_reduce_args

    add_reduce_args(p)
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("demo", help="export VGG16, extract from sample photos, check parity, time it, draw",
                       description="The whole job on a fresh machine: export VGG16 with taps 0,5,10,17,28 "
                                   "(ImageNet weights if cached, else seeded random weights with a warning), "
                                   "extract from the sample photos shipped with installed packages, print the "
                                   "parity table and ONNX Runtime vs PyTorch-hooks timing, write figures.")
    p.add_argument("--layers", default=DEFAULT_LAYERS, help=f"taps (default: {DEFAULT_LAYERS})")
    p.add_argument("--weights", default="auto",
                   help="auto (imagenet if available, else random), imagenet, random, or a state_dict path")
    p.add_argument("--seed", type=int, default=0, help="seed for random weights (default: 0)")
    p.add_argument("-o", "--output", default="featuremaps-demo", help="output folder (default: ./featuremaps-demo)")
    p.set_defaults(func=cmd_demo)

    import importlib

    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("featuremaps: interrupted", file=sys.stderr)
        return 130
    except FeaturemapsError as e:  # the one place user errors become a line and exit 2
        print(f"featuremaps: error: {one_line(e)}", file=sys.stderr)
        return 2
