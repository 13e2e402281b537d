"""Feature-map figures. Library draws (returns matplotlib Figures); the CLI saves them.

Nothing here calls ``plt.show()`` or writes files; the numbers come from
:mod:`featuremaps.viz.mapstats`. Every figure takes one image's maps, ``{tap name: (C, H, W)}``
(a tap reduced in the graph: ``(C, H/K, W/K)`` or ``(C,)``), and a :class:`Provenance` that it
states in its title: model, weights, precision, math mode, reductions.

Every text is drawn literally (:func:`literal_text`): a file or model name such as ``x$\\foo$.png``
is never parsed as mathtext or handed to LaTeX. NaN and +-inf values are painted
:data:`NONFINITE_COLOUR` over the map, left out of every colour scale and statistic, and counted
in the figure's title.

Each drawn tile carries an artist label (``ax.get_label()``) such as
``"tile features.5 12"`` so tests and tools can find what was drawn where.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from ..contracts import Tap
from .mapstats import (SCALE_MODES, channel_energy, channel_mean, check_map, finite_range, is_vector, montage_grid,
                       needs_relu, nonfinite_count, normalize, reduction_op, select_channels, tap_stats,
                       tile_montage, upsample)

CMAP = "viridis"
OVERLAY_CMAP = "inferno"
DIFF_CMAP = "magma"
NONFINITE_COLOUR = "#ff00ff"  # magenta: in none of the colour maps used here
# Text from data (file names, model names, aliases) is drawn as written, whatever the user's rc.
LITERAL_TEXT = {"text.parse_math": False, "text.usetex": False}


def literal_text(draw):
    """Decorate a figure function: every text it creates is drawn literally. A file named
    ``x$\\foo$.png`` crashed ``show`` as bad mathtext; with ``text.usetex`` on, a name would have
    been LaTeX source. Texts created at save time (tick labels) need :data:`LITERAL_TEXT` as the
    rc there too: :func:`featuremaps.viz.draw.png_bytes` saves under it."""
    @functools.wraps(draw)
    def wrapper(*args, **kwargs):
        import matplotlib
        from matplotlib.text import Text

        with matplotlib.rc_context(LITERAL_TEXT):
            fig = draw(*args, **kwargs)
        for text in fig.findobj(Text):
            text.set_parse_math(False)
            text.set_usetex(False)
        return fig
    return wrapper


def nonfinite_note(maps, taps) -> str:
    """``"WARNING: 12 values are NaN or \u00b1inf (features.0): drawn magenta, left out of ..."``, or ``""``.
    ``maps``: one image's ``{tap: array}``, or a list of them (counted together)."""
    maps_list = maps if isinstance(maps, (list, tuple)) else [maps]
    counts = {t.name: sum(nonfinite_count(m[t.name]) for m in maps_list if t.name in m) for t in taps}
    bad = {k: v for k, v in counts.items() if v}
    if not bad:
        return ""
    return (f"WARNING: {sum(bad.values())} values are NaN or \u00b1inf ({', '.join(bad)}): drawn magenta, "
            "left out of every colour scale and statistic")

# The seed article's words for each depth, as a fraction of the way through the network's layers
# (VGG16's features.0, 5, 10, 17, 28 of 0..30 land in these bands in order).
_DEPTH_BANDS = ((0.1, "low-level features"), (0.25, "transitioning features"), (0.45, "mid-level features"),
                (0.75, "more abstract features"), (1.01, "high-level features"))
_SCALE_NOTES = {"channel": "colour: each tile on its own scale (its min \u2192 max), as the seed's imshow",
                "layer": "colour: one scale per layer (min \u2192 max over all its channels); "
                         "dark = weak for that layer"}


