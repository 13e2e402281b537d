"""Build ONNX Runtime sessions: provider choice, provider options, quiet fallback.

Building is separate from running (:mod:`featuremaps.engine.extractor` runs). onnxruntime-gpu
lists the CUDA and TensorRT providers as *available* even on machines without a GPU and
then logs a wall of red library-loading errors when a session asks for them. We check
for the libraries first, keep ONNX Runtime's own logging at ERROR, and report in one
line what was used and why anything was skipped.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

from .providers import (PROVIDER_TABLE, OptionRequest, auto_order, cache_dir_for, math_mode, ort_provider_names,
                        short_name, spec_for)
from ..errors import ProviderError

log = logging.getLogger(__name__)

__all__ = ["PROVIDERS", "SessionInfo", "cache_dir_for", "make_session", "provider_options",
           "provider_unavailable_reason"]

# short name -> ONNX Runtime name, derived from the table (kept for callers of the old dict)
PROVIDERS = {name: PROVIDER_TABLE[name].ort_name for name in ort_provider_names()}
_ORT_LOG_ERROR = 3


@dataclass(frozen=True)
class SessionInfo:
    """What :func:`make_session` chose: ``provider`` short name, a one-line ``note``, the
    ``math_mode`` its convolutions run in (``fp32``, ``tf32``, ``fp16``, ``int8``) and the
    ``device_id`` (GPU providers) it runs on."""

    provider: str
    note: str
    math_mode: str = "fp32"
    device_id: int = 0


def provider_unavailable_reason(provider: str) -> str | None:
    """Why ``provider`` cannot run here, or None if it should (cheap: no session is built)."""
    return spec_for(provider).probe()


def provider_options(provider: str, *, model_path: str | Path | None = None, input_name: str = "input",
                     input_shape: tuple[int, int, int] = (3, 224, 224), max_batch: int = 32,
                     opt_batch: int = 8, fp16: bool = False, device_id: int = 0, tf32: bool = True,
                     cudnn_conv_algo_search: str = "EXHAUSTIVE") -> dict:
    """Provider options for ``provider`` (any name in the provider table), built by its record.

    ``input_shape`` is the per-image input shape (``(3, H, W)`` or ``(H, W, 3)`` for uint8 NHWC
    models); ``tf32`` decides CUDA's ``use_tf32``; ``device_id`` picks the GPU.
    """
    req = OptionRequest(model_path=model_path, input_name=input_name, input_dims=tuple(input_shape),
                        max_batch=max_batch, opt_batch=opt_batch, fp16=fp16, device_id=device_id, tf32=tf32,
                        cudnn_conv_algo_search=cudnn_conv_algo_search)
    return spec_for(provider).options(req)


def _model_precision(sess) -> str:
    """The ``precision`` in the model's featuremaps metadata (``fp32`` if it has none)."""
    raw = sess.get_modelmeta().custom_metadata_map.get("featuremaps")
    return json.loads(raw).get("precision", "fp32") if raw else "fp32"


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
                 spin: bool = True, device_id: int = 0, tf32: bool = True):
    """Build an ``onnxruntime.InferenceSession`` for ``model_path``.

    ``provider``: ``auto`` (the table's order: TensorRT, then CUDA, then CPU) or a table name.
    An explicit GPU provider that cannot run raises :class:`ProviderError` with the reason;
    ``auto`` falls back and says why in :attr:`SessionInfo.note`. ``spin=False`` stops idle
    intra-op threads from busy-waiting (use it when other work shares the CPUs). ``device_id``
    picks the GPU; ``tf32=False`` makes CUDA run fp32 models in strict fp32. The reported
    :attr:`SessionInfo.math_mode` follows from the provider used, ``tf32`` and the precision the
    model's metadata records (fp32 when it records none).
    Returns ``(session, SessionInfo)``.
    """
    import onnxruntime as ort

    ort.set_default_logger_severity(_ORT_LOG_ERROR)
    if provider != "auto" and spec_for(provider).backend != "onnxruntime":  # unknown name: one line
        raise ProviderError(f"provider {provider!r} is not an ONNX Runtime provider; run it with "
                            f"Extractor(model, provider={provider!r})")
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
                  provider_options(n, model_path=model_path, input_shape=input_shape, max_batch=max_batch,
                                   device_id=device_id, tf32=tf32))
                 for n in fallbacks]
        sess = ort.InferenceSession(str(model_path), sess_options=_session_options(threads, spin),
                                    providers=chain)
        used = short_name(sess.get_providers()[0])
        if used != name:
            if provider != "auto":
                raise ProviderError(f"provider {name!r} failed to initialise (ONNX Runtime fell back to "
                                    f"{used}); use --provider cpu or auto")
            skipped.append(f"{name}: failed to initialise")
        mode = math_mode(used, _model_precision(sess), tf32=tf32)
        device = f" device {device_id}" if PROVIDER_TABLE[used].gpu else ""
        note = f"provider {used}{device}, {mode}" + (f" (skipped {'; '.join(skipped)})" if skipped else "")
        log.info(note)
        return sess, SessionInfo(provider=used, note=note, math_mode=mode, device_id=device_id)
    raise ProviderError("no execution provider could run")  # unreachable: cpu always runs
