"""``featuremaps extract``: bulk extraction into a resumable Zarr store (the CLI side; it prints)."""

from __future__ import annotations

import argparse
import math
import shlex
import sys
from pathlib import Path

from .cli import CLIError, add_model_args, resolve_model


def register(sub) -> None:
    p = sub.add_parser(
        "extract", help="extract feature maps of many images into a resumable Zarr store",
        description="Decode images in worker threads, run the exported model, and write one array per tap "
                    "into a Zarr v3 store (chunked by batch, resumable). Bad images become error rows; "
                    "the run goes on unless --strict. Exit status: 0 all ok, 1 some images failed, "
                    "2 usage error, 130 interrupted (re-run with --resume).")
    p.add_argument("inputs", nargs="+", metavar="INPUT",
                   help="image files, folders (searched recursively) or @list.txt (one path per line)")
    add_model_args(p)
    p.add_argument("-o", "--output", required=True, help="store path (a new folder, e.g. OUT.zarr)")
    p.add_argument("--batch-size", type=int, default=8, help="images per model call and per chunk (default: 8)")
    p.add_argument("--workers", type=int, default=2, help="decode threads (default: 2)")
    p.add_argument("--threads", type=int, default=None, help="ONNX Runtime intra-op threads (default: all cores)")
    p.add_argument("--provider", default="auto", choices=("auto", "cpu", "cuda", "tensorrt", "openvino"),
                   help="ONNX Runtime provider, or openvino (default: auto: exact, TensorRT > CUDA > CPU)")
    p.add_argument("--fast", action="store_true",
                   help="let auto pick the fastest engine here, accepting bf16 math (OpenVINO on CPUs with "
                        "AMX/AVX-512 BF16; parity budget rel L2 <= 1e-2); says what it chose and why")
    p.add_argument("--device", default="CPU", help="OpenVINO device: CPU, GPU, NPU (default: CPU)")
    p.add_argument("--math-mode", choices=("default", "bf16", "fp32"), default="default",
                   help="OpenVINO math: default (bf16 where the CPU has it), bf16, fp32 (strict)")
    p.add_argument("--dtype", choices=("fp32", "fp16"), default=None,
                   help="stored dtype (default: the model's output dtype)")
    # Measured (bench/results/extract_bench.md): zstd shrinks full fp16 maps by only 12% and costs
    # ~20% end-to-end throughput on a CPU-bound machine; it pays off on reduced outputs (-42%).
    p.add_argument("--compression", choices=("zstd", "none"), default="none",
                   help="chunk compression (default: none; zstd saves ~12%% on full fp16 maps, ~40%% on "
                        "reduced ones, and costs CPU)")
    p.add_argument("--resume", action="store_true", help="complete an existing store (redo unfinished batches)")
    p.add_argument("--strict", action="store_true", help="stop at the first bad image instead of recording it")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    g = p.add_argument_group("scale-out (Ray Data)")
    g.add_argument("--engine", choices=("local", "ray"), default="local",
                   help="local: threads in this process; ray: Ray Data tasks + an actor pool (default: local)")
    g.add_argument("--ray-address", default=None,
                   help="join this Ray cluster (e.g. ray://head:10001 or auto); default: a local instance on "
                        "127.0.0.1. -o must then be an absolute path every node can reach")
    g.add_argument("--actors", type=int, default=1, help="model actors, one ONNX Runtime session each (default: 1)")
    g.add_argument("--gpus-per-actor", type=float, default=0.0, help="GPUs each actor reserves (default: 0)")
    p.set_defaults(func=cmd_extract)


def _open_or_create(args, paths: list[str], model_path: Path, extractor):
    from .engine.hashing import file_sha256
    from .engine.store import FeatureStore, StoreError, output_shapes

    out = Path(args.output)
    sha = file_sha256(model_path)
    if out.exists():
        if not args.resume:
            raise CLIError(f"{out} already exists; add --resume to complete it, or choose a new -o path")
        try:
            store = FeatureStore.open(out, mode="r+")
        except StoreError as e:
            raise CLIError(str(e)) from None
        if store.info.get("model_sha256") != sha:
            raise CLIError(f"{out} was written with another model ({store.info.get('model_path')}); "
                           "resume with the same --model, or choose a new -o path")
        if store.paths != paths:
            raise CLIError(f"the inputs differ from the list stored in {out} ({len(paths)} vs {len(store.paths)} "
                           "images); resume with the same inputs, or choose a new -o path")
        store.clean_partials()
        return store
    # the store records what ran the model: provider and math mode (fp32, bf16, int8+bf16, ...)
    meta = dict(extractor.metadata, engine={"provider": extractor.provider, "math_mode": extractor.math_mode,
                                            "note": extractor.info.note})
    dtype = args.dtype or ("fp16" if meta.get("output_dtype") == "fp16" else "fp32")
    try:
        return FeatureStore.create(out, paths=paths, metadata=meta, shapes=output_shapes(meta, extractor.session),
                                   batch_size=args.batch_size, dtype=dtype, compression=args.compression,
                                   model_path=model_path.resolve(), model_sha256=sha)
    except StoreError as e:
        raise CLIError(str(e)) from None