@dataclass(frozen=True)
class Provenance:
    """What made the maps, stated on every figure.

    ``model``: zoo name (``resnet18``); ``weights``: words for the weights (see
    :func:`featuremaps.viz.draw.weights_label`); ``trained``: imagenet or a weights file (depth
    words such as "low-level features" are claims about learned features, so only then);
    ``precision``: the exported graph's (fp32, fp16, int8); ``math_mode``: what the run's
    convolutions used (None when the maps come from a store that did not record it);
    ``reductions``: ``((tap name, spec), ...)`` for taps reduced in the graph (``mean``, ``max``,
    ``avgpool:K``); ``layer_count``: the family's number of tappable layers (for depth words).
    """

    model: str = "model"
    weights: str = "unknown weights"
    trained: bool = False
    precision: str = "fp32"
    math_mode: str | None = None
    reductions: tuple[tuple[str, str], ...] = ()
    layer_count: int | None = None

    def reduction(self, tap_name: str) -> str | None:
        """The spec ``tap_name`` was reduced with, or None."""
        return dict(self.reductions).get(tap_name)

    def line(self, sep: str = " \u00b7 ") -> str:
        """``"resnet18 \u00b7 weights: ... \u00b7 precision fp32, math mode tf32 \u00b7 reductions: none"``;
        ``sep="\\n"`` splits it for a figure title."""
        math = f", math mode {self.math_mode}" if self.math_mode else ", math mode not recorded"
        reduced = ", ".join(f"{k}={v}" for k, v in self.reductions) or "none"
        return (f"{self.model} \u00b7 weights: {self.weights}{sep}precision {self.precision}{math} \u00b7 "
                f"reductions: {reduced}")

    def depth_words(self, tap: Tap) -> str | None:
        """Depth words for ``tap``, or None with untrained weights or an unknown layer count."""
        if not self.trained or not self.layer_count:
            return None
        return depth_words(tap, self.layer_count)


def depth_words(tap: Tap, layer_count: int) -> str:
    """The seed's words for how deep ``tap`` sits among ``layer_count`` layers (execution order)."""
    frac = tap.index / max(layer_count - 1, 1)
    return next(words for top, words in _DEPTH_BANDS if frac < top)


def reduction_words(reduction: str | None) -> str:
    """``"avgpool:4"`` -> ``"avg-pooled 4\u00d74"``; ``"mean"`` -> ``"mean over H\u00d7W"``; None -> ``""``."""
    op = reduction_op(reduction)
    if op is None:
        return ""
    if op == "avgpool":
        k = reduction.split(":", 1)[1]
        return f"avg-pooled {k}\u00d7{k}"
    return f"{op} over H\u00d7W"


def tap_title(tap: Tap, provenance: Provenance | None = None) -> str:
    """``"layer3.1.relu_1 (layer3, ReLU, layer 50 of 67): more abstract features"``: FX name, alias
    (when there is one), kind, position in execution order (with a layer count) and depth words
    (with trained weights only)."""
    prov = provenance or Provenance()
    alias = f"{tap.alias}, " if tap.alias and tap.alias != tap.name else ""
    where = f", layer {tap.index + 1} of {prov.layer_count}" if prov.layer_count else ""
    words = prov.depth_words(tap)
    return f"{tap.name} ({alias}{tap.kind}{where})" + (f": {words}" if words else "")


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


def _mark_nonfinite(ax, data, bad=None) -> None:
    """Paint the NaN / +-inf positions of ``data`` (or where ``bad`` is True) in NONFINITE_COLOUR."""
    from matplotlib.colors import to_rgba

    bad = ~np.isfinite(np.asarray(data, np.float64)) if bad is None else bad
    if bad.any():
        marks = np.zeros((*bad.shape, 4), np.float32)
        marks[bad] = to_rgba(NONFINITE_COLOUR)
        ax.imshow(marks, interpolation="nearest")


def _finite(data) -> np.ndarray:
    """``data`` as float32 with NaN for every non-finite value (drawn transparent, then marked)."""
    data = np.asarray(data, np.float32)
    return np.where(np.isfinite(data), data, np.nan)


def _tile(ax, data, label: str, **imshow_kw):
    im = ax.imshow(_finite(data), interpolation="nearest", **imshow_kw)
    _mark_nonfinite(ax, data)
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


