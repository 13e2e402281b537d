"""The things ``featuremaps bench`` times: each backend turns a ``(N, 3, H, W) float32`` batch
into the tap feature maps (on the host), the way a user of that stack would.

Build, then run: each ``make_*`` function builds the backend (session, compiled module) and
returns a :class:`Backend` whose ``run(batch)`` does one batch, or a :class:`Skipped` with
the one-line reason it cannot run here. torch is imported only by the torch backends.
"""

from __future__ import annotations

import logging
import signal
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..contracts import Tap
from ..engine.extractor import Extractor
from ..engine.layouts import as_model_input, pixels_to_float
from ..engine.openvino_backend import math_mode_of, unavailable_reason
from ..engine.preprocess import Preprocessing
from ..engine.session import provider_unavailable_reason
from ..engine.validate import read_model_record
from ..errors import ProviderError
from ..export.onnx_export import _tap_module
from ..export.reference import hooked_forward, reference_features
from .ceiling import openvino_queue

log = logging.getLogger(__name__)

# name -> what it is, for the table legend and the JSON
DESCRIPTIONS = {
    "torch-hooks": "PyTorch eager, full network incl. classifier, clone forward hooks (the seed's approach)",
    "torch-cut": "PyTorch eager, clone hooks, forward stopped after the deepest tap",
    "torch-compile": "torch.compile (inductor) of the features cut after the deepest tap",
    "ort-cpu": "ONNX Runtime CPU, exported graph cut after the deepest tap",
    "ort-cpu-full": "ONNX Runtime CPU, exported graph with the classifier (logits output too)",
    "ort-cpu-int8": "ONNX Runtime CPU, cut graph quantized to int8 (calibrated, passed the per-tap gate)",
    "ort-cuda": "ONNX Runtime CUDA, cut graph, IO binding: input copied in, taps copied into preallocated "
                "pinned host buffers (maps-to-host)",
    "ort-cuda-device": "ONNX Runtime CUDA, cut graph, IO binding: taps left in GPU memory (maps-on-device, "
                       "what the model alone costs)",
    "ort-tensorrt": "ONNX Runtime TensorRT, cut graph, engine cache + explicit batch profile",
    "openvino-cpu": "OpenVINO CPU, cut graph, default precision (bf16 on CPUs with AMX/AVX-512 BF16, else f32)",
    "openvino-cpu-f32": "OpenVINO CPU, cut graph, INFERENCE_PRECISION_HINT=f32 (strict fp32)",
    "openvino-cpu-async": "OpenVINO CPU, cut graph, default precision, its own async THROUGHPUT queue (the request "
                          "count it asks for; the batch split across them): the runtime's ceiling, what "
                          "benchmark_app -hint throughput runs",
    "featuremaps-lanes": "featuremaps' Extractor as extract builds it (OpenVINO, throughput mode): the batch split "
                         "across its lanes, outputs into its output ring",
}
BACKENDS = tuple(DESCRIPTIONS)
DEFAULT_BACKENDS = BACKENDS


@dataclass
class Backend:
    """A ready backend. ``run(batch)`` extracts every tap of one batch to host memory.

    ``setup_s`` is the build time (session creation, model copy); ``first_call_s`` maps batch
    size -> seconds of the first call at that size (compilation, TensorRT engine build,
    algorithm search), reported apart from the steady state.
    """

    name: str
    run: Callable[[np.ndarray], object]
    setup_s: float
    description: str
    provider: str = ""
    model_path: str | None = None
    first_call_s: dict = field(default_factory=dict)
    note: str = ""

    def to_dict(self) -> dict:
        return {"name": self.name, "description": self.description, "provider": self.provider,
                "model": self.model_path, "setup_s": self.setup_s,
                "first_call_s": {str(k): v for k, v in self.first_call_s.items()}, "note": self.note}


@dataclass(frozen=True)
class Skipped:
    """A backend that cannot run here, and why (one line)."""

    name: str
    reason: str

    def to_dict(self) -> dict:
        return {"name": self.name, "skipped": self.reason}


# ---------------------------------------------------------------- torch


