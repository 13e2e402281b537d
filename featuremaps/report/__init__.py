"""The interactive report: a self-contained folder (HTML + local JS/CSS + PNG sprite sheets) to
browse every channel of every tap in a browser, with no network at view time.

:func:`build_report` turns maps into a manifest plus sprite images (pure data, no files);
:func:`write_report` writes them. ``featuremaps report`` (the CLI) gathers the maps.
"""

from .data import ReportImage, build_report, channel_stats, parity_rows
from .write import write_report

__all__ = ["ReportImage", "build_report", "channel_stats", "parity_rows", "write_report"]
