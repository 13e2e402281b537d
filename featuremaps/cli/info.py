"""``featuremaps info PATH``: what an exported model or a bulk store is (text or ``--json``)."""

from __future__ import annotations

import argparse
import json

from ..errors import terminal_text
from ..info import describe, weights_line
from ._args import StoreRef, add_storage_args


def register(sub) -> None:
    p = sub.add_parser(
        "info", help="describe an exported .onnx model or a bulk store (taps, weights, precision, counts)",
        description="For an exported model: taps with shapes, precision and math mode, weights source and "
                    "hash, preprocessing, input layout, opset, tool versions and file size. For a store: "
                    "counts ok/error/pending, taps with stored shape, dtype and chunks, bytes on disk and "
                    "the command that created it.")
    p.add_argument("path", metavar="PATH", help="an exported .onnx file or a store folder (OUT.zarr)")
    p.add_argument("--json", action="store_true", help="print the description as JSON")
    add_storage_args(p)
    p.set_defaults(func=cmd_info)


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB"


def _shape(dims) -> str:
    return "x".join(map(str, dims))


def _reduced(t: dict) -> str:
    r = t.get("reduction")
    return f"  reduced: {r.get('spec', r) if isinstance(r, dict) else r}" if r else ""


def _cut(cut_after) -> str:
    """The deepest tap: a name (``layer3``), or a features index in models exported before families."""
    return f"features.{cut_after}" if isinstance(cut_after, int) else str(cut_after)


def format_model(d: dict) -> list[str]:
    pre = d.get("preprocessing") or {}
    inp = d["input"]
    lines = [f"{d['path']}: exported {d['model']} model, {_mb(d['size_bytes'])}",
             f"  weights:       {weights_line(d['weights'])}",
             f"  precision:     {d['precision']}" + (f", math mode {d['math_mode']}" if d.get("math_mode") else
                                                    " (math mode not recorded)"),
             f"  input:         {inp['name']} {_shape(inp['shape'])} {inp['type']} layout {inp['layout'] or '?'}",
             f"  preprocessing: resize to {_shape(pre.get('size', []))}, mean {pre.get('mean')}, std {pre.get('std')}",
             f"  opset {d['opset']}; " + ", ".join(f"{k} {v}" for k, v in d["versions"].items()),
             f"  outputs ({len(d['outputs'])}): " + ("full network with logits" if d["logits"]
                                                     else f"cut after {_cut(d['cut_after'])}")]
    for t in d["taps"]:
        lines.append(f"    {t['name']:<13}{t['alias'] or '':<9}{_shape(t['shape']):>14}  {t['output_type'] or ''}"
                     f"{_reduced(t)}")
    return lines


def format_store(d: dict) -> list[str]:
    c = d["counts"]
    lines = [f"{d['path']}: featuremaps store of {d['images']} images: {c['ok']} ok, {c['error']} error, "
             f"{c['pending']} pending; {_mb(d['bytes_on_disk'])} on disk",
             f"  model:    {d['model']} ({d['precision']}) from {d['model_path']}",
             f"  weights:  {weights_line(d['weights'])}",
             f"  storage:  {d['dtype']}, batches of {d['batch_size']} images in chunks of {d['chunk_rows']} rows, "
             f"compression {d['compression']}"
             + (f", sharded: {d['shard_rows']} rows per object" if d.get("shard_rows") else "")
             + f"; {d['objects']} objects",
             f"  created:  {d['created']} by featuremaps {d['featuremaps']}",
             f"  command:  {d['command'] or '(not recorded)'}",
             f"  taps ({len(d['taps'])}):"]
    if d.get("missing_chunks"):
        lines[0] = (f"{d['path']}: featuremaps store of {d['images']} images: DAMAGED, {d['missing_chunks']} chunk "
                    f"file(s) missing for {d['rows_with_missing_chunks']} done rows; run `featuremaps verify "
                    f"{d['path']} --repair`, then `featuremaps extract ... --resume` (status counts: {c['ok']} ok, "
                    f"{c['error']} error, {c['pending']} pending; {_mb(d['bytes_on_disk'])} on disk)")
    for t in d["taps"]:
        lines.append(f"    {t['name']:<13}{_shape(t['shape']):>18} {t['dtype']:<8} chunks {_shape(t['chunks'])}"
                     f"{_reduced(t)}")
    return lines


def cmd_info(args: argparse.Namespace) -> int:
    ref = StoreRef.from_args(args, "path")
    d = describe(ref.where, storage_options=ref.storage_options)
    if args.json:  # ensure_ascii (the default): a control character in metadata prints as \u001b
        print(json.dumps(d, indent=2))
    else:  # every line quotes metadata or store attributes: escaped line by line
        lines = format_model(d) if d["kind"] == "model" else format_store(d)
        print("\n".join(map(terminal_text, lines)))
    return 0