def _torch_run(net, taps: tuple[Tap, ...], *, full: bool, device: str):
    import torch


    if device == "cpu":
        def run(batch: np.ndarray):
            return reference_features(net, torch.from_numpy(batch), taps, full=full)

        return run
    return _torch_run_pinned(net, taps, full=full, device=device)


def _torch_run_pinned(net, taps: tuple[Tap, ...], *, full: bool, device: str):
    """On a GPU: the input crosses to the device and the taps come back into preallocated pinned
    host tensors (one per tap and batch size), as the ONNX Runtime CUDA backend does, so the
    seed's approach is not handicapped by first-touch page faults (``tensor.cpu()`` into fresh
    memory ran at 1.35 GB/s on an H200, pinned at 55 GB/s)."""
    import torch

    pinned: dict = {}

    def run(batch: np.ndarray):
        x = torch.from_numpy(batch).to(device)
        with torch.inference_mode():
            store = hooked_forward(net, x, taps, full=full)
            out = {}
            for t in taps:
                src = store[t.name]
                key = (t.name, tuple(src.shape))
                if key not in pinned:
                    pinned[key] = torch.empty(src.shape, dtype=src.dtype, pin_memory=True)
                out[t.name] = pinned[key].copy_(src, non_blocking=True)
        torch.cuda.synchronize(device)
        return {k: v.numpy() for k, v in out.items()}

    return run


def make_torch_hooks(net, taps: tuple[Tap, ...], *, device: str = "cpu") -> Backend:
    """The seed's approach: the whole network (classifier included) with clone hooks.
    ``net`` must already be on ``device``."""
    return Backend("torch-hooks", _torch_run(net, taps, full=True, device=device), 0.0,
                   DESCRIPTIONS["torch-hooks"], provider=f"torch-{device}")


def make_torch_cut(net, taps: tuple[Tap, ...], *, device: str = "cpu") -> Backend:
    """Clone hooks, stopping the forward pass after the deepest tap."""
    return Backend("torch-cut", _torch_run(net, taps, full=False, device=device), 0.0,
                   DESCRIPTIONS["torch-cut"], provider=f"torch-{device}")


class _TimeBox(Exception):
    pass


@contextmanager
def time_box(seconds: float):
    """Raise :class:`TimeoutError` if the block runs longer than ``seconds`` (main thread, POSIX).

    Where SIGALRM is unavailable (Windows, worker threads) the block runs unboxed.
    """
    def _alarm(_sig, _frame):
        raise _TimeBox

    try:
        old = signal.signal(signal.SIGALRM, _alarm)
    except (ValueError, AttributeError):  # not the main thread, or no SIGALRM
        yield
        return
    signal.setitimer(signal.ITIMER_REAL, max(seconds, 0.001))
    try:
        yield
    except _TimeBox:
        raise TimeoutError(f"took longer than {seconds:g} s") from None
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def make_torch_compile(net, taps: tuple[Tap, ...], *, batch_sizes: tuple[int, ...], input_size: int,
                       budget_s: float = 240.0, device: str = "cpu") -> Backend | Skipped:
    """``torch.compile`` of the cut tap module, compiled for every batch size up front.

    Compilation (C++ code generation with the system compiler) is time-boxed to ``budget_s``
    in total; a failure or overrun gives :class:`Skipped` with the reason.
    """
    import torch


    t0 = time.perf_counter()
    try:
        module = _tap_module(net, taps).to(device)
        compiled = torch.compile(module, dynamic=False)
    except Exception as e:  # noqa: BLE001 - any failure means "cannot run here"
        return Skipped("torch-compile", f"torch.compile failed: {type(e).__name__}: {_first_line(e)}")
    names = [t.name for t in taps]

    def run(batch: np.ndarray):
        with torch.inference_mode():
            outs = compiled(torch.from_numpy(batch).to(device))
        return {n: o.cpu().numpy() for n, o in zip(names, outs)}

    first: dict = {}
    try:
        with time_box(budget_s):
            for b in batch_sizes:
                x = np.zeros((b, 3, input_size, input_size), np.float32)
                t1 = time.perf_counter()
                run(x)
                first[b] = time.perf_counter() - t1
    except TimeoutError:
        return Skipped("torch-compile", f"compilation exceeded the {budget_s:g} s time box "
                                        "(raise it with --compile-budget)")
    except Exception as e:  # noqa: BLE001
        return Skipped("torch-compile", f"compiled module failed: {type(e).__name__}: {_first_line(e)}")
    return Backend("torch-compile", run, time.perf_counter() - t0 - sum(first.values()),
                   DESCRIPTIONS["torch-compile"], provider=f"torch-{device} (inductor)", first_call_s=first,
                   note=f"compile {sum(first.values()):.1f} s over {len(first)} batch sizes")


