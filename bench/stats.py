"""Timing statistics on plain NumPy arrays (no torch).

The error statistics live in :mod:`featuremaps.compare` (re-exported here).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..compare import (TapError, compare, cosine_similarity, format_parity_table,  # noqa: F401 - re-exported
                       max_abs_error, rel_l2_error)


def median_rate(count: int, seconds: list[float]) -> float:
    """Items per second from the median of repeated timings of ``count`` items."""
    return count / float(np.median(seconds))


# ---------------------------------------------------------------- timing statistics


def percentile(values, q: float) -> float:
    """The ``q``-th percentile (0..100) of ``values``, linear interpolation (NumPy's default).

    With few samples a high percentile is close to the maximum: report the sample count with it.
    """
    arr = np.asarray(values, dtype=np.float64)
    if arr.size == 0:
        raise ValueError("percentile of no samples; run at least one repeat")
    if not 0.0 <= q <= 100.0:
        raise ValueError(f"percentile q={q} is outside 0..100")
    return float(np.percentile(arr, q))


@dataclass(frozen=True)
class LatencySummary:
    """Latency of one (backend, batch size): seconds per batch and images per second."""

    batch: int
    n: int
    median_s: float
    p90_s: float
    p99_s: float
    min_s: float
    mean_s: float

    @property
    def images_per_s(self) -> float:
        """Throughput from the median latency: ``batch / median_s``."""
        return self.batch / self.median_s

    def to_dict(self) -> dict:
        return {"batch": self.batch, "n": self.n, "median_s": self.median_s, "p90_s": self.p90_s,
                "p99_s": self.p99_s, "min_s": self.min_s, "mean_s": self.mean_s,
                "images_per_s": self.images_per_s}


def summarize_latency(seconds, batch: int) -> LatencySummary:
    """Median, p90, p99, min and mean of per-batch ``seconds`` for a batch of ``batch`` images."""
    arr = np.asarray(seconds, dtype=np.float64)
    if arr.size == 0:
        raise ValueError("no timings to summarize; run at least one repeat")
    if batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")
    return LatencySummary(batch=batch, n=int(arr.size), median_s=float(np.median(arr)),
                          p90_s=percentile(arr, 90), p99_s=percentile(arr, 99),
                          min_s=float(arr.min()), mean_s=float(arr.mean()))


def ratio(value: float, baseline: float) -> float:
    """``value / baseline`` (speed-up when both are rates); ``nan`` when the baseline is 0 or missing."""
    if baseline is None or value is None or baseline == 0 or not np.isfinite(baseline):
        return float("nan")
    return float(value) / float(baseline)


def bound_images_per_s(gflops: float, flops_per_image: float) -> float:
    """The fp32 arithmetic bound: machine ``gflops`` (GFLOP/s) / ``flops_per_image`` (FLOP)."""
    if flops_per_image <= 0:
        raise ValueError(f"flops_per_image must be > 0, got {flops_per_image}")
    return gflops * 1e9 / flops_per_image
