"""OpenVINO as a backend for exported featuremaps models: same file, same taps, other math.

Why: ONNX Runtime's CPU provider runs fp32 models in fp32. OpenVINO reads the same ``.onnx``
file and, by default, runs it in bf16 where the CPU has bf16 units (AMX on Intel Xeons since
Sapphire Rapids, AVX-512 BF16 on some AMD EPYCs): 2.7x ONNX Runtime fp32 measured on an AMX
Xeon, at rel L2 <= 7.3e-3 per VGG16 tap (the ``bf16`` budget). It also runs the calibrated int8
QDQ export with AMX/VNNI int8 kernels. ``precision="fp32"`` asks for strict f32 arithmetic
(``INFERENCE_PRECISION_HINT=f32``), which is as exact as ONNX Runtime.

The model is compiled once with its dynamic batch axis kept dynamic (OpenVINO's CPU plugin
handles any batch without recompiling). The math mode actually used is read back from the
compiled model, never assumed: on a CPU without bf16 units the default is f32.
"""

from __future__ import annotations

import logging
import queue
import threading
from dataclasses import dataclass

import numpy as np

from ..errors import DependencyError, ModelFileError, ProviderError
from .validate import ModelRecord

log = logging.getLogger(__name__)

INSTALL_HINT = "pip install 'featuremaps[openvino]'"
MATH_MODES = ("default", "bf16", "fp32")
# What we ask OpenVINO for (None: leave its default) and how its answer is named here.
_HINTS = {"default": None, "bf16": "bf16", "fp32": "f32"}
_MODE_NAMES = {"f32": "fp32", "float32": "fp32", "bf16": "bf16", "bfloat16": "bf16",
               "f16": "fp16", "float16": "fp16"}


def unavailable_reason() -> str | None:
    """Why OpenVINO cannot run here (one line naming the fix), or None if it can."""
    try:
        import openvino  # noqa: F401
    except ImportError:
        return f"the openvino package is not installed ({INSTALL_HINT})"
    return None


def available() -> bool:
    return unavailable_reason() is None


def _core():
    reason = unavailable_reason()
    if reason is not None:
        raise DependencyError(f"provider 'openvino' cannot run here: {reason}")
    import openvino as ov

    return ov.Core()


def devices() -> tuple[str, ...]:
    """OpenVINO devices present here (``CPU``, ``GPU.0``, ``NPU``, ...); empty without openvino."""
    if not available():
        return ()
    return tuple(_core().available_devices)


@dataclass(frozen=True)
class OpenVINOInfo:
    """What :class:`OpenVINOSession` compiled: ``device``, the ``math_mode`` OpenVINO reports
    (``fp32``, ``bf16``, ``fp16``; ``int8+bf16`` for an int8 QDQ export), what was asked
    (``requested``), and a one-line ``note``."""

    provider: str
    device: str
    math_mode: str
    requested: str
    note: str


@dataclass(frozen=True)
class OutputPort:
    """An output's ``name`` and ``shape`` (batch axis ``None``), like ORT's ``NodeArg``."""

    name: str
    shape: tuple
    type: str = "tensor(float)"  # ONNX Runtime's spelling: tensor(float16) for fp16 outputs


def _first_line(err: BaseException) -> str:
    return ((str(err).strip().splitlines() or [type(err).__name__])[0])[:160]


def _check_device(core, device: str) -> None:
    present = tuple(core.available_devices)
    base = device.split(".")[0]
    if device not in present and base not in {d.split(".")[0] for d in present}:
        raise ProviderError(f"OpenVINO device {device!r} is not present here; use one of "
                            f"{', '.join(present) or 'none'} (--device CPU)")


def _compile_config(device: str, precision: str, threads: int | None, throughput: bool = False) -> dict:
    if precision not in MATH_MODES:
        raise ProviderError(f"unknown OpenVINO math mode {precision!r}; use one of {', '.join(MATH_MODES)}")
    # LATENCY: one request using every core; THROUGHPUT: OpenVINO splits the cores into streams
    # and says how many requests keep them busy (OPTIMAL_NUMBER_OF_INFER_REQUESTS)
    cfg = {"PERFORMANCE_HINT": "THROUGHPUT" if throughput else "LATENCY"}
    if _HINTS[precision] is not None:
        cfg["INFERENCE_PRECISION_HINT"] = _HINTS[precision]
    if threads and device.startswith("CPU"):
        cfg["INFERENCE_NUM_THREADS"] = int(threads)
    return cfg


def _streams(compiled) -> int:
    try:
        return int(compiled.get_property("NUM_STREAMS"))
    except (RuntimeError, TypeError, ValueError):  # a device without streams (NPU)
        return 1


