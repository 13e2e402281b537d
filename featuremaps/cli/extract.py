"""``featuremaps extract``: bulk extraction into a resumable Zarr store (the CLI side; it prints)."""

from __future__ import annotations

import argparse
import dataclasses
import shlex
import sys
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from ..engine.choice import available_providers, choose_backend
from ..engine.cpu_features import cpu_features
from ..engine.extractor import Extractor
from ..engine.inputs import collect_inputs, printable_path, skipped_note
from ..engine.pipeline import run_extraction
from ..engine.preprocess import DecodeBudget
from ..engine.providers import math_mode as session_math_mode
from ..engine.ray_cluster import actor_shortfall, check_cluster_address, gpu_shortfall, init_ray  # ray only when called
from ..engine.ray_engine import run_extraction_ray
from ..engine.store import FeatureStore, output_shapes
from ..engine.unit import ExtractSettings
from ..engine.validate import ModelRecord, read_model_record
from ..errors import ArgumentError, ClusterError, ExtractionError, StoreError
from ..engine.store.remote import RemoteIO
from ._args import (DEFAULT_TAPS_HELP, ModelSpec, StoreRef, add_math_args, add_model_args, add_storage_args,
                    check_writable_parent, float_in, int_in, positive_int, provider_choices, redacted_argv, store_arg,
                    threads_arg)
from .cache import resolve_model

DEFAULT_BATCH = 8


def register(sub) -> None:
    p = sub.add_parser(
        "extract", help="extract feature maps of many images into a resumable Zarr store",
        description="Decode images in worker processes, run the exported model, and write one array per tap "
                    "into a Zarr v3 store (chunked by batch, resumable). Bad images become error rows; "
                    "the run goes on unless --strict. Exit status: 0 all ok, 1 some images failed, "
                    "2 usage error, 130 interrupted (re-run with --resume).")
    p.add_argument("inputs", nargs="+", metavar="INPUT",
                   help="image files, folders (searched recursively), WebDataset .tar shards, URLs (s3://, gs://, "
                        "https://, file://; a prefix is listed recursively), brace ranges and globs "
                        "('shards/{00000..00099}.tar', 'shards/*.tar') or @list.txt (one entry per line)")
    # None: not given. They build a zoo model; an .onnx file fixes them, so giving one is refused
    add_model_args(p, layers_default=None, weights_default=None, seed_default=None,
                   layers_help="taps of a zoo model: indices (0,5,17), features.17 or aliases (conv4_1, relu4_1, "
                               f"pool4); see `featuremaps layers` (default: {DEFAULT_TAPS_HELP})")
    p.set_defaults(input_size=None)
    p.add_argument("-o", "--output", type=store_arg, required=True,
                   help="store path (a new folder, e.g. OUT.zarr) or URL (s3://bucket/feats.zarr, gs://...)")
    add_storage_args(p)
    p.add_argument("--batch-size", type=positive_int, default=None,
                   help=f"images per model call (default: {DEFAULT_BATCH}; with --resume: the store's)")
    p.add_argument("--workers", type=int_in(0, 512, "--workers"), default=None,
                   help="decode worker processes (default: the usable cores; 0 decodes in a thread)")
    p.add_argument("--decode", choices=("full", "reduced"), default=None,
                   help="reduced: JPEGs >= 2x the model size decode at 1/2-1/8 scale, then resize (faster, "
                        "not the seed's pixels; default: full, with --resume the store's)")
    p.add_argument("--max-pixels", type=int_in(1, 10**12, "--max-pixels"), default=100_000_000,
                   help="refuse images whose header declares more pixels (default: 100000000)")
    p.add_argument("--max-file-bytes", type=int_in(1, 2**40, "--max-file-bytes"), default=256 * 1024 * 1024,
                   help="refuse larger files without reading them (default: 268435456)")
    p.add_argument("--writers", type=int_in(1, 256, "--writers"), default=4,
                   help="chunk writer threads (each tap of each batch is its own chunk; default: 4)")
    p.add_argument("--threads", type=threads_arg, default=None,
                   help="ONNX Runtime intra-op threads 1..1024 (default: all cores)")
    p.add_argument("--provider", default="auto", choices=provider_choices(),
                   help="ONNX Runtime provider, or openvino (default: auto: exact, TensorRT > CUDA > CPU)")
    p.add_argument("--fast", action="store_true",
                   help="let auto pick the fastest engine here, accepting bf16 math (OpenVINO on CPUs with "
                        "AMX/AVX-512 BF16; parity budget rel L2 <= 1e-2); says what it chose and why")
    add_math_args(p)
    p.add_argument("--dtype", choices=("fp32", "fp16"), default=None,
                   help="stored dtype (default: the model's output dtype)")
    # Measured (bench/results/extract_bench.md): zstd shrinks full fp16 maps by only 12% and costs
    # ~20% end-to-end throughput on a CPU-bound machine; it pays off on reduced outputs (-42%).
    p.add_argument("--compression", choices=("zstd", "none"), default=None,
                   help="chunk compression (default: none, with --resume the store's; zstd saves ~12%% on "
                        "full fp16 maps, ~40%% on reduced ones, and costs CPU)")
    p.add_argument("--shard-rows", type=_shard_rows_arg, default=None, metavar="N|auto|none",
                   help="rows per shard object of each tap (Zarr v3 sharding): auto picks the most whole batches "
                        "whose raw maps of one tap fit in 64 MiB; none writes one object per chunk (default: auto "
                        "for s3:// and gs:// stores, none for local ones; with --resume the store's)")
    p.add_argument("--resume", action="store_true", help="complete an existing store (redo unfinished batches)")
    p.add_argument("--strict", action="store_true", help="stop at the first bad image instead of recording it")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    g = p.add_argument_group("scale-out (Ray Data)")
    g.add_argument("--engine", choices=("local", "ray"), default="local",
                   help="local: threads in this process; ray: Ray Data tasks + an actor pool (default: local)")
    g.add_argument("--ray-address", default=None,
                   help="join this Ray cluster (e.g. ray://head:10001 or auto); default: a local instance on "
                        "127.0.0.1. -o must then be an absolute path every node can reach")
    g.add_argument("--actors", type=positive_int, default=None,
                   help="model actors, one ONNX Runtime session each (default: 1)")
    g.add_argument("--gpus-per-actor", type=float_in(0, None, "--gpus-per-actor"), default=None,
                   help="GPUs each actor reserves (default: 0)")
    p.set_defaults(func=cmd_extract)


