"""``featuremaps bench``: the seed's PyTorch hooks against the exported graph on ONNX Runtime (and
torch.compile, CUDA, TensorRT where they run), interleaved, with the machine's fp32 bound."""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from ..bench import backends as B
from ..bench.backends import BACKENDS, DESCRIPTIONS, Backend, Skipped, make_ort, measure_first_calls
from ..bench.parity import load_reference_net
from ..bench.plot import throughput_figure
from ..bench.suite import (BenchConfig, ScalingModel, assemble, environment, format_markdown, json_ready,
                           run_scaling, time_backends)
from ..bench.timing import gemm_probe, sgemm_gflops
from ..errors import ArgumentError, ModelFileError, require
from ..engine.validate import read_model_record
from ..export.gate import GateError
from ..export.taps import parse_taps
from ..export.variants import build_variant
from ..export.zoo import build_model
from ..families import default_taps
from . import cache
from ._args import (DEFAULT_LAYERS, THREADS_MAX, ModelSpec, add_math_args, add_model_args, file_arg, float_in, int_in,
                    refuse_existing, threads_arg, write_new_file)
from .cache import cached_model_path, variant_path

SCALING_DEPTHS = (0, 5, 10, 17, 28)
# Bounds a 24 GB machine holds. Every backend keeps a batch's activations, inputs and outputs (VGG16 at
# 224²: ~80 MB an image), so 256 images at 224² is ~20 GB; sgemm holds three n x n fp32 matrices
# (16384: 3.2 GB, ~9 TFLOP a call, timed in every round). Beyond these a run is OOM-killed or never ends.
BATCH_MAX = 256
BATCH_WHY = "256 images at 224² need about 20 GB; more would not fit a 24 GB machine"
GEMM_MAX = 16384
GEMM_WHY = "three n x n fp32 matrices: 16384 needs 3.2 GB and ~9 TFLOP per timed call; far larger would not fit 24 GB"
ROUNDS_MAX = 10000


def register(sub) -> None:
    legend = "; ".join(f"{k}: {v}" for k, v in DESCRIPTIONS.items())
    p = sub.add_parser(
        "bench", help="time PyTorch hooks vs ONNX Runtime (and GPU providers), with the fp32 bound",
        description="Time every backend on the same random batches, interleaved (so ratios hold on a "
                    "noisy machine), after warm-up: median/p90/p99 latency and images/s per batch size, "
                    "ratio to torch-hooks, share of the machine's fp32 bound (sgemm GFLOP/s / FLOPs to the "
                    "deepest tap); then images/s as the deepest tap moves 0->5->10->17->28 and as more taps "
                    f"become outputs. Backends: {legend}. Unavailable ones are skipped with the reason. "
                    "Writes JSON (with an environment block), markdown and a PNG with -o.")
    add_model_args(p, weights_default=None, seed_default=None)  # None: from the .onnx metadata, else random/0
    p.add_argument("--batch-sizes", type=batch_sizes_arg, default=(1, 8),
                   help=f"comma list, each 1..{BATCH_MAX} (default: 1,8)")
    p.add_argument("--backends", default=",".join(BACKENDS),
                   help=f"comma list of {', '.join(BACKENDS)} (default: all)")
    p.add_argument("--repeats", type=int_in(1, ROUNDS_MAX, "--repeats"), default=5,
                   help=f"timed rounds per batch size, 1..{ROUNDS_MAX} (default: 5)")
    p.add_argument("--warmup", type=int_in(0, ROUNDS_MAX, "--warmup"), default=1,
                   help=f"untimed rounds first, 0..{ROUNDS_MAX} (default: 1)")
    p.add_argument("--threads", type=threads_arg, default=None,
                   help=f"intra-op threads for torch and ONNX Runtime, 1..{THREADS_MAX} (default: usable CPUs)")
    p.add_argument("--no-scaling", action="store_true", help="skip the depth / tap-count study")
    p.add_argument("--scaling-batch", type=int_in(1, BATCH_MAX, "--scaling-batch"), default=8,
                   help=f"batch size of the scaling study, 1..{BATCH_MAX} (default: 8)")
    p.add_argument("--scaling-repeats", type=int_in(1, ROUNDS_MAX, "--scaling-repeats"), default=None,
                   help="(default: --repeats)")
    p.add_argument("--compile-budget", type=float_in(0, None, "--compile-budget"), default=240.0,
                   help="seconds torch.compile may take for all batch sizes before it is skipped (default: 240)")
    p.add_argument("--extra-model", action="append", default=[], metavar="PATH.onnx",
                   help="also time another exported variant of the same model on ort-cpu (e.g. an int8 or "
                        "fp16 export); repeatable")
    p.add_argument("--torch-device", default="cpu", choices=("cpu", "cuda"),
                   help="device of the torch backends (default: cpu; cuda on a GPU machine)")
    add_math_args(p, math_mode=False)  # OpenVINO modes are backends here: openvino-cpu, openvino-cpu-f32
    p.add_argument("--gemm-size", type=int_in(1, GEMM_MAX, "--gemm-size", GEMM_WHY), default=2048,
                   help=f"matrix size for the sgemm bound, 1..{GEMM_MAX} (default: 2048)")
    p.add_argument("-o", "--output", type=output_arg, default=None,
                   help="write OUT.json, OUT.md and OUT.png (e.g. bench/results/NAME.json); none of the three "
                        "may exist (an existing file is never overwritten)")
    p.set_defaults(func=cmd_bench)