def _bar_strip(ax, values: np.ndarray, label: str):
    """All ``(C,)`` values of a globally reduced tap as one bar per channel."""
    values = np.asarray(values, np.float32)
    fin = np.isfinite(values)
    lo, hi = finite_range(values)
    mark = hi if fin.any() and hi > 0 else 1.0  # a NaN/inf channel: a full-height magenta bar
    colours = np.where(fin, "#3b6ea8", NONFINITE_COLOUR)
    ax.bar(np.arange(len(values)), np.where(fin, values, mark), width=1.0, color=colours, linewidth=0)
    ax.set_label(label)
    ax.set_xlim(-0.5, len(values) - 0.5)
    ax.set_xlabel("channel", fontsize=8)
    ax.tick_params(labelsize=7)
    ax.spines[["top", "right"]].set_visible(False)
    return ax


def _row_title(tap: Tap, fmap: np.ndarray, provenance: Provenance | None, what: str) -> str:
    red = provenance.reduction(tap.name) if provenance else None
    if is_vector(fmap):
        what = reduction_words(red) or "a (C,) vector"
        return f"{tap_title(tap, provenance)}  \u2014  {what}: all {len(fmap)} channels"
    pooled = f", {reduction_words(red)}" if red else ""
    return f"{tap_title(tap, provenance)}  \u2014  {what} of {fmap.shape[0]} channels, {_size(fmap.shape)}{pooled}"


def _header(suptitle: str | None, provenance: Provenance | None, *rest: str) -> str:
    lines = [suptitle] if suptitle else []
    lines += [provenance.line("\n")] if provenance else []
    return "\n".join(lines + [r for r in rest if r])


@literal_text
def channel_figure(maps: dict[str, np.ndarray], taps: tuple[Tap, ...], *, channels: int = 8,
                   select: str = "first", scale: str = "channel", suptitle: str | None = None,
                   selection: dict[str, np.ndarray] | None = None, provenance: Provenance | None = None):
    """One row per tap showing ``channels`` channels chosen by ``select`` (first/top/spread).

    ``scale="channel"`` draws each tile scaled to its own min..max (0..1; the tile title gives
    the range); ``scale="layer"`` draws raw values on one scale per tap (min..max over all its
    channels). Each row has a colour bar, and the figure states the mode. ``selection``
    gives the channel indices per tap when the caller already chose them (``select`` then only
    names how). A globally reduced tap (``(C,)``) is drawn as a bar strip of all its channels
    (artist label ``"bars TAP"``); a pooled tap's row names the pooling factor.
    ``provenance`` puts model, weights, precision, math mode and reductions in the title.
    Returns a ``Figure``.
    """
    note = scale_note(scale)
    fig = _new_figure(1.75 * channels + 1.2, 2.25 * len(taps) + 0.7)
    for sub, tap in zip(fig.subfigures(len(taps), 1, squeeze=False)[:, 0], taps):
        if is_vector(maps[tap.name]):
            vec = np.asarray(maps[tap.name])
            sub.suptitle(_row_title(tap, vec, provenance, ""), x=0.01, ha="left", fontsize=11, fontweight="bold")
            _bar_strip(sub.subplots(), vec, f"bars {tap.name}")
            continue
        fmap = check_map(maps[tap.name], tap)
        chosen = selection[tap.name] if selection else select_channels(fmap, tap, channels, select)
        how = {"first": "first", "top": "strongest", "spread": "spread"}.get(select, "chosen")
        sub.suptitle(_row_title(tap, fmap, provenance, f"{how} {len(chosen)}"), x=0.01, ha="left", fontsize=11,
                     fontweight="bold")
        lo, hi = finite_range(fmap)
        axes = sub.subplots(1, channels, squeeze=False)[0]
        im = None
        for ax, c in zip(axes, chosen):
            if scale == "channel":
                im = _tile(ax, normalize(fmap[c]), f"tile {tap.name} {c}", cmap=CMAP, vmin=0, vmax=1)
                ax.set_title("ch {}\n{:.3g} \u2026 {:.3g}".format(c, *finite_range(fmap[c])), fontsize=8)
            else:
                im = _tile(ax, fmap[c], f"tile {tap.name} {c}", cmap=CMAP, vmin=lo, vmax=hi)
                ax.set_title(f"ch {c}", fontsize=8)
        for ax in axes[len(chosen):]:
            ax.set_axis_off()
        _colorbar(sub, im, axes, "tile min \u2192 max" if scale == "channel" else "activation")
    fig.suptitle(_header(suptitle, provenance, note, nonfinite_note(maps, taps)), fontsize=12)
    return fig


