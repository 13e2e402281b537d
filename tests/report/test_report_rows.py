"""``report --rows`` is checked against the store before any row list is built: a huge or
20-digit range is one line at once (no gigabytes, no overflow traceback), a reversed range is
named as such."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from featuremaps.cli.report import parse_rows
from featuremaps.errors import ArgumentError


class _Store:
    """What parse_rows reads of a store: its length, status and path."""

    path = "s.zarr"

    def __len__(self) -> int:
        return 27

    @property
    def status(self):
        return np.asarray(["ok"] * 27)


@pytest.mark.parametrize("spec,match", [
    ("0-200000000", "the store has rows 0-26"),
    ("0-99999999999999999999", "the store has rows 0-26"),
    ("99999999999999999999", "the store has rows 0-26"),
    ("0--3", "the store has rows 0-26"),
    ("5-2", "the range 5-2 is reversed; write it 2-5"),
    ("3-", "must look like 0,3,7 or 0-4"),
    ("0-26,0-26", "a report shows at most 32 images"),
])
def test_bad_rows_are_one_error_before_any_allocation(spec, match):
    tracemalloc.start()
    try:
        with pytest.raises(ArgumentError, match=match):
            parse_rows(spec, _Store())
        assert tracemalloc.get_traced_memory()[1] < 1_000_000  # peak: no list of 2e8 rows
    finally:
        tracemalloc.stop()


def test_good_rows_keep_their_order():
    assert parse_rows("3,0-2,7", _Store()) == [3, 0, 1, 2, 7]
