"""``featuremaps verify STORE``: check every chunk's CRC-32C (the CLI side; it prints).

Exit status: 0 every chunk reads back as written, 1 damage found (listed with row ranges;
``--repair`` marks the damaged batches pending so ``extract --resume`` redoes them), 2 usage
error or a store whose metadata is damaged.
"""

from __future__ import annotations

import argparse
import sys

from ..engine.store import FeatureStore
from ..engine.inputs import printable_path
from ..errors import one_line, terminal_text
from ._args import StoreRef, add_storage_args


def register(sub) -> None:
    p = sub.add_parser("verify", help="check a feature store's chunk checksums",
                       description="Read every chunk of a store and check its CRC-32C; list damaged chunks "
                                   "with their rows. Exit status: 0 intact, 1 damage found, 2 unusable store.")
    p.add_argument("store", metavar="STORE", help="a store written by `featuremaps extract` (a path or s3:// URL)")
    add_storage_args(p)
    p.add_argument("--repair", action="store_true",
                   help="mark the batches holding damaged chunks pending; `extract --resume` then redoes them")
    p.set_defaults(func=cmd_verify)


def cmd_verify(args: argparse.Namespace) -> int:
    ref = StoreRef.from_args(args)
    with FeatureStore.open(ref.where, mode="r+" if args.repair else "r", lock=args.repair,
                           storage_options=ref.storage_options) as store:
        report = store.verify(repair=args.repair)
    for d in report.damage:
        print(terminal_text(f"damaged: {d.array} chunk {d.chunk} (rows {d.rows[0]}-{d.rows[1] - 1}): {d.reason}"))
    for note in report.notes:
        print(f"featuremaps: {one_line(Exception(note))}", file=sys.stderr)
    if report.ok:
        print(f"{printable_path(store.path)}: {report.checked_chunks} chunks checked, all intact")
        return 0
    done = "marked pending" if report.repaired else "to redo"
    hint = "re-run extract with --resume" if report.repaired else "add --repair, then re-run extract with --resume"
    batches = ", ".join(f"#{b}" for b in report.batches) or "none"  # indices, not a count
    print(f"{printable_path(store.path)}: {len(report.damage)} damaged chunk(s); batch(es) {done}: {batches}; {hint}")
    return 1