def seed_figure(maps: dict[str, np.ndarray], taps: tuple[Tap, ...], *, channels: int = 8,
                suptitle: str | None = None, provenance: Provenance | None = None):
    """The seed's picture: one row per tap, its first ``channels`` channels, viridis,
    each tile on its own colour scale (as ``imshow`` autoscales).

    ``maps``: tap name -> ``(C, H, W)`` array for one image. Returns a ``Figure``.
    """
    return channel_figure(maps, taps, channels=channels, select="first", scale="channel", suptitle=suptitle,
                          provenance=provenance)


# ---------------------------------------------------------------- overview (low-to-high story)


def _overlay(ax, grey: np.ndarray, heat: np.ndarray, label: str):
    ax.imshow(grey, cmap="gray", vmin=0, vmax=1, interpolation="bilinear")
    im = ax.imshow(_finite(heat), cmap=OVERLAY_CMAP, vmin=0, vmax=1, alpha=0.6, interpolation="bilinear")
    _mark_nonfinite(ax, heat)
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


def _input_panel(ax, image: np.ndarray, note: str | None) -> None:
    ax.imshow(image, interpolation="bilinear")
    ax.set_label("input")
    ax.set_title("input\n" + (note or f"{_size(image.shape[:2])} RGB"), fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])


def _partial_bars(ax, xs, values, names, title: str, fmt, label: str, **kw) -> None:
    """Bars only where ``values`` is not None; the others get a "not counted" note at their place."""
    keep = [i for i, v in enumerate(values) if v is not None]
    _bars(ax, xs[keep], [values[i] for i in keep], [names[i] for i in keep], title, fmt, **kw)
    ax.set_xticks(xs, names, fontsize=8)
    ax.set_xlim(-0.6, len(xs) - 0.4)
    for i in set(range(len(values))) - set(keep):
        ax.text(xs[i], 0, "reduced:\nnot counted", ha="center", va="bottom", fontsize=7, color="#777777")
    ax.set_label(label)


