"""Report data: per-channel statistics, energy order, parity rows and sprite sheets, as plain
NumPy/JSON-ready values (nothing is written here).

Maps may hold NaN or +-inf (a store written before such rows were refused, a hostile model):
statistics are taken over the finite values (``null`` where a channel has none), every
non-finite value is counted (``nonfinite``), and its pixels are painted :data:`NONFINITE_RGB` on
the sprite sheets; the page says so. No file, script or style name is made from data: sprites
are ``tiles/img{i}/t{j}.png`` by index, whatever the tap is called."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Mapping

import numpy as np

from ..compare import cosine_similarity, max_abs_error, rel_l2_error
from ..engine.validate import ModelRecord

STAT_NAMES = ("energy", "mean", "std", "min", "max", "active", "nonfinite")
NONFINITE_RGB = (255, 0, 255)  # magenta: not in viridis
_MARK = -1.0  # a non-finite value in a normalized sheet (valid values are 0..1, empty cells NaN)


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


def _sig(x: np.ndarray) -> list[float | None]:
    """4 significant digits: the manifest stays small (stats are for reading, not recomputing).
    NaN or +-inf (a channel with no finite value) becomes None (JSON ``null``, shown as a dash)."""
    return [float(f"{v:.4g}") if math.isfinite(v) else None for v in np.asarray(x, np.float64)]


def channel_stats(m: np.ndarray) -> dict[str, list]:
    """Per channel of ``(C, H, W)``, over its finite values: energy (mean of squares), mean, std,
    min, max and the fraction of positions > 0 ("active"), each a list of C floats (None where a
    channel has no finite value); ``nonfinite``: how many values are NaN or +-inf (C ints)."""
    x = _as_chw(m).reshape(len(m), -1).astype(np.float64)
    fin = np.isfinite(x)
    n = fin.sum(1)
    has = n > 0
    z = np.where(fin, x, 0.0)
    with np.errstate(invalid="ignore", over="ignore"):
        mean = np.where(has, z.sum(1) / np.maximum(n, 1), np.nan)
        var = np.where(fin, (z - mean[:, None]) ** 2, 0.0).sum(1) / np.maximum(n, 1)
        stats = {"energy": np.where(has, (z * z).sum(1) / np.maximum(n, 1), np.nan), "mean": mean,
                 "std": np.where(has, np.sqrt(var), np.nan),
                 "min": np.where(has, np.where(fin, x, np.inf).min(1), np.nan),
                 "max": np.where(has, np.where(fin, x, -np.inf).max(1), np.nan),
                 "active": np.where(has, (z > 0).sum(1) / np.maximum(n, 1), np.nan)}
    out = {k: _sig(v) for k, v in stats.items()}
    out["nonfinite"] = [int(v) for v in x.shape[1] - n]
    return out


def energy_order(stats: dict[str, list]) -> list[int]:
    """Channel indices by decreasing energy (ties by index; a channel without one last)."""
    e = np.asarray([-np.inf if v is None else v for v in stats["energy"]], np.float64)
    return [int(i) for i in np.lexsort((np.arange(len(e)), -e))]


def _finite_or_none(v: float) -> float | None:
    return v if math.isfinite(v) else None


def parity_rows(maps: Mapping[str, np.ndarray], reference: Mapping[str, np.ndarray]) -> dict[str, dict]:
    """``{tap: {max_abs, rel_l2, cosine}}`` of the maps against the PyTorch reference (None
    where NaN or +-inf in either makes a number meaningless; the page shows it as outside)."""
    with np.errstate(invalid="ignore", over="ignore"):
        return {name: {"max_abs": _finite_or_none(max_abs_error(maps[name], ref)),
                       "rel_l2": _finite_or_none(rel_l2_error(maps[name], ref)),
                       "cosine": _finite_or_none(cosine_similarity(maps[name], ref))}
                for name, ref in reference.items()}


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
    channel are NaN; a pixel that holds (or, downsampled, covers) a NaN or +-inf is ``-1``. Maps
    larger than ``tile_px`` are area-downsampled to ``t = tile_px`` (smaller ones stay native; the
    page enlarges them pixelated). Returns ``(sheet, t)``."""
    import cv2

    m = _as_chw(m)
    c, h, w = m.shape
    t = min(max(h, w), tile_px)
    rows, cols = grid_shape(c)
    cells = np.full((rows * cols, t, t), np.nan, np.float32)
    flat = m.reshape(1, -1) if h * w == 1 else m.reshape(c, -1)  # a (C,) vector: one scale for the tap
    fin = np.isfinite(flat)
    lo = np.where(fin, flat, np.inf).min(1)[:, None, None]
    span = np.where(fin, flat, -np.inf).max(1)[:, None, None] - lo
    ok = np.isfinite(span) & (span > 0)
    with np.errstate(invalid="ignore", over="ignore"):
        full = np.where(ok, (m - np.where(ok, lo, 0)) / np.where(ok, span, 1), 0.5).astype(np.float32)
    bad = ~np.isfinite(m)
    full[bad] = 0.5
    for ch in range(c):
        cells[ch] = _fit(cv2, full[ch], t)
        if bad[ch].any():
            cells[ch][_fit(cv2, bad[ch].astype(np.float32), t) > 0] = _MARK
    return cells.reshape(rows, cols, t, t).transpose(0, 2, 1, 3).reshape(rows * t, cols * t), t


