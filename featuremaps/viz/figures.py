"""Feature-map figures. Library draws (returns matplotlib Figures); the CLI saves them.

Nothing here calls ``plt.show()`` or writes files; the numbers come from
:mod:`featuremaps.mapstats`. Every figure takes one image's maps, ``{tap name: (C, H, W)}``.

Each drawn tile carries an artist label (``ax.get_label()``) such as
``"tile features.5 12"`` so tests and tools can find what was drawn where.
"""

from __future__ import annotations

import numpy as np

from ..contracts import Tap
from .mapstats import (SCALE_MODES, channel_mean, check_map, montage_grid, normalize, select_channels,
                       tap_stats, tile_montage, upsample)

CMAP = "viridis"
OVERLAY_CMAP = "inferno"
DIFF_CMAP = "magma"

# The seed article's words for each depth, keyed by features index.
_DEPTH_WORDS = {0: "low-level features", 5: "transitioning features", 10: "mid-level features",
                17: "more abstract features", 28: "high-level features"}
_SCALE_NOTES = {"channel": "colour: each tile on its own scale (its min \u2192 max), as the seed's imshow",
                "layer": "colour: one scale per layer (min \u2192 max over all its channels); "
                         "dark = weak for that layer"}


def depth_words(tap: Tap, deepest_index: int = 30) -> str:
    if tap.index in _DEPTH_WORDS:
        return _DEPTH_WORDS[tap.index]
    frac = tap.index / max(deepest_index, 1)
    return ("low-level" if frac < 0.2 else "mid-level" if frac < 0.6 else "high-level") + " features"


def tap_title(tap: Tap) -> str:
    """``"Layer 0 (features.0, conv1_1): low-level features"``."""
    return f"Layer {tap.index} ({tap.name}, {tap.alias}): {depth_words(tap)}"


def scale_note(scale: str) -> str:
    """The sentence every channel figure carries about its colour scale."""
    if scale not in _SCALE_NOTES:
        raise ValueError(f"unknown colour scale {scale!r}; use one of {', '.join(SCALE_MODES)}")
    return _SCALE_NOTES[scale]


def _size(shape) -> str:
    return f"{shape[-2]}\u00d7{shape[-1]}"


def _new_figure(width: float, height: float):
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


def _tile(ax, data, label: str, **imshow_kw):
    im = ax.imshow(data, interpolation="nearest", **imshow_kw)
    ax.set_label(label)
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(False)
    return im


def _colorbar(sub, mappable, axes, label: str):
    cb = sub.colorbar(mappable, ax=axes, shrink=0.85, aspect=12, pad=0.01)
    cb.ax.set_label("colorbar")
    cb.set_label(label, fontsize=8)
    cb.ax.tick_params(labelsize=7)
    return cb


# ---------------------------------------------------------------- channel rows (the seed's figure)


def channel_figure(maps: dict[str, np.ndarray], taps: tuple[Tap, ...], *, channels: int = 8,
                   select: str = "first", scale: str = "channel", suptitle: str | None = None,
                   selection: dict[str, np.ndarray] | None = None):
    """One row per tap showing ``channels`` channels chosen by ``select`` (first/top/spread).

    ``scale="channel"`` draws each tile scaled to its own min..max (0..1; the tile title gives
    the range); ``scale="layer"`` draws raw values on one scale per tap (min..max over all its
    channels). Each row has a colour bar, and the figure states the mode. ``selection``
    gives the channel indices per tap when the caller already chose them (``select`` then only
    names how). Returns a ``Figure``.
    """
    note = scale_note(scale)
    fig = _new_figure(1.75 * channels + 1.2, 2.25 * len(taps) + 0.7)
    for sub, tap in zip(fig.subfigures(len(taps), 1, squeeze=False)[:, 0], taps):
        fmap = check_map(maps[tap.name], tap)
        chosen = selection[tap.name] if selection else select_channels(fmap, tap, channels, select)
        how = {"first": "first", "top": "strongest", "spread": "spread"}.get(select, "chosen")
        sub.suptitle(f"{tap_title(tap)}  \u2014  {how} {len(chosen)} of {fmap.shape[0]} channels, "
                     f"{_size(fmap.shape)}", x=0.01, ha="left", fontsize=11, fontweight="bold")
        lo, hi = float(fmap.min()), float(fmap.max())
        axes = sub.subplots(1, channels, squeeze=False)[0]
        im = None
        for ax, c in zip(axes, chosen):
            if scale == "channel":
                im = _tile(ax, normalize(fmap[c]), f"tile {tap.name} {c}", cmap=CMAP, vmin=0, vmax=1)
                ax.set_title(f"ch {c}\n{fmap[c].min():.3g} \u2026 {fmap[c].max():.3g}", fontsize=8)
            else:
                im = _tile(ax, fmap[c], f"tile {tap.name} {c}", cmap=CMAP, vmin=lo, vmax=hi)
                ax.set_title(f"ch {c}", fontsize=8)
        for ax in axes[len(chosen):]:
            ax.set_axis_off()
        _colorbar(sub, im, axes, "tile min \u2192 max" if scale == "channel" else "activation")
    fig.suptitle((suptitle + "\n" if suptitle else "") + note, fontsize=12)
    return fig


