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


def sgemm_gflops(size: int = 4096, repeats: int = 3, *, torch_threads: int | None = None) -> GemmRate:
    """GFLOP/s of a ``size x size`` float32 matrix product (``2 size^3`` FLOP), best of ``repeats``.

    Measured with NumPy's BLAS and, when torch is importable, ``torch.mm``; the faster one is
    the machine's fp32 rate, since a conv library can do no better than its best GEMM.
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
    if torch is not None:
        ta, tb = torch.from_numpy(a), torch.from_numpy(b)
        old = torch.get_num_threads()
        if torch_threads:
            torch.set_num_threads(torch_threads)
        try:
            rates["torch"] = _best_rate(lambda: torch.mm(ta, tb), flop, repeats)
        finally:
            torch.set_num_threads(old)
    log.info("sgemm %d: %s", size, ", ".join(f"{k} {v:.1f} GFLOP/s" for k, v in rates.items()))
    return GemmRate(gflops=max(rates.values()), size=size, by_library=rates)
