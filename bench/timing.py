"""Wall-clock timing: interleaved repeats over several backends, and the machine's sgemm rate.

Interleaving (backend A, B, C, A, B, C, ... with the order rotated every round) spreads a
noisy neighbour's load over all backends alike, so the *ratios* measured in one run hold even
when the absolute numbers wander.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

log = logging.getLogger(__name__)


def time_call(fn: Callable[[], object]) -> float:
    """Seconds one call of ``fn`` takes (``time.perf_counter``)."""
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def interleaved(fns: dict[str, Callable[[], object]], *, warmup: int = 1, repeats: int = 5,
                on_round: Callable[[int, int], None] | None = None) -> dict[str, list[float]]:
    """Time every function of ``fns`` ``repeats`` times, round-robin, after ``warmup`` rounds.

    Round ``r`` starts at position ``r mod len(fns)`` so no backend always runs first (right
    after a slow one, or while caches are cold). Returns name -> list of seconds per call.
    ``on_round(done, total)`` is called after every round (progress for the CLI).
    """
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    names = list(fns)
    for _ in range(warmup):
        for name in names:
            fns[name]()
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(repeats):
        k = r % len(names)
        for name in names[k:] + names[:k]:
            times[name].append(time_call(fns[name]))
        if on_round is not None:
            on_round(r + 1, repeats)
    return times


@dataclass(frozen=True)
class GemmRate:
    """Measured single-precision matrix-product rate."""

    gflops: float  # best of the libraries tried, GFLOP/s
    size: int
    by_library: dict

    def to_dict(self) -> dict:
        return {"gflops": self.gflops, "size": self.size, "by_library": dict(self.by_library)}


def _best_rate(fn, flop: float, repeats: int) -> float:
    fn()  # warm-up: thread pool start, page faults
    return flop / min(time_call(fn) for _ in range(repeats)) / 1e9


def sgemm_gflops(size: int = 4096, repeats: int = 3, *, torch_threads: int | None = None,
                 cuda: bool = False) -> GemmRate:
    """GFLOP/s of a ``size x size`` float32 matrix product (``2 size^3`` FLOP), best of ``repeats``.

    Measured with NumPy's BLAS, ONNX Runtime's MatMul (MLAS, the GEMM its convolutions use) and,
    when torch is importable, ``torch.mm`` (also on the GPU
    with ``cuda=True``); the fastest is the machine's fp32 rate, since a conv library can do
    no better than its best GEMM.
    """
    rng = np.random.default_rng(0)
    a = rng.standard_normal((size, size), dtype=np.float32)
    b = rng.standard_normal((size, size), dtype=np.float32)
    flop = 2.0 * size ** 3
    rates = {"numpy": _best_rate(lambda: a @ b, flop, repeats)}
    try:
        import torch
    except ImportError:
        torch = None
    ort_rate = _ort_matmul_rate(a, b, flop, repeats, torch_threads)
    if ort_rate is not None:
        rates["onnxruntime"] = ort_rate
    if torch is not None:
        ta, tb = torch.from_numpy(a), torch.from_numpy(b)
        old = torch.get_num_threads()
        if torch_threads:
            torch.set_num_threads(torch_threads)
        try:
            rates["torch"] = _best_rate(lambda: torch.mm(ta, tb), flop, repeats)
        finally:
            torch.set_num_threads(old)
        if cuda and torch.cuda.is_available():
            # plain fp32 (TF32 off, torch's default for matmul): the bound of an fp32 engine
            ga, gb = ta.cuda(), tb.cuda()

            def mm():
                torch.mm(ga, gb)
                torch.cuda.synchronize()

            rates["torch-cuda"] = _best_rate(mm, flop, repeats)
    log.info("sgemm %d: %s", size, ", ".join(f"{k} {v:.1f} GFLOP/s" for k, v in rates.items()))
    return GemmRate(gflops=max(rates.values()), size=size, by_library=rates)


def _ort_matmul_rate(a: np.ndarray, b: np.ndarray, flop: float, repeats: int, threads: int | None,
                     keep: list | None = None) -> float | None:
    """GFLOP/s of ONNX Runtime's CPU MatMul on ``a @ b`` (None if onnx/onnxruntime are missing)."""
    try:
        import onnx
        import onnxruntime as ort
        from onnx import TensorProto, helper, numpy_helper
    except ImportError:
        return None
    n = a.shape[0]
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["A", "B"], ["C"])], "sgemm",
        [helper.make_tensor_value_info("A", TensorProto.FLOAT, [n, n])],
        [helper.make_tensor_value_info("C", TensorProto.FLOAT, [n, n])],
        initializer=[numpy_helper.from_array(b, "B")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = min(model.ir_version, 10)
    so = ort.SessionOptions()
    so.log_severity_level = 3
    if threads:
        so.intra_op_num_threads = threads
    sess = ort.InferenceSession(model.SerializeToString(), sess_options=so, providers=["CPUExecutionProvider"])
    del onnx
    if keep is not None:
        keep.append(sess)
    return _best_rate(lambda: sess.run(None, {"A": a}), flop, repeats)


GEMM_KEY = "__sgemm__"


def gemm_probe(library: str, size: int, *, threads: int | None = None) -> Callable[[], object]:
    """One ``size x size`` float32 product with ``library`` (a key of :attr:`GemmRate.by_library`),
    to time interleaved with the backends so the bound sees the same machine load they do."""
    rng = np.random.default_rng(1)
    a = rng.standard_normal((size, size), dtype=np.float32)
    b = rng.standard_normal((size, size), dtype=np.float32)
    if library == "numpy":
        return lambda: a @ b
    if library == "onnxruntime":
        box: list = []
        _ort_matmul_rate(a, b, 2.0 * size ** 3, 1, threads, keep=box)
        sess = box[0]
        return lambda: sess.run(None, {"A": a})
    import torch

    if library == "torch":
        ta, tb = torch.from_numpy(a), torch.from_numpy(b)
        return lambda: torch.mm(ta, tb)
    ga, gb = torch.from_numpy(a).cuda(), torch.from_numpy(b).cuda()

    def mm():
        torch.mm(ga, gb)
        torch.cuda.synchronize()

    return mm