def _shard_rows_arg(text: str):
    if text in ("auto", "none"):
        return text
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not auto, none or a positive number of rows")
    return value


# ---------------------------------------------------------------- the option groups, read once


@dataclass(frozen=True)
class Output:
    """``-o`` and the settings a store records. None means "not given": a new store takes the
    defaults (:meth:`for_new_store`), ``--resume`` the store's own values (:meth:`as_stored`), and
    an explicit other value is refused there. Either way the run reads a new, complete object."""

    store: StoreRef
    resume: bool = False
    batch_size: int | None = None
    dtype: str | None = None
    compression: str | None = None
    shard_rows: int | str | None = None
    decode: str | None = None

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> "Output":
        return cls(StoreRef.from_args(args, "output"), resume=args.resume, batch_size=args.batch_size,
                   dtype=args.dtype, compression=args.compression, shard_rows=args.shard_rows, decode=args.decode)

    def for_new_store(self, record: ModelRecord, ray: "RayOptions") -> "Output":
        """The settings a new store is created with: the defaults where none was given."""
        return dataclasses.replace(
            self, batch_size=self.batch_size or DEFAULT_BATCH, dtype=self.dtype or record.output_dtype,
            compression=self.compression or "none", decode=self.decode or "full",
            shard_rows=self.shard_rows or ("auto" if self.store.is_url and not ray.on else None))

    def as_stored(self, store: FeatureStore) -> "Output":
        """The settings ``--resume`` runs with: the store's (given ones were checked to agree). The
        model runs the store's batch size unless one was given (TensorRT's profile)."""
        record = store.required_record("metadata", "it cannot be resumed; choose a new -o path")
        return dataclasses.replace(
            self, batch_size=self.batch_size or store.batch_size, dtype=store.dtype,
            compression=store.info.get("compression"), shard_rows=store.info.get("shard_rows") or "none",
            decode=record.preprocessing.decode)


