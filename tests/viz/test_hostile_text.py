"""Figures draw data literally and survive non-finite maps: a file or model name with mathtext
(``x$\\foo$.png`` crashed ``show``) is drawn as written, never as mathtext or LaTeX (even with a
user's ``text.usetex``), and NaN/+-inf are painted magenta, counted in the title, never a crash."""

from __future__ import annotations

import io

import numpy as np
import pytest

NAME = "x$\\foo$.png"
MODEL = "vgg$\\bar{x}$"


def _setup(bad: bool):
    from featuremaps.export.taps import parse_taps
    from featuremaps.viz.draw import ShowOptions
    from featuremaps.viz.figures import Provenance

    taps = parse_taps("0,28", "vgg16", 32)
    rng = np.random.RandomState(0)
    maps = {t.name: rng.randn(*t.shape).astype(np.float32) for t in taps}
    if bad:
        maps["features.0"][0, :8, :8] = np.nan
        maps["features.0"][1, 0, 0] = np.inf
        maps["features.28"][:, 0, 0] = -np.inf
    prov = Provenance(model=MODEL, weights=f"{MODEL} weights")
    return maps, taps, prov, ShowOptions(channels=4, montage=taps[:1])


def _every_figure(maps, taps, prov, options):
    from featuremaps.viz.draw import draw_figures
    from featuremaps.viz.figures import comparison_figure

    figs = draw_figures(maps, taps, np.zeros((32, 32, 3), np.uint8), name=NAME, weights="w", options=options,
                        provenance=prov, reference={k: v * 1.01 for k, v in maps.items()})
    figs["compare.png"] = comparison_figure([maps, maps], [NAME, "b$\\x$.png"], taps, provenance=prov)
    return figs


def _texts(fig):
    from matplotlib.text import Text

    return [t for t in fig.findobj(Text) if t.get_text()]


def test_names_with_mathtext_are_drawn_literally_even_with_usetex_on():
    import matplotlib

    from featuremaps.viz.draw import png_bytes

    maps, taps, prov, options = _setup(bad=False)
    with matplotlib.rc_context({"text.usetex": True, "text.parse_math": True}):  # a user's matplotlibrc
        figs = _every_figure(maps, taps, prov, options)
        pngs = [png_bytes(f, dpi=30) for f in figs.values()]  # bad mathtext (or no LaTeX) raised here
    assert len(figs) == 5 and all(p.startswith(b"\x89PNG") for p in pngs)
    for fname, fig in figs.items():
        texts = _texts(fig)
        assert not [t.get_text() for t in texts if t.get_usetex() or t._parse_math], fname
        assert any(MODEL in t.get_text() for t in texts), fname  # the model name, as written
    assert any(NAME in t.get_text() for t in _texts(figs["compare.png"]))


@pytest.mark.parametrize("scale", ["channel", "layer"])
def test_nonfinite_maps_are_drawn_marked_and_counted(scale):
    import dataclasses

    from PIL import Image

    from featuremaps.viz.draw import png_bytes

    maps, taps, prov, options = _setup(bad=True)
    figs = _every_figure(maps, taps, prov, dataclasses.replace(options, scale=scale, select="top"))
    for fname, fig in figs.items():
        titles = " ".join(t.get_text() for t in _texts(fig))
        expect = 64 + 1 + 512 if "montage" not in fname else 64 + 1  # the montage is of features.0 alone
        if fname == "compare.png":
            expect *= 2  # both images
        if "diff" in fname:
            expect *= 2  # the maps and the reference
        assert f"WARNING: {expect} values are NaN or \u00b1inf" in titles, (fname, titles[-300:])
        rgb = np.asarray(Image.open(io.BytesIO(png_bytes(fig, dpi=40))).convert("RGB")).astype(int)
        magenta = (rgb[..., 0] > 230) & (rgb[..., 1] < 40) & (rgb[..., 2] > 230)
        if "overview" not in fname:  # its channel means (after ReLU) are finite wherever one channel is
            assert magenta.sum() > 20, f"{fname}: non-finite values are not marked"


def test_tap_stats_leave_nonfinite_values_out():
    from featuremaps.viz.mapstats import channel_energy, normalize, tap_stats

    maps, taps, _, _ = _setup(bad=True)
    m = maps["features.0"]
    s = tap_stats(m, taps[0])
    fin = np.maximum(m[np.isfinite(m)], 0)  # features.0 is a conv tap: after ReLU
    assert s.nonfinite == 65 and s.mean_activation == pytest.approx(fin.mean(), rel=1e-5)
    assert s.fraction_active == pytest.approx((fin > 0).mean(), rel=1e-6)
    assert np.isfinite(channel_energy(m, taps[0])).all()
    n = normalize(m[1])
    assert np.isnan(n[0, 0]) and np.nanmin(n) == 0 and np.nanmax(n) == 1