@literal_text
def overview_figure(maps: dict[str, np.ndarray], taps: tuple[Tap, ...], image: np.ndarray, *,
                    weights: str, title: str | None = None, provenance: Provenance | None = None,
                    image_note: str | None = None):
    """The low-to-high story for one image.

    Top: ``image`` (``(H, W, 3) uint8`` RGB, the model input; ``image_note`` says how it was
    resized, e.g. "stretched to 224\u00d7224 from 500\u00d7375") and, per tap, the mean over
    channels after ReLU, upsampled to the image and overlaid on it (each panel scaled to its own
    min..max); a ``(C,)`` tap has no map and shows its bar strip instead. Bottom, across depth:
    channels and spatial size, fraction of units active after ReLU, and mean activation after
    ReLU; reduced taps are left out of the statistics their values would distort (see
    :class:`featuremaps.viz.mapstats.TapStats`). ``weights`` names the weights (shown).
    """
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) RGB image, got shape {image.shape}")
    prov = provenance or Provenance(weights=weights)
    stats = [tap_stats(maps[t.name], t, prov.reduction(t.name)) for t in taps]
    n = len(taps)
    fig = _new_figure(max(2.35 * (n + 1), 10.0), 7.4)
    top, bottom = fig.subfigures(2, 1, height_ratios=[1.15, 1.0])
    axes = top.subplots(1, n + 1, squeeze=False)[0]
    _input_panel(axes[0], image, image_note)
    grey = image.astype(np.float32).mean(axis=2) / 255.0 * 0.8
    im = None
    for ax, tap, st in zip(axes[1:], taps, stats):
        red = f"\n{reduction_words(st.reduction)}" if st.reduction else ""
        red += ", ReLU after it" if st.reduction and needs_relu(tap) and not is_vector(maps[tap.name]) else ""
        if is_vector(maps[tap.name]):
            _bar_strip(ax, maps[tap.name], f"bars {tap.name}")
            ax.set_title(f"{tap.name}\n{st.channels} ch, no map{red}", fontsize=9)
            continue
        heat = normalize(upsample(channel_mean(maps[tap.name], tap), image.shape[:2]))
        im = _overlay(ax, grey, heat, f"overlay {tap.name}")
        alias = f" ({tap.alias})" if tap.alias and tap.alias != tap.name else ""
        ax.set_title(f"{tap.name}{alias}\n{st.channels} ch \u00b7 {st.height}\u00d7{st.width}{red}", fontsize=9)
    if im is not None:
        maps_on = [ax for ax in axes[1:] if ax.get_label().startswith("overlay ")]
        cb = top.colorbar(im, ax=maps_on, orientation="horizontal", shrink=0.45, aspect=40, pad=0.02)
        cb.ax.set_label("colorbar")
        cb.set_label("mean over channels after ReLU, upsampled; each panel scaled to its own min \u2192 max",
                     fontsize=8)
        cb.ax.tick_params(labelsize=7)
    top.suptitle("where each layer responds (channel mean over the input)", fontsize=10, x=0.01, ha="left")

    xs = np.arange(n)
    names = [f"{t.name}\n{t.alias}" if t.alias and t.alias != t.name else t.name for t in taps]
    ax_size, ax_active, ax_mean = bottom.subplots(1, 3)
    ax_size.set_label("depth channels")
    _bars(ax_size, xs, [s.channels for s in stats], names, "channels (label: H\u00d7W)", lambda v: "",
          color="#8c8c8c")
    for x, s in zip(xs, stats):
        size = f"{s.height}\u00d7{s.width}" if s.height else "(C,)"
        ax_size.text(x, s.channels, f"{s.channels}\n{size}" + (f"\n{s.reduction}" if s.reduction else ""),
                     ha="center", va="bottom", fontsize=8)
    ax_size.set_ylim(0, max(s.channels for s in stats) * 1.45)
    _partial_bars(ax_active, xs, [s.fraction_active for s in stats], names, "fraction of units active (> 0)",
                  lambda v: f"{v:.0%}", "depth active", ylim=(0, 1.15), color="#d0701c")
    _partial_bars(ax_mean, xs, [s.mean_activation for s in stats], names, "mean activation",
                  lambda v: f"{v:.3g}", "depth mean", color="#3b6ea8")
    relu = [t.name for t, s in zip(taps, stats) if s.relu_applied]
    how = (f"after ReLU (applied here to the conv output{'s' if len(relu) > 1 else ''} "
           f"{', '.join(relu)})" if relu else "after ReLU (taps are post-ReLU)")
    bottom.suptitle(f"across depth, {how}", fontsize=10, x=0.01, ha="left")
    head = title if provenance else (title + "\n" if title else "") + f"weights: {weights}"
    fig.suptitle(_header(head, provenance, nonfinite_note(maps, taps)), fontsize=12)
    return fig


# ---------------------------------------------------------------- montage (all channels of one tap)


@literal_text
def montage_figure(fmap: np.ndarray, tap: Tap, *, scale: str = "channel", title: str | None = None,
                   width: float = 13.0, provenance: Provenance | None = None):
    """Every channel of one tap tiled in one image, readable from 64 to 512 channels.

    Tiles run row-major: channel = row start (left axis) + column (top axis). ``scale`` as in
    :func:`channel_figure`; a colour bar gives the values.
    """
    note = scale_note(scale)
    if is_vector(fmap):
        raise ValueError(f"{tap.name} is reduced to (C,) = {np.shape(fmap)}: it has no maps to tile; "
                         "its channel figure shows it as a bar strip")
    fmap = check_map(fmap, tap)
    c, h, w = fmap.shape
    rows, cols = montage_grid(c)
    tiled = tile_montage(fmap, tap, per_channel=scale == "channel")
    img_h = width * 0.88 * tiled.shape[0] / tiled.shape[1]
    fig = _new_figure(width, min(img_h + 1.6, 2.2 * width))
    ax = fig.subplots()
    import matplotlib

    cmap = matplotlib.colormaps[CMAP].with_extremes(bad="white")
    lo, hi = (0.0, 1.0) if scale == "channel" else finite_range(fmap)
    im = ax.imshow(_finite(tiled), cmap=cmap, vmin=lo, vmax=hi, interpolation="nearest" if h < 32 else "antialiased")
    bad = tile_montage((~np.isfinite(fmap)).astype(np.float32), tap, per_channel=False, grid=(rows, cols))
    _mark_nonfinite(ax, tiled, bad == 1)  # gaps between tiles are NaN too, and stay white
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
    head = title or tap_title(tap, provenance)
    red = reduction_words(provenance.reduction(tap.name)) if provenance else ""
    red += " (each value the mean of a block)" if red.startswith("avg") else ""
    fig.suptitle(_header(head, provenance, f"all {c} channels, {h}\u00d7{w} each" + (f", {red}" if red else "")
                         + f", {rows}\u00d7{cols} grid (channel = row label + column); {note}",
                         nonfinite_note({tap.name: fmap}, (tap,))), fontsize=11)
    return fig


