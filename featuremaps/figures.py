"""Feature-map figures. Library draws (returns matplotlib Figures); the CLI saves them.

Nothing here calls ``plt.show()`` or writes files.
"""

from __future__ import annotations

import numpy as np

from .export.taps import Tap

# The seed article's words for each depth, keyed by features index.
_DEPTH_WORDS = {0: "low-level features", 5: "transitioning features", 10: "mid-level features",
                17: "more abstract features", 28: "high-level features"}


def depth_words(tap: Tap, deepest_index: int = 30) -> str:
    if tap.index in _DEPTH_WORDS:
        return _DEPTH_WORDS[tap.index]
    frac = tap.index / max(deepest_index, 1)
    return ("low-level" if frac < 0.2 else "mid-level" if frac < 0.6 else "high-level") + " features"


def tap_title(tap: Tap) -> str:
    """``"Layer 0 (features.0, conv1_1): low-level features"``."""
    return f"Layer {tap.index} ({tap.name}, {tap.alias}): {depth_words(tap)}"


def seed_figure(maps: dict[str, np.ndarray], taps: tuple[Tap, ...], *, channels: int = 8,
                suptitle: str | None = None):
    """The seed's picture: one row per tap, its first ``channels`` channels, viridis,
    each tile on its own colour scale (as ``imshow`` autoscales).

    ``maps``: tap name -> ``(C, H, W)`` array for one image. Returns a ``Figure``.
    """
    from matplotlib.figure import Figure

    fig = Figure(figsize=(2.0 * channels, 2.4 * len(taps)), layout="constrained")
    for sub, tap in zip(fig.subfigures(len(taps), 1, squeeze=False)[:, 0], taps):
        fmap = maps[tap.name]
        if fmap.ndim != 3:
            raise ValueError(f"{tap.name}: expected one image's map (C, H, W), got shape {fmap.shape}")
        sub.suptitle(tap_title(tap), x=0.01, ha="left", fontsize=11, fontweight="bold")
        for c, ax in enumerate(sub.subplots(1, channels, squeeze=False)[0]):
            ax.set_axis_off()
            if c < fmap.shape[0]:
                ax.imshow(fmap[c], cmap="viridis", interpolation="nearest")
                ax.set_title(f"channel {c}", fontsize=8)
    if suptitle:
        fig.suptitle(suptitle, fontsize=12)
    return fig