def _check_ray_args(args) -> None:
    if args.engine != "ray":
        return
    if args.actors < 1:
        raise CLIError("--actors must be >= 1")
    if "://" in args.output:
        raise CLIError(f"store URLs ({args.output}) are not supported yet; use a shared filesystem path")
    if args.ray_address and not Path(args.output).is_absolute():
        raise CLIError(f"-o {args.output} is relative; on a Ray cluster pass an absolute path on a filesystem "
                       "every node mounts (e.g. /shared/out.zarr)")


def _run_ray(args, store, model_path: Path, bar, provider: str):
    from .engine.ray_engine import RayUnavailableError, init_ray, run_extraction_ray

    try:
        started = init_ray(args.ray_address, verbose=args.verbose)
    except RayUnavailableError as e:
        raise CLIError(str(e)) from None
    try:
        return run_extraction_ray(store, model_path, actors=args.actors, gpus_per_actor=args.gpus_per_actor,
                                  provider=provider, threads=args.threads, strict=args.strict,
                                  progress=bar.update)
    finally:
        if started:
            import ray

            ray.shutdown()


def _choose(args, model_path: Path) -> tuple[str, str]:
    """``(provider, math_mode)``: as given, or for ``auto --fast`` the fastest engine here (one line why)."""
    if args.provider != "openvino" and (args.math_mode != "default" or args.device != "CPU"):
        raise CLIError(f"--math-mode/--device choose OpenVINO's arithmetic and device; add --provider openvino "
                       f"(provider {args.provider} runs the model's own precision)")
    if args.engine == "ray" and (args.math_mode != "default" or args.device != "CPU"):
        # the Ray actors build their Extractor with OpenVINO's defaults (engine/ray_engine.py)
        raise CLIError("--math-mode/--device are not passed to Ray actors yet; drop them or use --engine local")
    if args.provider != "auto" or not args.fast:
        return args.provider, args.math_mode
    from .engine.choice import available_providers, choose_backend
    from .engine.cpu_features import cpu_features
    from .export.onnx_export import read_metadata

    choice = choose_backend(True, available=available_providers(), cpu=cpu_features(),
                            model_precision=read_metadata(model_path).get("precision", "fp32"))
    print(f"auto --fast: {choice.reason}", file=sys.stderr)
    return choice.provider, choice.math_mode


def _resume_command() -> str:
    argv = [a for a in sys.argv[1:] if a != "--resume"]
    return "featuremaps " + " ".join(shlex.quote(a) for a in argv) + " --resume"