def math_mode_of(compiled) -> str:
    """``fp32``/``bf16``/``fp16``: the inference precision a compiled model really uses."""
    hint = compiled.get_property("INFERENCE_PRECISION_HINT")
    name = hint.get_type_name() if hasattr(hint, "get_type_name") else str(hint)  # ov.Type: 'bf16'
    return _MODE_NAMES.get(name.lower(), name.lower())


class OpenVINOSession:
    """One compiled OpenVINO model: ``run(batch) -> {output name: (N, ...) float32}``.

    ``model_path``: an exported featuremaps ``.onnx``, read as is (outputs named by tap, batch
    axis dynamic, metadata from its ``metadata_props``). ``device``: ``CPU`` (default), ``GPU``,
    ``NPU``... as :func:`devices` lists. ``precision``: ``default`` (OpenVINO's choice: bf16 on
    CPUs with bf16 units, else f32), ``bf16`` (ask for it; f32 where the CPU lacks it) or
    ``fp32`` (strict, exact). The mode used is :attr:`info.math_mode`.
    """

    def __init__(self, record: ModelRecord, *, device: str = "CPU", precision: str = "default",
                 threads: int | None = None, throughput: bool = False):
        core = _core()
        self.record = record  # read and checked once by the caller (read_model_record); OpenVINO reads the graph
        self.model_path = record.path
        if not self.model_path.is_file():
            raise ModelFileError(f"model {str(self.model_path)!r} not found; export one with "
                                 "`featuremaps export -o PATH.onnx`")
        _check_device(core, device)
        config = _compile_config(device, precision, threads, throughput)
        try:
            model = core.read_model(str(self.model_path))
        except RuntimeError as e:
            raise ModelFileError(f"OpenVINO cannot read {self.model_path} ({_first_line(e)}); "
                                 "re-export it with `featuremaps export`") from None
        self.metadata = record.metadata
        self.input_name = record.input_name
        self.output_names = list(record.outputs)
        try:
            self._compiled = core.compile_model(model, device, config)
        except RuntimeError as e:
            raise ModelFileError(f"OpenVINO cannot compile {self.model_path} ({_first_line(e)}); "
                                 "use a model written by `featuremaps export`") from None
        self._request = self._compiled.create_infer_request()
        self._ports = {name: self._port(name) for name in self.output_names}
        self.lanes = max(1, int(self._compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS"))) if throughput else 1
        self.streams = _streams(self._compiled)
        self._idle: queue.SimpleQueue = queue.SimpleQueue()  # start()'s free requests, made on first use
        self._async: list = []  # every request start() made
        self._busy: dict = {}  # id(request) -> the arrays its run reads and writes
        mode = math_mode_of(self._compiled)
        if record.precision == "int8":  # QDQ convs run in int8, the rest in ``mode``
            mode = f"int8+{mode}"
        note = f"provider openvino ({device}, {mode}" + (f", {self.streams} streams" if throughput else "") + (
            f"; asked for {precision}" if _HINTS[precision] and _MODE_NAMES[_HINTS[precision]] not in mode else "")
        self.info = OpenVINOInfo("openvino", device, mode, precision, note + ")")
        log.info(self.info.note)

    def _port(self, name: str):
        for port in self._compiled.outputs:
            if name in port.get_names():
                return port
        raise ModelFileError(f"{self.model_path}: output {name!r} named in the metadata is not in the graph; "
                             "re-export it with `featuremaps export`")

    def get_outputs(self) -> list[OutputPort]:
        """Output names and per-output shapes (batch ``None``), in export order."""
        ports = []
        for name, port in self._ports.items():
            dims = port.get_partial_shape()
            half = port.get_element_type().get_type_name() == "f16"
            ports.append(OutputPort(name, tuple(None if d.is_dynamic else d.get_length() for d in dims),
                                    "tensor(float16)" if half else "tensor(float)"))
        return ports

    def run(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        """``batch``: the model's input (``(N, 3, H, W) float32`` for float models) ->
        ``{output name: (N, ...) array}`` in export order, arrays owned by the caller."""
        # share_outputs=False: OpenVINO copies the outputs, so the next run cannot overwrite them
        results = self._request.infer({self.input_name: np.ascontiguousarray(batch)}, share_outputs=False)
        return {name: results[port] for name, port in self._ports.items()}

    def start(self, batch: np.ndarray, outputs: dict[str, np.ndarray]) -> "OpenVINORun":
        """Start one asynchronous run of ``batch`` (copied: the caller may reuse it at once) writing
        every output straight into ``outputs[name]`` (C-contiguous arrays of the output's exact
        shape and dtype, e.g. an output ring slot's views: no copy). At most :attr:`lanes` runs may
        be outstanding: collect one (:meth:`OpenVINORun.result`) before starting more.
        :meth:`cancel` stops every run in flight."""
        if len(self._async) < self.lanes and self._idle.empty():
            self._async.append(self._compiled.create_infer_request())
            self._idle.put(self._async[-1])
        try:
            request = self._idle.get_nowait()
        except queue.Empty:
            raise RuntimeError(f"all {self.lanes} OpenVINO requests are busy; collect a run first") from None
        import openvino as ov

        # a tensor sharing memory does not keep its array alive: the run holds both until it is collected
        held = np.array(batch, copy=True, order="C")
        try:
            request.set_input_tensor(ov.Tensor(held, shared_memory=True))
            for i, name in enumerate(self._ports):
                request.set_output_tensor(i, ov.Tensor(outputs[name], shared_memory=True))
            request.start_async()
        except BaseException:
            self._idle.put(request)
            raise
        self._busy[id(request)] = (held, outputs)  # kept while OpenVINO may write, even if the run is abandoned
        return OpenVINORun(self, request, outputs)

    def _collect(self, request, outputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """``outputs`` once ``request`` has run: what OpenVINO put elsewhere (it may reallocate an
        output tensor) is copied in; an output computed with another shape is one line."""
        for i, (name, out) in enumerate(outputs.items()):
            got = request.get_output_tensor(i).data
            if np.shares_memory(got, out):
                continue
            if got.shape != out.shape:
                raise ModelFileError(f"{self.model_path}: output {name!r} is computed as {list(got.shape)} but "
                                     f"declared {list(out.shape)}; use a model written by `featuremaps export`")
            np.copyto(out, got)
        return outputs

    def cancel(self) -> None:
        """Ask a running :meth:`run` (in another thread) to stop. OpenVINO stops between nodes
        only: a ``Loop`` node runs on (measured: a never-ending Loop ignored it for minutes)."""
        for request in [self._request, *self._async]:
            if request is not None:
                request.cancel()

    def close(self) -> None:
        self._request = None
        self._async = []
        self._compiled = None


class OpenVINORun:
    """One run started by :meth:`OpenVINOSession.start`: :meth:`result` waits for it (in steps of
    0.1 s, so a signal is handled while waiting), raises the runtime's error if it failed, and
    gives the request back to the session."""

    def __init__(self, session: OpenVINOSession, request, outputs: dict[str, np.ndarray]):
        self._session, self._request, self._outputs = session, request, outputs
        self._done = False

    def done(self) -> bool:
        """Whether the run has ended (a failed or cancelled one too)."""
        try:
            return self._done or bool(self._request.wait_for(0))
        except Exception:  # noqa: BLE001 - wait_for raises the run's error: it has ended
            return True

    def result(self, timeout: float | None = None) -> dict[str, np.ndarray]:
        """The outputs (the arrays given to ``start``); ``TimeoutError`` after ``timeout`` s."""
        if self._done:
            return self._outputs
        waited = 0.0
        try:
            while not self._request.wait_for(100):
                waited += 0.1
                if timeout is not None and waited >= timeout:
                    raise TimeoutError(f"the OpenVINO run did not finish in {timeout:.1f} s")
        except (KeyboardInterrupt, TimeoutError):
            raise  # still running (or being cancelled): the request stays busy
        except BaseException:
            self._release()  # the run failed or was cancelled: its request is free again
            raise
        try:
            return self._session._collect(self._request, self._outputs)
        finally:
            self._release()

    def abandon(self) -> None:
        """Stop waiting for a run that ignores :meth:`OpenVINOSession.cancel` (a never-ending
        ``Loop``): a daemon thread holds the request, the compiled model and the run's arrays until
        it ends, so that nothing it uses is freed under it and no destructor waits for it (which
        would hang the exit); the session no longer counts on that request."""
        session, request = self._session, self._request
        keep = (request, session._compiled, session._busy.pop(id(request), None))  # with its arrays
        session._async = [r for r in session._async if r is not request]
        self._done = True

        def hold(keep=keep):
            try:
                keep[0].wait()
            except Exception:  # noqa: BLE001 - cancelled or failed: it has ended either way
                pass

        threading.Thread(target=hold, name="fm-openvino-abandoned", daemon=True).start()

    def _release(self) -> None:
        if not self._done:
            self._done = True
            self._session._busy.pop(id(self._request), None)
            self._session._idle.put(self._request)
