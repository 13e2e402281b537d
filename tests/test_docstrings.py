"""The docstring examples run (pytest's --doctest-modules cannot import engine/, export/, bench/ under
their installed names, so this test imports each module by its dotted name and runs doctest on it)."""

from __future__ import annotations

import doctest
import importlib

import pytest

from test_layering import all_modules

# examples that export a model or build a torch network take seconds
_HEAVY = ("export_model", "torchvision")


def _cases():
    for name, path in sorted(all_modules().items()):
        text = path.read_text()
        if any(">>>" in line and "+SKIP" not in line for line in text.splitlines()):
            marks = [pytest.mark.slow] if any(h in text for h in _HEAVY) else []
            yield pytest.param(name, marks=marks, id=name)


@pytest.mark.parametrize("module", list(_cases()))
def test_docstring_examples(module):
    result = doctest.testmod(importlib.import_module(module), optionflags=doctest.ELLIPSIS, verbose=False)
    assert result.attempted > 0 and result.failed == 0, f"{module}: {result.failed} of {result.attempted} failed"
