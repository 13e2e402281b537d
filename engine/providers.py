"""The execution-provider table: one record per ONNX Runtime provider the engine knows.

Each :class:`ProviderSpec` says what the provider is called here and in ONNX Runtime, how to
tell cheaply whether it can run on this machine (``probe``: no session is built), and how
to build its provider options (``options``). The CLI's ``--provider`` choices, ``auto``'s
order and :func:`featuremaps.engine.session.make_session` all read this one table, so a new
provider is one more record here. A record whose ``backend`` is not ``onnxruntime`` is run by
its own session class: ``openvino`` (engine/openvino_backend.py) reads the same ``.onnx`` with
OpenVINO; it has no ONNX Runtime name and ``auto`` never picks it (``--fast`` may, see
engine/choice.py).

Math modes (what arithmetic the convolutions run in) are decided here too, because they
depend on provider + model precision + the caller's ``tf32`` wish: the CUDA provider runs
fp32 convolutions on TF32 tensor cores unless ``use_tf32=0``, as PyTorch and TensorFlow do
by default; strict fp32 costs 4.2x on an H200 (measured before this change).
"""

from __future__ import annotations

import ctypes
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..errors import ArgumentError
from .cache_home import tensorrt_root
from .gpu_libs import find_tensorrt, gpu_info, preload, tensorrt_version
from .hashing import file_sha256
from .openvino_backend import unavailable_reason as _probe_openvino
from .validate import ModelRecord

MATH_MODES = ("fp32", "tf32", "fp16", "bf16", "int8")  # bf16: OpenVINO on CPUs with bf16 units


@dataclass(frozen=True)
class OptionRequest:
    """What the caller asks of a provider; each provider's builder takes what it understands.

    ``input_dims`` is the per-image input shape (``(3, H, W)`` float NCHW or ``(H, W, 3)`` uint8
    NHWC), used by TensorRT's shape profile. ``tf32`` only matters for fp32 models on CUDA.
    ``model_path`` may be the file's :class:`ModelRecord`: TensorRT's cache key then reuses its hash.
    """

    model_path: str | Path | ModelRecord | None = None
    input_name: str = "input"
    input_dims: tuple[int, int, int] = (3, 224, 224)
    max_batch: int = 32
    opt_batch: int = 8
    fp16: bool = False
    device_id: int = 0
    tf32: bool = True
    cudnn_conv_algo_search: str = "EXHAUSTIVE"
    gpu_mem_limit: int | None = None  # bytes CUDA's arena may hold (None: the device's memory)


@dataclass(frozen=True)
class ProviderSpec:
    """One execution provider: short ``name``, ONNX Runtime ``ort_name``, ``probe() -> reason or
    None`` (why it cannot run here), ``options(OptionRequest) -> dict``, ``auto_rank`` (lower is
    tried first by ``auto``; None: never tried by ``auto``), ``gpu`` (runs on a device id),
    ``backend`` (``onnxruntime``, or ``openvino``: built as an OpenVINO session, device by name)."""

    name: str
    ort_name: str
    probe: Callable[[], str | None]
    options: Callable[[OptionRequest], dict]
    auto_rank: int | None
    gpu: bool = False
    backend: str = "onnxruntime"


def _loadable(*names: str) -> bool:
    for name in names:
        try:
            ctypes.CDLL(name)
            return True
        except OSError:
            continue
    return False


def _ort_has(ort_name: str) -> str | None:
    import onnxruntime as ort

    if ort_name not in ort.get_available_providers():
        return f"this onnxruntime build has no {ort_name} (install onnxruntime-gpu)"
    return None


def _probe_cpu() -> str | None:
    return None


def _probe_cuda() -> str | None:
    # onnxruntime-gpu lists CUDA even without a GPU; check for the driver before a session
    # tries (and logs a wall of library-loading errors).
    reason = _ort_has("CUDAExecutionProvider")
    if reason is None and not _loadable("libcuda.so.1", "nvcuda.dll"):
        reason = "no NVIDIA driver (libcuda not found)"
    return reason


def _probe_tensorrt() -> str | None:
    """CUDA's probe, then TensorRT's libraries: found in pip's ``tensorrt_libs`` folder or the
    loader's path and preloaded by path (engine/gpu_libs.py), so the session finds them."""
    return _ort_has("TensorrtExecutionProvider") or _probe_cuda() or preload(find_tensorrt())


def _cpu_options(req: OptionRequest) -> dict:
    return {}


def _no_ort_options(req: OptionRequest) -> dict:
    return {}  # not an ONNX Runtime provider: its session takes device and math mode itself


def _cuda_options(req: OptionRequest) -> dict:
    """CUDA: device, cuDNN algorithm search (``EXHAUSTIVE`` pays once per input shape and is
    fastest in steady state), TF32 per the math mode, and ``prefer_nhwc=1`` (cuDNN's NHWC conv
    kernels; measured +19-21% on an H200 before this change). Values are strings: ONNX Runtime
    parses provider options from strings (an int flag given as ``True`` would not parse).
    ``gpu_mem_limit`` caps the CUDA arena (``FEATUREMAPS_MODEL_MEMORY``, when set)."""
    opts = {"device_id": str(int(req.device_id)), "cudnn_conv_algo_search": req.cudnn_conv_algo_search,
            "do_copy_in_default_stream": "1", "use_tf32": "1" if req.tf32 else "0", "prefer_nhwc": "1"}
    if req.gpu_mem_limit:
        opts["gpu_mem_limit"] = str(int(req.gpu_mem_limit))
    return opts