@dataclass(frozen=True)
class RunOptions:
    """How the model runs: ``provider``/``math_mode`` as given (``auto``/``default``) until
    :func:`_choose` replaces them with the engine that runs; ``settings`` what every scheduler of
    the extraction unit honours."""

    provider: str = "auto"
    math_mode: str = "default"
    fast: bool = False
    threads: int | None = None
    device: int | str | None = None
    tf32: bool = True
    progress: bool = True
    settings: ExtractSettings = field(default_factory=ExtractSettings)

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> "RunOptions":
        budget = DecodeBudget(max_pixels=args.max_pixels, max_file_bytes=args.max_file_bytes)
        return cls(provider=args.provider, math_mode=args.math_mode, fast=args.fast, threads=args.threads,
                   device=args.device, tf32=not args.no_tf32, progress=not args.no_progress,
                   settings=ExtractSettings(workers=args.workers, writers=args.writers, strict=args.strict,
                                            budget=budget))


_RAY_ONLY = ("ray_address", "actors", "gpus_per_actor")


@dataclass(frozen=True)
class RayOptions:
    """``--engine`` and the scale-out group, with their defaults (one actor, no GPUs) applied here.
    Ray's options without ``--engine ray`` are refused in one line (they would be ignored)."""

    engine: str = "local"
    address: str | None = None
    actors: int = 1
    gpus_per_actor: float = 0.0
    verbose: bool = False

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> "RayOptions":
        given = [f"--{n.replace('_', '-')}" for n in _RAY_ONLY if getattr(args, n) is not None]
        if args.engine != "ray" and given:
            raise ArgumentError(f"{' and '.join(given)} apply to --engine ray; add --engine ray, or drop them")
        return cls(engine=args.engine, address=args.ray_address, actors=args.actors or 1,
                   gpus_per_actor=args.gpus_per_actor or 0.0, verbose=args.verbose)

    @property
    def on(self) -> bool:
        return self.engine == "ray"


# ---------------------------------------------------------------- checks before any model is built


_ZOO_ONLY = ("layers", "weights", "seed", "input_size")


def _model_record(spec: ModelSpec) -> ModelRecord:
    """The .onnx file to run, read and checked once for the whole run. Options that build a zoo model
    are refused with a file (they would be ignored: the file fixes its taps, weights and input size);
    extract leaves them None unless given."""
    given = [f"--{n.replace('_', '-')}" for n in _ZOO_ONLY if getattr(spec, n) is not None]
    if spec.is_file and given:
        raise ArgumentError(f"{' and '.join(given)} build a zoo model, but {spec.model} is an exported model with its "
                            f"own taps, weights and input size (`featuremaps info {spec.model}`); drop "
                            f"{' and '.join(given)}, or pass a zoo name (--model vgg16 {given[0]} ...)")
    return read_model_record(resolve_model(dataclasses.replace(spec, input_size=spec.input_size or 224)))


def _check_output(output: Output, ray: RayOptions) -> None:
    """What ``-o`` and the engine need, checked before the model is exported or opened: a new local
    store's folder can be made; Ray writes unsharded stores, on a path every node can reach."""
    where = output.store.where
    if not output.store.is_url and not Path(where).exists():
        check_writable_parent(Path(where))
    if not ray.on:
        return
    if output.shard_rows not in (None, "none"):
        raise ArgumentError("--shard-rows applies to --engine local: a shard is written whole by the one process "
                            "that fills it, and Ray actors write batch by batch; drop --shard-rows")
    if ray.address and not output.store.is_url and not Path(where).is_absolute():
        raise ArgumentError(f"-o {where} is relative; on a Ray cluster pass an absolute path on a filesystem "
                            "every node mounts (e.g. /shared/out.zarr)")
    if ray.address:  # first of all: a join that cannot succeed fails in bounded time
        check_cluster_address(ray.address, verbose=ray.verbose)


