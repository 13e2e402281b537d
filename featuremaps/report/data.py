"""Report data: per-channel statistics, energy order, parity rows and sprite sheets, as plain
NumPy/JSON-ready values (nothing is written here)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Mapping

import numpy as np

from ..compare import cosine_similarity, max_abs_error, rel_l2_error

STAT_NAMES = ("energy", "mean", "std", "min", "max", "active")


@dataclass(frozen=True)
class ReportImage:
    """One image of the report: ``image`` ``(H, W, 3) uint8`` RGB as the model saw it (resized),
    ``maps`` ``{tap: (C, H, W)}`` (a reduced ``(C,)`` tap is drawn as ``(C, 1, 1)``),
    ``reference`` the PyTorch maps of the same taps when parity was computed."""

    name: str
    image: np.ndarray
    maps: Mapping[str, np.ndarray]
    reference: Mapping[str, np.ndarray] | None = field(default=None)


def _as_chw(m: np.ndarray) -> np.ndarray:
    m = np.asarray(m, dtype=np.float32)
    if m.ndim == 1:
        return m[:, None, None]
    if m.ndim != 3:
        raise ValueError(f"a report map must be (C, H, W) or (C,), got shape {m.shape}")
    return m


def _sig(x: np.ndarray) -> list[float]:
    """4 significant digits: the manifest stays small (stats are for reading, not recomputing)."""
    return [float(f"{v:.4g}") for v in np.asarray(x, np.float64)]


def channel_stats(m: np.ndarray) -> dict[str, list[float]]:
    """Per channel of ``(C, H, W)``: energy (mean of squares), mean, std, min, max and the
    fraction of positions > 0 ("active"); each a list of C floats."""
    x = _as_chw(m).reshape(len(m), -1).astype(np.float64)
    stats = {"energy": (x * x).mean(1), "mean": x.mean(1), "std": x.std(1), "min": x.min(1), "max": x.max(1),
             "active": (x > 0).mean(1)}
    return {k: _sig(v) for k, v in stats.items()}


def energy_order(stats: dict[str, list[float]]) -> list[int]:
    """Channel indices by decreasing energy (ties by index)."""
    e = np.asarray(stats["energy"])
    return [int(i) for i in np.lexsort((np.arange(len(e)), -e))]


def parity_rows(maps: Mapping[str, np.ndarray], reference: Mapping[str, np.ndarray]) -> dict[str, dict]:
    """``{tap: {max_abs, rel_l2, cosine}}`` of the maps against the PyTorch reference."""
    return {name: {"max_abs": max_abs_error(maps[name], ref), "rel_l2": rel_l2_error(maps[name], ref),
                   "cosine": cosine_similarity(maps[name], ref)} for name, ref in reference.items()}


def grid_shape(channels: int) -> tuple[int, int]:
    """``(rows, cols)`` of a near-square sprite grid."""
    cols = max(1, math.ceil(math.sqrt(channels)))
    return math.ceil(channels / cols), cols


def colorize(norm: np.ndarray, lut: np.ndarray) -> np.ndarray:
    """``norm`` in [0, 1] -> ``(..., 3) uint8`` RGB, interpolated between the ``(256, 3)`` colormap
    entries, so neighbouring values keep distinct colours (no 256-level banding)."""
    x = np.clip(norm, 0, 1) * (len(lut) - 1)
    grid = np.arange(len(lut))
    rgb = np.stack([np.interp(x, grid, lut[:, k].astype(np.float64)) for k in range(3)], axis=-1)
    return (rgb + 0.5).astype(np.uint8)


def normalized_sheet(m: np.ndarray, tile_px: int) -> tuple[np.ndarray, int]:
    """Every channel of ``(C, H, W)`` scaled to its own min..max (a constant channel is 0.5; a
    reduced ``(C, 1, 1)`` vector on one scale across the tap, so its tiles compare),
    tiled row-major into one ``(rows*t, cols*t) float32`` sheet in [0, 1]; cells past the last
    channel are NaN. Maps larger than ``tile_px`` are area-downsampled to ``t = tile_px`` (smaller
    ones stay native; the page enlarges them pixelated). Returns ``(sheet, t)``."""
    import cv2

    m = _as_chw(m)
    c, h, w = m.shape
    t = min(max(h, w), tile_px)
    rows, cols = grid_shape(c)
    cells = np.full((rows * cols, t, t), np.nan, np.float32)
    flat = m.reshape(1, -1) if h * w == 1 else m.reshape(c, -1)  # a (C,) vector: one scale for the tap
    lo = flat.min(1)[:, None, None]
    span = flat.max(1)[:, None, None] - lo
    full = np.where(span > 0, (m - lo) / np.where(span > 0, span, 1), 0.5).astype(np.float32)
    for ch in range(c):
        cells[ch] = full[ch] if (h, w) == (t, t) else cv2.resize(
            full[ch], (t, t), interpolation=cv2.INTER_AREA if h > t else cv2.INTER_NEAREST)
    return cells.reshape(rows, cols, t, t).transpose(0, 2, 1, 3).reshape(rows * t, cols * t), t


def sprite_sheet(m: np.ndarray, tile_px: int, lut: np.ndarray) -> tuple[np.ndarray, int]:
    """:func:`normalized_sheet` coloured by ``lut`` ``(256, 3)``: ``(rows*t, cols*t, 3) uint8`` RGB
    (empty cells black). Returns ``(sheet, t)``."""
    norm, t = normalized_sheet(m, tile_px)
    rgb = colorize(np.nan_to_num(norm, nan=0.0), lut)
    rgb[np.isnan(norm)] = 0
    return rgb, t


def value_sheet(m: np.ndarray, tile_px: int) -> np.ndarray:
    """:func:`normalized_sheet` as ``uint8`` grey levels (0 = the channel's min, 255 its max): the
    page reads a pixel's value back as ``min + g / 255 * (max - min)``."""
    norm, _ = normalized_sheet(m, tile_px)
    return (np.nan_to_num(norm, nan=0.0) * 255 + 0.5).astype(np.uint8)


def colormap_lut(name: str = "viridis") -> np.ndarray:
    """``(256, 3) float64`` RGB (0..255) of a matplotlib colormap."""
    from matplotlib import colormaps

    return colormaps[name](np.linspace(0, 1, 256))[:, :3] * 255


def _tap_entry(tap, m: np.ndarray, tile: int, reduction) -> dict:
    c, h, w = _as_chw(m).shape
    rows, cols = grid_shape(c)
    return {"name": tap.name, "alias": getattr(tap, "alias", ""), "channels": c, "height": h, "width": w,
            "tile": tile, "rows": rows, "cols": cols, "reduction": reduction}


def build_report(images: list[ReportImage], taps, *, meta: dict, title: str, tile_px: int = 64,
                 parity_note: str | None = None, budget: dict | None = None,
                 pixel_values: bool = False) -> tuple[dict, dict]:
    """``(manifest, sprites)``: the JSON-ready manifest and ``{relative PNG path: (H, W, 3) uint8}``.

    ``taps``: :class:`Tap` objects in display order; ``meta``: the export metadata (model,
    weights, precision, reductions); ``parity_note``: why parity was not computed (shown
    instead of numbers); ``budget``: the precision's parity budget, shown next to the numbers;
    ``pixel_values``: also a grey value sheet per image and tap (``values/...js``, loaded by the page
    only when a channel is inspected) so hovering the enlarged channel shows the value under the
    cursor (8-bit: within (max - min) / 510 of the tile's value).
    """
    if not images:
        raise ValueError("a report needs at least one image")
    lut = colormap_lut()
    sprites, per_image, tap_entries = {}, [], {}
    reductions = meta.get("reductions") or {}
    for i, im in enumerate(images):
        entry = {"name": im.name, "file": f"images/img{i}.png", "taps": {}, "parity": None}
        sprites[entry["file"]] = np.asarray(im.image, np.uint8)
        for tap in taps:
            m = im.maps[tap.name]
            sheet, t = sprite_sheet(m, tile_px, lut)
            rel = f"tiles/img{i}/{tap.name}.png"
            sprites[rel] = sheet
            stats = channel_stats(_as_chw(m))
            entry["taps"][tap.name] = {"sprite": rel, "stats": stats, "order": energy_order(stats), "values": None}
            if pixel_values:
                vrel = f"values/img{i}/{tap.name}.js"
                sprites[vrel] = value_sheet(m, tile_px)
                entry["taps"][tap.name]["values"] = vrel
            tap_entries.setdefault(tap.name, _tap_entry(tap, m, t, reductions.get(tap.name)))
        if im.reference is not None:
            entry["parity"] = parity_rows({t.name: im.maps[t.name] for t in taps},
                                          {t.name: im.reference[t.name] for t in taps})
        per_image.append(entry)
    manifest = {"format": "featuremaps-report/1", "title": title, "model": meta.get("model"),
                "weights": meta.get("weights") or {}, "precision": meta.get("precision", "fp32"),
                "math_mode": meta.get("math_mode"), "input_size": meta.get("input_size"),
                "tile_px": tile_px, "stats": list(STAT_NAMES), "taps": [tap_entries[t.name] for t in taps],
                "images": per_image, "parity_note": parity_note, "parity_budget": budget,
                "pixel_values": pixel_values}
    return manifest, sprites
