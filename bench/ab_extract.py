"""A/B of ``featuremaps extract`` between two installs: what a change costs end to end.

    python -m featuremaps.bench.ab_extract --a OLD/.venv/bin/python --b NEW/.venv/bin/python \\
        [--images 48] [--layers 28] [--rounds 3] [--provider openvino] [--compression zstd] [--label NAME]

Both interpreters run the same command line (``python -m featuremaps extract FOLDER --model
FILE -o STORE --no-progress``) on the same JPEG folder and the same exported model, rounds
interleaved A, B, B, A, A, B ... so that background load hits both alike. The JPEGs are made
here (:func:`.decode_bench.make_jpegs`); the model is exported once by A (older releases must read
it; newer ones read older exports). The rate is the run's own summary line (``at N img/s``,
images over the extraction's wall time). Prints a table of medians and the B/A ratio and
writes ``ab_extract-LABEL.json`` and ``.md`` into ``--out``.
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import shutil
import statistics
import subprocess
import tempfile
from pathlib import Path

from .decode_bench import make_jpegs

RATE = re.compile(r"at ([0-9.]+) img/s")


def _run(python: str, argv: list[str], cwd: Path) -> float:
    # cwd: a checkout's own featuremaps/ folder in the current directory would shadow the install
    res = subprocess.run([python, "-m", "featuremaps", *argv], capture_output=True, text=True, cwd=cwd)
    m = RATE.search(res.stdout + res.stderr)
    if res.returncode != 0 or m is None:
        raise SystemExit(f"{python} extract failed ({res.returncode}): {(res.stderr or res.stdout)[-400:]}")
    return float(m.group(1))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--a", required=True, help="python of install A (the baseline)")
    p.add_argument("--b", required=True, help="python of install B (the change)")
    p.add_argument("--images", type=int, default=48)
    p.add_argument("--layers", default="28")
    p.add_argument("--input-size", type=int, default=224)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--dtype", default="fp16")
    p.add_argument("--provider", default="cpu", help="--provider for both (cpu, openvino, ...)")
    p.add_argument("--compression", default="zstd")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--label", default="change")
    p.add_argument("--out", default="bench/results")
    args = p.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="fm-ab-") as tmp:
        tmp = Path(tmp)
        (tmp / "imgs").mkdir()
        make_jpegs(tmp / "imgs", args.images)
        model = tmp / "model.onnx"
        subprocess.run([args.a, "-m", "featuremaps", "export", "--layers", args.layers, "--input-size",
                        str(args.input_size), "--weights", "random", "-o", str(model)], check=True,
                       capture_output=True, cwd=tmp)
        rates: dict[str, list[float]] = {"A": [], "B": []}
        order = [("A", "B") if r % 2 == 0 else ("B", "A") for r in range(args.rounds)]
        for r, pair in enumerate(order):
            for who in pair:
                store = tmp / f"{who}{r}.zarr"
                rate = _run(args.a if who == "A" else args.b,
                            ["extract", str(tmp / "imgs"), "--model", str(model), "-o", str(store), "--no-progress",
                             "--batch-size", str(args.batch_size), "--dtype", args.dtype, "--provider", args.provider,
                             "--compression", args.compression], tmp)
                rates[who].append(rate)
                print(f"round {r + 1} {who}: {rate:.1f} img/s", flush=True)
                shutil.rmtree(store, ignore_errors=True)

    med = {k: statistics.median(v) for k, v in rates.items()}
    cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                if ln.startswith("model name")), platform.processor())
    result = {"label": args.label, "cpu": cpu, "cores": __import__("os").cpu_count(), "a": args.a, "b": args.b,
              "images": args.images, "layers": args.layers, "input_size": args.input_size,
              "batch_size": args.batch_size, "dtype": args.dtype, "provider": args.provider,
              "compression": args.compression, "rounds": args.rounds,
              "img_per_s": rates, "median": med, "ratio_b_over_a": med["B"] / med["A"]}
    md = [f"# extract A/B: {args.label}", "",
          f"{args.images} JPEGs 500x375 q90, VGG16 taps {args.layers} at {args.input_size}, batch {args.batch_size}, "
          f"{args.dtype} store ({args.compression}), --provider {args.provider}; {cpu}, {result['cores']} cores; "
          f"rounds interleaved, medians of {args.rounds}.", "",
          "| install | runs (img/s) | median img/s |", "|---|---|---:|",
          f"| A (baseline) | {', '.join(f'{x:.1f}' for x in rates['A'])} | {med['A']:.1f} |",
          f"| B (change) | {', '.join(f'{x:.1f}' for x in rates['B'])} | {med['B']:.1f} |", "",
          f"B/A = {result['ratio_b_over_a']:.3f}"]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"ab_extract-{args.label}.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / f"ab_extract-{args.label}.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