def _choose(run: RunOptions, ray: RayOptions, record: ModelRecord) -> RunOptions:
    """``run`` with the provider and OpenVINO math mode that will run: as given, or for ``auto
    --fast`` the fastest engine here (printed with the reason). Options for another engine are
    refused in one line."""
    if run.math_mode != "default" and run.provider not in ("openvino", "auto"):
        raise ArgumentError(f"--math-mode is OpenVINO's arithmetic; add --provider openvino (provider "
                            f"{run.provider} runs the model's own precision; --no-tf32 is CUDA's strict fp32)")
    if ray.on and run.provider in ("cuda", "tensorrt") and not ray.gpus_per_actor:
        raise ArgumentError(f"--provider {run.provider} on Ray needs --gpus-per-actor (e.g. 1, or 0.5 for two "
                            "actors per GPU): Ray hands out GPUs only to actors that reserve them, and the others "
                            "would all share each node's first GPU")
    if ray.on and isinstance(run.device, int):
        raise ArgumentError(f"--device {run.device} picks a GPU of this machine; Ray gives each actor its own "
                            "GPU (--gpus-per-actor), so drop --device with --engine ray")
    if run.provider != "auto" or not run.fast:
        if run.provider == "auto" and run.math_mode != "default":
            raise ArgumentError("--math-mode is OpenVINO's arithmetic; add --provider openvino (or --fast)")
        return run
    choice = choose_backend(True, available=available_providers(), cpu=cpu_features(),
                            model_precision=record.precision)
    print(f"auto --fast: {choice.reason}", file=sys.stderr)
    if choice.provider != "openvino" and run.math_mode != "default":
        raise ArgumentError(f"--math-mode {run.math_mode} is OpenVINO's and auto --fast chose {choice.provider}; "
                            "drop --math-mode or add --provider openvino")
    return dataclasses.replace(run, provider=choice.provider,
                               math_mode=run.math_mode if run.math_mode != "default" else choice.math_mode)


# ---------------------------------------------------------------- the store


def _open_for_resume(output: Output) -> FeatureStore | None:
    """The existing store at ``-o``, opened once and locked, for ``--resume``; None when there is none
    yet (it is created once the model is open). Anything else at ``-o`` is one line."""
    ref = output.store
    if ref.is_url:
        io = RemoteIO(ref.where, ref.storage_options)
        try:
            found = io.exists("zarr.json")
        except Exception as e:  # noqa: BLE001 - unreachable endpoint, no credentials: one line
            raise io.error("looking for the store", e) from None
        if not found:
            return None
        if not output.resume:
            raise StoreError(f"{io.url} already exists; add --resume to complete it, or choose a new -o path")
        return FeatureStore.open(ref.where, mode="r+", lock=True, storage_options=ref.storage_options)
    out = Path(ref.where)
    if not out.exists():
        return None
    if out.is_dir() and not (out / "zarr.json").exists():
        what = "an empty folder" if not any(out.iterdir()) else "a folder that is not a featuremaps store"
        raise StoreError(f"{out} is {what}; choose a new -o path (extract creates the store folder itself)")
    if not output.resume:
        raise StoreError(f"{out} already exists; add --resume to complete it, or choose a new -o path")
    return FeatureStore.open(out, mode="r+", lock=True)


def _create(output: Output, paths: list[str], record: ModelRecord, extractor, extraction: dict):
    """A new store with ``output``'s settings (from :meth:`Output.for_new_store`)."""
    ref = output.store
    # The store records how its maps were computed (provider, math mode: tf32 vs strict fp32 changes
    # the values at the 1e-4 level; device: the GPU index or OpenVINO's device name) next to the
    # model's own metadata, and the command that created it (`featuremaps info` shows it).
    # preprocessing.decode: how pixels were made (full, or DCT-reduced JPEG decoding); --resume and
    # the Ray engine read it from the store
    pre = dict(record.metadata["preprocessing"], decode=output.decode)
    meta = dict(record.metadata, preprocessing=pre, extraction=extraction,
                command="featuremaps " + " ".join(shlex.quote(a) for a in redacted_argv(sys.argv[1:])))
    return FeatureStore.create(ref.where if ref.is_url else Path(ref.where), paths=paths, metadata=meta,
                               shapes=output_shapes(record, extractor.session), batch_size=output.batch_size,
                               dtype=output.dtype, compression=output.compression,
                               model_path=record.path.resolve(), model_sha256=record.sha256,
                               storage_options=ref.storage_options, shard_rows=output.shard_rows)


