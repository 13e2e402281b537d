"""Build ONNX Runtime sessions: provider choice, provider options, quiet fallback.

Building is separate from running (:mod:`featuremaps.engine.extractor` runs). onnxruntime-gpu
lists the CUDA and TensorRT providers as *available* even on machines without a GPU and
then logs a wall of red library-loading errors when a session asks for them. We check
for the libraries first, keep ONNX Runtime's own logging at ERROR, and report in one
line what was used and why anything was skipped.
"""

from __future__ import annotations

import ctypes
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from .hashing import file_sha256
from ..errors import ProviderError

log = logging.getLogger(__name__)

PROVIDERS = {"tensorrt": "TensorrtExecutionProvider", "cuda": "CUDAExecutionProvider",
             "cpu": "CPUExecutionProvider"}
_AUTO_ORDER = ("tensorrt", "cuda", "cpu")
_ORT_LOG_ERROR = 3


@dataclass(frozen=True)
class SessionInfo:
    """What :func:`make_session` chose: ``provider`` short name and a one-line ``note``."""

    provider: str
    note: str


def _loadable(*names: str) -> bool:
    for name in names:
        try:
            ctypes.CDLL(name)
            return True
        except OSError:
            continue
    return False


def provider_unavailable_reason(provider: str) -> str | None:
    """Why ``provider`` cannot run here, or None if it should (cheap: no session is built)."""
    import onnxruntime as ort

    if provider == "cpu":
        return None
    if PROVIDERS[provider] not in ort.get_available_providers():
        return f"this onnxruntime build has no {PROVIDERS[provider]} (install onnxruntime-gpu)"
    if not _loadable("libcuda.so.1", "nvcuda.dll"):
        return "no NVIDIA driver (libcuda not found)"
    if provider == "tensorrt" and not _loadable(*(f"libnvinfer.so.{v}" for v in (10, 11, 9, 8)),
                                                "nvinfer_10.dll"):
        return "TensorRT libraries (libnvinfer) not found"
    return None


def cache_dir_for(model_path: str | Path, key: str = "") -> Path:
    """TensorRT engine/timing cache folder next to the model, keyed by model content + ``key``.

    The model hash covers the graph, weights and the taps (they are graph outputs); ``key``
    carries what else changes the engine (shape profile, precision).
    """
    digest = file_sha256(model_path, key.encode())
    return Path(model_path).with_suffix("").parent / "trt-cache" / digest[:16]


def provider_options(provider: str, *, model_path: str | Path | None = None, input_name: str = "input",
                     input_shape: tuple[int, int, int] = (3, 224, 224), max_batch: int = 32,
                     opt_batch: int = 8, fp16: bool = False, device_id: int = 0,
                     cudnn_conv_algo_search: str = "EXHAUSTIVE") -> dict:
    """Provider options for ``provider`` (``cpu``, ``cuda``, ``tensorrt``).

    TensorRT gets an explicit min/opt/max batch profile and on-disk engine and timing
    caches keyed by model hash, profile and precision, so the (minutes-long) engine build
    happens once per model. CUDA gets the conv algorithm search mode (``EXHAUSTIVE`` pays
    once at the first batch of each shape and is fastest in steady state for fixed shapes).
    """
    if provider == "cpu":
        return {}
    if provider == "cuda":
        return {"device_id": device_id, "cudnn_conv_algo_search": cudnn_conv_algo_search,
                "do_copy_in_default_stream": True}
    if provider != "tensorrt":
        raise ValueError(f"unknown provider {provider!r}; use one of auto, {', '.join(PROVIDERS)}")
    dims = "x".join(str(d) for d in input_shape)
    shapes = {k: f"{input_name}:{b}x{dims}" for k, b in
              (("min", 1), ("opt", opt_batch), ("max", max_batch))}
    opts = {"device_id": device_id, "trt_fp16_enable": fp16,
            "trt_profile_min_shapes": shapes["min"], "trt_profile_opt_shapes": shapes["opt"],
            "trt_profile_max_shapes": shapes["max"]}
    if model_path is not None:
        key = f"{shapes}|fp16={fp16}"
        cache = str(cache_dir_for(model_path, key))
        opts.update({"trt_engine_cache_enable": True, "trt_engine_cache_path": cache,
                     "trt_timing_cache_enable": True, "trt_timing_cache_path": cache})
    return opts


def _session_options(threads: int | None, spin: bool):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = _ORT_LOG_ERROR
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads:
        so.intra_op_num_threads = threads
    if not spin:
        # Idle intra-op threads otherwise busy-wait after each run, taking CPU from whatever
        # shares the machine: decode threads in a pipeline, or other sessions in a benchmark.
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return so


def make_session(model_path: str | Path, provider: str = "auto", *, threads: int | None = None,
                 input_shape: tuple[int, int, int] = (3, 224, 224), max_batch: int = 32,
                 spin: bool = True):
    """Build an ``onnxruntime.InferenceSession`` for ``model_path``.

    ``provider``: ``auto`` (TensorRT, then CUDA, then CPU), ``tensorrt``, ``cuda`` or ``cpu``.
    An explicit GPU provider that cannot run raises :class:`ProviderError` with the reason;
    ``auto`` falls back and says why in :attr:`SessionInfo.note`. ``spin=False`` stops idle
    intra-op threads from busy-waiting (use it when other work shares the CPUs).
    Returns ``(session, SessionInfo)``.
    """
    import onnxruntime as ort

    ort.set_default_logger_severity(_ORT_LOG_ERROR)
    if provider not in ("auto", *PROVIDERS):
        raise ValueError(f"unknown provider {provider!r}; use one of auto, {', '.join(PROVIDERS)}")
    wanted = _AUTO_ORDER if provider == "auto" else (provider,)
    skipped: list[str] = []
    for name in wanted:
        reason = provider_unavailable_reason(name)
        if reason is not None:
            if provider != "auto":
                raise ProviderError(f"provider {name!r} cannot run here: {reason}; "
                                    "use --provider cpu or auto")
            skipped.append(f"{name}: {reason}")
            continue
        chain = [(PROVIDERS[n], provider_options(n, model_path=model_path, input_shape=input_shape,
                                                 max_batch=max_batch))
                 for n in _AUTO_ORDER[_AUTO_ORDER.index(name):]]
        sess = ort.InferenceSession(str(model_path), sess_options=_session_options(threads, spin),
                                    providers=chain)
        used = next(k for k, v in PROVIDERS.items() if v == sess.get_providers()[0])
        if used != name:
            if provider != "auto":
                raise ProviderError(f"provider {name!r} failed to initialise (ONNX Runtime fell back to "
                                    f"{used}); use --provider cpu or auto")
            skipped.append(f"{name}: failed to initialise")
        note = f"provider {used}" + (f" (skipped {'; '.join(skipped)})" if skipped else "")
        log.info(note)
        return sess, SessionInfo(provider=used, note=note)
    raise ProviderError("no execution provider could run")  # unreachable: cpu always runs