def _fit(cv2, tile: np.ndarray, t: int) -> np.ndarray:
    """One ``(h, w)`` channel as a ``(t, t)`` tile: area-averaged down, nearest up."""
    if tile.shape == (t, t):
        return tile
    return cv2.resize(tile, (t, t), interpolation=cv2.INTER_AREA if tile.shape[0] > t else cv2.INTER_NEAREST)


def sprite_sheet(m: np.ndarray, tile_px: int, lut: np.ndarray) -> tuple[np.ndarray, int]:
    """:func:`normalized_sheet` coloured by ``lut`` ``(256, 3)``: ``(rows*t, cols*t, 3) uint8`` RGB
    (empty cells black, NaN/+-inf pixels :data:`NONFINITE_RGB`). Returns ``(sheet, t)``."""
    norm, t = normalized_sheet(m, tile_px)
    rgb = colorize(np.nan_to_num(norm, nan=0.0), lut)
    rgb[np.isnan(norm)] = 0
    rgb[norm == _MARK] = NONFINITE_RGB
    return rgb, t


def value_sheet(m: np.ndarray, tile_px: int) -> np.ndarray:
    """:func:`normalized_sheet` as ``uint8`` grey levels (0 = the channel's min, 255 its max): the
    page reads a pixel's value back as ``min + g / 255 * (max - min)``."""
    norm, _ = normalized_sheet(m, tile_px)
    return (np.clip(np.nan_to_num(norm, nan=0.0), 0, 1) * 255 + 0.5).astype(np.uint8)


def colormap_lut(name: str = "viridis") -> np.ndarray:
    """``(256, 3) float64`` RGB (0..255) of a matplotlib colormap."""
    from matplotlib import colormaps

    return colormaps[name](np.linspace(0, 1, 256))[:, :3] * 255


def _tap_entry(tap, m: np.ndarray, tile: int, reduction) -> dict:
    c, h, w = _as_chw(m).shape
    rows, cols = grid_shape(c)
    return {"name": tap.name, "alias": getattr(tap, "alias", ""), "channels": c, "height": h, "width": w,
            "tile": tile, "rows": rows, "cols": cols, "reduction": reduction}


def build_report(images: list[ReportImage], taps, *, record: ModelRecord, title: str, tile_px: int = 64,
                 parity_note: str | None = None, budget: dict | None = None,
                 pixel_values: bool = False) -> tuple[dict, dict]:
    """``(manifest, sprites)``: the JSON-ready manifest and ``{relative PNG path: (H, W, 3) uint8}``.

    ``taps``: :class:`Tap` objects in display order; ``record``: the exported model's (or a
    store's) record (model, weights, precision, reductions); ``parity_note``: why parity was not
    computed (shown instead of numbers); ``budget``: the precision's parity budget, shown next to the numbers;
    ``pixel_values``: also a grey value sheet per image and tap (``values/...js``, loaded by the page
    only when a channel is inspected) so hovering the enlarged channel shows the value under the
    cursor (8-bit: within (max - min) / 510 of the tile's value).
    """
    if not images:
        raise ValueError("a report needs at least one image")
    lut = colormap_lut()
    sprites, per_image, tap_entries = {}, [], {}
    reductions = record.reductions
    for i, im in enumerate(images):
        entry = {"name": im.name, "file": f"images/img{i}.png", "taps": {}, "parity": None}
        sprites[entry["file"]] = np.asarray(im.image, np.uint8)
        for j, tap in enumerate(taps):
            m = im.maps[tap.name]
            sheet, t = sprite_sheet(m, tile_px, lut)
            rel = f"tiles/img{i}/t{j}.png"  # by index: no path, url() or script src is made from a name
            sprites[rel] = sheet
            stats = channel_stats(_as_chw(m))
            entry["taps"][tap.name] = {"sprite": rel, "stats": stats, "order": energy_order(stats), "values": None,
                                       "nonfinite": sum(stats["nonfinite"])}
            if pixel_values:
                vrel = f"values/img{i}/t{j}.js"
                sprites[vrel] = value_sheet(m, tile_px)
                entry["taps"][tap.name]["values"] = vrel
            tap_entries.setdefault(tap.name, _tap_entry(tap, m, t, reductions.get(tap.name)))
        if im.reference is not None:
            entry["parity"] = parity_rows({t.name: im.maps[t.name] for t in taps},
                                          {t.name: im.reference[t.name] for t in taps})
        per_image.append(entry)
    manifest = {"format": "featuremaps-report/1", "title": title, "model": record.model,
                "weights": record.weights, "precision": record.precision,
                "math_mode": record.math_mode, "input_size": record.input_size,
                "tile_px": tile_px, "stats": list(STAT_NAMES), "taps": [tap_entries[t.name] for t in taps],
                "images": per_image, "parity_note": parity_note, "parity_budget": budget,
                "pixel_values": pixel_values, "nonfinite_colour": "#%02x%02x%02x" % NONFINITE_RGB}
    return manifest, sprites
