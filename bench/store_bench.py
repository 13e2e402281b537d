"""Store benchmark: the cost of CRC-32C chunk checksums on writing and reading fp16 feature maps,
and the store's bytes on disk against the bytes of the maps for a few image counts.

    python -m featuremaps.bench.store_bench [--images 32] [--batch-size 8] [--input-size 224] [--repeats 3]

Writes VGG16 taps 0,5,10,17,28 (their shapes at ``--input-size``) as fp16, ``--images`` rows in
chunks of ``--batch-size`` rows, into Zarr v3 arrays laid out as the store lays them out, with
and without the ``crc32c`` codec (uncompressed, the extract default; and zstd), rounds
interleaved. ``verify`` reads every chunk back (checking the CRC where there is one). The
disk table compares the old layout (chunk = batch, last chunk padded to full size) with
:class:`~featuremaps.engine.store.FeatureStore` for 1, 7 and 64 images. Writes
``store_bench.json`` and ``store_bench.md`` into ``--out`` (default ``bench/results``).
Data are random normal values cast to fp16 (compression ratios on real maps differ).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import tempfile
from pathlib import Path

import numpy as np

from ..engine.store import FeatureStore
from ..engine.unit import write_batch
from ..export.taps import parse_taps
from .timing import interleaved

TAPS = "0,5,10,17,28"


def _shapes(input_size: int) -> dict[str, tuple[int, ...]]:
    return {t.name: tuple(t.shape) for t in parse_taps(TAPS, "vgg16", input_size)}


def _codecs(checksum: bool, compression: str) -> list:
    from zarr.codecs import Crc32cCodec, ZstdCodec

    return ([ZstdCodec()] if compression == "zstd" else []) + ([Crc32cCodec()] if checksum else [])


def _write(root: Path, data: dict[str, np.ndarray], rows: int, checksum: bool, compression: str) -> Path:
    """One store-like group: every tap array written batch by batch (chunk = ``rows``)."""
    import zarr

    shutil.rmtree(root, ignore_errors=True)
    g = zarr.open_group(str(root), mode="w-", zarr_format=3)
    for name, x in data.items():
        arr = g.create_array(name, shape=x.shape, chunks=(rows, *x.shape[1:]), dtype=x.dtype, fill_value=0,
                             compressors=_codecs(checksum, compression))
        for start in range(0, len(x), rows):
            arr[start:start + rows] = x[start:start + rows]
    return root


def _read_all(root: Path) -> None:
    import zarr

    g = zarr.open_group(str(root), mode="r")
    for name in g.array_keys():
        arr = g[name]
        for start in range(0, arr.shape[0], arr.chunks[0]):
            arr[start:start + arr.chunks[0]]


def _disk(root: Path) -> int:
    return sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(root) for f in fs)


def measure_throughput(tmp: Path, *, images: int, batch: int, input_size: int, repeats: int) -> list[dict]:

    rng = np.random.default_rng(0)
    data = {k: rng.standard_normal((images, *s), dtype=np.float32).astype(np.float16)
            for k, s in _shapes(input_size).items()}
    nbytes = sum(x.nbytes for x in data.values())
    configs = [(c, ck) for c in ("none", "zstd") for ck in (False, True)]
    fns = {}
    for comp, ck in configs:
        label = f"{comp}{'+crc32c' if ck else ''}"
        fns[f"write {label}"] = (lambda c=comp, k=ck, lab=label: _write(tmp / lab, data, batch, k, c))
        fns[f"read {label}"] = (lambda lab=label: _read_all(tmp / lab))
    for name, fn in fns.items():  # the read rounds need a store to exist
        if name.startswith("write"):
            fn()
    times = interleaved(fns, warmup=0, repeats=repeats)
    rows = []
    for comp, ck in configs:
        label = f"{comp}{'+crc32c' if ck else ''}"
        w, r = min(times[f"write {label}"]), min(times[f"read {label}"])
        rows.append({"compression": comp, "crc32c": ck, "write_s": w, "read_s": r,
                     "write_mb_s": nbytes / w / 1e6, "read_mb_s": nbytes / r / 1e6,
                     "write_img_s": images / w, "disk_bytes": _disk(tmp / label), "map_bytes": nbytes})
    return rows


def measure_disk(tmp: Path, *, batch: int, input_size: int, counts=(1, 7, 64)) -> list[dict]:

    shapes = _shapes(input_size)
    per_image = sum(math.prod(s) for s in shapes.values()) * 2
    rows = []
    for n in counts:
        rng = np.random.default_rng(n)
        maps = {k: rng.standard_normal((n, *s), dtype=np.float32).astype(np.float16) for k, s in shapes.items()}
        old = _disk(_write(tmp / f"old-{n}", maps, batch, checksum=False, compression="none"))
        st = FeatureStore.create(tmp / f"new-{n}.zarr", paths=[f"/x/{i}.jpg" for i in range(n)], metadata={},
                                 shapes=shapes, batch_size=batch, dtype="fp16", compression="none")
        for b in range(st.n_batches()):
            start, stop = st.batch_rows(b)
            write_batch(st, b, {k: v[start:stop] for k, v in maps.items()}, range(stop - start), {})
        st.close()
        new, maps_bytes = st.nbytes_on_disk(), n * per_image
        rows.append({"images": n, "map_bytes": maps_bytes, "old_disk_bytes": old, "new_disk_bytes": new,
                     "old_overhead": old / maps_bytes - 1, "new_overhead": new / maps_bytes - 1,
                     "chunk_rows": st.chunk_rows})
    return rows


def _markdown(cfg: dict, speed: list[dict], disk: list[dict]) -> str:
    base = {r["compression"]: r for r in speed if not r["crc32c"]}
    lines = [f"# store_bench ({cfg['machine']})", "",
             f"{cfg['images']} images x VGG16 taps {TAPS} at {cfg['input_size']}, fp16, chunks of "
             f"{cfg['batch_size']} rows; best of {cfg['repeats']} interleaved rounds. {cfg['note']}", "",
             "| compression | crc32c | write MB/s | write img/s | read MB/s | write cost of crc32c | read cost |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for r in speed:
        b = base[r["compression"]]
        cost = f"{r['write_s'] / b['write_s'] - 1:+.1%}" if r["crc32c"] else ""
        rcost = f"{r['read_s'] / b['read_s'] - 1:+.1%}" if r["crc32c"] else ""
        lines.append(f"| {r['compression']} | {'yes' if r['crc32c'] else 'no'} | {r['write_mb_s']:.0f} | "
                     f"{r['write_img_s']:.1f} | {r['read_mb_s']:.0f} | {cost} | {rcost} |")
    lines += ["", f"Bytes on disk vs bytes of maps (uncompressed fp16, batch {cfg['batch_size']}):", "",
              "| images | maps MB | old layout (chunk = batch) | FeatureStore | chunk rows |",
              "|---:|---:|---:|---:|---:|"]
    for r in disk:
        lines.append(f"| {r['images']} | {r['map_bytes'] / 1e6:.2f} | {r['old_overhead']:+.1%} | "
                     f"{r['new_overhead']:+.1%} | {r['chunk_rows']} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--images", type=int, default=32)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--input-size", type=int, default=224)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--note", default="", help="a line about the machine (e.g. 'shared, loaded')")
    p.add_argument("--out", default="bench/results")
    args = p.parse_args(argv)
    cfg = {"images": args.images, "batch_size": args.batch_size, "input_size": args.input_size,
           "repeats": args.repeats, "note": args.note,
           "machine": f"{platform.machine()}, {os.cpu_count()} cores"}
    with tempfile.TemporaryDirectory(prefix="featuremaps-store-bench-") as tmp:
        speed = measure_throughput(Path(tmp), images=args.images, batch=args.batch_size,
                                   input_size=args.input_size, repeats=args.repeats)
        disk = measure_disk(Path(tmp), batch=args.batch_size, input_size=args.input_size)
    md = _markdown(cfg, speed, disk)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "store_bench.json").write_text(json.dumps({"config": cfg, "throughput": speed, "disk": disk}, indent=2))
    (out / "store_bench.md").write_text(md)
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