def _plan_resume(store: FeatureStore, output: Output, ray: RayOptions, paths: list[str], sha: str) -> Output:
    """Refuse other settings or inputs than ``store`` (open and locked) records, before the model is
    opened; returns the settings the run takes from the store. Only an explicit other value is refused."""
    out = store.path
    store.check_settings(batch_size=output.batch_size, dtype=output.dtype, compression=output.compression,
                         model_sha256=sha)
    stored = output.as_stored(store)
    if output.shard_rows not in (None, stored.shard_rows) and not (output.shard_rows == "auto" and store.sharded):
        raise StoreError(f"{out} was written with --shard-rows {stored.shard_rows}, not {output.shard_rows}; resume "
                         "without --shard-rows, or choose a new -o path")
    if ray.on and store.sharded:
        raise ArgumentError(f"{out} is sharded (--shard-rows {stored.shard_rows}): resume it with --engine local "
                            "(Ray actors write batch by batch, a shard is written whole by one process)")
    if output.decode not in (None, stored.decode):
        raise StoreError(f"{out} was decoded with --decode {stored.decode}, not {output.decode}; resume with "
                         f"--decode {stored.decode} (or without --decode), or choose a new -o path")
    if store.paths != paths:
        raise StoreError(f"the inputs differ from the list stored in {out} ({len(paths)} vs {len(store.paths)} "
                         "images); resume with the same inputs, or choose a new -o path")
    return stored


def _resume(store: FeatureStore, extraction: dict) -> None:
    """Refuse another math mode than ``store`` records, drop dead temp files, and mark batches with
    chunks that fail their checksum pending (the run redoes them)."""
    store.check_arithmetic(extraction["provider"], extraction["math_mode"])
    store.clean_partials()
    report = store.verify(repair=True)
    if report.batches:
        print(f"{store.path}: {len(report.damage)} damaged chunk(s); redoing batch(es) "
              f"{', '.join(map(str, report.batches))}", file=sys.stderr)


# ---------------------------------------------------------------- the run


def _plans_on_cpu(ray: RayOptions, provider: str) -> bool:
    """The driver of a joined Ray cluster needs the model's shapes, not its GPU provider."""
    return ray.on and bool(ray.address) and provider in ("cuda", "tensorrt")


def _extraction(ex, run: RunOptions, ray: RayOptions) -> dict:
    """How the store's maps are computed (recorded in it; every later run and Ray actor must match).
    Normally the session's own. Joining a Ray cluster with a GPU provider, the driver plans on its
    CPU (it may have no GPU) and records what the actors will run: ``math_mode`` follows from the
    provider, ``--no-tf32`` and the model's precision."""
    if not _plans_on_cpu(ray, run.provider):
        # batches_in_flight: OpenVINO's throughput mode runs one batch per stream at once
        return {"provider": ex.provider, "math_mode": ex.math_mode, "device": ex.device,
                "batches_in_flight": ex.lanes, "streams": ex.streams}
    mode = session_math_mode(run.provider, ex.record.precision, tf32=run.tf32)
    return {"provider": run.provider, "math_mode": mode, "device": None}


@contextmanager
def _ray_session(ray_opts: RayOptions):
    """Join the cluster (its address was checked by :func:`_check_output`) or start a local
    instance (shut down on exit) before any store is made; a local instance too small for the
    actors' GPUs is refused at once (no node will join it)."""
    if not ray_opts.on:
        yield
        return
    import ray

    started = init_ray(ray_opts.address, verbose=ray_opts.verbose, check=False)
    try:
        resources = ray.cluster_resources()
        too_many = actor_shortfall(ray_opts.actors, float(resources.get("CPU", 0)))
        if too_many:  # actors would hold every CPU and the decode tasks would wait forever
            raise ClusterError(too_many)
        short = gpu_shortfall(ray_opts.actors, ray_opts.gpus_per_actor, float(resources.get("GPU", 0)))
        if started and short:
            raise ClusterError(f"{short} (a local instance on this machine); lower --actors or --gpus-per-actor, "
                               "or join a cluster with GPU nodes (--ray-address)")
        yield
    finally:
        if started:
            ray.shutdown()


