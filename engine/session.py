"""Build ONNX Runtime sessions: provider choice, provider options, quiet fallback.

Building is separate from running (:mod:`featuremaps.engine.extractor` runs). onnxruntime-gpu
lists the CUDA and TensorRT providers as *available* even on machines without a GPU and
then logs a wall of red library-loading errors when a session asks for them. We check
for the libraries first, keep ONNX Runtime's own logging at ERROR, and report in one
line what was used and why anything was skipped.

A model file is data from outside, so a session is built to survive a hostile one. Every ONNX
Runtime refusal (an unknown op domain, opset 99, an initializer whose data does not fit its
declared size) becomes one :class:`ModelFileError` line naming the file and the reason. Memory
is bounded: ONNX Runtime's CPU arena for the session is capped at :func:`model_memory_limit`
bytes (``FEATUREMAPS_MODEL_MEMORY``, default 80% of the memory available when the session is
built), so a graph that expands a tensor to gigabytes fails its run in one line instead of
taking the machine; and constant folding is off, because it would run such a graph's constant
part at build time, outside the arena (a 1 GiB ``Expand`` of a constant cost 2.1 GB RSS
before the first batch). featuremaps exports are folded by the exporter already: the optimized
graph of a VGG16 export is the same with and without ONNX Runtime's folding.
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
from dataclasses import dataclass
from pathlib import Path

from .providers import (PROVIDER_TABLE, OptionRequest, auto_order, cache_dir_for, math_mode, ort_provider_names,
                        short_name, spec_for)
from ..errors import ArgumentError, ModelFileError, ProviderError
from .validate import ModelRecord

log = logging.getLogger(__name__)

__all__ = ["MEMORY_ENV", "PROVIDERS", "SessionInfo", "cache_dir_for", "make_session", "model_memory_limit",
           "ort_reason", "parse_size", "provider_options", "provider_unavailable_reason"]

# short name -> ONNX Runtime name, derived from the table (kept for callers of the old dict)
PROVIDERS = {name: PROVIDER_TABLE[name].ort_name for name in ort_provider_names()}
_ORT_LOG_ERROR = 3
MEMORY_ENV = "FEATUREMAPS_MODEL_MEMORY"
_MIN_MEMORY = 256 << 20
_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
# Registering the CPU arena and building the session that takes it must not interleave with
# another thread's pair: the arena registered last is the one a new session uses.
_ARENA_LOCK = threading.Lock()


@dataclass(frozen=True)
class SessionInfo:
    """What :func:`make_session` chose: ``provider`` short name, a one-line ``note``, the
    ``math_mode`` its convolutions run in (``fp32``, ``tf32``, ``fp16``, ``int8``) and the
    ``device_id`` (GPU providers) it runs on."""

    provider: str
    note: str
    math_mode: str = "fp32"
    device_id: int = 0
    memory_limit: int = 0  # bytes of CPU tensors ONNX Runtime may hold for this session (0: not capped)


def provider_unavailable_reason(provider: str) -> str | None:
    """Why ``provider`` cannot run here, or None if it should (cheap: no session is built)."""
    return spec_for(provider).probe()


def provider_options(provider: str, *, model_path: str | Path | ModelRecord | None = None, input_name: str = "input",
                     input_shape: tuple[int, int, int] = (3, 224, 224), max_batch: int = 32,
                     opt_batch: int = 8, fp16: bool = False, device_id: int = 0, tf32: bool = True,
                     cudnn_conv_algo_search: str = "EXHAUSTIVE", gpu_mem_limit: int | None = None) -> dict:
    """Provider options for ``provider`` (any name in the provider table), built by its record.

    ``input_shape`` is the per-image input shape (``(3, H, W)`` or ``(H, W, 3)`` for uint8 NHWC
    models); ``tf32`` decides CUDA's ``use_tf32``; ``device_id`` picks the GPU; ``gpu_mem_limit``
    caps CUDA's memory arena in bytes (None: CUDA's default, the whole device).
    """
    req = OptionRequest(model_path=model_path, input_name=input_name, input_dims=tuple(input_shape),
                        max_batch=max_batch, opt_batch=opt_batch, fp16=fp16, device_id=device_id, tf32=tf32,
                        cudnn_conv_algo_search=cudnn_conv_algo_search, gpu_mem_limit=gpu_mem_limit)
    return spec_for(provider).options(req)


def _model_precision(sess) -> str:
    """The ``precision`` in the model's featuremaps metadata (``fp32`` if it has none)."""
    raw = sess.get_modelmeta().custom_metadata_map.get("featuremaps")
    return json.loads(raw).get("precision", "fp32") if raw else "fp32"