def cache_dir_for(model_path: str | Path | ModelRecord, key: str = "", *, device_id: int = 0) -> Path:
    """TensorRT engine/timing cache folder in the featuremaps cache (``tensorrt/<digest>``), keyed by
    the model's content, ``key`` (shape profile, precision), the GPU's name and the TensorRT
    version: an engine built for one GPU or TensorRT release is never loaded by another, and a
    model in a read-only folder still gets a cache.

    The model hash covers the graph, weights and taps (they are graph outputs); exports are
    byte-reproducible, so a re-export of the same model reuses its engine. Given the model's
    :class:`ModelRecord`, the hash it holds is used (a run hashes its model file once).
    """
    gpus = gpu_info().devices
    gpu = gpus[device_id][0] if device_id < len(gpus) else "no-gpu"
    trt = tensorrt_version(find_tensorrt()) or "unknown"
    model = model_path.sha256 if isinstance(model_path, ModelRecord) else file_sha256(model_path)
    digest = hashlib.sha256(f"{model}|{key}|gpu={gpu}|tensorrt={trt}".encode()).hexdigest()
    return tensorrt_root() / digest[:16]


def _tensorrt_options(req: OptionRequest) -> dict:
    """TensorRT: an explicit min/opt/max batch profile and on-disk engine and timing caches keyed
    by model hash, profile and precision (the minutes-long engine build happens once per model)."""
    dims = "x".join(str(d) for d in req.input_dims)
    shapes = {k: f"{req.input_name}:{b}x{dims}" for k, b in
              (("min", 1), ("opt", req.opt_batch), ("max", req.max_batch))}
    opts = {"device_id": req.device_id, "trt_fp16_enable": req.fp16,
            "trt_profile_min_shapes": shapes["min"], "trt_profile_opt_shapes": shapes["opt"],
            "trt_profile_max_shapes": shapes["max"]}
    if req.model_path is not None:
        cache = str(cache_dir_for(req.model_path, f"{shapes}|fp16={req.fp16}", device_id=int(req.device_id)))
        opts.update({"trt_engine_cache_enable": True, "trt_engine_cache_path": cache,
                     "trt_timing_cache_enable": True, "trt_timing_cache_path": cache})
    return opts


PROVIDER_TABLE: dict[str, ProviderSpec] = {
    spec.name: spec for spec in (
        ProviderSpec("tensorrt", "TensorrtExecutionProvider", _probe_tensorrt, _tensorrt_options, 10, gpu=True),
        ProviderSpec("cuda", "CUDAExecutionProvider", _probe_cuda, _cuda_options, 20, gpu=True),
        ProviderSpec("cpu", "CPUExecutionProvider", _probe_cpu, _cpu_options, 100),
        ProviderSpec("openvino", "", _probe_openvino, _no_ort_options, None, backend="openvino"),
    )
}


def provider_names() -> tuple[str, ...]:
    """Every provider the table knows, in ``auto`` order (the CLI's ``--provider`` choices)."""
    ranked = sorted(PROVIDER_TABLE.values(), key=lambda s: (s.auto_rank is None, s.auto_rank or 0))
    return tuple(s.name for s in ranked)


def ort_provider_names() -> tuple[str, ...]:
    """The providers ONNX Runtime itself runs (``backend == "onnxruntime"``), in ``auto`` order."""
    return tuple(n for n in provider_names() if PROVIDER_TABLE[n].backend == "onnxruntime")


def auto_order() -> tuple[str, ...]:
    """Providers ``auto`` tries, best first."""
    return tuple(n for n in provider_names() if PROVIDER_TABLE[n].auto_rank is not None)


def spec_for(name: str) -> ProviderSpec:
    """The record for ``name``; an unknown name is an :class:`ArgumentError` listing the choices."""

    try:
        return PROVIDER_TABLE[name]
    except KeyError:
        raise ArgumentError(f"unknown provider {name!r}; use one of auto, {', '.join(provider_names())}") from None


def short_name(ort_name: str) -> str:
    """``CUDAExecutionProvider`` -> ``cuda`` (the ONNX Runtime name itself if not in the table)."""
    return next((s.name for s in PROVIDER_TABLE.values() if s.ort_name == ort_name), ort_name)


def math_mode(provider: str, precision: str, *, tf32: bool = True) -> str:
    """The arithmetic a session runs in: ``fp32``, ``tf32``, ``fp16`` or ``int8``.

    ``precision`` is the model's (its metadata ``precision``). fp16 and int8 models run in their
    own precision everywhere; an fp32 model runs TF32 on CUDA unless ``tf32=False``, strict fp32
    elsewhere. TensorRT allows TF32 by default and ONNX Runtime's TensorRT provider has no option
    to forbid it, so an fp32 model on TensorRT is tf32 whatever ``tf32`` says.
    """
    if provider == "openvino":
        raise ValueError("OpenVINO reports its math mode from the compiled model (OpenVINOSession.info)")
    if precision in ("fp16", "int8"):
        return precision
    if precision != "fp32":
        raise ValueError(f"unknown model precision {precision!r}; expected fp32, fp16 or int8")
    if provider == "tensorrt":
        return "tf32"
    return "tf32" if tf32 and provider == "cuda" else "fp32"
