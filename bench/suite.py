"""The benchmark suite: interleaved backends per batch size, the fp32 bound, depth and tap-count
scaling, assembled into one JSON-ready dict, and its markdown rendering.

Nothing here prints or writes files; :mod:`featuremaps.cmd_bench` does.
"""

from __future__ import annotations

import datetime as _dt
import logging
import os
import platform
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ..contracts import Tap
from ..engine.layouts import pixels_to_float
from ..engine.preprocess import Preprocessing
from ..engine.cpu_features import cpu_features
from .backends import Backend, Skipped
from .stats import bound_images_per_s, ratio, summarize_latency
from .timing import GEMM_KEY, GemmRate, interleaved

log = logging.getLogger(__name__)

BASELINE = "torch-hooks"
FORMAT = "featuremaps-bench/1"


@dataclass(frozen=True)
class BenchConfig:
    batch_sizes: tuple[int, ...] = (1, 8)
    repeats: int = 5
    warmup: int = 1
    input_size: int = 224
    threads: int | None = None
    scaling_batch: int = 8
    scaling_repeats: int = 5

    def to_dict(self) -> dict:
        return {"batch_sizes": list(self.batch_sizes), "repeats": self.repeats, "warmup": self.warmup,
                "input_size": self.input_size, "threads": self.threads,
                "scaling_batch": self.scaling_batch, "scaling_repeats": self.scaling_repeats}


@dataclass
class ScalingModel:
    """One exported variant for the scaling study: a ready ORT backend and its taps."""

    group: str  # "depth" or "taps" or "full"
    label: str
    taps: tuple[Tap, ...]
    backend: Backend | Skipped
    full: bool = False


def flops_per_image(taps: tuple[Tap, ...], *, full: bool = False) -> float:
    """FLOPs (2 x MACs, convolutions and classifier) to compute ``taps`` (or the whole network)."""
    deepest = max(taps, key=lambda t: t.index)
    return 2.0 * (deepest.total_macs if full else deepest.macs)


def output_bytes_per_image(taps: tuple[Tap, ...]) -> int:
    """fp32 bytes of all tap outputs for one image."""
    return int(sum(4 * int(np.prod(t.shape)) for t in taps))


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _cpu_flags() -> list[str]:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = line.split(":", 1)[1].split()
                    return sorted(f for f in flags if f.startswith(("avx", "fma", "amx")))
    except OSError:
        pass
    return []


def _version(mod: str) -> str | None:
    try:
        from importlib.metadata import version

        return version(mod)
    except Exception:  # noqa: BLE001 - not installed
        return None


def environment(threads: int | None) -> dict:
    """What the numbers were measured on: CPU, cores, threads, GPU, library versions, date."""
    import onnxruntime as ort

    gpu = None
    try:
        import torch

        if torch.cuda.is_available():
            gpu = torch.cuda.get_device_name(0)
        torch_threads = torch.get_num_threads()
    except ImportError:
        torch_threads = None
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {"date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "cpu": _cpu_name(), "cpu_flags": _cpu_flags(), "logical_cpus": os.cpu_count(),
            "cpu_features": cpu_features().to_dict(),  # AMX / AVX-512 / bf16 / VNNI: why CPU numbers differ
            "usable_cpus": affinity, "threads": threads, "torch_threads": torch_threads,
            "load_avg": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
            "gpu": gpu, "platform": platform.platform(), "python": platform.python_version(),
            "versions": {m: _version(m) for m in ("featuremaps", "numpy", "torch", "torchvision",
                                                  "onnx", "onnxruntime", "onnxruntime-gpu", "opencv-python-headless",
                                                  "openvino")},
            "ort_providers": ort.get_available_providers()}


def _batches(batch_sizes, input_size: int) -> dict[int, np.ndarray]:
    """Seeded random 8-bit pixels per batch size, normalized to ``(b, 3, H, W) float32``: every
    backend gets the same tensor, and uint8-input models represent it exactly."""
    rng = np.random.default_rng(0)
    pre = Preprocessing(size=(input_size, input_size))
    return {b: pixels_to_float(rng.integers(0, 256, (b, input_size, input_size, 3), dtype=np.uint8), pre)
            for b in batch_sizes}