def parse_size(text: str, what: str = MEMORY_ENV) -> int:
    """``"64MiB"``, ``"2G"``, ``"1.5 GB"`` or plain bytes -> bytes (binary units: K = 1024).

    >>> parse_size("64MiB"), parse_size("2g"), parse_size("1000")
    (67108864, 2147483648, 1000)
    """
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?\s*", str(text), re.IGNORECASE)
    if not m or float(m[1]) * _UNITS[m[2].lower()] < 1:
        raise ArgumentError(f"{what}={text!r} is not a size; use bytes or a size such as 512MiB or 4GiB")
    return int(float(m[1]) * _UNITS[m[2].lower()])


def _read_int(path: str, key: str | None = None) -> int | None:
    """An integer from a /proc or /sys file (``key``: the ``Key: value kB`` line); None if absent."""
    try:
        text = Path(path).read_text()
    except OSError:
        return None
    if key is None:
        return int(text) if text.strip().isdigit() else None
    m = re.search(rf"^{key}:\s+(\d+) kB", text, re.MULTILINE)
    return int(m[1]) << 10 if m else None


def available_memory() -> int:
    """Bytes this process could still take: MemAvailable, or less where a cgroup (a container,
    a systemd slice) caps memory lower."""
    free = _read_int("/proc/meminfo", "MemAvailable")
    if free is None:
        free = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    cap, used = _read_int("/sys/fs/cgroup/memory.max"), _read_int("/sys/fs/cgroup/memory.current")
    return min(free, cap - used) if cap is not None and used is not None else free


def model_memory_limit() -> int:
    """Bytes ONNX Runtime may hold in CPU tensors for one session: ``FEATUREMAPS_MODEL_MEMORY``
    (bytes, or ``512MiB``, ``4GiB``...) if set, else 80% of :func:`available_memory` (at least
    256 MiB). A run that would need more fails in one line instead of swapping or meeting the
    OOM killer; a legitimate big batch needs the variable raised or a smaller batch."""
    return _asked_limit() or max(_MIN_MEMORY, int(available_memory() * 0.8))


def _asked_limit() -> int | None:
    raw = os.environ.get(MEMORY_ENV, "").strip()
    return parse_size(raw) if raw else None


def ort_reason(err: BaseException, limit: int = 300) -> str:
    """ONNX Runtime's message without its status prefix and C++ source locations, one line."""
    text = " ".join(str(err).split())
    text = re.sub(r"\[ONNXRuntimeError\] : \d+ : \w+ : ", "", text)
    # "/onnxruntime_src/.../file.cc:87 virtual OrtValue* ns::Fn(int, const T&) message"
    text = re.sub(r"(?:/[\w/.-]*/)?\w+\.(?:cc|cpp|h):\d+ (?:[\w:<>*&, ~]+\([^()]*\)(?: const)? )?", "", text)
    return (text[:limit] + "...") if len(text) > limit else text or type(err).__name__


def _register_cpu_arena(ort, limit: int) -> None:
    """Make the next session's CPU tensors come from an arena capped at ``limit`` bytes (sessions
    built with ``session.use_env_allocators`` take the arena registered last, and keep it)."""
    info = ort.OrtMemoryInfo("Cpu", ort.OrtAllocatorType.ORT_ARENA_ALLOCATOR, 0, ort.OrtMemType.DEFAULT)
    ort.create_and_register_allocator(info, ort.OrtArenaCfg({"max_mem": int(limit)}))


def _build(ort, model_path, so, chain, limit: int):
    """The session, or one :class:`ModelFileError` line with ONNX Runtime's reason."""
    try:
        with _ARENA_LOCK:
            _register_cpu_arena(ort, limit)
            return ort.InferenceSession(str(model_path), sess_options=so, providers=chain,
                                        disabled_optimizers=["ConstantFolding"])
    except Exception as e:  # noqa: BLE001 - onnxruntime raises Fail, InvalidGraph, NotImplemented, ...
        raise ModelFileError(f"ONNX Runtime cannot load {model_path}: {ort_reason(e)}; use a model written by "
                             "`featuremaps export`") from None