def cmd_extract(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from .engine.extractor import Extractor
    from .engine.inputs import InputError, collect_inputs
    from .engine.pipeline import ExtractionError, run_extraction

    try:
        paths = collect_inputs(args.inputs)
    except InputError as e:
        raise CLIError(str(e)) from None
    if args.batch_size < 1 or args.workers < 1:
        raise CLIError("--batch-size and --workers must be >= 1")
    _check_ray_args(args)
    model_path = resolve_model(args)
    provider, math_mode = _choose(args, model_path)
    # spin=False: idle ONNX Runtime threads must not busy-wait while decode threads need the CPUs
    with Extractor(model_path, provider=provider, threads=args.threads, max_batch=args.batch_size,
                   spin=False, device=args.device, math_mode=math_mode) as ex:
        store = _open_or_create(args, paths, model_path, ex)
        done = len(store) - sum(b - a for a, b in map(store.batch_rows, store.pending_batches()))
        print(f"extracting {len(store)} images ({done} already done) with {ex.info.note} "
              f"-> {store.path} [{store.dtype}, batch {store.batch_size}]", file=sys.stderr)
        bar = tqdm(total=len(store), initial=done, unit="img", file=sys.stderr, disable=args.no_progress,
                   dynamic_ncols=True, smoothing=0.1)
        try:
            if args.engine == "ray":
                summary = _run_ray(args, store, model_path, bar, provider)
            else:
                summary = run_extraction(store, ex.run, ex.preprocessing, workers=args.workers,
                                         strict=args.strict, progress=bar.update)
        except ExtractionError as e:
            bar.close()
            raise CLIError(f"{e}; completed batches are kept, re-run with --resume") from None
        except OSError as e:  # disk full, store folder removed, ...: the model's work so far is kept
            bar.close()
            raise CLIError(f"writing {store.path} failed ({e.strerror or e}); completed batches are kept: "
                           "fix that and re-run with --resume") from None
        bar.close()
    mb = summary.bytes_written / 1e6
    print(f"{summary.ok} ok, {summary.errors} errors, {summary.pending} pending; {summary.images} images this run "
          f"at {summary.images_per_s:.1f} img/s; {mb:.1f} MB of features written "
          f"({store.nbytes_on_disk() / 1e6:.1f} MB on disk) -> {store.path}")
    for row in store.errors[:5]:
        print(f"  error: {row.path}: {row.message}", file=sys.stderr)
    if summary.errors > 5:
        print(f"  ... and {summary.errors - 5} more (featuremaps.open_store({str(store.path)!r}).errors)",
              file=sys.stderr)
    if summary.interrupted:
        print(f"featuremaps: interrupted; completed batches are kept. Resume with: {_resume_command()}",
              file=sys.stderr)
        return 130
    return 1 if summary.errors else 0


# ---------------------------------------------------------------- export --reduce / --fp16-outputs


def add_reduce_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("in-graph reductions (bulk extraction)")
    g.add_argument("--reduce", default=None, metavar="TAP=OP,...",
                   help="reduce taps inside the graph: OP is mean or max (global, -> (C,)) or avgpool:K "
                        "(K x K average pool), e.g. features.0=mean,features.17=avgpool:4")
    g.add_argument("--fp16-outputs", action="store_true",
                   help="cast every output to float16 inside the graph (half the bytes leave the model)")


def check_reduce_args(args: argparse.Namespace, taps) -> dict | None:
    """Validate ``--reduce/--fp16-outputs`` before any slow work; None when neither is given."""
    from .export.reduce import parse_reductions

    if not (args.reduce or args.fp16_outputs):
        return None
    if getattr(args, "precision", "fp32") != "fp32" or getattr(args, "model_format", "onnx") != "onnx":
        raise CLIError("--reduce/--fp16-outputs work on the fp32 ONNX export; drop --precision/--format "
                       "(use --fp16-outputs to store fp16)")
    try:
        return parse_reductions(args.reduce or "", taps, args.model)
    except ValueError as e:
        raise CLIError(str(e)) from None


def export_reduced(args: argparse.Namespace, res, net, taps, reductions: dict) -> int:
    """``featuremaps export --reduce/--fp16-outputs``: verify the plain export, compile the
    ``reductions`` (from :func:`check_reduce_args`) into it (same path), then check the reduced
    outputs against NumPy reductions of the PyTorch reference."""
    from .cli import _print_verification, _verify_on_photo
    from .bench.stats import format_parity_table
    from .engine.preprocess import Preprocessing, load_batch
    from .export.reduce import reduce_model, verify_reduced
    from .samples import sample_images

    if not args.no_verify:
        ver = _verify_on_photo(res.path, net, taps, args.input_size)
        _print_verification(ver)
        if not ver.ok:
            print(f"featuremaps: error: {', '.join(ver.failures)} exceed the fp32 tolerance", file=sys.stderr)
            return 1
    meta = reduce_model(res.path, res.path, reductions, args.fp16_outputs)
    kept = ", ".join(f"{d['name']} {'x'.join(map(str, d['shape']))}" for d in meta["taps"])
    per_image = sum(math.prod(d["shape"]) for d in meta["taps"]) * (2 if args.fp16_outputs else 4)
    print(f"reduced in the graph: {kept} ({meta['output_dtype']}; {per_image / 1e6:.3f} MB per image) -> {res.path}")
    if args.no_verify:
        return 0
    batch = load_batch(sample_images()[:1], Preprocessing(size=(args.input_size, args.input_size)))
    rows, tol = verify_reduced(res.path, net, taps, batch, reductions, args.fp16_outputs)
    print(f"reduced outputs vs NumPy reductions of the PyTorch reference (rel L2 <= {tol:g}):")
    print(format_parity_table(rows, tol))
    failed = [r.tap for r in rows if not r.passes(tol)]
    if failed:
        print(f"featuremaps: error: {', '.join(failed)} exceed the tolerance", file=sys.stderr)
        return 1
    return 0
