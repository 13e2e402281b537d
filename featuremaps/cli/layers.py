"""``featuremaps layers``: every tappable layer of a zoo model with shapes and compute share."""

from __future__ import annotations

import argparse

from ..export.taps import MODELS, model_layers
from ._args import input_size_arg


def register(sub) -> None:
    p = sub.add_parser("layers", help="list every tappable layer with shapes and compute share",
                       description="List every tappable layer: canonical name, alias, module type, output "
                                   "shape at the input size, and the share of the network's MACs needed to reach it.")
    p.add_argument("--model", default="vgg16", choices=MODELS, help="zoo model (default: vgg16)")
    p.add_argument("--input-size", type=input_size_arg, default=224, help="square input size (default: 224)")
    p.set_defaults(func=cmd_layers)


def cmd_layers(args: argparse.Namespace) -> int:
    layers = model_layers(args.model, args.input_size)
    print(f"{args.model} at {args.input_size}x{args.input_size}: tap with --layers INDEX, features.INDEX or ALIAS")
    print(f"{'layer':<13}{'alias':<10}{'type':<11}{'output (C, H, W)':<20}{'MACs to here':>14}{'share':>8}")
    for t in layers:
        shape = "x".join(map(str, t.shape))
        print(f"{t.name:<13}{t.alias:<10}{t.kind:<11}{shape:<20}{t.macs / 1e9:>12.2f} G{t.mac_share:>8.1%}")
    print(f"full network incl. classifier: {layers[0].total_macs / 1e9:.2f} GMACs per image")
    return 0
