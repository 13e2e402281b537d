"""Figures for `featuremaps show`: structure, and that what is drawn is what was extracted."""

from __future__ import annotations

import numpy as np
import pytest

from featuremaps import cli
from featuremaps.errors import ArgumentError
from featuremaps.viz.draw import ShowOptions, draw_figures, load_image, save_figure
from featuremaps.export.taps import parse_taps
from featuremaps.viz.figures import (Provenance, channel_figure, diff_figure, montage_figure, overview_figure,
                                    seed_figure)
from featuremaps.viz.mapstats import (channel_energy, channel_mean, montage_grid, normalize, select_channels,
                                  tap_stats, tile_montage, upsample)

from conftest import SMALL

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def extracted(small_model, sample_paths):
    """One photo through the small exported model: (maps {tap: (C, H, W)}, taps, image (64, 64, 3))."""
    from featuremaps.engine.extractor import Extractor
    from featuremaps.engine.preprocess import to_input

    image = load_image(sample_paths[1], (SMALL, SMALL))
    with Extractor(small_model.path, provider="cpu") as ex:
        out = ex.run(to_input(image, ex.preprocessing)[None])
        taps = ex.taps
    return {k: v[0] for k, v in out.items()}, taps, image


def _by_label(fig) -> dict:
    return {ax.get_label(): ax for ax in fig.axes if ax.get_label()}


def _tiles(fig, tap_name: str) -> list:
    return [ax for ax in fig.axes if ax.get_label().startswith(f"tile {tap_name} ")]


# ---------------------------------------------------------------- pure helpers


def test_select_channels_modes():
    tap = parse_taps("features.1")[0]  # post-ReLU tap: values used as they are
    fmap = np.zeros((10, 3, 3), np.float32)
    fmap[7] = 5.0
    fmap[2] = 1.0
    assert select_channels(fmap, tap, 4, "first").tolist() == [0, 1, 2, 3]
    assert select_channels(fmap, tap, 2, "top").tolist() == [7, 2]
    assert select_channels(fmap, tap, 4, "spread").tolist() == [0, 3, 6, 9]
    assert select_channels(fmap, tap, 50, "first").tolist() == list(range(10))
    with pytest.raises(ValueError, match="unknown channel selection 'best'"):
        select_channels(fmap, tap, 4, "best")


def test_top_selection_ranks_conv_taps_after_relu():
    conv = parse_taps("features.0")[0]
    fmap = np.zeros((3, 2, 2), np.float32)
    fmap[0] = -10.0  # strongly negative: dead after ReLU
    fmap[1] = 0.5
    np.testing.assert_allclose(channel_energy(fmap, conv), [0.0, 0.25, 0.0])
    assert select_channels(fmap, conv, 1, "top").tolist() == [1]


def test_tap_stats_apply_relu_only_to_conv_taps():
    conv, relu = parse_taps("features.0,features.1")
    fmap = np.array([[[-1.0, 2.0], [0.0, 3.0]]], np.float32)  # (1, 2, 2)
    s = tap_stats(fmap, conv)
    assert (s.channels, s.height, s.width, s.relu_applied) == (1, 2, 2, True)
    assert s.fraction_active == pytest.approx(0.5)
    assert s.mean_activation == pytest.approx(5.0 / 4)
    post = tap_stats(np.maximum(fmap, 0), relu)
    assert not post.relu_applied and post.mean_activation == pytest.approx(s.mean_activation)


@pytest.mark.parametrize("channels,grid", [(64, (8, 8)), (128, (8, 16)), (256, (16, 16)), (512, (16, 32)),
                                           (3, (1, 3))], ids=lambda v: str(v))
def test_montage_grid_fits_exactly(channels, grid):
    assert montage_grid(channels) == grid


def test_montage_grid_prime_count_is_not_a_strip():
    rows, cols = montage_grid(97)
    assert rows * cols >= 97 and cols / rows < 4


def test_tile_montage_places_every_channel():
    tap = parse_taps("features.5")[0]
    fmap = np.random.RandomState(0).randn(12, 5, 4).astype(np.float32)
    rows, cols = montage_grid(12)
    tiled = tile_montage(fmap, tap, per_channel=False)
    for i in range(12):
        r, q = divmod(i, cols)
        np.testing.assert_array_equal(tiled[r * 6:r * 6 + 5, q * 5:q * 5 + 4], fmap[i])
    assert np.isnan(tiled).sum() == tiled.size - fmap.size  # only the gaps


# ---------------------------------------------------------------- figures from extracted maps


