"""Decode-only throughput: threads vs processes, the old NumPy resampler vs Pillow's, header probing.

``python -m featuremaps.bench.decode_bench [--images 2048] [--workers 1,2,4,8,16] [--size 224]``

A seeded synthetic set of 500x375 JPEGs (quality 90), cut from the sample photos, is decoded to
model input (``(3, 224, 224) float32`` by default, ``--layout uint8_nhwc`` for new models) by:

* ``numpy-threads``    the engine before round 2: OpenCV decode + a NumPy re-implementation of
                       Pillow's resampler (kept here only for this comparison), in threads
* ``pillow-threads``   the engine's decode (budget checks, strict decode, Pillow resize), in threads
* ``pillow-processes`` the same in a :class:`~featuremaps.engine.decode_pool.DecodePool`
                       (worker processes writing into shared memory); start-up timed apart
* ``reduced-processes`` the pool with ``decode="reduced"`` (DCT-domain 1/2-1/8 scale JPEG decode)

plus the per-image cost of reading the header only (the decode budget's probe). Prints a table
and writes ``bench/results/decode_bench.{json,md}``. This is a program, not a test.
"""

from __future__ import annotations

import argparse
import json
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import numpy as np

from ..engine.decode_pool import DecodePool, usable_cores
from ..engine.inputs import read_image_bytes
from ..engine.preprocess import DecodeBudget, Preprocessing, preprocess_file, probe, to_input
from ..samples import sample_images

_PRECISION_BITS = 32 - 8 - 2  # Pillow's Resample.c


# ------------------------------------------------------------------ the old NumPy resampler