def batch_sizes_arg(spec: str) -> tuple[int, ...]:
    """``--batch-sizes 1,8``: a comma list of batch sizes, each ``1..BATCH_MAX``."""
    try:
        vals = tuple(int(s) for s in spec.split(",") if s.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"--batch-sizes must be a comma list of integers, got {spec!r}") from None
    if not vals or min(vals) < 1 or max(vals) > BATCH_MAX:
        raise argparse.ArgumentTypeError(f"--batch-sizes must be integers in 1..{BATCH_MAX} ({BATCH_WHY}), "
                                         f"got {spec!r}")
    return vals


def output_arg(text: str) -> str:
    """``-o OUT``: OUT.json, OUT.md and OUT.png are all new files in a writable folder."""
    file_arg(text)
    refuse_existing(_outputs(Path(text)), argparse.ArgumentTypeError, fix="remove it or name a new -o")
    return text


def _outputs(out: Path) -> tuple[Path, Path, Path]:
    """The three files ``-o OUT`` writes: OUT.json, OUT.md, OUT.png (OUT's own suffix replaced)."""
    return out.with_suffix(".json"), out.with_suffix(".md"), out.with_suffix(".png")


def check_batch_memory(batch_sizes, scaling_batch: int, input_size: int) -> None:
    """Batches scale with the input area: the largest must fit as BATCH_MAX images at 224² do."""
    biggest = max(*batch_sizes, scaling_batch)
    if biggest * input_size ** 2 > BATCH_MAX * 224 ** 2:
        fits = max(1, BATCH_MAX * 224 ** 2 // input_size ** 2)
        raise ArgumentError(f"batch size {biggest} at {input_size}² is too large ({BATCH_WHY}); at {input_size}² "
                            f"use batch sizes up to {fits}")


def _backend_names(spec: str) -> list[str]:
    names = [s.strip() for s in spec.split(",") if s.strip()]
    bad = [n for n in names if n not in BACKENDS]
    if bad or not names:
        raise ArgumentError(f"unknown backend {', '.join(bad) or spec!r}; choose from {', '.join(BACKENDS)}")
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:  # it would be built and timed twice, and its rows would collide
        raise ArgumentError(f"--backends names {', '.join(twice)} more than once; list each backend once")
    return names


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def export_cached(net, info, model: str, taps, input_size: int, *, logits: bool, folder: Path | None = None) -> Path:
    """Export ``net`` with ``taps`` into ``folder`` (default: the model cache), keyed by weights SHA-256, once."""
    path = cached_model_path(model, taps, info.sha256, input_size, logits=logits, kind="bench-", folder=folder)
    say = (f"exporting {model} taps {','.join(t.name.split('.')[-1] for t in taps)}"
           f"{' + logits' if logits else ''} at {input_size}² -> {path}")
    return cache.export_cached(path, taps, model=model, input_size=input_size, logits=logits, say=say, net=net,
                               weights_info=info)


def int8_cached(fp32_path: Path) -> Path | str:
    """The int8 variant of ``fp32_path`` (calibrated and gated, built once next to it), or the
    reason it could not be built."""
    path = variant_path(fp32_path, "int8")
    if not path.is_file():
        _say(f"quantizing {fp32_path.name} to int8 (calibration + per-tap gate) -> {path}")
        try:
            build_variant(fp32_path, path, precision="int8")
        except GateError as e:
            return f"int8 export failed its gate: {e}"
    return path


def _prepare(spec: ModelSpec):
    """(model name, taps, input size, net, WeightsInfo, cut model path) for --model."""
    if spec.is_file:
        path = Path(spec.model)
        if not path.is_file():
            raise ModelFileError(f"model file {spec.model!r} not found; pass a zoo name (vgg16) or an exported .onnx")
        record = read_model_record(path)
        net, info = load_reference_net(record, spec.weights)
        return record.model, record.taps, record.input_size, net, info, path
    taps = parse_taps(spec.layers or default_taps(spec.model, spec.input_size), spec.model, spec.input_size)
    spec = spec.with_weights_chosen()
    net, info = build_model(spec.model, spec.weights, spec.seed, need_classifier=True)
    return spec.model, taps, spec.input_size, net, info, None


def _scaling_exports(model, taps, net, info, input_size, full_path, folder: Path) -> list[tuple]:
    """(group, label, taps, path, full) for the scaling study, exported (once, cached)."""
    specs = [("depth", f"to features.{d}", str(d)) for d in SCALING_DEPTHS]
    specs += [("taps", "5 outputs 0,5,10,17,28", DEFAULT_LAYERS),
              ("taps", "29 outputs 0..28", ",".join(map(str, range(29))))]
    out = []
    for group, label, spec in specs:
        t = parse_taps(spec, model, input_size)
        out.append((group, label, t, export_cached(net, info, model, t, input_size, logits=False, folder=folder),
                    False))
    out.append(("full", f"full + logits ({len(taps)} taps)", taps, full_path, True))
    return out


def _scaling_models(exports, threads, max_batch):
    return [ScalingModel(group, label, t, make_ort(label, path, "cpu", threads=threads, max_batch=max_batch),
                         full=full) for group, label, t, path, full in exports]


def _build_backends(names, *, model, taps, net, info, input_size, cut_path, full_path, threads, batch_sizes,
                    compile_budget, device, tf32=True, gpu=0):

    max_batch = max(batch_sizes)
    # one --device: a GPU index for the ONNX Runtime GPU backends, a name for the OpenVINO ones
    ov_device, gpu = (gpu, None) if isinstance(gpu, str) else ("CPU", gpu)
    built = []
    for name in names:
        _say(f"building {name} ...")
        if name == "torch-hooks":
            built.append(B.make_torch_hooks(net, taps, device=device))
        elif name == "torch-cut":
            built.append(B.make_torch_cut(net, taps, device=device))
        elif name == "torch-compile":
            built.append(B.make_torch_compile(net, taps, batch_sizes=batch_sizes, input_size=input_size,
                                              budget_s=compile_budget, device=device))
        elif name == "ort-cpu":
            built.append(B.make_ort(name, cut_path, "cpu", threads=threads, max_batch=max_batch))
        elif name == "ort-cpu-full":
            built.append(B.make_ort(name, full_path, "cpu", threads=threads, max_batch=max_batch))
        elif name == "ort-cpu-int8":
            int8 = int8_cached(cut_path)
            built.append(B.make_ort(name, int8, "cpu", threads=threads, max_batch=max_batch)
                         if isinstance(int8, Path) else B.Skipped(name, int8))
        elif name in ("ort-cuda", "ort-cuda-device"):
            built.append(B.make_ort(name, cut_path, "cuda", max_batch=max_batch, tf32=tf32, device=gpu))
        elif name == "ort-tensorrt":
            built.append(B.make_ort(name, cut_path, "tensorrt", max_batch=max_batch, device=gpu))
        elif name in ("openvino-cpu", "openvino-cpu-f32"):
            built.append(B.make_openvino(name, cut_path, math_mode="fp32" if name.endswith("f32") else "default",
                                         threads=threads, device=ov_device))
        elif name == "openvino-cpu-async":
            built.append(B.make_openvino_async(name, cut_path, threads=threads, device=ov_device))
        elif name == "featuremaps-lanes":
            built.append(B.make_featuremaps_lanes(name, cut_path, threads=threads, device=ov_device,
                                                  max_batch=max_batch))
        if isinstance(built[-1], B.Skipped):
            _say(f"  skipped {name}: {built[-1].reason}")
    return built


def _extra_backends(paths, threads, max_batch, input_size):
    out = []
    for p in paths:  # each is a file (BenchOptions.from_args)
        record = read_model_record(p)
        if record.input_size != input_size:
            out.append(Skipped(f"ort-cpu:{Path(p).stem}", f"input size {record.input_size} != {input_size}"))
            continue
        name = f"ort-cpu-{record.precision}:{Path(p).stem}"
        out.append(make_ort(name, p, "cpu", threads=threads, max_batch=max_batch))
    return out


@dataclass(frozen=True)
class BenchOptions:
    """What ``bench`` times and how, read once from its options (``gpu``: ``--device``)."""

    backends: tuple[str, ...] = BACKENDS
    batch_sizes: tuple[int, ...] = (1, 8)
    repeats: int = 5
    warmup: int = 1
    threads: int | None = None
    scaling: bool = True
    scaling_batch: int = 8
    scaling_repeats: int | None = None
    compile_budget: float = 240.0
    extra_models: tuple[str, ...] = ()
    torch_device: str = "cpu"
    gpu: int | str | None = None
    tf32: bool = True
    gemm_size: int = 2048
    output: Path | None = None

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> "BenchOptions":
        """The options, ``--backends`` parsed and each ``--extra-model`` file found now, before any export."""
        for path in args.extra_model:
            if not Path(path).is_file():
                raise ModelFileError(f"--extra-model {path!r} not found")
        return cls(backends=tuple(_backend_names(args.backends)), batch_sizes=tuple(args.batch_sizes),
                   repeats=args.repeats, warmup=args.warmup, threads=args.threads, scaling=not args.no_scaling,
                   scaling_batch=args.scaling_batch, scaling_repeats=args.scaling_repeats,
                   compile_budget=args.compile_budget, extra_models=tuple(args.extra_model),
                   torch_device=args.torch_device, gpu=args.device, tf32=not args.no_tf32,
                   gemm_size=args.gemm_size, output=Path(args.output) if args.output else None)


def cmd_bench(args: argparse.Namespace) -> int:
    """Runs the bench with its exports in a temporary folder removed afterwards: bench leaves
    nothing in the model cache (a full VGG16 with logits is 553 MB)."""
    require("torch", extra="export", what="featuremaps bench (the PyTorch baselines)")
    opts, spec = BenchOptions.from_args(args), ModelSpec.from_args(args)
    with tempfile.TemporaryDirectory(prefix="featuremaps-bench-") as tmp:
        return _run_bench(spec, opts, Path(tmp))


def _run_bench(spec: ModelSpec, opts: BenchOptions, export_dir: Path) -> int:
    import torch

    batch_sizes, names = opts.batch_sizes, list(opts.backends)
    threads = opts.threads or (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count())
    torch.set_num_threads(threads)
    t_start = time.perf_counter()
    model, taps, input_size, net, info, cut_path = _prepare(spec)
    check_batch_memory(batch_sizes, opts.scaling_batch, input_size)
    cfg = BenchConfig(batch_sizes=batch_sizes, repeats=opts.repeats, warmup=opts.warmup, input_size=input_size,
                      threads=threads, scaling_batch=opts.scaling_batch,
                      scaling_repeats=opts.scaling_repeats or opts.repeats)
    if cut_path is None:
        cut_path = export_cached(net, info, model, taps, input_size, logits=False, folder=export_dir)
    needs_full = "ort-cpu-full" in names or opts.scaling
    full_path = (export_cached(net, info, model, taps, input_size, logits=True, folder=export_dir)
                 if needs_full else None)
    exports = (_scaling_exports(model, taps, net, info, input_size, full_path, export_dir)
               if opts.scaling else None)
    cuda = opts.torch_device == "cuda"
    if cuda:  # after every export: the exporter traces on the CPU
        if not torch.cuda.is_available():
            raise ArgumentError("--torch-device cuda needs a CUDA build of torch and a GPU; use --torch-device cpu")
        net = net.to("cuda")
    _say(f"sgemm {opts.gemm_size}² ...")
    gemm_before = sgemm_gflops(opts.gemm_size, torch_threads=threads, cuda=cuda)
    backends = _build_backends(names, model=model, taps=taps, net=net, info=info, input_size=input_size,
                               cut_path=cut_path, full_path=full_path, threads=threads,
                               batch_sizes=batch_sizes, compile_budget=opts.compile_budget,
                               device=opts.torch_device, tf32=opts.tf32, gpu=opts.gpu)
    backends += _extra_backends(opts.extra_models, threads, max(batch_sizes), input_size)
    for i, b in enumerate(backends):
        if not isinstance(b, Backend):
            continue
        _say(f"first calls: {b.name}")
        try:
            measure_first_calls(b, batch_sizes, input_size)
        except Exception as e:  # noqa: BLE001 - one broken backend must not sink the whole run
            msg = str(e).strip().splitlines()[0][:200] if str(e).strip() else ""
            backends[i] = Skipped(b.name, f"failed on its first batch: {type(e).__name__}: {msg}")
            _say(f"  skipped {b.name}: {backends[i].reason}")
    ready = [b for b in backends if isinstance(b, Backend)]
    # an sgemm per library joins every interleaved round: the bound sees the same load
    probes = {lib: gemm_probe(lib, opts.gemm_size, threads=threads) for lib in gemm_before.by_library}
    times = time_backends(ready, batch_sizes, input_size=input_size, warmup=opts.warmup, repeats=opts.repeats,
                          progress=_say, gemm_probes=probes) if ready else {}
    scaling = None
    if opts.scaling:
        models = _scaling_models(exports, threads, max(opts.scaling_batch, 1))
        scaling = run_scaling(models, batch=opts.scaling_batch, input_size=input_size, warmup=opts.warmup,
                              repeats=cfg.scaling_repeats, gemm=gemm_before, progress=_say, gemm_probes=probes)
    gemm_after = sgemm_gflops(opts.gemm_size, torch_threads=threads, cuda=cuda)
    gemm = max(gemm_before, gemm_after, key=lambda g: g.gflops)
    result = assemble(cfg=cfg, model=model, taps=taps, weights=info.to_dict(), env=environment(threads),
                      gemm=gemm, backends=backends, times=times, scaling=scaling)
    result["gemm"]["runs_gflops"] = [gemm_before.gflops, gemm_after.gflops]
    result["gemm"]["interleaved_libraries"] = list(probes)
    result["wall_s"] = time.perf_counter() - t_start
    md = format_markdown(result)
    print(md)
    if opts.output:
        _write(result, md, opts.output)
    return 0


def _write(result: dict, md: str, out: Path) -> None:
    """Write OUT.json, OUT.md, OUT.png, each a new file (never over one that appeared meanwhile)."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    json_path, md_path, png_path = _outputs(out)
    png = io.BytesIO()
    throughput_figure(result).savefig(png, format="png", dpi=110)
    write_new_file(json_path, json.dumps(json_ready(result), indent=2, allow_nan=False))
    write_new_file(md_path, md)
    write_new_file(png_path, png.getvalue())
    print(f"wrote {json_path}, {md_path}, {png_path}")
