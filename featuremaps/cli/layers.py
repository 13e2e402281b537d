"""``featuremaps layers``: every tappable layer of a zoo model, or the taps of an exported file.

For a zoo model (any registered family: VGG, VGG-BN, ResNet, AlexNet) it lists torchvision FX
node names, aliases (empty where a layer has none), module kinds, output shapes and the share of
the network's MACs needed to reach each. For an exported ``.onnx`` it prints what the file says
about itself (model, precision, weights, input layout, reductions) and its taps.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..contracts import Tap
from ..engine.validate import read_model_record
from ..errors import InputError, terminal_text
from ..export.taps import MODELS, model_layers
from ..viz.draw import weights_label
from ._args import input_size_arg, is_onnx_path


def register(sub) -> None:
    p = sub.add_parser("layers", help="list the tappable layers of a zoo model, or the taps of an exported .onnx",
                       description="List every tappable layer: torchvision FX node name, alias, module type, "
                                   "output shape at the input size, and the share of the network's MACs needed "
                                   "to reach it. Given an exported .onnx file, print its taps and what its "
                                   "metadata says (model, precision, weights, input layout, reductions).")
    p.add_argument("--model", default="vgg16", type=_model_arg, metavar="MODEL|FILE.onnx",
                   help=f"zoo model ({', '.join(MODELS)}) or an exported .onnx file (default: vgg16)")
    p.add_argument("--input-size", type=input_size_arg, default=224,
                   help="square input size for a zoo model (default: 224)")
    p.set_defaults(func=cmd_layers)


def _model_arg(text: str) -> str:
    if is_onnx_path(text) or text.lower() in MODELS:
        return text if is_onnx_path(text) else text.lower()
    raise argparse.ArgumentTypeError(f"unknown model {text!r}; choose from {', '.join(MODELS)} or pass an "
                                     "exported .onnx file")


def format_layers(layers: tuple[Tap, ...]) -> list[str]:
    """One line per tap: name, alias, kind, shape, cumulative MACs and their share of the network's."""
    wn = max(len(t.name) for t in layers) + 2
    wa = max([len(t.alias) for t in layers] + [5]) + 2
    wk = max(len(t.kind) for t in layers) + 2
    lines = [f"{'layer':<{wn}}{'alias':<{wa}}{'type':<{wk}}{'output shape':<16}{'MACs to here':>14}{'share':>8}"]
    for t in layers:
        shape = "x".join(map(str, t.shape))
        share = f"{t.mac_share:>8.1%}" if t.total_macs else f"{'-':>8}"
        lines.append(f"{t.name:<{wn}}{t.alias:<{wa}}{t.kind:<{wk}}{shape:<16}{t.macs / 1e9:>12.2f} G{share}")
    return lines


def cmd_layers(args: argparse.Namespace) -> int:
    if is_onnx_path(args.model):
        return _exported(args.model)
    layers = model_layers(args.model, args.input_size)
    print(f"{args.model} at {args.input_size}x{args.input_size}: tap with --layers NAME or ALIAS"
          + (" (or a features INDEX)" if layers[0].name.startswith("features.") else ""))
    print("\n".join(format_layers(layers)))
    print(f"full network incl. classifier: {layers[0].total_macs / 1e9:.2f} GMACs per image")
    return 0


def _exported(path: str) -> int:
    """Print an exported model's metadata summary and its taps (reduced shapes as the file returns them)."""
    if not Path(path).is_file():
        raise InputError(f"model file {path!r} not found; pass an exported .onnx (featuremaps export) or a zoo name")
    rec = read_model_record(path)  # checked against the graph: a lying file is one line
    meta, pre = rec.metadata, rec.preprocessing
    reductions = ", ".join(f"{k}={v.get('spec', v.get('op'))}" for k, v in rec.reductions.items())
    lines = [f"{path}: {rec.model} exported by featuremaps ({meta['format']})",
             f"  precision     {rec.precision}",
             f"  weights       {weights_label(rec.weights, rec.model)}",
             f"  input         {pre.input_layout} {'x'.join(map(str, pre.input_shape))} "
             f"(resize {pre.resize}, mean {list(pre.mean)}, std {list(pre.std)})",
             f"  reductions    {reductions or 'none'}",
             f"  outputs       {', '.join(rec.outputs)}"]
    taps = rec.taps
    lines += format_layers(taps) if taps else []
    print("\n".join(map(terminal_text, lines)))  # metadata is hostile: every line escaped
    return 0