def _first_line(e: BaseException) -> str:
    s = str(e).strip()
    return s.splitlines()[0][:200] if s else ""


# ---------------------------------------------------------------- ONNX Runtime


def make_ort(name: str, model_path: str | Path, provider: str, *, threads: int | None = None,
             max_batch: int = 32, tf32: bool = True, device: int = 0) -> Backend | Skipped:
    """An ONNX Runtime backend on ``provider``. ``cuda``: maps-to-host (IO binding into pinned
    preallocated host buffers); name ``ort-cuda-device``: maps left on the GPU. The float batch
    the suite hands every backend is converted to the model's input layout once per batch array
    (uint8 NHWC for new exports: what crosses to the device), outside the timed call."""

    reason = provider_unavailable_reason(provider)
    if reason is not None:
        return Skipped(name, reason)
    t0 = time.perf_counter()
    try:
        # spin=False: backends are interleaved; a session spinning after its run would slow the next one
        ex = Extractor(model_path, provider=provider, threads=threads, max_batch=max_batch, spin=False,
                       device=device, tf32=tf32)
    except ProviderError as e:
        return Skipped(name, _first_line(e))
    setup = time.perf_counter() - t0
    if name.endswith("-device"):
        run = _maps_on_device_run(ex, ex.device)  # the resolved GPU index (None -> 0)
    elif provider in ("cuda", "tensorrt"):
        run = _maps_to_pinned_run(ex, max_batch)
    else:
        run = ex.run
    desc = DESCRIPTIONS.get(name, f"ONNX Runtime {provider}, {Path(model_path).name}")
    return Backend(name, _model_layout(ex, run), setup, desc, provider=f"{ex.provider} ({ex.math_mode})",
                   model_path=str(model_path), note=ex.info.note)


def _model_layout(ex, run) -> Callable[[np.ndarray], object]:
    """Wrap ``run`` so it gets the batch in the model's input layout, converted once per batch
    array (the suite reuses one array per batch size; conversion is decode work, not model work)."""

    memo: dict = {}

    def wrapped(batch: np.ndarray):
        key = (batch.__array_interface__["data"][0], batch.shape, batch.dtype.str)
        if key not in memo:
            memo.clear()
            memo[key] = (batch, as_model_input(batch, ex.preprocessing))  # keep batch alive: its address is the key
        return run(memo[key][1])

    return wrapped


def _maps_to_pinned_run(ex, max_batch: int) -> Callable[[np.ndarray], object]:
    """Maps-to-host: outputs bound into a 2-slot ring of preallocated pinned host buffers."""
    ring = ex.output_ring(max_batch, slots=2)

    def run(x: np.ndarray):
        slot = ring.acquire()
        try:
            return ex.run_into(x, slot)
        finally:
            ring.release(slot)

    return run


def _maps_on_device_run(ex, device: int) -> Callable[[np.ndarray], object]:
    """Maps-on-device: outputs stay in GPU memory (ORT allocates them from its arena); the run
    waits for them, nothing is copied back. The model-only rate."""
    sess, names = ex.session, ex.output_names

    def run(x: np.ndarray):
        io = sess.io_binding()
        io.bind_cpu_input(ex.input_name, x)
        for n in names:
            io.bind_output(n, "cuda", device)
        sess.run_with_iobinding(io)
        io.synchronize_outputs()
        return io.get_outputs()  # OrtValues on the device

    return run


