"""Scale rehearsal: many small images in WebDataset tar shards on S3, through a tiny model, into a
sharded store on S3 (moto's server on 127.0.0.1, started here), measured end to end.

    python -m featuremaps.bench.rehearsal [--images 100000] [--shards 100] [--batch-size 64]

Steps: write ``--shards`` tar shards of 64x64 JPEGs (plus a ``.cls`` sidecar each, as
img2dataset writes) and upload them; export VGG16's ``features.0`` at 32x32 reduced in the graph to
its channel means (64 values per image: the maps are not the point here, the data plane is);
``featuremaps extract 'BUCKET/shards/{00000..N}.tar' -o s3://.../feats.zarr`` in a subprocess
(its peak RSS from ``getrusage``); count the store's objects and bytes; mark the last 1% of rows
pending and time ``--resume`` (planning: until the run starts; and in all). A smaller unsharded run
checks the object count a store without sharding would have.

Writes ``bench/results/rehearsal.{json,md}``. The S3 server runs in this process and shares the
machine's cores with the run: absolute rates are a floor; compare the object counts and ratios.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np

from ..engine.cpu_features import cpu_features
from ..engine.store import FeatureStore


def _jpeg(rng: np.random.Generator, i: int) -> bytes:
    import cv2

    y, x = np.mgrid[0:64, 0:64]
    img = np.stack([(x * 4 + i) % 256, (y * 4 + 2 * i) % 256, ((x + y) * 2 + 3 * i) % 256], -1).astype(np.uint8)
    img = np.clip(img.astype(np.int16) + rng.integers(-8, 9, img.shape), 0, 255).astype(np.uint8)
    return cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes()


def make_shards(fs, bucket: str, images: int, shards: int) -> tuple[list[str], int]:
    """Upload ``shards`` tar shards holding ``images`` JPEGs in all; returns (shard keys, bytes)."""
    rng = np.random.default_rng(0)
    per = -(-images // shards)
    keys, total, i = [], 0, 0
    for s in range(shards):
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
            for _ in range(min(per, images - i)):
                for ext, data in ((".jpg", _jpeg(rng, i)), (".cls", str(i % 10).encode())):
                    info = tarfile.TarInfo(f"{i:08d}{ext}")
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
                i += 1
        key = f"{bucket}/shards/{s:05d}.tar"
        fs.pipe_file(key, buf.getvalue())
        keys.append(key)
        total += buf.tell()
    return keys, total


def _run(cmd: list[str], env: dict, watch: str | None = None) -> dict:
    """Run ``cmd``; wall seconds, seconds until ``watch`` first appears on stderr, and the peak RSS
    (MiB) of that process itself (``wait4``: not its decode workers, not earlier commands)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    seen, err = None, []
    for line in proc.stderr:
        err.append(line)
        if watch and seen is None and watch in line:
            seen = time.perf_counter() - t0
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode not in (0, 1):
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{''.join(err)[-3000:]}")
    return {"seconds": time.perf_counter() - t0, "until_start_s": seen, "peak_rss_mib": usage.ru_maxrss / 1024,
            "stdout": out.strip(), "returncode": proc.returncode}