def _extract(paths: list[str], record: ModelRecord, output: Output, run: RunOptions, ray: RayOptions):
    """Open (once, for --resume) or plan the store, then the model sized by its batch, and run the
    engine; ``(summary, store)`` (the store closed)."""
    store = _open_for_resume(output)
    try:
        output = (output.for_new_store(record, ray) if store is None
                  else _plan_resume(store, output, ray, paths, record.sha256))
        planned = "cpu" if _plans_on_cpu(ray, run.provider) else run.provider
        # spin=False: idle ONNX Runtime threads must not busy-wait while decode threads need the CPUs
        with Extractor(record, provider=planned, threads=run.threads, max_batch=output.batch_size, spin=False,
                       device=run.device, tf32=run.tf32, math_mode=run.math_mode, throughput=True) as ex:
            extraction = _extraction(ex, run, ray)
            if store is None:
                store = _create(output, paths, record, ex, extraction)
            else:
                _resume(store, extraction)
            summary = _run(store, ex, output, run, ray, extraction)
    finally:
        if store is not None:
            store.close()  # release the writer's lock
    return summary, store


def _resume_command() -> str:
    argv = [a for a in redacted_argv(sys.argv[1:]) if a != "--resume"]
    return "featuremaps " + " ".join(shlex.quote(a) for a in argv) + " --resume"


def _run(store, ex, output: Output, run: RunOptions, ray: RayOptions, extraction: dict):
    done = len(store) - sum(b - a for a, b in map(store.batch_rows, store.pending_batches()))
    how = (f"{extraction['provider']}, {extraction['math_mode']} on {ray.actors} Ray actor(s)"
           if ray.on else ex.info.note)
    print(f"extracting {len(store)} images ({done} already done) with {how} "
          f"-> {store.path} [{store.dtype}, batch {store.batch_size}]", file=sys.stderr)
    bar = tqdm(total=len(store), initial=done, unit="img", file=sys.stderr, disable=not run.progress,
               dynamic_ncols=True, smoothing=0.1)
    try:
        if ray.on:  # each actor checks that it computes what the store records (provider, math mode)
            return run_extraction_ray(store, ex.record, run.settings, actors=ray.actors,
                                      gpus_per_actor=ray.gpus_per_actor, provider=run.provider, threads=run.threads,
                                      progress=bar.update, tf32=run.tf32, math_mode=run.math_mode,
                                      device=run.device)
        pre = dataclasses.replace(ex.preprocessing, decode=output.decode)
        return run_extraction(store, ex, pre, run.settings, progress=bar.update)
    except ExtractionError as e:
        raise ExtractionError(f"{e}; completed batches are kept, re-run with --resume") from None
    except OSError as e:  # disk full, store folder removed, ...: the model's work so far is kept
        raise StoreError(f"writing {store.path} failed ({e.strerror or e}); completed batches are kept: "
                         "fix that and re-run with --resume") from None
    finally:
        bar.close()


def cmd_extract(args: argparse.Namespace) -> int:
    skipped = Counter()
    paths = collect_inputs(args.inputs, skipped)
    ray = RayOptions.from_args(args)
    output = Output.from_args(args)
    _check_output(output, ray)
    record = _model_record(ModelSpec.from_args(args))
    run = _choose(RunOptions.from_args(args), ray, record)
    with _ray_session(ray):
        summary, store = _extract(paths, record, output, run, ray)
    mb = summary.bytes_written / 1e6
    print(f"{summary.ok} ok, {summary.errors} errors, {summary.pending} pending; {summary.images} images this run "
          f"at {summary.images_per_s:.1f} img/s; {mb:.1f} MB of features written "
          f"({store.nbytes_on_disk() / 1e6:.1f} MB on disk) -> {store.path}")
    if skipped:
        print(skipped_note(skipped))
    for row in store.errors[:5]:
        print(f"  error: {printable_path(row.path)}: {printable_path(row.message)}", file=sys.stderr)
    if summary.errors > 5:
        print(f"  ... and {summary.errors - 5} more (featuremaps.open_store({str(store.path)!r}).errors)",
              file=sys.stderr)
    if summary.interrupted:
        print(f"featuremaps: interrupted; completed batches are kept. Resume with: {_resume_command()}",
              file=sys.stderr)
        return 130
    if summary.left_pending:  # a decode worker died or hung on these files (twice): not the files' fault
        rows = "row" if summary.left_pending == 1 else "rows"
        print(f"featuremaps: {summary.left_pending} {rows} left pending after decoder failures; run --resume to "
              f"retry: {_resume_command()}", file=sys.stderr)
    return 1 if summary.errors or summary.left_pending else 0