@pytest.mark.parametrize("scale", ["channel", "layer"])
def test_channel_figure_draws_the_extracted_maps(extracted, scale):
    maps, taps, _ = extracted
    fig = channel_figure(maps, taps, channels=6, select="top", scale=scale, suptitle="chelsea")
    assert len(fig.subfigs) == len(taps)
    assert "one scale per layer" in fig._suptitle.get_text() if scale == "layer" else \
        "each tile on its own scale" in fig._suptitle.get_text()
    first_tiles = []
    for sub, tap in zip(fig.subfigs, taps):
        fmap = maps[tap.name]
        assert sub._suptitle.get_text().startswith(f"{tap.name} ({tap.alias}, {tap.kind})")
        assert "strongest 6 of" in sub._suptitle.get_text()
        tiles = _tiles(fig, tap.name)
        assert len(tiles) == 6
        assert sum(ax.get_label() == "colorbar" for ax in sub.axes) == 1
        chosen = select_channels(fmap, tap, 6, "top")
        for ax, c in zip(tiles, chosen):
            assert ax.get_label() == f"tile {tap.name} {c}"
            drawn = np.asarray(ax.images[0].get_array())
            want = normalize(fmap[c]) if scale == "channel" else fmap[c]
            np.testing.assert_allclose(drawn, want, rtol=1e-6, atol=1e-7)
            assert drawn.std() > 0, f"{tap.name} ch {c} is blank"
            if scale == "layer":
                assert ax.images[0].get_clim() == pytest.approx((fmap.min(), fmap.max()))
        first_tiles.append(np.asarray(tiles[0].images[0].get_array()))
    shapes = [t.shape for t in first_tiles]
    assert len(set(shapes)) == len(taps)  # each row shows its own tap (sizes 64, 32, 16, 8, 4)


def test_seed_figure_shows_first_channels_with_seed_titles(extracted):
    maps, taps, _ = extracted
    trained = Provenance(model="vgg16", weights="ImageNet", trained=True, layer_count=31)
    fig = seed_figure(maps, taps, channels=8, provenance=trained)
    assert [ax.get_label() for ax in _tiles(fig, "features.0")] == [f"tile features.0 {c}" for c in range(8)]
    assert fig.subfigs[0]._suptitle.get_text().startswith(
        "features.0 (conv1_1, Conv2d, layer 1 of 31): low-level features")
    assert "high-level features" in fig.subfigs[-1]._suptitle.get_text()


def test_overview_overlays_channel_means_and_depth_stats(extracted):
    maps, taps, image = extracted
    fig = overview_figure(maps, taps, image, weights="random init (seed 0)")
    axes = _by_label(fig)
    assert "random init (seed 0)" in fig._suptitle.get_text()
    np.testing.assert_array_equal(np.asarray(axes["input"].images[0].get_array()), image)
    heats = []
    for tap in taps:
        ax = axes[f"overlay {tap.name}"]
        heat = np.asarray(ax.images[1].get_array())
        want = normalize(upsample(channel_mean(maps[tap.name], tap), image.shape[:2]))
        np.testing.assert_allclose(heat, want, atol=1e-6)
        assert heat.shape == image.shape[:2] and heat.std() > 0
        heats.append(heat)
    assert not np.allclose(heats[0], heats[-1])
    stats = [tap_stats(maps[t.name], t) for t in taps]
    active = [p.get_height() for p in axes["depth active"].patches]
    np.testing.assert_allclose(active, [s.fraction_active for s in stats])
    means = [p.get_height() for p in axes["depth mean"].patches]
    np.testing.assert_allclose(means, [s.mean_activation for s in stats])
    assert [p.get_height() for p in axes["depth channels"].patches] == [t.channels for t in taps]
    assert "applied here to the conv outputs features.0" in fig.subfigs[1]._suptitle.get_text()


@pytest.mark.parametrize("scale", ["channel", "layer"])
def test_montage_shows_every_channel(extracted, scale):
    maps, taps, _ = extracted
    tap = taps[1]  # features.5: 128 channels
    fig = montage_figure(maps[tap.name], tap, scale=scale)
    drawn = np.asarray(_by_label(fig)[f"montage {tap.name}"].images[0].get_array())
    want = tile_montage(maps[tap.name], tap, per_channel=scale == "channel")
    np.testing.assert_allclose(drawn, want, rtol=1e-6, atol=1e-7)
    c, h, w = maps[tap.name].shape
    assert np.isfinite(drawn).sum() == c * h * w
    assert f"all {c} channels" in fig._suptitle.get_text()