def time_backends(backends: list[Backend], batch_sizes, *, input_size: int, warmup: int, repeats: int,
                  progress: Callable[[str], None] | None = None,
                  gemm_probes: dict[str, Callable[[], object]] | None = None) -> dict[int, dict[str, list[float]]]:
    """Per batch size, every backend timed interleaved. Returns batch -> name -> seconds.

    ``gemm_probes`` (library -> one fixed-size sgemm) join the rounds under ``GEMM_KEY + library``,
    so the bound is measured under the same load as the backends it judges."""
    data = _batches(batch_sizes, input_size)
    out = {}
    for b in batch_sizes:
        fns = {be.name: (lambda be=be, x=data[b]: be.run(x)) for be in backends}
        fns.update({GEMM_KEY + lib: fn for lib, fn in (gemm_probes or {}).items()})
        cb = (lambda d, n, b=b: progress(f"batch {b}: round {d}/{n}")) if progress else None
        out[b] = interleaved(fns, warmup=warmup, repeats=repeats, on_round=cb)
    return out


def _backend_flops(name: str, taps: tuple[Tap, ...]) -> float:
    # torch-hooks and ort-cpu-full run the classifier too; every other backend stops at the deepest tap
    return flops_per_image(taps, full=name in ("torch-hooks", "ort-cpu-full"))


def interleaved_gflops(times: dict[str, list[float]], gemm_size: int) -> float | None:
    """GFLOP/s of the sgemm probes timed among the backends, or None without any.

    The *fastest* probe of the fastest library, not a median: a bound is what the machine can
    do, and the best sgemm of these rounds is the least disturbed measurement of it under this
    run's load."""
    best = [float(np.min(t)) for k, t in times.items() if k.startswith(GEMM_KEY) and t]
    return 2.0 * gemm_size ** 3 / min(best) / 1e9 if best else None


def summarize_main(times: dict[int, dict[str, list[float]]], taps: tuple[Tap, ...], gemm: GemmRate) -> list[dict]:
    """Rows: backend, batch, latency summary, img/s, ratio to torch-hooks, share of the bound.

    The bound at each batch size uses the best sgemm rate seen: measured alone (``gemm``) or
    interleaved with that batch size's backends (same load), whichever is higher: a bound must
    not be lowered by a noisy neighbour."""
    rows = []
    flops = flops_per_image(taps)
    for b, per in times.items():
        g = max(interleaved_gflops(per, gemm.size) or 0.0, gemm.gflops)
        bound_img_s = bound_images_per_s(g, flops)
        summaries = {name: summarize_latency(t, b) for name, t in per.items() if not name.startswith(GEMM_KEY)}
        base = summaries.get(BASELINE)
        for name, s in summaries.items():
            rows.append(dict(s.to_dict(), backend=name,
                             vs_torch_hooks=ratio(s.images_per_s, base.images_per_s if base else None),
                             bound_share=ratio(s.images_per_s, bound_img_s), bound_images_per_s=bound_img_s,
                             gemm_gflops=g,
                             achieved_gflops=s.images_per_s * _backend_flops(name, taps) / 1e9))
    return rows


def run_scaling(models: list[ScalingModel], *, batch: int, input_size: int, warmup: int, repeats: int,
                gemm: GemmRate, progress: Callable[[str], None] | None = None,
                gemm_probes: dict[str, Callable[[], object]] | None = None) -> dict:
    """Images/s of each variant at ``batch``, interleaved: depth of the deepest tap, number of tap
    outputs, and the full network, each with its bound and speed relative to the full graph."""
    ready = [m for m in models if isinstance(m.backend, Backend)]
    x = _batches((batch,), input_size)[batch]
    fns = {m.label: (lambda m=m: m.backend.run(x)) for m in ready}
    if fns:
        fns.update({GEMM_KEY + lib: fn for lib, fn in (gemm_probes or {}).items()})
    cb = (lambda d, n: progress(f"scaling: round {d}/{n}")) if progress else None
    times = interleaved(fns, warmup=warmup, repeats=repeats, on_round=cb) if fns else {}
    full = next((m for m in ready if m.full), None)
    full_rate = summarize_latency(times[full.label], batch).images_per_s if full else None
    g = max(interleaved_gflops(times, gemm.size) or 0.0, gemm.gflops)
    rows = []
    for m in models:
        row = {"group": m.group, "label": m.label, "taps": [t.name for t in m.taps],
               "deepest": max(m.taps, key=lambda t: t.index).name, "outputs": len(m.taps),
               "flops_per_image": flops_per_image(m.taps, full=m.full),
               "output_mb_per_image": output_bytes_per_image(m.taps) / 1e6}
        if isinstance(m.backend, Skipped):
            rows.append(dict(row, skipped=m.backend.reason))
            continue
        s = summarize_latency(times[m.label], batch)
        bound = bound_images_per_s(g, row["flops_per_image"])
        rows.append(dict(row, **s.to_dict(), vs_full=ratio(s.images_per_s, full_rate),
                         bound_images_per_s=bound, bound_share=ratio(s.images_per_s, bound)))
    return {"batch": batch, "repeats": repeats, "gemm_gflops": g, "rows": rows}


