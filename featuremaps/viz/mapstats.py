"""Pure NumPy helpers behind the figures: which channels to show, and per-tap statistics.

Nothing here draws or imports matplotlib; :mod:`featuremaps.figures` reads these results.
A feature map is one image's tap value, ``(C, H, W)`` float32.

A conv tap (``features.0``) is the conv output *before* its ReLU (half of it negative, see
the tap contract). Wherever a statistic means "how strongly does this respond", it is
taken after ReLU, and :attr:`TapStats.relu_applied` says so for the figure to state.

A map may hold NaN or +-inf (a store written before non-finite rows were refused, a hostile
model): every statistic here is taken over the finite values only, :func:`normalize` leaves the
others NaN for the figures to mark, and :attr:`TapStats.nonfinite` counts them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..contracts import Tap

SELECT_MODES = ("first", "top", "spread")
SCALE_MODES = ("channel", "layer")


def check_map(fmap: np.ndarray, tap: Tap) -> np.ndarray:
    """``fmap`` as a ``(C, H, W)`` array, or a ValueError that shows the shape."""
    fmap = np.asarray(fmap)
    if fmap.ndim != 3:
        raise ValueError(f"{tap.name}: expected one image's map (C, H, W), got shape {fmap.shape}")
    return fmap


def needs_relu(tap: Tap) -> bool:
    """True for taps whose values are not yet rectified (VGG's Conv2d outputs)."""
    return tap.kind == "Conv2d"


def nonfinite_count(fmap: np.ndarray) -> int:
    """How many values of ``fmap`` are NaN or +-inf."""
    fmap = np.asarray(fmap)
    return int(fmap.size - np.count_nonzero(np.isfinite(fmap))) if fmap.dtype.kind == "f" else 0


def finite_range(x: np.ndarray) -> tuple[float, float]:
    """``(min, max)`` of the finite values of ``x``; ``(nan, nan)`` when there are none."""
    x = np.asarray(x)
    fin = x[np.isfinite(x)]
    return (float(fin.min()), float(fin.max())) if fin.size else (float("nan"), float("nan"))


def activated(fmap: np.ndarray, tap: Tap) -> np.ndarray:
    """The map after the ReLU that follows it: ``max(x, 0)`` for a conv tap, else unchanged."""
    return np.maximum(fmap, 0) if needs_relu(tap) else fmap


def channel_energy(fmap: np.ndarray, tap: Tap) -> np.ndarray:
    """``(C,)`` mean squared activation per channel, after ReLU (a dead channel scores 0; NaN and
    +-inf count as 0, so they cannot win a "top" selection)."""
    a = activated(check_map(fmap, tap), tap).astype(np.float64)
    a = np.where(np.isfinite(a), a, 0.0)
    return (a * a).mean(axis=(1, 2))


def select_channels(fmap: np.ndarray, tap: Tap, n: int, how: str = "first") -> np.ndarray:
    """Indices of ``n`` channels to show (fewer if the tap has fewer).

    ``first``: 0..n-1 (the seed's choice). ``top``: the n with the most activation energy for
    this image, strongest first (ties: lower index first). ``spread``: evenly spaced over the
    layer, first and last included.

    >>> import numpy as np
    >>> from featuremaps.export.taps import parse_taps
    >>> tap = parse_taps("features.1")[0]
    >>> select_channels(np.zeros((64, 2, 2)), tap, 4, "spread").tolist()
    [0, 21, 42, 63]
    """
    c = check_map(fmap, tap).shape[0]
    n = max(1, min(int(n), c))
    if how == "first":
        return np.arange(n)
    if how == "top":
        return np.argsort(-channel_energy(fmap, tap), kind="stable")[:n]
    if how == "spread":
        return np.unique(np.round(np.linspace(0, c - 1, n)).astype(int))
    raise ValueError(f"unknown channel selection {how!r}; use one of {', '.join(SELECT_MODES)}")


def is_vector(fmap: np.ndarray) -> bool:
    """True for a globally reduced tap (``(C,)``: one value per channel, no spatial map)."""
    return np.ndim(fmap) == 1


def reduction_op(reduction: str | None) -> str | None:
    """``"avgpool:4"`` -> ``"avgpool"``; ``"mean"`` -> ``"mean"``; None stays None."""
    return reduction.split(":", 1)[0] if reduction else None


@dataclass(frozen=True)
class TapStats:
    """What the overview's depth panel shows for one tap of one image.

    ``fraction_active``: share of units > 0 after ReLU; ``mean_activation``: mean after ReLU.
    Either is None where the stored values would distort it: a reduced tap's values are block
    or global means/maxima, so "fraction of units > 0" counts blocks, not units; a max, or a
    pooled conv output (ReLU must come before the pooling), has no honest mean activation.
    ``height``/``width`` are 0 for a ``(C,)`` vector; ``reduction`` is the spec or None.
    ``nonfinite``: how many values are NaN or +-inf (left out of both statistics).
    """

    tap: Tap
    channels: int
    height: int
    width: int
    fraction_active: float | None
    mean_activation: float | None
    relu_applied: bool
    reduction: str | None = None
    nonfinite: int = 0

    def to_dict(self) -> dict:
        return {"tap": self.tap.name, "channels": self.channels, "height": self.height, "width": self.width,
                "fraction_active": self.fraction_active, "mean_activation": self.mean_activation,
                "relu_applied": self.relu_applied, "reduction": self.reduction, "nonfinite": self.nonfinite}


def _finite_mean(x: np.ndarray) -> float | None:
    fin = x[np.isfinite(x)]
    return float(fin.mean(dtype=np.float64)) if fin.size else None


def tap_stats(fmap: np.ndarray, tap: Tap, reduction: str | None = None) -> TapStats:
    """Statistics of one image's tap value: ``(C, H, W)``, or a reduced ``(C, H/K, W/K)`` / ``(C,)``
    when ``reduction`` (``mean``, ``max``, ``avgpool:K``) says how it was reduced."""
    fmap = np.asarray(fmap)
    bad = nonfinite_count(fmap)
    if reduction is None:
        a = activated(check_map(fmap, tap), tap)
        c, h, w = a.shape
        fin = a[np.isfinite(a)]
        return TapStats(tap=tap, channels=c, height=h, width=w,
                        fraction_active=float((fin > 0).mean()) if fin.size else None,
                        mean_activation=_finite_mean(a), relu_applied=needs_relu(tap), nonfinite=bad)
    # mean of block means = mean of the units, but only if the values were rectified before pooling
    honest_mean = reduction_op(reduction) in ("mean", "avgpool") and not needs_relu(tap)
    h, w = (0, 0) if is_vector(fmap) else fmap.shape[1:]
    return TapStats(tap=tap, channels=fmap.shape[0], height=h, width=w, fraction_active=None,
                    mean_activation=_finite_mean(fmap) if honest_mean else None,
                    relu_applied=False, reduction=reduction, nonfinite=bad)


def channel_mean(fmap: np.ndarray, tap: Tap) -> np.ndarray:
    """``(H, W)`` mean over channels after ReLU: where the layer responds, all channels together
    (over the finite values; NaN where a position has none)."""
    a = activated(check_map(fmap, tap), tap).astype(np.float64)
    fin = np.isfinite(a)
    n = fin.sum(axis=0)
    total = np.where(fin, a, 0.0).sum(axis=0)
    return np.where(n > 0, total / np.maximum(n, 1), np.nan).astype(np.float32)


def upsample(img: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``(h, w)`` -> ``size (H, W)`` float32, bilinear with pixel centres aligned."""
    import cv2

    h, w = size
    return cv2.resize(np.asarray(img, np.float32), (w, h), interpolation=cv2.INTER_LINEAR)


def normalize(x: np.ndarray) -> np.ndarray:
    """``x`` scaled to 0..1 by the min and max of its finite values (a constant array becomes 0);
    NaN and +-inf stay NaN, for the figures to mark."""
    x = np.asarray(x, np.float32)
    fin = np.isfinite(x)
    lo, hi = finite_range(x)
    with np.errstate(invalid="ignore", over="ignore"):
        out = (x - lo) / (hi - lo) if hi > lo else np.zeros_like(x)
    return np.where(fin, out, np.nan).astype(np.float32)


def montage_grid(channels: int, aspect: float = 16 / 9) -> tuple[int, int]:
    """``(rows, cols)`` for tiling ``channels`` tiles, about ``aspect`` wide.

    Prefers an exact fit (64 -> 8x8, 128 -> 8x16, 512 -> 16x32) so no tile slot is empty.
    """
    if channels < 1:
        raise ValueError(f"cannot tile {channels} channels")
    exact = [(channels // c, c) for c in range(1, channels + 1) if channels % c == 0]
    rows, cols = min(exact, key=lambda rc: abs(np.log(rc[1] / rc[0] / aspect)))
    if cols / rows <= 4 * aspect and rows / cols <= 4:  # a 1x97 strip is not readable
        return rows, cols
    cols = int(np.ceil(np.sqrt(channels * aspect)))
    return int(np.ceil(channels / cols)), cols


def tile_montage(fmap: np.ndarray, tap: Tap, *, per_channel: bool, gap: int = 1,
                 grid: tuple[int, int] | None = None) -> np.ndarray:
    """All channels of ``fmap`` tiled row-major into one 2-D float32 image.

    ``per_channel``: each tile scaled to 0..1 by its own range, else raw values. Gaps
    between tiles and unused slots are NaN (drawn as background).
    """
    fmap = check_map(fmap, tap)
    c, h, w = fmap.shape
    rows, cols = grid or montage_grid(c)
    out = np.full((rows * (h + gap) - gap, cols * (w + gap) - gap), np.nan, np.float32)
    for i in range(c):
        r, q = divmod(i, cols)
        out[r * (h + gap):r * (h + gap) + h, q * (w + gap):q * (w + gap) + w] = (
            normalize(fmap[i]) if per_channel else fmap[i])
    return out
