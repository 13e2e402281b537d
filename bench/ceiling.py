"""The runtime's own speed on an exported file, without featuremaps around it: the ceiling that
``extract``'s end-to-end rate is judged against.

* OpenVINO: its async THROUGHPUT queue (``AsyncInferQueue`` with the request count the compiled
  model asks for), fed one random uint8 batch over and over: what ``benchmark_app -hint
  throughput`` measures.
* ONNX Runtime: one session over every core, one run after another on a random batch (its best
  on a CPU; a GPU session the same way).

Each ceiling is compiled or built once (:func:`openvino_ceiling`, :func:`ort_ceiling`) and then
timed as often as the caller's interleaved rounds ask: ``ceiling.rate()`` runs ``batches``
batches and returns images per second.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..engine.openvino_backend import _compile_config, math_mode_of
from ..engine.session import make_session
from ..engine.validate import read_model_record


@dataclass
class Ceiling:
    """A runtime ready to be timed: ``rate()`` -> images per second over ``batches`` batches."""

    name: str
    batch_size: int
    batches: int
    run_all: object  # () -> None: runs `batches` batches and waits for all of them
    detail: dict

    def rate(self) -> float:
        t0 = time.perf_counter()
        self.run_all()
        return self.batch_size * self.batches / (time.perf_counter() - t0)


def _random_batch(model_path: Path, batch_size: int, seed: int = 0) -> np.ndarray:
    pre = read_model_record(model_path).preprocessing
    rng = np.random.default_rng(seed)
    if pre.input_layout == "uint8_nhwc":
        return rng.integers(0, 256, (batch_size, *pre.input_shape), dtype=np.uint8)
    return rng.standard_normal((batch_size, *pre.input_shape)).astype(np.float32)


def openvino_queue(model_path: str | Path, *, precision: str = "default", device: str = "CPU",
                   threads: int | None = None):
    """``(compiled model, AsyncInferQueue, request count)``: OpenVINO's own async queue on
    ``model_path`` in THROUGHPUT mode, as many requests as the compiled model asks for."""
    import openvino as ov

    config = _compile_config(device, precision, threads, throughput=True)
    compiled = ov.Core().compile_model(str(model_path), device, config)
    nireq = int(compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS"))
    return compiled, ov.AsyncInferQueue(compiled, nireq), nireq


def openvino_ceiling(model_path: str | Path, batch_size: int, batches: int, *, precision: str = "default",
                     device: str = "CPU") -> Ceiling:
    """OpenVINO's async THROUGHPUT queue on ``model_path`` (``precision``: ``default``, ``bf16``
    or ``fp32`` as for ``--math-mode``)."""
    compiled, queue, nireq = openvino_queue(model_path, precision=precision, device=device)
    x = _random_batch(Path(model_path), batch_size)

    def run_all():
        for _ in range(batches):
            queue.start_async({0: x})
        queue.wait_all()

    run_all()  # warm-up: every request allocates its buffers once
    streams = int(compiled.get_property("NUM_STREAMS"))
    return Ceiling("OpenVINO async THROUGHPUT queue", batch_size, batches, run_all,
                   {"requests": nireq, "streams": streams, "math_mode": math_mode_of(compiled)})


def ort_ceiling(model_path: str | Path, batch_size: int, batches: int, *, provider: str = "cpu") -> Ceiling:
    """One ONNX Runtime session over every core, runs back to back, outputs into fresh arrays."""
    sess, info = make_session(model_path, provider, max_batch=batch_size)
    x = _random_batch(Path(model_path), batch_size)
    name = sess.get_inputs()[0].name

    def run_all():
        for _ in range(batches):
            sess.run(None, {name: x})

    run_all()
    return Ceiling(f"ONNX Runtime {info.provider}, one session", batch_size, batches, run_all,
                   {"math_mode": info.math_mode})
