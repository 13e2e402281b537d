"""Check an exported model against the clone-hook PyTorch reference on the same input tensor."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..compare import PRECISION_BUDGETS, TapError, compare
from ..contracts import Tap
from ..engine.extractor import Extractor
from .reference import reference_features

FP32_REL_L2_TOL = PRECISION_BUDGETS["fp32"].rel_l2


@dataclass(frozen=True)
class Verification:
    rows: list[TapError]
    tolerance: float
    provider: str

    @property
    def ok(self) -> bool:
        return all(r.passes(self.tolerance) for r in self.rows)

    @property
    def failures(self) -> list[str]:
        return [r.tap for r in self.rows if not r.passes(self.tolerance)]


def verify_export(model_path: str | Path, net, taps: tuple[Tap, ...], batch: np.ndarray, *,
                  tolerance: float = FP32_REL_L2_TOL, provider: str = "cpu") -> Verification:
    """Run ``model_path`` with ONNX Runtime and ``net`` with clone hooks on ``batch``
    ``(N, 3, H, W) float32``; per-tap max abs and relative L2 error (rel L2 <= ``tolerance`` passes)."""
    with Extractor(model_path, provider=provider) as ex:
        outs = ex.run(batch)
        used = ex.provider
    ref = reference_features(net, batch, taps)
    return Verification(rows=compare(outs, ref), tolerance=tolerance, provider=used)
