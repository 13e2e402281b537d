"""Write a report folder: PNG sprite sheets, ``report.json``, ``data.js`` (the same manifest as a
script, because browsers block ``fetch`` of local JSON from ``file://`` pages) and the static
page (``index.html``, ``report.js``, ``report.css``; no CDN, nothing fetched at view time).

Names in the manifest (image file names, model metadata, store attributes) are hostile: the page
puts them into the document only as text (``textContent``), and ``data.js`` escapes ``<``, ``>``,
``&`` and every non-ASCII character, so ``</script>`` or ``<!--`` in a name is inert even if the
script is inlined into the page."""

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


def _write_values_js(path: Path, key: str, grey: np.ndarray) -> None:
    """A grey PNG wrapped in a script (``FM_VALUES(key, "data:image/png;base64,...")``): a page
    opened from ``file://`` may read pixels of a ``data:`` image, never of a local PNG file."""
    import base64

    import cv2

    path.parent.mkdir(parents=True, exist_ok=True)
    ok, buf = cv2.imencode(".png", grey, [cv2.IMWRITE_PNG_COMPRESSION, 9])
    if not ok:
        raise OSError(f"PNG encoding failed for {path}")
    uri = "data:image/png;base64," + base64.b64encode(buf.tobytes()).decode("ascii")
    path.write_text(f"window.FM_VALUES({script_json(key)}, {script_json(uri)});\n")


def script_json(value) -> str:
    """``value`` as JSON that is also safe inside an HTML ``<script>`` element: no ``<``, ``>``
    or ``&`` (so no ``</script>`` or ``<!--``), and no raw U+2028/U+2029 (ASCII only)."""
    text = json.dumps(value, separators=(",", ":"), allow_nan=False, ensure_ascii=True)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def write_report(manifest: dict, sprites: dict[str, np.ndarray], out_dir: str | Path) -> WrittenReport:
    """Write ``manifest`` and ``sprites`` (``{relative path: (H, W, 3) uint8}`` PNGs, and ``(H, W)
    uint8`` value sheets for paths ending in ``.js``) under ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for rel, img in sprites.items():
        if rel.endswith(".js"):
            _write_values_js(out / rel, rel, img)
        else:
            _write_png(out / rel, img)
    text = json.dumps(manifest, separators=(",", ":"), allow_nan=False)
    (out / "report.json").write_text(text)
    (out / "data.js").write_text(f"window.FEATUREMAPS_REPORT = {script_json(manifest)};\n")
    assets = resources.files(__package__) / "assets"
    for name in ASSETS:
        (out / name).write_text((assets / name).read_text(encoding="utf-8"), encoding="utf-8")
    files = [os.path.join(r, f) for r, _, fs in os.walk(out) for f in fs]
    return WrittenReport(folder=out, index=out / "index.html", files=len(files),
                         bytes=sum(os.path.getsize(f) for f in files))