def assemble(*, cfg: BenchConfig, model: str, taps: tuple[Tap, ...], weights: dict, env: dict,
             gemm: GemmRate, backends: list[Backend | Skipped], times, scaling: dict | None) -> dict:
    """The whole result as a JSON-ready dict (see ``bench/results/*.json``)."""
    flops = flops_per_image(taps)
    bound = bound_images_per_s(gemm.gflops, flops)
    rows = summarize_main(times, taps, gemm) if times else []
    result = {
        "format": FORMAT, "environment": env, "config": cfg.to_dict(),
        "model": {"name": model, "taps": [t.name for t in taps],
                  "deepest": max(taps, key=lambda t: t.index).name, "input_size": cfg.input_size,
                  "flops_per_image": flops, "full_flops_per_image": flops_per_image(taps, full=True),
                  "weights": weights},
        "gemm": gemm.to_dict(),
        "bound": {"images_per_s": bound, "full_images_per_s": bound_images_per_s(
            gemm.gflops, flops_per_image(taps, full=True)),
            "definition": "sgemm GFLOP/s / FLOPs per image up to the deepest tap (2 x conv MACs); per "
                          "batch size the sgemm timed interleaved with the backends (results[].gemm_gflops)"},
        "backends": [b.to_dict() for b in backends],
        "results": rows, "scaling": scaling,
    }
    result["headline"] = headline(result)
    return result