def _pil_coeffs(in_size: int, out_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pillow's bilinear taps for one axis, fixed point (mirrors ``precompute_coeffs``)."""
    scale = in_size / out_size
    filterscale = max(scale, 1.0)
    support = filterscale
    ksize = int(np.ceil(support)) * 2 + 1
    idx = np.zeros((out_size, ksize), np.int64)
    wts = np.zeros((out_size, ksize), np.int64)
    for xx in range(out_size):
        center = (xx + 0.5) * scale
        xmin = max(int(center - support + 0.5), 0)
        xmax = min(int(center + support + 0.5), in_size) - xmin
        x = np.arange(xmax, dtype=np.float64)
        w = np.clip(1.0 - np.abs((x + xmin - center + 0.5) / filterscale), 0.0, None)
        w = w / w.sum() if w.sum() else w
        idx[xx, :xmax] = xmin + np.arange(xmax)
        wts[xx, :xmax] = np.trunc(w * (1 << _PRECISION_BITS) + 0.5).astype(np.int64)
    return idx, wts


def _resample_axis(img: np.ndarray, out_size: int, axis: int) -> np.ndarray:
    idx, wts = _pil_coeffs(img.shape[axis], out_size)
    src = np.ascontiguousarray(np.moveaxis(img, axis, 0))
    rest = src.shape[1:]
    src = src.reshape(src.shape[0], -1).astype(np.int32)
    acc = np.full((out_size, src.shape[1]), 1 << (_PRECISION_BITS - 1), np.int32)
    for k in range(idx.shape[1]):
        acc += src[idx[:, k]] * wts[:, k:k + 1].astype(np.int32)
    out = np.clip(acc >> _PRECISION_BITS, 0, 255).astype(np.uint8).reshape((out_size, *rest))
    return np.moveaxis(out, 0, axis)


def numpy_resize(img: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """The pre-round-2 engine resize: ``(H, W, 3) uint8`` -> ``size``, Pillow-exact, in NumPy."""
    if img.shape[1] != size[1]:
        img = _resample_axis(img, size[1], axis=1)
    if img.shape[0] != size[0]:
        img = _resample_axis(img, size[0], axis=0)
    return np.ascontiguousarray(img)


def _old_engine(path: str, pre: Preprocessing) -> np.ndarray:
    import cv2

    bgr = cv2.imdecode(np.frombuffer(read_image_bytes(path), np.uint8), cv2.IMREAD_COLOR)
    return to_input(numpy_resize(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), pre.size), pre)


# ------------------------------------------------------------------ the data set


def make_jpegs(folder: Path, n: int, seed: int = 0) -> list[str]:
    """``n`` 500x375 JPEGs (quality 90): seeded random crops of the sample photos, resized."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    photos = [Image.open(p).convert("RGB") for p in sample_images()]
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(n):
        im = photos[i % len(photos)]
        w, h = im.size
        cw, ch = int(w * rng.uniform(0.6, 1.0)), int(h * rng.uniform(0.6, 1.0))
        x, y = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
        path = folder / f"img{i:05d}.jpg"
        im.crop((x, y, x + cw, y + ch)).resize((500, 375), Image.BILINEAR).save(path, quality=90)
        out.append(str(path))
    return out


# ------------------------------------------------------------------ measurements


def rate_threads(fn, paths, pre, workers: int) -> float:
    t0 = time.perf_counter()
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(lambda p: fn(p, pre), paths))
    return len(paths) / (time.perf_counter() - t0)


def rate_processes(paths, pre, workers: int, batch: int) -> tuple[float, float]:
    """``(img/s excluding start-up, start-up seconds)`` for a DecodePool; first batch warms up."""
    t0 = time.perf_counter()
    with DecodePool(pre, workers=workers, batch_size=batch, slots=2) as pool:
        got = pool.decode(paths[:min(batch, workers)])  # every worker started and imported
        pool.release(got)
        startup = time.perf_counter() - t0
        t1 = time.perf_counter()
        for i in range(0, len(paths), batch):
            got = pool.decode(paths[i:i + batch])
            assert not got.errors, got.errors
            pool.release(got)
        return len(paths) / (time.perf_counter() - t1), startup


def probe_cost(paths) -> dict:
    """Seconds per image: header probe alone vs a full in-process decode (224, float)."""
    datas = [read_image_bytes(p) for p in paths]
    budget = DecodeBudget()
    t0 = time.perf_counter()
    for d in datas:
        probe(d, budget)
    t_probe = (time.perf_counter() - t0) / len(datas)
    pre = Preprocessing()
    t0 = time.perf_counter()
    for p in paths:
        preprocess_file(p, pre)
    t_full = (time.perf_counter() - t0) / len(paths)
    return {"probe_ms": t_probe * 1e3, "decode_ms": t_full * 1e3, "probe_share": t_probe / t_full}


def run(paths, pre: Preprocessing, worker_counts, batch: int) -> dict:
    rows = []
    for w in worker_counts:
        row = {"workers": w,
               "numpy-threads": rate_threads(_old_engine, paths, pre, w),
               "pillow-threads": rate_threads(lambda p, q: preprocess_file(p, q), paths, pre, w)}
        row["pillow-processes"], row["startup_s"] = rate_processes(paths, pre, w, batch)
        row["reduced-processes"], _ = rate_processes(paths, replace(pre, decode="reduced"), w, batch)
        rows.append(row)
    return {"rows": rows, "probe": probe_cost(paths[:64])}


def to_markdown(res: dict) -> str:
    cols = ["numpy-threads", "pillow-threads", "pillow-processes", "reduced-processes"]
    lines = [f"# decode_bench ({res['images']} JPEGs 500x375 q90 -> {res['layout']} {res['size']}x{res['size']}; "
             f"{res['cores']} usable cores{'; SMOKE run on a shared machine' if res['smoke'] else ''})", "",
             "| workers | " + " | ".join(cols) + " | pool start-up s |", "|---:|" + "---:|" * (len(cols) + 1)]
    for r in res["rows"]:
        lines.append(f"| {r['workers']} | " + " | ".join(f"{r[c]:.0f}" for c in cols) + f" | {r['startup_s']:.2f} |")
    p = res["probe"]
    lines += ["", "img/s. Header probe (the decode budget's check): "
              f"{p['probe_ms']:.3f} ms per image, {100 * p['probe_share']:.1f}% of a full decode "
              f"({p['decode_ms']:.2f} ms, one core)."]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    import tempfile

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=2048)
    ap.add_argument("--workers", default=None, help="comma-separated worker counts (default: 1, 2, 4, ... cores)")
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--layout", choices=("float_nchw", "uint8_nhwc"), default="float_nchw")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--smoke", action="store_true", help="mark the results as a smoke run")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = ap.parse_args(argv)
    cores = usable_cores()
    counts = ([int(x) for x in args.workers.split(",")] if args.workers else
              sorted({*(2 ** i for i in range(cores.bit_length()) if 2 ** i <= cores), cores}))
    pre = Preprocessing(size=(args.size, args.size), input_layout=args.layout)
    with tempfile.TemporaryDirectory() as tmp:
        paths = make_jpegs(Path(tmp), args.images)
        res = run(paths, pre, counts, args.batch)
    res.update(images=args.images, size=args.size, layout=args.layout, cores=cores, smoke=args.smoke)
    md = to_markdown(res)
    print(md)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "decode_bench.json").write_text(json.dumps(res, indent=1) + "\n")
    (args.out / "decode_bench.md").write_text(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
