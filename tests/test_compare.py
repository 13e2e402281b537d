"""The one table of precision budgets, and that every judge reads it."""

from __future__ import annotations

import numpy as np
import pytest

from featuremaps.compare import PRECISION_BUDGETS, TapError, budget_for, compare
from featuremaps.errors import ArgumentError

# the numbers the design states (DESIGN.md "Precision and math modes"), written out here, not read back
STATED = {"fp32": (1e-5, None), "tf32": (2e-3, 0.99999), "fp16": (1e-2, 0.9999), "bf16": (1e-2, 0.9999),
          "int8": (0.1, 0.99)}


@pytest.mark.parametrize("precision", sorted(STATED))
def test_budget_rows_are_the_stated_ones(precision):
    b = budget_for(precision)
    assert (b.rel_l2, b.cosine) == STATED[precision] and b.why


def test_unknown_precision_is_one_line():
    with pytest.raises(ArgumentError, match="no parity budget for precision 'fp8'.*PRECISION_BUDGETS"):
        budget_for("fp8")


def test_export_verify_and_gate_use_the_table():
    from featuremaps.export.gate import DEFAULT_MAX_REL_L2, DEFAULT_MIN_COSINE
    from featuremaps.export.verify import FP32_REL_L2_TOL

    assert FP32_REL_L2_TOL == 1e-5
    assert (DEFAULT_MAX_REL_L2, DEFAULT_MIN_COSINE) == (0.1, 0.99)
    assert set(PRECISION_BUDGETS) == set(STATED)


def test_old_import_paths_still_work():
    import featuremaps.bench.parity as parity
    import featuremaps.bench.stats as stats

    assert parity.budget_for is budget_for and stats.compare is compare and stats.TapError is TapError


def test_budget_needs_both_limits():
    ref = {"t": np.ones((2, 3), np.float32)}
    row, = compare({"t": ref["t"] * 1.001}, ref)  # rel L2 1e-3, cosine 1.0
    assert budget_for("fp16").passes(row) and not budget_for("fp32").passes(row)
    flipped, = compare({"t": -ref["t"]}, ref)  # cosine -1
    assert not budget_for("int8").passes(flipped)
