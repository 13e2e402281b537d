"""Does the batch size matter on this machine? The runtime's own rate (:mod:`.ceiling`) per batch
size, rounds interleaved, on one exported VGG16 file: the evidence behind ``extract``'s default
batch (8) and its rule.

    python -m featuremaps.bench.batch_sweep [--layers 0,5,10,17,28] [--batch-sizes 1 2 4 8 16] \\
        [--provider openvino|cpu] [--repeats 3]

Each batch size runs about ``--images`` images per round. Writes ``bench/results/batch_sweep.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

from ..engine.cpu_features import cpu_features
from ..export.onnx_export import export_model
from .ceiling import openvino_ceiling, ort_ceiling


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--layers", default="0,5,10,17,28")
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 2, 4, 8, 16])
    p.add_argument("--provider", default="openvino")
    p.add_argument("--images", type=int, default=32)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", default="bench/results")
    args = p.parse_args(argv)
    cpu = cpu_features()
    with tempfile.TemporaryDirectory(prefix="fm-sweep-") as tmp:
        model = export_model(args.layers, Path(tmp) / "vgg16.onnx", weights="random").path
        make = openvino_ceiling if args.provider == "openvino" else (
            lambda m, b, n: ort_ceiling(m, b, n, provider=args.provider))
        ceilings = {b: make(model, b, max(2, args.images // b)) for b in args.batch_sizes}
        rates: dict[int, list[float]] = {b: [] for b in ceilings}
        for r in range(args.repeats):
            order = list(ceilings) if r % 2 == 0 else list(ceilings)[::-1]
            for b in order:
                rates[b].append(ceilings[b].rate())
    med = {b: statistics.median(v) for b, v in rates.items()}
    best = max(med.values())
    name = next(iter(ceilings.values())).name
    md = ["# Batch size on this machine", "",
          f"VGG16 taps {args.layers} at 224, {name}, {cpu.summary()}; about {args.images} images per round, "
          f"rounds interleaved, medians of {args.repeats}.", "",
          "| batch | runs (img/s) | median img/s | share of the best |", "|---:|---|---:|---:|"]
    md += [f"| {b} | {', '.join(f'{x:.1f}' for x in rates[b])} | {med[b]:.2f} | {med[b] / best:.2f}x |"
           for b in rates]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "batch_sweep.json").write_text(json.dumps(
        {"cpu": cpu.to_dict(), "layers": args.layers, "ceiling": name, "images": args.images,
         "img_per_s": {str(b): v for b, v in rates.items()}, "median": {str(b): v for b, v in med.items()}},
        indent=2) + "\n")
    (out / "batch_sweep.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
