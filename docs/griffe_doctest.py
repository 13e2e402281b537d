"""Griffe extension for the API pages: the docstrings are written for readers of the source
(doctest examples, Sphinx roles such as :func:`x`); render them as Markdown: doctest runs become
``pycon`` code blocks (else their ``[...]`` output reads as links) and roles become plain code."""

from __future__ import annotations

import re

import griffe

ROLE = re.compile(r":(?:func|meth|attr|class|mod|data|exc|obj):`~?([^`]+)`")


def fence_doctests(text: str) -> str:
    """Wrap each run of doctest lines (a ``>>>`` line up to the next blank line) in a code fence,
    and turn Sphinx roles into inline code (``:func:`~a.b.f``` -> ```a.b.f```)."""
    out, in_block = [], False
    for line in text.splitlines():
        if not in_block:
            line = ROLE.sub(r"`\1`", line)
        starts = line.lstrip().startswith(">>>")
        if starts and not in_block:
            out.append("```pycon")
            in_block = True
        elif in_block and not line.strip():
            out.append("```")
            in_block = False
        out.append(line)
    if in_block:
        out.append("```")
    return "\n".join(out)


class FenceDoctests(griffe.Extension):
    """Applies :func:`fence_doctests` to every docstring griffe loads."""

    def on_instance(self, *, obj: griffe.Object, **kwargs) -> None:
        if obj.docstring is not None:
            obj.docstring.value = fence_doctests(obj.docstring.value)