def seed_figure(maps: dict[str, np.ndarray], taps: tuple[Tap, ...], *, channels: int = 8,
                suptitle: str | None = None):
    """The seed's picture: one row per tap, its first ``channels`` channels, viridis,
    each tile on its own colour scale (as ``imshow`` autoscales).

    ``maps``: tap name -> ``(C, H, W)`` array for one image. Returns a ``Figure``.
    """
    return channel_figure(maps, taps, channels=channels, select="first", scale="channel", suptitle=suptitle)


# ---------------------------------------------------------------- overview (low-to-high story)


def _overlay(ax, grey: np.ndarray, heat: np.ndarray, label: str):
    ax.imshow(grey, cmap="gray", vmin=0, vmax=1, interpolation="bilinear")
    im = ax.imshow(heat, cmap=OVERLAY_CMAP, vmin=0, vmax=1, alpha=0.6, interpolation="bilinear")
    ax.set_label(label)
    ax.set_xticks([])
    ax.set_yticks([])
    return im


def _bars(ax, xs, values, labels, title: str, fmt, ylim=None, color="#3b6ea8"):
    bars = ax.bar(xs, values, color=color, width=0.65)
    ax.bar_label(bars, labels=[fmt(v) for v in values], fontsize=8, padding=2)
    ax.set_xticks(xs, labels, fontsize=8)
    ax.set_title(title, fontsize=10)
    ax.tick_params(axis="y", labelsize=8)
    ax.spines[["top", "right"]].set_visible(False)
    top = max(values) if len(values) and max(values) > 0 else 1.0
    ax.set_ylim(*(ylim or (0, top * 1.22)))
    return bars


def overview_figure(maps: dict[str, np.ndarray], taps: tuple[Tap, ...], image: np.ndarray, *,
                    weights: str, title: str | None = None):
    """The low-to-high story for one image.

    Top: ``image`` (``(H, W, 3) uint8`` RGB, the model input) and, per tap, the mean over
    channels after ReLU, upsampled to the image and overlaid on it (each panel scaled to its
    own min..max). Bottom, across depth: channels and spatial size, fraction of units active
    after ReLU, and mean activation after ReLU. ``weights`` names the weights (shown).
    """
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) RGB image, got shape {image.shape}")
    stats = [tap_stats(maps[t.name], t) for t in taps]
    n = len(taps)
    fig = _new_figure(max(2.35 * (n + 1), 10.0), 7.4)
    top, bottom = fig.subfigures(2, 1, height_ratios=[1.15, 1.0])
    axes = top.subplots(1, n + 1, squeeze=False)[0]
    axes[0].imshow(image, interpolation="bilinear")
    axes[0].set_label("input")
    axes[0].set_title(f"input\n{_size(image.shape[:2])} RGB", fontsize=9)
    axes[0].set_xticks([])
    axes[0].set_yticks([])
    grey = image.astype(np.float32).mean(axis=2) / 255.0 * 0.8
    im = None
    for ax, tap, st in zip(axes[1:], taps, stats):
        heat = normalize(upsample(channel_mean(maps[tap.name], tap), image.shape[:2]))
        im = _overlay(ax, grey, heat, f"overlay {tap.name}")
        ax.set_title(f"{tap.name} ({tap.alias})\n{st.channels} ch \u00b7 {st.height}\u00d7{st.width}", fontsize=9)
    if im is not None:
        cb = top.colorbar(im, ax=axes, orientation="horizontal", shrink=0.45, aspect=40, pad=0.02)
        cb.ax.set_label("colorbar")
        cb.set_label("mean over channels after ReLU, upsampled; each panel scaled to its own min \u2192 max",
                     fontsize=8)
        cb.ax.tick_params(labelsize=7)
    top.suptitle("where each layer responds (channel mean over the input)", fontsize=10, x=0.01, ha="left")

    xs = np.arange(n)
    names = [f"{t.name}\n{t.alias}" for t in taps]
    ax_size, ax_active, ax_mean = bottom.subplots(1, 3)
    for ax, label in zip((ax_size, ax_active, ax_mean), ("depth channels", "depth active", "depth mean")):
        ax.set_label(label)
    _bars(ax_size, xs, [s.channels for s in stats], names, "channels (label: H\u00d7W)", lambda v: "",
          color="#8c8c8c")
    for x, s in zip(xs, stats):
        ax_size.text(x, s.channels, f"{s.channels}\n{s.height}\u00d7{s.width}", ha="center", va="bottom",
                     fontsize=8)
    ax_size.set_ylim(0, max(s.channels for s in stats) * 1.35)
    _bars(ax_active, xs, [s.fraction_active for s in stats], names, "fraction of units active (> 0)",
          lambda v: f"{v:.0%}", ylim=(0, 1.15), color="#d0701c")
    _bars(ax_mean, xs, [s.mean_activation for s in stats], names, "mean activation", lambda v: f"{v:.3g}",
          color="#3b6ea8")
    relu = [t.name for t, s in zip(taps, stats) if s.relu_applied]
    how = (f"after ReLU (applied here to the conv output{'s' if len(relu) > 1 else ''} "
           f"{', '.join(relu)})" if relu else "after ReLU (taps are post-ReLU)")
    bottom.suptitle(f"across depth, {how}", fontsize=10, x=0.01, ha="left")
    fig.suptitle((title + "\n" if title else "") + f"weights: {weights}", fontsize=12)
    return fig