def _session_options(threads: int | None, spin: bool):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = _ORT_LOG_ERROR
    so.add_session_config_entry("session.use_env_allocators", "1")  # the capped arena (_register_cpu_arena)
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads:
        so.intra_op_num_threads = threads
    if not spin:
        # Idle intra-op threads otherwise busy-wait after each run, taking CPU from whatever
        # shares the machine: decode threads in a pipeline, or other sessions in a benchmark.
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return so


def make_session(model_path: str | Path | ModelRecord, provider: str = "auto", *, threads: int | None = None,
                 input_shape: tuple[int, int, int] = (3, 224, 224), max_batch: int = 32,
                 spin: bool = True, device_id: int = 0, tf32: bool = True, memory_limit: int | None = None):
    """Build an ``onnxruntime.InferenceSession`` for ``model_path``.

    ``provider``: ``auto`` (the table's order: TensorRT, then CUDA, then CPU) or a table name.
    An explicit GPU provider that cannot run raises :class:`ProviderError` with the reason;
    ``auto`` falls back and says why in :attr:`SessionInfo.note`. ``spin=False`` stops idle
    intra-op threads from busy-waiting (use it when other work shares the CPUs). ``device_id``
    picks the GPU; ``tf32=False`` makes CUDA run fp32 models in strict fp32. The reported
    :attr:`SessionInfo.math_mode` follows from the provider used, ``tf32`` and the precision the
    model's metadata records (fp32 when it records none). ``memory_limit`` caps ONNX Runtime's
    CPU tensors in bytes (default :func:`model_memory_limit`); a file ONNX Runtime refuses is one
    :class:`ModelFileError` line. ``model_path`` may be the file's :class:`ModelRecord` (read once
    by the caller): its precision is then not read again, and its input shape sizes TensorRT's
    profile (``input_shape`` is for a bare path). Returns ``(session, SessionInfo)``.
    """
    import onnxruntime as ort

    record = model_path if isinstance(model_path, ModelRecord) else None
    model_path = record.path if record else model_path
    input_shape = record.input_shape if record else input_shape

    ort.set_default_logger_severity(_ORT_LOG_ERROR)
    if provider != "auto" and spec_for(provider).backend != "onnxruntime":  # unknown name: one line
        raise ProviderError(f"provider {provider!r} is not an ONNX Runtime provider; run it with "
                            f"Extractor(model, provider={provider!r})")
    limit = memory_limit or model_memory_limit()
    gpu_limit = memory_limit or _asked_limit()  # a GPU is capped only when asked: host RAM says nothing of it
    order = auto_order()
    wanted = order if provider == "auto" else (provider,)
    skipped: list[str] = []
    for name in wanted:
        reason = provider_unavailable_reason(name)
        if reason is not None:
            if provider != "auto":
                raise ProviderError(f"provider {name!r} cannot run here: {reason}; "
                                    "use --provider cpu or auto")
            skipped.append(f"{name}: {reason}")
            continue
        fallbacks = order[order.index(name):] if name in order else (name, "cpu")
        chain = [(PROVIDER_TABLE[n].ort_name,
                  provider_options(n, model_path=record or model_path, input_shape=input_shape, max_batch=max_batch,
                                   device_id=device_id, tf32=tf32, gpu_mem_limit=gpu_limit))
                 for n in fallbacks]
        sess = _build(ort, model_path, _session_options(threads, spin), chain, limit)
        used = short_name(sess.get_providers()[0])
        if used != name:
            if provider != "auto":
                raise ProviderError(f"provider {name!r} failed to initialise (ONNX Runtime fell back to "
                                    f"{used}); use --provider cpu or auto")
            skipped.append(f"{name}: failed to initialise")
        mode = math_mode(used, record.precision if record else _model_precision(sess), tf32=tf32)
        device = f" device {device_id}" if PROVIDER_TABLE[used].gpu else ""
        note = f"provider {used}{device}, {mode}" + (f" (skipped {'; '.join(skipped)})" if skipped else "")
        log.info(note)
        return sess, SessionInfo(provider=used, note=note, math_mode=mode, device_id=device_id, memory_limit=limit)
    raise ProviderError("no execution provider could run")  # unreachable: cpu always runs