# ---------------------------------------------------------------- parity (ORT vs PyTorch)


@literal_text
def diff_figure(maps: dict[str, np.ndarray], reference: dict[str, np.ndarray], taps: tuple[Tap, ...], *,
                selection: dict[str, np.ndarray], suptitle: str | None = None,
                labels: tuple[str, str] = ("ONNX Runtime", "PyTorch")):
    """Per tap, ``|maps - reference|`` for the channels in ``selection`` (tap -> indices), one
    colour scale per row from 0, with the max error over all channels and the shown ones."""
    a_name, b_name = labels
    note = nonfinite_note([maps, reference], taps)
    width = max(len(v) for v in selection.values())
    fig = _new_figure(1.75 * width + 1.4, 2.25 * len(taps) + 0.7)
    for sub, tap in zip(fig.subfigures(len(taps), 1, squeeze=False)[:, 0], taps):
        a, b = check_map(maps[tap.name], tap), check_map(reference[tap.name], tap)
        if a.shape != b.shape:
            raise ValueError(f"{tap.name}: {a_name} map {a.shape} vs {b_name} map {b.shape}")
        with np.errstate(invalid="ignore"):
            diff = np.abs(a.astype(np.float32) - b.astype(np.float32))
        chosen = selection[tap.name]
        shown_max = finite_range(diff[chosen])[1]
        sub.suptitle(f"{tap.name} ({tap.alias}): max |{a_name} \u2212 {b_name}| = {finite_range(diff)[1]:.2e} over "
                     f"all {a.shape[0]} channels, {shown_max:.2e} in these; |{b_name}| max "
                     f"{finite_range(np.abs(b))[1]:.3g}", x=0.01, ha="left", fontsize=10, fontweight="bold")
        axes = sub.subplots(1, width, squeeze=False)[0]
        vmax = shown_max if shown_max > 0 else 1e-12
        for ax, c in zip(axes, chosen):
            im = _tile(ax, diff[c], f"diff {tap.name} {c}", cmap=DIFF_CMAP, vmin=0, vmax=vmax)
            ax.set_title(f"ch {c}  max {finite_range(diff[c])[1]:.1e}", fontsize=8)
        for ax in axes[len(chosen):]:
            ax.set_axis_off()
        _colorbar(sub, im, axes, f"|{a_name} \u2212 {b_name}|")
    fig.suptitle((suptitle + "\n" if suptitle else "") +
                 f"parity: |{a_name} \u2212 {b_name} forward-hook reference| on the same input tensor "
                 "(black = identical)" + "\n" * bool(note) + note, fontsize=12)
    return fig


# ---------------------------------------------------------------- comparison (same channels, several images)


def comparison_channels(maps_list: list[dict[str, np.ndarray]], tap: Tap, channels: int, select: str) -> np.ndarray:
    """The channels a comparison shows for ``tap``: the same for every image. ``top`` ranks by
    activation energy summed over the images, so one image does not choose for all."""
    first = check_map(maps_list[0][tap.name], tap)
    if select != "top":
        return select_channels(first, tap, channels, select)
    energy = sum(channel_energy(m[tap.name], tap) for m in maps_list)
    return np.argsort(-energy, kind="stable")[:max(1, min(int(channels), first.shape[0]))]