def _grey_batch(n: int, size: int) -> np.ndarray:
    """``(n, 3, size, size) float32``: mid-grey pixels, normalized (representable by uint8 models)."""

    return pixels_to_float(np.full((n, size, size, 3), 128, np.uint8), Preprocessing(size=(size, size)))


def measure_first_calls(backend: Backend, batch_sizes: tuple[int, ...], input_size: int) -> None:
    """Time the first call of ``backend`` at each batch size not yet timed (engine builds,
    algorithm searches and allocator growth happen here) into ``backend.first_call_s``."""
    for b in batch_sizes:
        if b in backend.first_call_s:
            continue
        x = _grey_batch(b, input_size)
        t0 = time.perf_counter()
        backend.run(x)
        backend.first_call_s[b] = time.perf_counter() - t0


# ---------------------------------------------------------------- OpenVINO


def make_openvino(name: str, model_path: str | Path, *, math_mode: str = "default", device: str = "CPU",
                  threads: int | None = None) -> Backend | Skipped:
    """OpenVINO reading the same exported file (``math_mode`` ``default``/``bf16``/``fp32``);
    :class:`Skipped` without the openvino package. The note names the math mode it ran in. The
    batch is converted to the model's input layout outside the timed call, as for ONNX Runtime."""

    reason = unavailable_reason()
    if reason is not None:
        return Skipped(name, reason)
    t0 = time.perf_counter()
    try:
        ex = Extractor(model_path, provider="openvino", threads=threads, device=device, math_mode=math_mode)
    except ProviderError as e:
        return Skipped(name, _first_line(e))
    desc = DESCRIPTIONS.get(name, f"OpenVINO {device} {math_mode}, {Path(model_path).name}")
    return Backend(name, _model_layout(ex, ex.run), time.perf_counter() - t0, desc, provider=f"openvino-{ex.math_mode}",
                   model_path=str(model_path), note=ex.info.note)


def make_openvino_async(name: str, model_path: str | Path, *, device: str = "CPU",
                        threads: int | None = None) -> Backend | Skipped:
    """OpenVINO's own ``AsyncInferQueue`` in THROUGHPUT mode on the same file: each call splits the
    batch into one part per request, starts them all and waits. The ceiling featuremaps' own
    OpenVINO rows are judged against (``featuremaps-lanes``, ``openvino-cpu``)."""
    reason = unavailable_reason()
    if reason is not None:
        return Skipped(name, reason)
    t0 = time.perf_counter()
    compiled, queue, nireq = openvino_queue(model_path, device=device, threads=threads)
    pre = read_model_record(model_path).preprocessing

    def run(batch):
        x = as_model_input(batch, pre)
        for part in np.array_split(x, min(nireq, len(x))):
            queue.start_async({0: part})
        queue.wait_all()

    mode = math_mode_of(compiled)
    return Backend(name, run, time.perf_counter() - t0, DESCRIPTIONS[name], provider=f"openvino-{mode}",
                   model_path=str(model_path), note=f"openvino async ({device}, {mode}, {nireq} requests)")


def make_featuremaps_lanes(name: str, model_path: str | Path, *, device: str = "CPU", threads: int | None = None,
                           max_batch: int = 32) -> Backend | Skipped:
    """featuremaps' Extractor in OpenVINO's throughput mode: each call splits the batch across its
    lanes (``submit_into`` each part, then ``collect``), outputs into an output ring."""
    reason = unavailable_reason()
    if reason is not None:
        return Skipped(name, reason)
    t0 = time.perf_counter()
    ex = Extractor(model_path, provider="openvino", threads=threads, device=device, throughput=True)
    ring = ex.output_ring(max_batch, slots=ex.lanes)

    def run(batch):
        parts = np.array_split(batch, min(ex.lanes, len(batch)))
        slots = [ring.acquire() for _ in parts]
        try:
            for run_ in [ex.submit_into(p, s) for p, s in zip(parts, slots)]:
                ex.collect(run_)
        finally:
            for s in slots:
                ring.release(s)

    return Backend(name, run, time.perf_counter() - t0, DESCRIPTIONS[name], provider=f"openvino-{ex.math_mode}",
                   model_path=str(model_path), note=ex.info.note)
