"""Run an exported featuremaps model: batch in, one array per tap out. No torch needed.

The model runs in a thread of its own (:class:`_ModelThread`) while the main thread waits for it.
A call into ONNX Runtime does not return to Python until the graph is done, and Python handles
signals only in the main thread between bytecodes: a model that never returns (an ONNX ``Loop``
of 2**63 iterations) or a long CPU batch would leave Ctrl-C and SIGTERM unhandled. Waiting
instead, the main thread takes the signal at once, asks the run to stop (ONNX Runtime's
``RunOptions.terminate``, checked between nodes and between ``Loop`` iterations; OpenVINO's
``InferRequest.cancel``), waits for it to end, and raises ``KeyboardInterrupt`` as usual.

What the model computes is checked against what it declares: every output of every batch must
have the shape the metadata (taps) or the graph (other outputs) gives, and a run ONNX Runtime
refuses (out of the session's memory bound, an op failing) is one :class:`ModelFileError` line.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
import weakref
from concurrent.futures import Future
from pathlib import Path

import numpy as np

from ..contracts import Tap
from .layouts import as_model_input
from .openvino_backend import OpenVINOSession
from .outputs import OutputRing, Slot
from .providers import PROVIDER_TABLE, spec_for
from .decode_pool import load_batch
from .session import MEMORY_ENV, make_session, ort_reason
from .store import output_shapes
from .validate import ModelRecord, read_model_record
from ..errors import ArgumentError, FeaturemapsError, ModelFileError, ProviderError

log = logging.getLogger(__name__)
STOP_GRACE_S = 10.0  # after Ctrl-C, further interrupts wait this long for the model to stop
_ALLOCATION_FAILED = ("Available memory of", "Failed to allocate", "bad_alloc", "out of memory")


class _ModelThread:
    """One daemon thread that makes the model calls of an :class:`Extractor`, so the main thread
    only waits (interruptibly) for each. Calls from other threads (Ray actors, user threads)
    run in place: signals reach only the main thread anyway.

    On an interrupt while the model runs, ``cancel()`` asks the run to stop and the interrupt
    is re-raised once it has (the model must not still be reading the batch when the caller
    frees it). Further interrupts during that wait are held for ``STOP_GRACE_S``; after that one
    more leaves the run behind (the CLI's third Ctrl-C exits at once anyway).
    """

    def __init__(self):
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        self._thread: threading.Thread | None = None

    def call(self, fn, cancel, leave_after_s: float | None = None):
        """``fn()``'s result; ``leave_after_s``: stop waiting that long after ``cancel()`` even if
        the run goes on (only for runs that hold nothing of the caller's: OpenVINO copies inputs)."""
        done = self.submit(fn)
        try:
            return done.result()
        except BaseException:
            if not done.done():  # a signal, not the model's own error: stop the run, then go on
                cancel()
                _wait_out(done, STOP_GRACE_S, leave_after_s)
            raise

    def submit(self, fn) -> Future:
        """Queue ``fn()`` on the model thread; the future gives its result. Outside the main thread
        ``fn`` runs here and now (its future is done when this returns)."""
        done: Future = Future()
        if threading.current_thread() is not threading.main_thread():
            try:
                done.set_result(fn())
            except BaseException as e:  # noqa: BLE001 - handed to the caller
                done.set_exception(e)
            return done
        if self._thread is None:
            self._thread = threading.Thread(target=_serve, args=(self._jobs,), name="fm-model", daemon=True)
            self._thread.start()
        self._jobs.put((fn, done))
        return done

    def close(self) -> None:
        if self._thread is not None:
            self._jobs.put(None)
            self._thread = None


class PendingRun:
    """A batch running in the background (:meth:`Extractor.submit_into`); :meth:`Extractor.collect`
    waits for it. ``wait(timeout)`` gives the outputs (or raises the run's error), ``cancel()``
    asks the run to stop; :meth:`done` and :meth:`exception` are what :func:`_wait_out` needs of a
    ``Future``."""

    def __init__(self, x: np.ndarray, wait, cancel, done, leave_after_s: float | None, abandon=None):
        self.x, self.n = x, len(x)
        self.wait, self.cancel, self._done, self.leave_after_s = wait, cancel, done, leave_after_s
        self.abandon = abandon  # after leave_after_s: keep what the run uses alive, stop waiting

    def done(self) -> bool:
        return bool(self._done())

    def exception(self, timeout: float | None = None) -> None:
        """Wait up to ``timeout`` s for the run to end (``TimeoutError`` if it has not); how it
        ended (outputs, cancelled, failed) is not this method's business."""
        try:
            self.wait(timeout)
        except TimeoutError:
            raise
        except Exception:  # noqa: BLE001 - the run ended (cancelled or failed)
            pass


def _serve(jobs: queue.SimpleQueue) -> None:
    while (job := jobs.get()) is not None:
        fn, done = job
        try:
            done.set_result(fn())
        except BaseException as e:  # handed to the caller
            done.set_exception(e)


def _wait_out(done: Future, grace_s: float, leave_after_s: float | None) -> None:
    """Wait for a cancelled run to end (or ``leave_after_s``); interrupts within ``grace_s`` are held back."""
    start = time.monotonic()
    deadline = start + grace_s
    while not done.done() and (leave_after_s is None or time.monotonic() - start < leave_after_s):
        try:
            done.exception(timeout=0.1)
        except TimeoutError:
            continue
        except KeyboardInterrupt:
            if time.monotonic() > deadline:
                raise


def resolve_device(provider: str, device: int | str | None) -> int | str:
    """One ``device`` for every backend: a GPU index (``int``, or digits) for the ONNX Runtime
    providers (default 0; ignored by ``cpu``), an OpenVINO device name (``CPU``, ``GPU``,
    ``GPU.1``, ``NPU``; default ``CPU``) for ``openvino``. The wrong kind is an
    :class:`ArgumentError` naming the right one."""
    if provider != "auto" and spec_for(provider).backend == "openvino":
        if device is None:
            return "CPU"
        if isinstance(device, int) or str(device).isdigit():
            raise ArgumentError(f"--device {device} is a GPU index; OpenVINO takes a device name "
                                "(--device CPU, GPU or NPU)")
        return str(device).upper()
    if device is None:
        return 0
    if isinstance(device, int) or str(device).isdigit():
        return int(device)
    raise ArgumentError(f"--device {device} is an OpenVINO device name; use it with --provider openvino, "
                        "or give a GPU index (--device 0) for cuda/tensorrt")


class _ShapeError(ModelFileError):
    """An output computed with another shape than the model declares."""


def _run_options():
    """Fresh ONNX Runtime run options: ``terminate`` stops this run only; ORT's own error log is
    off for it (a failure is reported as one line by the caller)."""
    import onnxruntime as ort

    opts = ort.RunOptions()
    opts.log_severity_level = 4
    return opts


class Extractor:
    """Feature-map extraction from a self-describing exported model.

    Taps, input size, input layout and preprocessing come from the model's metadata. ``spin=False``
    keeps ONNX Runtime's idle threads from busy-waiting between runs (for pipelines that decode on
    the same CPUs). ``device`` picks the GPU by index (cuda, tensorrt; default 0); ``tf32=False``
    runs fp32 models in strict fp32 on CUDA (default: TF32, see :attr:`math_mode`).

    ``provider="openvino"`` runs the same file with OpenVINO (its record in the provider table
    has ``backend="openvino"``): ``device`` is then an OpenVINO device name (``CPU``, the
    default; ``GPU``, ``NPU``) and ``math_mode`` (what to ask for) is ``default`` (bf16 where the CPU has bf16
    units), ``bf16`` or ``fp32`` (strict); :attr:`math_mode` says which one ran. OpenVINO has no
    IO binding: :attr:`binds_outputs` is False and pipelines call :meth:`run`.

    >>> from featuremaps import export_model, Extractor
    >>> import numpy as np
    >>> _ = export_model("0,17", "/tmp/vgg16-doc.onnx", input_size=64)
    >>> with Extractor("/tmp/vgg16-doc.onnx", provider="cpu") as ex:
    ...     maps = ex.run(np.zeros((2, 64, 64, 3), np.uint8))  # RGB pixels; float (N, 3, H, W) works too
    >>> {k: v.shape for k, v in maps.items()}
    {'features.0': (2, 64, 64, 64), 'features.17': (2, 512, 8, 8)}
    """

    def __init__(self, model_path: str | Path | ModelRecord, provider: str = "auto", threads: int | None = None,
                 max_batch: int = 32, spin: bool = True, *, device: int | str | None = None, tf32: bool = True,
                 math_mode: str = "default", throughput: bool = False):
        # a path is read and checked here; a ModelRecord was already (read_model_record), once per run
        record = model_path if isinstance(model_path, ModelRecord) else read_model_record(model_path)
        self.record = record
        self.model_path = record.path
        backend = "onnxruntime" if provider == "auto" else spec_for(provider).backend
        device = resolve_device(provider, device)
        if backend == "openvino":  # the openvino package itself is imported when the session is built
            self.session = OpenVINOSession(record, device=device, precision=math_mode, threads=threads,
                                           throughput=throughput)
            self.info = self.session.info
        else:
            if math_mode != "default":
                raise ArgumentError(f"a math mode ({math_mode}) is OpenVINO's; use --provider openvino, or "
                                    "--no-tf32 for strict fp32 on CUDA")
            self.session, self.info = make_session(
                record, provider, threads=threads, spin=spin, max_batch=max_batch, device_id=device, tf32=tf32)
        self.backend = backend
        self.device: int | str = device  # GPU index (ONNX Runtime) or OpenVINO device name
        self.metadata = record.metadata
        self.taps: tuple[Tap, ...] = record.taps
        self.preprocessing = record.preprocessing
        self.input_name = record.input_name
        self.output_names: list[str] = list(record.outputs)
        self._declared = self._declared_shapes()
        self._runner = _ModelThread()
        self._inflight: list[PendingRun] = []
        weakref.finalize(self, self._runner.close)

    def _declared_shapes(self) -> dict[str, tuple[int, ...] | None]:
        """Per-image shape each output must have: the tap's (metadata, checked against the graph
        at open), else the graph's declared one where it is static (None: not checked)."""
        taps = {t.name: tuple(t.shape) for t in self.taps}
        graph = {o.name: tuple(o.shape[1:]) for o in self.session.get_outputs()}
        static = {k: v for k, v in graph.items() if all(isinstance(d, int) for d in v)}
        return {name: taps.get(name) or static.get(name) for name in self.output_names}

    @property
    def math_mode(self) -> str:
        """The arithmetic this session runs: ``fp32``, ``tf32`` (CUDA's default for fp32 models),
        ``fp16`` or ``int8``; parity judges by this mode's budget and the store records it."""
        return self.info.math_mode

    @property
    def provider(self) -> str:
        return self.info.provider

    @property
    def binds_outputs(self) -> bool:
        """Whether :meth:`output_ring`/:meth:`run_into`/:meth:`submit_into` work: the runtime writes
        outputs straight into preallocated (on a GPU pinned) buffers (ONNX Runtime's IO binding,
        OpenVINO's output tensors). True for both backends."""
        return self.backend in ("onnxruntime", "openvino")

    @property
    def streams(self) -> int:
        """Streams OpenVINO splits the cores into (its choice; 1 for ONNX Runtime)."""
        return getattr(self.session, "streams", 1) if self.backend == "openvino" else 1

    @property
    def lanes(self) -> int:
        """How many batches may run at once (:meth:`submit_into` before :meth:`collect`): the
        request count OpenVINO chose for its streams when built with ``throughput=True``, else 1."""
        return getattr(self.session, "lanes", 1) if self.backend == "openvino" else 1

    @property
    def input_layout(self) -> str:
        """``uint8_nhwc`` (pixels, normalized in the graph) or ``float_nchw`` (older exports)."""
        return self.preprocessing.input_layout

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """Per-image shape the graph takes: ``(H, W, 3)`` uint8 or ``(3, H, W)`` float32."""
        h, w = self.preprocessing.size
        return (h, w, 3) if self.input_layout == "uint8_nhwc" else (3, h, w)

    def run(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        """``batch``: ``uint8 (N, H, W, 3)`` RGB pixels or ``float32 (N, 3, H, W)`` normalized (as
        :func:`preprocess_bytes` makes it), in either layout whatever the model takes (converted
        by :func:`~featuremaps.engine.layouts.as_model_input`; hand over the model's own layout to
        skip that) -> ``{output name: (N, C, h, w) array}``, keys in export order (taps, then
        ``logits``)."""
        x = as_model_input(batch, self.preprocessing)
        if self.backend == "openvino":  # fresh arrays per call, already keyed by output name
            outs = self._call(lambda: self.session.run(x), self.session.cancel, len(x))
        else:
            opts = _run_options()
            got = self._call(lambda: self.session.run(self.output_names, {self.input_name: x}, opts),
                             lambda: setattr(opts, "terminate", True), len(x))
            outs = dict(zip(self.output_names, got))
        self._check_shapes(outs, len(x))
        return outs

    def _call(self, fn, cancel, n: int):
        """``fn()`` in the model thread (interruptible, see :class:`_ModelThread`); a failure of
        the runtime becomes one :class:`ModelFileError` line. OpenVINO cannot stop a ``Loop`` node
        and copies its inputs, so an interrupted OpenVINO run is left behind after 2 s."""
        try:
            return self._runner.call(fn, cancel, 2.0 if self.backend == "openvino" else None)
        except FeaturemapsError:
            raise
        except Exception as e:  # noqa: BLE001 - onnxruntime's Fail, RuntimeException...; OpenVINO's RuntimeError
            raise self._run_failure(e, n) from None

    def _run_failure(self, err: Exception, n: int) -> ModelFileError:
        reason = ort_reason(err)
        if any(k in reason for k in _ALLOCATION_FAILED):
            cap = getattr(self.info, "memory_limit", 0)
            return ModelFileError(
                f"{self.model_path}: a batch of {n} needs more memory than this model may use"
                + (f" ({cap / 2**20:.0f} MiB)" if cap else "") + f": {reason}; set {MEMORY_ENV} higher "
                f"(e.g. {MEMORY_ENV}=16GiB) or use a smaller batch")
        return ModelFileError(f"{self.model_path} failed to run on a batch of {n}: {reason}; use a model written "
                              "by `featuremaps export`")

    def _check_shapes(self, outs: dict, n: int) -> None:
        """Every output must be ``(n, *declared)``: a graph that computes other shapes than it
        declares would write maps the store and the figures misread."""
        for name, arr in outs.items():
            want = self._declared.get(name)
            if want is not None and tuple(arr.shape) != (n, *want):
                what = "tap" if any(t.name == name for t in self.taps) else "output"
                raise _ShapeError(f"{self.model_path}: {what} {name!r} is computed as {list(arr.shape)} for a "
                                     f"batch of {n} but declared {[n, *want]}; the graph does not compute what it "
                                     "declares: use a model written by `featuremaps export`")

    def output_ring(self, max_batch: int, slots: int = 3) -> OutputRing:
        """A ring of ``slots`` preallocated output buffer sets for :meth:`run_into`, each holding
        ``max_batch`` images of every output; page-locked when the session runs on a GPU.
        Only when :attr:`binds_outputs`."""
        self._need_binding()

        types = {o.name: o.type for o in self.session.get_outputs()}
        dtypes = {k: np.dtype(np.float16 if types[k] == "tensor(float16)" else np.float32) for k in self.output_names}
        return OutputRing(shapes=output_shapes(self.record, self.session), dtypes=dtypes, max_batch=max_batch,
                          slots=slots, pinned=PROVIDER_TABLE[self.provider].gpu)

    def run_into(self, batch: np.ndarray, slot: Slot) -> dict[str, np.ndarray]:
        """Like :meth:`run`, but the runtime writes every output straight into ``slot``'s
        preallocated buffers (ONNX Runtime's IO binding, on a GPU into pinned memory; OpenVINO's
        output tensors). Returns views ``{name: slot.arrays[name][:N]}``: valid until the slot is
        released."""
        return self.collect(self.submit_into(batch, slot))

    def submit_into(self, batch: np.ndarray, slot: Slot) -> PendingRun:
        """Start :meth:`run_into` in the background and return at once; :meth:`collect` gives its
        outputs. At most :attr:`lanes` runs may be outstanding (OpenVINO's streams run them at
        the same time; ONNX Runtime runs one, and the caller prepares the next batch meanwhile).
        ``batch`` may be reused as soon as this returns only with OpenVINO (which copies it)."""
        self._need_binding()
        x = as_model_input(batch, self.preprocessing)
        n = len(x)
        if n > len(next(iter(slot.arrays.values()))):
            raise ValueError(f"batch of {n} does not fit the output ring's {len(next(iter(slot.arrays.values())))}")
        views = slot.views(n)
        if self.backend == "openvino":
            try:
                run = self.session.start(x, views)
            except Exception as e:  # noqa: BLE001 - OpenVINO's RuntimeError: one line
                raise self._run_failure(e, n) from None
            pending = PendingRun(x, run.result, self.session.cancel, run.done, 2.0, run.abandon)
        else:
            binding = self.session.io_binding()
            binding.bind_cpu_input(self.input_name, x)
            for name in self.output_names:
                out = views[name]
                binding.bind_output(name, "cpu", 0, out.dtype, list(out.shape), out.ctypes.data)
            opts = _run_options()
            done = self._runner.submit(lambda: (self.session.run_with_iobinding(binding, opts), views)[1])
            pending = PendingRun(x, done.result, lambda: setattr(opts, "terminate", True), done.done, None)
        self._inflight.append(pending)
        return pending

    def collect(self, pending: PendingRun) -> dict[str, np.ndarray]:
        """Wait for a run :meth:`submit_into` started and give its outputs (views into its slot).
        An interrupt while waiting stops every run in flight (each is waited out, interrupts held
        back for ``STOP_GRACE_S``) and is re-raised; a failed run is one :class:`ModelFileError`."""
        try:
            outs = pending.wait()
        except FeaturemapsError:
            raise
        except KeyboardInterrupt:
            self.cancel_all()
            raise
        except Exception as e:  # noqa: BLE001 - onnxruntime's Fail...; OpenVINO's RuntimeError
            failed = self._run_failure(e, pending.n)
            if self.backend == "onnxruntime":
                try:  # one image unbound: a graph computing other shapes than declared says which output
                    self.run(pending.x[:1])
                except _ShapeError as wrong:
                    raise wrong from None
                except ModelFileError:
                    pass
            raise failed from None
        finally:
            if pending in self._inflight:  # ended, one way or the other (cancel_all took the rest)
                self._inflight.remove(pending)
        self._check_shapes(outs, pending.n)
        return outs

    def cancel_all(self) -> None:
        """Stop every run :meth:`submit_into` started and nobody collected, and wait for each to end
        (OpenVINO's, which hold no caller memory but their output slot, are left after 2 s)."""
        runs, self._inflight = self._inflight, []
        for run in runs:
            run.cancel()
        for run in runs:
            _wait_out(run, STOP_GRACE_S, run.leave_after_s)
            if run.abandon is not None and not run.done():
                run.abandon()

    def _need_binding(self) -> None:
        if not self.binds_outputs:
            raise ProviderError(f"provider {self.provider!r} has no IO binding; call run() "
                                "(check Extractor.binds_outputs)")

    def run_files(self, paths) -> dict[str, np.ndarray]:
        """Decode, preprocess and run image files as one batch."""
        return self.run(load_batch(paths, self.preprocessing))

    def close(self) -> None:
        self._runner.close()
        if self.backend == "openvino" and self.session is not None:
            self.session.close()
        self.session = None

    def __enter__(self) -> "Extractor":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"Extractor({str(self.model_path)!r}, provider={self.provider!r}, "
                f"taps={[t.name for t in self.taps]})")