def json_ready(obj):
    """``obj`` with non-finite floats (a ratio without a baseline) as ``None``: strict JSON has no NaN."""
    if isinstance(obj, dict):
        return {k: json_ready(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_ready(v) for v in obj]
    if isinstance(obj, (float, np.floating)):
        return float(obj) if np.isfinite(obj) else None
    if isinstance(obj, np.integer):
        return int(obj)
    return obj


def _row(result: dict, backend: str, batch: int) -> dict | None:
    return next((r for r in result["results"] if r["backend"] == backend and r["batch"] == batch), None)


def headline(result: dict) -> dict:
    """The README numbers: at the batch size nearest 8, ort-cpu vs torch-hooks and vs the bound,
    and taps up to features.10 vs the full network."""
    sizes = result["config"]["batch_sizes"]
    b = min(sizes, key=lambda s: abs(s - 8)) if sizes else None
    ort, hooks = (_row(result, "ort-cpu", b), _row(result, BASELINE, b)) if b else (None, None)
    out = {"batch": b,
           "ort_cpu_images_per_s": ort["images_per_s"] if ort else None,
           "torch_hooks_images_per_s": hooks["images_per_s"] if hooks else None,
           "ort_cpu_vs_torch_hooks": ort["vs_torch_hooks"] if ort and hooks else None,
           "ort_cpu_bound_share": ort["bound_share"] if ort else None,
           "bound_images_per_s": ort["bound_images_per_s"] if ort else result["bound"]["images_per_s"]}
    rows = (result.get("scaling") or {}).get("rows", [])
    d10 = next((r for r in rows if r["group"] == "depth" and r["deepest"] == "features.10"
                and "vs_full" in r), None)
    out["taps_to_features10_vs_full"] = d10["vs_full"] if d10 else None
    return out


# ---------------------------------------------------------------- markdown


def _f(x, fmt: str) -> str:
    return "–" if x is None or (isinstance(x, float) and not np.isfinite(x)) else format(x, fmt)


def _cpu_line(cpu: dict) -> str:
    yes = lambda k: "yes" if cpu.get(k) else "no"  # noqa: E731
    return (f"CPU matrix units: AMX {yes('amx')} · AVX-512 {yes('avx512')} · bf16 {yes('bf16')} · "
            f"VNNI {yes('vnni')} (flags: {', '.join(cpu.get('flags', [])) or 'unknown'})")


def format_markdown(result: dict) -> str:
    """Markdown tables: environment, bound, per backend and batch, scaling, skipped backends."""
    env, m, g = result["environment"], result["model"], result["gemm"]
    cfg = result["config"]
    lines = [f"# featuremaps bench: {m['name']} taps {', '.join(m['taps'])} at {m['input_size']}²", "",
             f"{env['date']} · {env['cpu']} · {env['usable_cpus']} CPUs · threads {env['threads'] or 'default'}"
             f" · torch {env['versions'].get('torch')} · onnxruntime "
             f"{env['versions'].get('onnxruntime-gpu') or env['versions'].get('onnxruntime')}"
             + (f" · GPU {env['gpu']}" if env.get("gpu") else ""), "",
             *([_cpu_line(env["cpu_features"]), ""] if env.get("cpu_features") else []),
             f"fp32 bound: sgemm {g['size']}² best {g['gflops']:.1f} GFLOP/s before/after "
             f"({', '.join(f'{k} {v:.1f}' for k, v in g['by_library'].items())}) / "
             f"{m['flops_per_image'] / 1e9:.1f} GFLOP per image to {m['deepest']} = "
             f"**{result['bound']['images_per_s']:.2f} img/s** "
             f"(full network {m['full_flops_per_image'] / 1e9:.1f} GFLOP: "
             f"{result['bound']['full_images_per_s']:.2f} img/s)", "",
             f"Warm-up {cfg['warmup']} round(s), {cfg['repeats']} interleaved repeats per batch size; "
             "latency per batch; img/s from the median; percentiles over few repeats are close to the max. "
             "The bound per batch size uses the best sgemm seen (alone before/after, or in the same interleaved "
             "rounds).", "",
             "| backend | batch | median ms | p90 ms | p99 ms | img/s | vs torch-hooks | bound img/s | share of bound "
             "| GFLOP/s |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in sorted(result["results"], key=lambda r: (r["batch"], -r["images_per_s"])):
        lines.append(f"| {r['backend']} | {r['batch']} | {r['median_s'] * 1e3:.1f} | {r['p90_s'] * 1e3:.1f} | "
                     f"{r['p99_s'] * 1e3:.1f} | {r['images_per_s']:.2f} | {_f(r['vs_torch_hooks'], '.2f')}x | "
                     f"{r['bound_images_per_s']:.2f} | "
                     f"{_f(r['bound_share'], '.0%')} | {r['achieved_gflops']:.1f} |")
    once = [b for b in result["backends"] if b.get("first_call_s")]
    if once:
        lines += ["", "First call per batch size (compilation, engine build, allocations), not in the steady state:",
                  ""]
        for b in once:
            calls = ", ".join(f"batch {k}: {v:.2f} s" for k, v in b["first_call_s"].items())
            lines.append(f"- {b['name']}: setup {b['setup_s']:.2f} s; {calls}")
    sc = result.get("scaling")
    if sc:
        lines += ["", f"## Scaling (ort-cpu, batch {sc['batch']}, {sc['repeats']} interleaved repeats, "
                      f"sgemm {sc.get('gemm_gflops') or 0:.1f} GFLOP/s in the same rounds)", "",
                  "| variant | deepest | outputs | GFLOP/img | output MB/img | img/s | vs full | bound img/s | share |",
                  "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
        for r in sc["rows"]:
            if "skipped" in r:
                lines.append(f"| {r['label']} | {r['deepest']} | {r['outputs']} | – | – | skipped: {r['skipped']} "
                             "| | | |")
                continue
            lines.append(f"| {r['label']} | {r['deepest']} | {r['outputs']} | {r['flops_per_image'] / 1e9:.2f} | "
                         f"{r['output_mb_per_image']:.1f} | {r['images_per_s']:.2f} | {_f(r['vs_full'], '.2f')}x | "
                         f"{r['bound_images_per_s']:.2f} | {_f(r['bound_share'], '.0%')} |")
    skipped = [b for b in result["backends"] if "skipped" in b]
    if skipped:
        lines += ["", "Skipped:", ""] + [f"- {b['name']}: {b['skipped']}" for b in skipped]
    h = result["headline"]
    if h.get("ort_cpu_vs_torch_hooks") is not None:
        lines += ["", f"**Headline (batch {h['batch']}):** ort-cpu {h['ort_cpu_images_per_s']:.2f} img/s = "
                      f"{h['ort_cpu_vs_torch_hooks']:.2f}x torch-hooks, "
                      f"{h['ort_cpu_bound_share']:.0%} of the fp32 bound"
                  + (f"; taps up to features.10 run {h['taps_to_features10_vs_full']:.2f}x the full network"
                     if h.get("taps_to_features10_vs_full") else "") + "."]
    return "\n".join(lines) + "\n"