# ---------------------------------------------------------------- montage (all channels of one tap)


def montage_figure(fmap: np.ndarray, tap: Tap, *, scale: str = "channel", title: str | None = None,
                   width: float = 13.0):
    """Every channel of one tap tiled in one image, readable from 64 to 512 channels.

    Tiles run row-major: channel = row start (left axis) + column (top axis). ``scale`` as in
    :func:`channel_figure`; a colour bar gives the values.
    """
    note = scale_note(scale)
    fmap = check_map(fmap, tap)
    c, h, w = fmap.shape
    rows, cols = montage_grid(c)
    tiled = tile_montage(fmap, tap, per_channel=scale == "channel")
    img_h = width * 0.88 * tiled.shape[0] / tiled.shape[1]
    fig = _new_figure(width, min(img_h + 1.6, 2.2 * width))
    ax = fig.subplots()
    import matplotlib

    cmap = matplotlib.colormaps[CMAP].with_extremes(bad="white")
    lo, hi = (0.0, 1.0) if scale == "channel" else (float(fmap.min()), float(fmap.max()))
    im = ax.imshow(tiled, cmap=cmap, vmin=lo, vmax=hi, interpolation="nearest" if h < 32 else "antialiased")
    ax.set_label(f"montage {tap.name}")
    step_r = max(1, rows // 16)
    step_c = max(1, cols // 32)
    ax.set_yticks([r * (h + 1) + h / 2 for r in range(0, rows, step_r)],
                  [f"ch {r * cols}" for r in range(0, rows, step_r)], fontsize=7)
    ax.set_xticks([q * (w + 1) + w / 2 for q in range(0, cols, step_c)],
                  [f"+{q}" for q in range(0, cols, step_c)], fontsize=7)
    ax.xaxis.tick_top()
    ax.tick_params(length=0)
    for spine in ax.spines.values():
        spine.set_visible(False)
    cb = fig.colorbar(im, ax=ax, shrink=0.6, aspect=25, pad=0.01)
    cb.ax.set_label("colorbar")
    cb.set_label("tile min \u2192 max" if scale == "channel" else "activation", fontsize=9)
    head = title or tap_title(tap)
    fig.suptitle(f"{head}\nall {c} channels, {h}\u00d7{w} each, {rows}\u00d7{cols} grid "
                 f"(channel = row label + column); {note}", fontsize=11)
    return fig


# ---------------------------------------------------------------- parity (ORT vs PyTorch)


def diff_figure(maps: dict[str, np.ndarray], reference: dict[str, np.ndarray], taps: tuple[Tap, ...], *,
                selection: dict[str, np.ndarray], suptitle: str | None = None,
                labels: tuple[str, str] = ("ONNX Runtime", "PyTorch")):
    """Per tap, ``|maps - reference|`` for the channels in ``selection`` (tap -> indices), one
    colour scale per row from 0, with the max error over all channels and the shown ones."""
    a_name, b_name = labels
    width = max(len(v) for v in selection.values())
    fig = _new_figure(1.75 * width + 1.4, 2.25 * len(taps) + 0.7)
    for sub, tap in zip(fig.subfigures(len(taps), 1, squeeze=False)[:, 0], taps):
        a, b = check_map(maps[tap.name], tap), check_map(reference[tap.name], tap)
        if a.shape != b.shape:
            raise ValueError(f"{tap.name}: {a_name} map {a.shape} vs {b_name} map {b.shape}")
        diff = np.abs(a.astype(np.float32) - b.astype(np.float32))
        chosen = selection[tap.name]
        shown_max = float(diff[chosen].max())
        sub.suptitle(f"{tap.name} ({tap.alias}): max |{a_name} \u2212 {b_name}| = {float(diff.max()):.2e} over "
                     f"all {a.shape[0]} channels, {shown_max:.2e} in these; |{b_name}| max "
                     f"{float(np.abs(b).max()):.3g}", x=0.01, ha="left", fontsize=10, fontweight="bold")
        axes = sub.subplots(1, width, squeeze=False)[0]
        vmax = shown_max if shown_max > 0 else 1e-12
        for ax, c in zip(axes, chosen):
            im = _tile(ax, diff[c], f"diff {tap.name} {c}", cmap=DIFF_CMAP, vmin=0, vmax=vmax)
            ax.set_title(f"ch {c}  max {float(diff[c].max()):.1e}", fontsize=8)
        for ax in axes[len(chosen):]:
            ax.set_axis_off()
        _colorbar(sub, im, axes, f"|{a_name} \u2212 {b_name}|")
    fig.suptitle((suptitle + "\n" if suptitle else "") +
                 f"parity: |{a_name} \u2212 {b_name} forward-hook reference| on the same input tensor "
                 "(black = identical)", fontsize=12)
    return fig
