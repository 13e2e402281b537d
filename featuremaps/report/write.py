"""Write a report folder: PNG sprite sheets, ``report.json``, ``data.js`` (the same manifest as a
script, because browsers block ``fetch`` of local JSON from ``file://`` pages) and the static
page (``index.html``, ``report.js``, ``report.css``; no CDN, nothing fetched at view time)."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

ASSETS = ("index.html", "report.js", "report.css")


@dataclass(frozen=True)
class WrittenReport:
    """Where the report went: ``index`` (open it in a browser), file count and bytes."""

    folder: Path
    index: Path
    files: int
    bytes: int


def _write_png(path: Path, rgb: np.ndarray) -> None:
    """Full-colour (24-bit RGB) PNG: no palette quantisation of activation colours."""
    import cv2

    path.parent.mkdir(parents=True, exist_ok=True)
    ok, buf = cv2.imencode(".png", np.ascontiguousarray(rgb[..., ::-1]), [cv2.IMWRITE_PNG_COMPRESSION, 6])
    if not ok:
        raise OSError(f"PNG encoding failed for {path}")
    path.write_bytes(buf.tobytes())


def write_report(manifest: dict, sprites: dict[str, np.ndarray], out_dir: str | Path) -> WrittenReport:
    """Write ``manifest`` and ``sprites`` (``{relative path: (H, W, 3) uint8}``) under ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for rel, rgb in sprites.items():
        _write_png(out / rel, rgb)
    text = json.dumps(manifest, separators=(",", ":"), allow_nan=False)
    (out / "report.json").write_text(text)
    (out / "data.js").write_text(f"window.FEATUREMAPS_REPORT = {text};\n")
    assets = resources.files(__package__) / "assets"
    for name in ASSETS:
        (out / name).write_text((assets / name).read_text(encoding="utf-8"), encoding="utf-8")
    files = [os.path.join(r, f) for r, _, fs in os.walk(out) for f in fs]
    return WrittenReport(folder=out, index=out / "index.html", files=len(files),
                         bytes=sum(os.path.getsize(f) for f in files))