def _objects(fs, prefix: str) -> tuple[int, int, int]:
    """(objects, bytes, objects of the tap arrays) under ``prefix``."""
    found = fs.find(prefix, detail=True)
    taps = [k for k in found if "/features." in k and "/c/" in k]
    return len(found), sum(int(v["size"]) for v in found.values()), len(taps)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--images", type=int, default=100_000)
    p.add_argument("--shards", type=int, default=100)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--out", default="bench/results")
    p.add_argument("--name", default="rehearsal")
    args = p.parse_args(argv)

    from moto.server import ThreadedMotoServer
    import s3fs

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{server.get_host_and_port()[1]}"
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "bench",
           "AWS_SECRET_ACCESS_KEY": "bench", "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true"}
    os.environ.update({k: v for k, v in env.items() if k.startswith("AWS_")})
    fs = s3fs.S3FileSystem(endpoint_url=endpoint, key="bench", secret="bench", skip_instance_cache=True,
                           use_listings_cache=False)
    fs.mkdir("bench")
    fm = [sys.executable, "-m", "featuremaps"]
    try:
        with tempfile.TemporaryDirectory(prefix="fm-rehearsal-") as tmp:
            model = Path(tmp) / "tiny.onnx"
            subprocess.run([*fm, "export", "--layers", "0", "--input-size", "32", "--weights", "random",
                            "--reduce", "features.0=mean", "-o", str(model)], check=True, env=env,
                           capture_output=True)
            t0 = time.perf_counter()
            keys, shard_bytes = make_shards(fs, "bench", args.images, args.shards)
            make_s = time.perf_counter() - t0
            last = f"{args.shards - 1:05d}"
            inputs = f"s3://bench/shards/{{00000..{last}}}.tar"
            common = ["--model", str(model), "--batch-size", str(args.batch_size), "--no-progress",
                      "--provider", "cpu"]
            url = "s3://bench/feats.zarr"
            run = _run([*fm, "extract", inputs, *common, "-o", url], env, watch="extracting")
            objects, nbytes, tap_objects = _objects(fs, "bench/feats.zarr")
            st = FeatureStore.open(url, "r+", lock=True)
            n, shard_rows = len(st), st.info["shard_rows"]
            tail = max(1, n // 100)
            first_pending = (n - tail) // st.batch_size * st.batch_size
            st._group["status"][first_pending:] = np.zeros(n - first_pending, np.uint8)
            st.close()
            resume = _run([*fm, "extract", inputs, *common, "-o", url, "--resume"], env, watch="extracting")
            # without sharding, on a tenth of the shards: the object count the formula predicts
            small = max(1, args.shards // 10)
            small_inputs = f"s3://bench/shards/{{00000..{small - 1:05d}}}.tar"
            plain = _run([*fm, "extract", small_inputs, *common, "-o", "s3://bench/plain.zarr", "--shard-rows",
                          "none"], env, watch="extracting")
            plain_objects, plain_bytes, plain_tap_objects = _objects(fs, "bench/plain.zarr")
            plain_rows = len(FeatureStore.open("s3://bench/plain.zarr"))
    finally:
        server.stop()

    batches = -(-n // args.batch_size)
    result = {
        "machine": {"cpu": cpu_features().model, "cores": os.cpu_count()},
        "date": time.strftime("%Y-%m-%d"),
        "images": n, "tar_shards": args.shards, "tar_bytes": shard_bytes, "make_shards_s": round(make_s, 1),
        "batch_size": args.batch_size, "shard_rows": shard_rows, "taps": 1,
        "extract": {"seconds": round(run["seconds"], 1), "img_per_s": round(n / run["seconds"], 1),
                    "planning_s": round(run["until_start_s"] or 0, 1),
                    "driver_peak_rss_mib": round(run["peak_rss_mib"]),
                    "summary": run["stdout"]},
        "store": {"objects": objects, "bytes": nbytes, "tap_objects": tap_objects,
                  "tap_objects_unsharded_formula": batches},
        "resume_99pct_done": {"rows_pending": n - first_pending, "planning_s": round(resume["until_start_s"] or 0, 1),
                              "seconds": round(resume["seconds"], 1)},
        "unsharded_check": {"images": plain_rows, "tap_objects": plain_tap_objects,
                            "seconds": round(plain["seconds"], 1), "driver_peak_rss_mib": round(plain["peak_rss_mib"]),
                            "planning_s": round(plain["until_start_s"] or 0, 1),
                            "formula": -(-plain_rows // args.batch_size), "objects": plain_objects,
                            "bytes": plain_bytes},
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{args.name}.json").write_text(json.dumps(result, indent=2) + "\n")
    md = [f"# Scale rehearsal: {n:,} images in {args.shards} tar shards on S3 -> sharded store on S3",
          "", f"Machine: {result['machine']['cpu']}, {result['machine']['cores']} cores, {result['date']}; "
          "S3 = moto's server on "
          "127.0.0.1 in the same machine (it shares the cores). Tiny model: VGG16 features.0 at 32x32, "
          f"channel means in the graph (64 fp32 values per image). Batch {args.batch_size}.", "",
          "| what | value |", "|---|---:|",
          f"| extract wall time | {result['extract']['seconds']} s |",
          f"| images/s end to end | {result['extract']['img_per_s']} |",
          f"| planning (list {args.shards} shards' headers, create the store) | {result['extract']['planning_s']} s |",
          f"| driver peak RSS | {result['extract']['driver_peak_rss_mib']} MiB |",
          f"| rows per store shard (auto) | {shard_rows} |",
          f"| store objects, all | {objects} |",
          f"| store objects, the tap's | {tap_objects} (unsharded: {batches}) |",
          f"| store bytes | {nbytes:,} |",
          f"| `--resume` on a store 99% done: planning / in all | {result['resume_99pct_done']['planning_s']} s / "
          f"{result['resume_99pct_done']['seconds']} s |",
          f"| unsharded check ({plain_rows} images): tap objects / formula ceil(n/batch) | {plain_tap_objects} / "
          f"{result['unsharded_check']['formula']} |",
          f"| unsharded check: driver peak RSS / planning | {result['unsharded_check']['driver_peak_rss_mib']} MiB / "
          f"{result['unsharded_check']['planning_s']} s |", ""]
    (out / f"{args.name}.md").write_text("\n".join(md))
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
