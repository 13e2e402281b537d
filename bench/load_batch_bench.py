"""When does ``load_batch`` pay for worker processes? Inline decoding vs a fresh decode pool,
start-up included (what one ``load_batch`` call costs), for a few list lengths.

    python -m featuremaps.bench.load_batch_bench [--counts 24,96,384,1536] [--workers 2] [--rounds 3]

The same seeded 500x375 JPEGs (quality 90, cut from the sample photos) decode to the default
model input ``(3, 224, 224) float32``: ``inline`` in this process, ``pool`` through a new
:class:`~featuremaps.engine.decode_pool.DecodePool` of ``--workers`` processes per call. Rounds
are interleaved (inline, pool, pool, inline, ...). Prints img/s medians and writes
``bench/results/load_batch_bench.{json,md}``; ``decode_paths``'s pool threshold follows from it.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from ..engine.cpu_features import cpu_features
from ..engine.decode_pool import decode_paths
from ..engine.preprocess import DecodeBudget, Preprocessing
from .decode_bench import make_jpegs


def _rate(paths: list[str], workers: int, pool: bool) -> float:
    t0 = time.perf_counter()
    decode_paths(paths, Preprocessing(), budget=DecodeBudget(), workers=workers if pool else 1,
                 pool_threshold=1 if pool else 10**9)
    return len(paths) / (time.perf_counter() - t0)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--counts", default="24,96,384,1536")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--out", default="bench/results")
    args = p.parse_args(argv)
    counts = [int(c) for c in args.counts.split(",")]
    rows = []
    with tempfile.TemporaryDirectory(prefix="fm-lb-") as tmp:
        paths = make_jpegs(Path(tmp), max(counts))
        for n in counts:
            runs = {"inline": [], "pool": []}
            for r in range(args.rounds):
                for how in (("inline", "pool") if r % 2 == 0 else ("pool", "inline")):
                    runs[how].append(_rate(paths[:n], args.workers, how == "pool"))
            med = {k: statistics.median(v) for k, v in runs.items()}
            rows.append({"images": n, "inline_img_s": med["inline"], "pool_img_s": med["pool"],
                         "pool_over_inline": med["pool"] / med["inline"], "runs": runs})
            print(f"{n:>6} images: inline {med['inline']:7.1f} img/s, pool of {args.workers} "
                  f"{med['pool']:7.1f} img/s ({med['pool'] / med['inline']:.2f}x)", flush=True)
    cpu = cpu_features()
    result = {"cpu": cpu.summary(), "workers": args.workers, "rounds": args.rounds, "rows": rows}
    md = ["# load_batch: inline vs a fresh decode pool (start-up included)", "",
          f"500x375 JPEGs q90 -> (3, 224, 224) float32; {cpu.summary()}; pool of {args.workers} workers; "
          f"medians of {args.rounds} interleaved rounds.", "",
          "| images | inline img/s | pool img/s | pool / inline |", "|---:|---:|---:|---:|"]
    md += [f"| {r['images']} | {r['inline_img_s']:.1f} | {r['pool_img_s']:.1f} | {r['pool_over_inline']:.2f} |"
           for r in rows]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "load_batch_bench.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / "load_batch_bench.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
