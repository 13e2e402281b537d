"""Error and timing statistics on plain NumPy arrays (no torch)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def max_abs_error(out: np.ndarray, ref: np.ndarray) -> float:
    return float(np.max(np.abs(out.astype(np.float64) - ref.astype(np.float64)))) if ref.size else 0.0


def rel_l2_error(out: np.ndarray, ref: np.ndarray) -> float:
    """``||out - ref||_2 / ||ref||_2`` over the whole array (0 when both are all zero)."""
    diff = np.linalg.norm((out.astype(np.float64) - ref.astype(np.float64)).ravel())
    norm = np.linalg.norm(ref.astype(np.float64).ravel())
    if norm == 0.0:
        return 0.0 if diff == 0.0 else float("inf")
    return float(diff / norm)


def cosine_similarity(out: np.ndarray, ref: np.ndarray) -> float:
    a, b = out.astype(np.float64).ravel(), ref.astype(np.float64).ravel()
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    if na == 0.0 or nb == 0.0:
        return 1.0 if na == nb else 0.0
    return float(a @ b / (na * nb))


@dataclass(frozen=True)
class TapError:
    """Parity of one tap: ``out`` compared with the reference ``ref``."""

    tap: str
    shape: tuple[int, ...]
    max_abs: float
    rel_l2: float
    cosine: float
    ref_max_abs: float

    def passes(self, rel_l2_tol: float) -> bool:
        return self.rel_l2 <= rel_l2_tol

    def to_dict(self) -> dict:
        return {"tap": self.tap, "shape": list(self.shape), "max_abs": self.max_abs,
                "rel_l2": self.rel_l2, "cosine": self.cosine, "ref_max_abs": self.ref_max_abs}


def compare(outputs: dict[str, np.ndarray], reference: dict[str, np.ndarray]) -> list[TapError]:
    """Per-tap errors of ``outputs`` against ``reference`` (same keys, same shapes)."""
    rows = []
    for name, ref in reference.items():
        out = outputs[name]
        if out.shape != ref.shape:
            raise ValueError(f"{name}: output shape {out.shape} differs from reference {ref.shape}")
        rows.append(TapError(tap=name, shape=tuple(ref.shape), max_abs=max_abs_error(out, ref),
                             rel_l2=rel_l2_error(out, ref), cosine=cosine_similarity(out, ref),
                             ref_max_abs=float(np.max(np.abs(ref))) if ref.size else 0.0))
    return rows


def format_parity_table(rows: list[TapError], rel_l2_tol: float | None = None) -> str:
    """A fixed-width table: tap, shape, max |err|, max |ref|, rel L2, cosine[, pass/FAIL]."""
    head = f"{'tap':<13}{'shape':<18}{'max abs err':>12}{'max |ref|':>11}{'rel L2':>11}{'cosine':>11}"
    lines = [head + ("  result" if rel_l2_tol is not None else ""), "-" * (len(head) + 8)]
    for r in rows:
        line = (f"{r.tap:<13}{'x'.join(map(str, r.shape)):<18}{r.max_abs:>12.3e}{r.ref_max_abs:>11.3g}"
                f"{r.rel_l2:>11.2e}{r.cosine:>11.8f}")
        if rel_l2_tol is not None:
            line += "  ok" if r.passes(rel_l2_tol) else f"  FAIL (> {rel_l2_tol:g})"
        lines.append(line)
    return "\n".join(lines)


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
