"""Comparing feature maps: the error statistics and the one table of precision budgets.

Every place that judges maps against a reference reads this module: ``export``'s verify step
and its fp16/int8 gate, ``featuremaps parity``, the demo and the benchmarks. A new precision
adds one row to :data:`PRECISION_BUDGETS`. NumPy only (no torch, no onnxruntime).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import ArgumentError

__all__ = ["Budget", "PRECISION_BUDGETS", "TapError", "budget_for", "compare", "cosine_similarity",
           "format_parity_table", "max_abs_error", "rel_l2_error"]


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


# ---------------------------------------------------------------- budgets


@dataclass(frozen=True)
class Budget:
    """Pass/fail limits for one precision: rel L2 at most ``rel_l2``; cosine at least ``cosine``."""

    rel_l2: float
    cosine: float | None
    why: str

    def passes(self, row: TapError) -> bool:
        return row.rel_l2 <= self.rel_l2 and (self.cosine is None or row.cosine >= self.cosine)

    def to_dict(self) -> dict:
        return {"rel_l2": self.rel_l2, "cosine": self.cosine, "why": self.why}


# The one table of budgets, per tap against the fp32 PyTorch clone-hook reference on the same
# input tensor. The export gate (export/gate.py) takes its int8 defaults from the int8 row.
PRECISION_BUDGETS: dict[str, Budget] = {
    "fp32": Budget(1e-5, None,
                   "same arithmetic, different summation order and conv algorithms; measured "
                   "rel L2 is ~1e-7..1e-6 for VGG16 taps, so 1e-5 leaves 10x margin and still "
                   "catches any real bug (a wrong tap, a missing ReLU, a perturbed weight)"),
    "tf32": Budget(2e-3, 0.99999,
                   "TF32 tensor-core math keeps a 10-bit mantissa (unit roundoff 4.9e-4) in the "
                   "convolutions; CUDA's default for fp32 models"),
    "fp16": Budget(1e-2, 0.9999,
                   "fp16 unit roundoff is 4.9e-4; rounding weights and activations over up to 13 "
                   "conv layers accumulates to ~1e-3 rel L2, the budget allows 10x that"),
    "bf16": Budget(1e-2, 0.9999,
                   "bf16 keeps fp32's range with an 8-bit mantissa (unit roundoff 3.9e-3): the same "
                   "budget as fp16, which it meets with less margin"),
    "int8": Budget(0.1, 0.99,
                   "the calibrated int8 export gate: every tap cosine >= 0.99 and rel L2 <= 0.1 "
                   "against fp32"),
}


def budget_for(precision: str) -> Budget:
    """The budget for ``precision`` (``fp32``, ``tf32``, ``fp16``, ``bf16``, ``int8``). A mixed
    mode such as OpenVINO's ``int8+bf16`` (int8 convolutions, bf16 elsewhere) gets the loosest
    budget of its parts."""
    if "+" in precision:
        return max((budget_for(p) for p in precision.split("+")), key=lambda b: b.rel_l2)
    try:
        return PRECISION_BUDGETS[precision]
    except KeyError:
        raise ArgumentError(f"no parity budget for precision {precision!r}; known: "
                            f"{', '.join(PRECISION_BUDGETS)} (add a row to PRECISION_BUDGETS)") from None