def test_diff_figure_draws_absolute_error(extracted):
    maps, taps, _ = extracted
    rng = np.random.RandomState(1)
    ref = {k: v + rng.randn(*v.shape).astype(np.float32) * 1e-3 for k, v in maps.items()}
    sel = {t.name: np.array([0, 3]) for t in taps}
    fig = diff_figure(maps, ref, taps, selection=sel)
    for sub, tap in zip(fig.subfigs, taps):
        full = np.abs(maps[tap.name] - ref[tap.name])
        assert f"= {full.max():.2e} over all" in sub._suptitle.get_text()
        ax = _by_label(fig)[f"diff {tap.name} 3"]
        np.testing.assert_allclose(np.asarray(ax.images[0].get_array()), full[3], rtol=1e-6)


def test_draw_figures_from_an_extracted_dict(extracted):
    maps, taps, image = extracted
    opts = ShowOptions(channels=4, select="spread", scale="layer", montage=(taps[0],))
    figs = draw_figures(maps, taps, image, name="cat.png", weights="random", options=opts)
    assert list(figs) == ["cat-layers-spread-layer.png", "cat-overview.png", "cat-montage-features.0-layer.png"]
    reduced = dict(maps, **{"features.28": maps["features.28"].mean(axis=(1, 2))})
    with pytest.raises(ArgumentError, match=r"features.28 has shape \(512,\), not one image's \(512, 4, 4\)"):
        draw_figures(reduced, taps, image, name="cat.png", weights="random", options=opts)


def test_save_figure_leaves_nothing_half_written(tmp_path, extracted):
    maps, taps, _ = extracted
    fig = seed_figure(maps, taps[:1], channels=2)

    def broken(*a, **k):
        raise OSError(28, "No space left on device")

    fig.savefig = broken
    with pytest.raises(OSError):
        save_figure(fig, tmp_path / "x.png")
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------- the command


def test_show_command_writes_pngs(tmp_path, small_model, sample_paths, capsys):
    out = tmp_path / "figs"
    rc = cli.main(["show", str(sample_paths[1]), "--model", str(small_model.path), "--select", "top",
                   "--scale", "layer", "--montage", "features.5", "--diff", "--channels", "4", "-o", str(out)])
    assert rc == 0
    printed = capsys.readouterr().out
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted(["chelsea-layers-top-layer.png", "chelsea-overview.png",
                            "chelsea-montage-features.5-layer.png", "chelsea-diff-top.png"])
    for p in out.iterdir():
        assert str(p) in printed
        data = p.read_bytes()
        assert data.startswith(PNG_MAGIC) and 10_000 < len(data) < 2_000_000
    for line in printed.splitlines():
        if line.startswith("parity "):
            assert float(line.rsplit("= ", 1)[1]) < 1e-4  # fp32 ORT vs PyTorch, 64x64 input
    assert "features.0" in printed and "(ReLU applied)" in printed


def test_show_rejects_undecodable_image(tmp_path, small_model, capsys):
    bad = tmp_path / "photo.jpg"
    bad.write_bytes(b"this is not a jpeg")
    rc = cli.main(["show", str(bad), "--model", str(small_model.path), "-o", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1
    assert "cannot decode image" in err and "photo.jpg" in err
    assert not (tmp_path / "o").exists()  # nothing drawn, and the folder show made for it is gone


def test_show_rejects_missing_image(tmp_path, small_model, capsys):
    rc = cli.main(["show", str(tmp_path / "nope.png"), "--model", str(small_model.path), "-o", str(tmp_path)])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and "nope.png' not found" in err


@pytest.mark.parametrize("flag,value,match", [
    ("--layers", "features.3", "layer features.3 not in"),
    ("--montage", "features.7", "montage layer features.7 not in"),
    ("--layers", "features.31", "features.31"),
], ids=["layer-not-exported", "montage-not-exported", "layer-not-in-vgg16"])
def test_show_rejects_unknown_layer(tmp_path, small_model, sample_paths, capsys, flag, value, match):
    rc = cli.main(["show", str(sample_paths[0]), "--model", str(small_model.path), flag, value,
                   "-o", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and match in err


def test_show_rejects_unknown_layer_for_zoo_model_before_exporting(tmp_path, sample_paths, capsys, monkeypatch):
    import featuremaps.cli.show

    monkeypatch.setattr(featuremaps.cli.show, "resolve_model", lambda spec: pytest.fail("exported despite a bad layer"))
    rc = cli.main(["show", str(sample_paths[0]), "--layers", "0,99", "-o", str(tmp_path)])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and "99" in err


def test_show_rejects_unwritable_output(tmp_path, small_model, sample_paths, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    rc = cli.main(["show", str(sample_paths[0]), "--model", str(small_model.path), "-o", str(blocker / "out")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and "cannot write to output folder" in err