def _compare_vector(sub, tap: Tap, vectors: np.ndarray, names: list[str], provenance) -> None:
    """``(images, C)`` as one heat strip per image on one colour scale."""
    ax = sub.subplots()
    im = ax.imshow(_finite(vectors), aspect="auto", cmap=CMAP, interpolation="nearest")
    _mark_nonfinite(ax, vectors)
    ax.set_label(f"strip {tap.name}")
    ax.set_yticks(range(len(names)), names, fontsize=8)
    ax.set_xlabel("channel", fontsize=8)
    ax.tick_params(labelsize=7)
    _colorbar(sub, im, [ax], "value")
    red = reduction_words(provenance.reduction(tap.name)) if provenance else ""
    sub.suptitle(f"{tap_title(tap, provenance)}  \u2014  {red or 'a (C,) vector'}: all {vectors.shape[1]} "
                 "channels, one strip per image", x=0.01, ha="left", fontsize=11, fontweight="bold")


@literal_text
def comparison_figure(maps_list: list[dict[str, np.ndarray]], names: list[str], taps: tuple[Tap, ...], *,
                      channels: int = 6, select: str = "first", suptitle: str | None = None,
                      provenance: Provenance | None = None):
    """The same channels of each tap across several images, on one colour scale per tap.

    ``maps_list[i]``: image ``i``'s ``{tap: (C, H, W)}`` (or ``(C,)`` for a globally reduced
    tap); ``names[i]``: its label. One block per tap: a row per image, a column per channel
    (chosen by :func:`comparison_channels`); tiles are labelled ``"compare TAP IMAGE CHANNEL"``.
    A ``(C,)`` tap is one heat strip per image (``"strip TAP"``). Returns a ``Figure``.
    """
    if len(maps_list) != len(names) or not maps_list:
        raise ValueError(f"{len(maps_list)} map sets for {len(names)} names; give one name per image")
    n = len(names)
    fig = _new_figure(max(1.6 * channels + 2.6, 9.0), sum(1.5 * n + 0.8 if not is_vector(maps_list[0][t.name]) else
                                               0.35 * n + 1.4 for t in taps) + 0.9)
    heights = [n + 0.6 if not is_vector(maps_list[0][t.name]) else 0.25 * n + 1.0 for t in taps]
    for sub, tap in zip(fig.subfigures(len(taps), 1, squeeze=False, height_ratios=heights)[:, 0], taps):
        if is_vector(maps_list[0][tap.name]):
            _compare_vector(sub, tap, np.stack([np.asarray(m[tap.name], np.float32) for m in maps_list]),
                            names, provenance)
            continue
        chosen = comparison_channels(maps_list, tap, channels, select)
        shown = np.stack([check_map(m[tap.name], tap)[chosen] for m in maps_list])  # (images, k, H, W)
        lo, hi = finite_range(shown)
        axes = sub.subplots(n, len(chosen), squeeze=False)
        im = None
        for i, (row, name) in enumerate(zip(axes, names)):
            for j, (ax, c) in enumerate(zip(row, chosen)):
                im = _tile(ax, shown[i, j], f"compare {tap.name} {i} {c}", cmap=CMAP, vmin=lo, vmax=hi)
                if i == 0:
                    ax.set_title(f"ch {c}", fontsize=8)
            row[0].set_ylabel(name, fontsize=8, rotation=0, ha="right", va="center")
        _colorbar(sub, im, axes.ravel().tolist(), "activation")
        sub.suptitle(_row_title(tap, maps_list[0][tap.name], provenance, f"the same {len(chosen)}"), x=0.01, ha="left",
                     fontsize=11, fontweight="bold")
    how = {"first": "first", "top": "strongest over all images", "spread": "evenly spread"}.get(select, select)
    fig.suptitle(_header(suptitle, provenance, f"{n} images, {how} channels", "colour: one scale per tap over "
                         "every image shown, so brighter means stronger across images",
                         nonfinite_note(maps_list, taps)), fontsize=12)
    return fig
