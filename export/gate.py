"""Per-tap parity gate: a lower-precision model must stay close to its fp32 source on every tap.

Runs both models with ONNX Runtime on the same held-back images (never the calibration set)
and compares every graph output. No torch: the fp32 model already matches PyTorch to 1e-5.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..compare import PRECISION_BUDGETS, TapError, compare
from ..errors import FeaturemapsError
from ..engine.extractor import Extractor

# the int8 row of the one budget table (featuremaps/compare.py)
DEFAULT_MIN_COSINE = PRECISION_BUDGETS["int8"].cosine
DEFAULT_MAX_REL_L2 = PRECISION_BUDGETS["int8"].rel_l2


@dataclass(frozen=True)
class GateThresholds:
    min_cosine: float = DEFAULT_MIN_COSINE
    max_rel_l2: float = DEFAULT_MAX_REL_L2

    def passes(self, row: TapError) -> bool:
        return row.cosine >= self.min_cosine and row.rel_l2 <= self.max_rel_l2


@dataclass(frozen=True)
class GateResult:
    """Per-tap parity of ``precision`` against fp32 on ``images`` held-back images."""

    precision: str
    rows: list[TapError]
    thresholds: GateThresholds
    images: int
    provider: str

    @property
    def ok(self) -> bool:
        return all(self.thresholds.passes(r) for r in self.rows)

    @property
    def failures(self) -> list[str]:
        return [r.tap for r in self.rows if not self.thresholds.passes(r)]

    def to_dict(self) -> dict:
        return {"precision": self.precision, "ok": self.ok, "images": self.images, "provider": self.provider,
                "min_cosine": self.thresholds.min_cosine, "max_rel_l2": self.thresholds.max_rel_l2,
                "taps": [r.to_dict() for r in self.rows]}


class GateError(FeaturemapsError, ValueError):
    """A converted model missed its parity gate; ``result`` holds the per-tap table."""

    def __init__(self, result: GateResult, kept: Path | None = None):
        self.result, self.kept = result, kept
        self.fp32_kept: Path | None = None  # set when an in-place conversion moved its fp32 source
        where = f"; the rejected model is kept at {kept}" if kept else ""
        super().__init__(f"{result.precision} model misses the parity gate on {', '.join(result.failures)} "
                         f"(cosine >= {result.thresholds.min_cosine:g}, rel L2 <= "
                         f"{result.thresholds.max_rel_l2:g} vs fp32){where}; try --precision fp16, more "
                         "--calib images, or looser --gate-cosine/--gate-rel-l2")


def run_model(path: str | Path, batch: np.ndarray, *, provider: str = "cpu", chunk: int = 4):
    """All outputs of ``path`` for ``batch (N, 3, H, W) float32``, run ``chunk`` images at a time,
    as float32 arrays; returns ``(outputs, provider used)``. A model whose input is float16
    (``--fp16-io``) gets the batch cast to float16."""

    with Extractor(path, provider=provider) as ex:
        run = _runner(ex)
        parts = [run(batch[i:i + chunk]) for i in range(0, len(batch), chunk)]
        used = ex.provider
    return {k: np.concatenate([p[k] for p in parts]).astype(np.float32) for k in parts[0]}, used


def _runner(ex):
    """``ex.run``, or for a float16-input model the session fed float16 directly
    (``Extractor.run`` feeds float32)."""
    inp = ex.session.get_inputs()[0]
    if inp.type != "tensor(float16)":
        return ex.run

    def run(x: np.ndarray) -> dict[str, np.ndarray]:
        outs = ex.session.run(ex.output_names, {inp.name: np.ascontiguousarray(x, dtype=np.float16)})
        return dict(zip(ex.output_names, outs))

    return run


def check_gate(candidate: str | Path, fp32: str | Path, batch: np.ndarray, *, precision: str,
               thresholds: GateThresholds = GateThresholds(), provider: str = "cpu") -> GateResult:
    """Compare every output of ``candidate`` with ``fp32`` on ``batch`` (held-back images,
    ``(N, 3, H, W) float32``): cosine similarity and relative L2 per tap over the whole batch."""
    ref, _ = run_model(fp32, batch, provider="cpu")
    out, used = run_model(candidate, batch, provider=provider)
    return GateResult(precision=precision, rows=compare(out, ref), thresholds=thresholds,
                      images=int(len(batch)), provider=used)


def format_gate_table(result: GateResult) -> str:
    """Fixed-width per-tap table with the gate verdict per row."""
    t = result.thresholds
    head = f"{'tap':<13}{'shape':<18}{'max abs err':>12}{'max |ref|':>11}{'rel L2':>10}{'cosine':>11}  result"
    lines = [f"{result.precision} vs fp32 on {result.images} held-back images ({result.provider}; gate: "
             f"cosine >= {t.min_cosine:g}, rel L2 <= {t.max_rel_l2:g})", head, "-" * len(head)]
    for r in result.rows:
        verdict = "ok" if t.passes(r) else "FAIL"
        lines.append(f"{r.tap:<13}{'x'.join(map(str, r.shape[1:])):<18}{r.max_abs:>12.3e}{r.ref_max_abs:>11.3g}"
                     f"{r.rel_l2:>10.4f}{r.cosine:>11.6f}  {verdict}")
    return "\n".join(lines)
