"""Figures say what they show: precision, math mode, weights, reductions, how the photo was resized;
reduced taps drawn as what they are; depth words only for trained weights; truecolour PNGs."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from featuremaps.engine.validate import ModelRecord
from featuremaps.export.taps import model_layers, parse_taps
from featuremaps.viz.draw import ShowOptions, draw_figures, load_image, load_photo, provenance, save_figure
from featuremaps.viz.figures import (channel_figure, comparison_figure, depth_words, montage_figure,
                                    overview_figure)
from featuremaps.viz.mapstats import tap_stats

from conftest import SMALL

DEPTH_WORDS = ("low-level", "transitioning", "mid-level", "more abstract", "high-level")


@pytest.fixture(scope="module")
def run(small_model, sample_paths):
    """chelsea.png (451x300) through the small VGG16 export: (maps {tap: (C, H, W)}, taps, image, model record)."""
    from featuremaps.engine.extractor import Extractor
    from featuremaps.engine.preprocess import to_input

    image = load_image(sample_paths[1], (SMALL, SMALL))
    with Extractor(small_model.path, provider="cpu") as ex:
        out = ex.run(to_input(image, ex.preprocessing)[None])
        return {k: v[0] for k, v in out.items()}, ex.taps, image, ex.record


def _texts(fig) -> str:
    """Every piece of text a figure carries (titles, subfigure titles, axes titles, labels)."""
    parts = [t.get_text() for t in fig.findobj(lambda a: hasattr(a, "get_text") and callable(a.get_text))]
    return "\n".join(p for p in parts if isinstance(p, str))


def _recorded(record: ModelRecord, **meta) -> ModelRecord:
    """``record`` as if its model's metadata also said ``meta`` (weights, reductions...)."""
    return ModelRecord.from_metadata(dict(record.metadata, **meta), record.path)


def _trained(record: ModelRecord) -> ModelRecord:
    """``record`` as if it had been exported with ImageNet weights (recorded, not downloaded)."""
    return _recorded(record, weights={"source": "imagenet", "sha256": "0" * 64, "seed": None})


# ---------------------------------------------------------------- provenance on every figure


def test_every_figure_names_precision_math_mode_weights_and_resize(run, sample_paths):
    from PIL import Image

    maps, taps, _, meta = run
    image, note = load_photo(sample_paths[1], (SMALL, SMALL))
    w0, h0 = Image.open(sample_paths[1]).size
    assert (w0, h0) != (SMALL, SMALL) and w0 != h0
    assert note == f"stretched to {SMALL}\u00d7{SMALL} from {w0}\u00d7{h0}"
    np.testing.assert_array_equal(image, load_image(sample_paths[1], (SMALL, SMALL)))  # same pixels as the engine's
    prov = provenance(meta, math_mode="tf32")
    assert prov.layer_count == 31  # the family's layers at the record's input size
    opts = ShowOptions(channels=2, montage=(taps[1],))
    figs = draw_figures(maps, taps, image, name="chelsea.png", weights=prov.weights, options=opts,
                        provenance=prov, image_note=note, reference=maps)
    assert len(figs) == 4
    for fname, fig in figs.items():
        title = fig._suptitle.get_text()
        assert "precision fp32" in title and "math mode tf32" in title, fname
        assert "random init (seed 0), untrained: not what vgg16 learned" in title, fname
        assert "reductions: none" in title, fname
    overview = figs["chelsea-overview.png"]
    inp = next(ax for ax in overview.axes if ax.get_label() == "input")
    assert f"stretched to {SMALL}\u00d7{SMALL} from {w0}\u00d7{h0}" in inp.get_title()


def test_math_mode_unknown_is_said_not_guessed(run):
    maps, taps, _, meta = run
    fig = channel_figure(maps, taps[:1], channels=2, provenance=provenance(dataclasses.replace(meta, precision="int8")))
    assert "precision int8, math mode not recorded" in fig._suptitle.get_text()


@pytest.mark.parametrize("original,size,want", [
    ((375, 500), (224, 224), "stretched to 224\u00d7224 from 500\u00d7375"),
    ((448, 448), (224, 224), "resized to 224\u00d7224 from 448\u00d7448"),
    ((64, 64), (64, 64), "64\u00d764, not resized"),
])
def test_resize_note(original, size, want):
    from featuremaps.viz.draw import resize_note

    assert resize_note(original, size) == want


# ---------------------------------------------------------------- depth words


def test_depth_words_absent_with_random_weights(run):
    maps, taps, image, meta = run
    prov = provenance(meta)
    assert prov.layer_count == len(model_layers("vgg16", SMALL))
    assert not prov.trained
    text = _texts(channel_figure(maps, taps, channels=2, provenance=prov))
    text += _texts(overview_figure(maps, taps, image, weights=prov.weights, provenance=prov))
    assert not [w for w in DEPTH_WORDS if w in text]


def test_depth_words_present_with_recorded_imagenet_weights(run):
    maps, taps, _, meta = run
    prov = provenance(_trained(meta))
    assert prov.trained and prov.weights.startswith("ImageNet")
    fig = channel_figure(maps, taps, channels=2, provenance=prov)
    rows = [sub._suptitle.get_text() for sub in fig.subfigs]
    # the seed's words for VGG16's features.0, 5, 10, 17, 28, in that order
    for row, words in zip(rows, ["low-level", "transitioning", "mid-level", "more abstract", "high-level"]):
        assert f": {words} features" in row


@pytest.mark.parametrize("model", ["vgg11", "resnet18", "resnet152", "alexnet"])
def test_depth_words_follow_the_family_layer_count(model):
    layers = model_layers(model, SMALL)
    assert depth_words(layers[0], len(layers)) == "low-level features"
    assert depth_words(layers[-1], len(layers)) == "high-level features"
    middle = layers[len(layers) // 2]
    assert depth_words(middle, len(layers)) in ("mid-level features", "more abstract features")


def test_weights_file_counts_as_trained(run):
    meta = _recorded(run[3], weights={"source": "/w/finetuned.pth", "sha256": "ab" * 32})
    prov = provenance(meta)
    assert prov.trained and prov.weights == "finetuned.pth (sha256 abababababab)"


# ---------------------------------------------------------------- reduced taps


@pytest.fixture(scope="module")
def reduced(run):
    """features.5 mean-reduced to (C,), features.10 avg-pooled 4x4, by NumPy from the run's maps."""
    maps, taps, image, meta = run
    red = dict(maps)
    red["features.5"] = maps["features.5"].mean(axis=(1, 2))
    c, h, w = maps["features.10"].shape
    red["features.10"] = maps["features.10"].reshape(c, h // 4, 4, w // 4, 4).mean(axis=(2, 4))
    rtaps = tuple(dataclasses.replace(t, shape=red[t.name].shape) for t in taps)
    prov = provenance(_recorded(meta, reductions={"features.5": {"op": "mean", "k": None, "spec": "mean"},
                                                  "features.10": {"op": "avgpool", "k": 4, "spec": "avgpool:4"}}),
                      math_mode="fp32")
    return red, rtaps, image, prov


def test_reduced_vector_is_a_bar_strip_and_pooled_map_names_its_factor(reduced):
    maps, taps, _, prov = reduced
    fig = channel_figure(maps, taps, channels=3, provenance=prov)
    assert "reductions: features.5=mean, features.10=avgpool:4" in fig._suptitle.get_text()
    bars = next(ax for ax in fig.axes if ax.get_label() == "bars features.5")
    np.testing.assert_allclose([p.get_height() for p in bars.patches], maps["features.5"], rtol=1e-6)
    assert not [ax for ax in fig.axes if ax.get_label().startswith("tile features.5 ")]
    rows = {tap.name: sub._suptitle.get_text() for tap, sub in zip(taps, fig.subfigs)}
    assert "mean over H\u00d7W: all 128 channels" in rows["features.5"]
    assert "4\u00d74, avg-pooled 4\u00d74" in rows["features.10"]  # 16x16 pooled to 4x4
    tile = next(ax for ax in fig.axes if ax.get_label() == "tile features.10 0")
    assert np.asarray(tile.images[0].get_array()).shape == (4, 4)


def test_reduced_taps_are_left_out_of_fraction_active(reduced, run):
    maps, taps, image, prov = reduced
    assert tap_stats(maps["features.10"], taps[2], "avgpool:4").fraction_active is None
    assert tap_stats(maps["features.5"], taps[1], "mean").mean_activation is None  # a conv tap: ReLU comes first
    fig = overview_figure(maps, taps, image, weights=prov.weights, provenance=prov)
    active = next(ax for ax in fig.axes if ax.get_label() == "depth active")
    kept = [t for t in taps if t.name not in ("features.5", "features.10")]
    full = run[0]
    want = [float((np.maximum(full[t.name], 0) > 0).mean()) for t in kept]  # every kept tap is a conv output
    np.testing.assert_allclose([p.get_height() for p in active.patches], want, rtol=1e-6)
    assert sum("not counted" in t.get_text() for t in active.texts) == 2
    assert any(ax.get_label() == "bars features.5" for ax in fig.axes)  # no overlay for a (C,) tap
    assert not any(ax.get_label() == "overlay features.5" for ax in fig.axes)


def test_montage_of_a_vector_tap_is_refused(reduced):
    from featuremaps.errors import ArgumentError

    maps, taps, image, prov = reduced
    with pytest.raises(ArgumentError, match="--montage features.5: reduced to one value per channel"):
        draw_figures(maps, taps, image, name="c.png", weights=prov.weights, provenance=prov,
                     options=ShowOptions(montage=(taps[1],)))


# ---------------------------------------------------------------- comparison across images


def test_comparison_shows_the_same_channels_on_one_scale(run, reduced):
    maps, taps, _, _ = run
    rng = np.random.RandomState(0)
    other = {k: v * 2 + rng.rand(*v.shape).astype(np.float32) for k, v in maps.items()}
    fig = comparison_figure([maps, other], ["a.png", "b.png"], taps[:2], channels=3, select="first")
    for tap in taps[:2]:
        tiles = [ax for ax in fig.axes if ax.get_label().startswith(f"compare {tap.name} ")]
        assert len(tiles) == 6
        clims = {ax.images[0].get_clim() for ax in tiles}
        assert len(clims) == 1  # one colour scale for the tap over both images
        for i, src in enumerate([maps, other]):
            for c in range(3):
                ax = next(a for a in tiles if a.get_label() == f"compare {tap.name} {i} {c}")
                np.testing.assert_array_equal(np.asarray(ax.images[0].get_array()), src[tap.name][c])
    red_maps, rtaps, _, prov = reduced
    fig = comparison_figure([red_maps, red_maps], ["a", "b"], rtaps[1:2], provenance=prov)
    strip = next(ax for ax in fig.axes if ax.get_label() == "strip features.5")
    np.testing.assert_array_equal(np.asarray(strip.images[0].get_array()),
                                  np.stack([red_maps["features.5"]] * 2))


def test_comparison_top_ranks_over_all_images():
    tap = parse_taps("features.1", "vgg16", SMALL)[0]  # post-ReLU: values ranked as they are
    a = np.zeros((4, 2, 2), np.float32)
    b = np.zeros((4, 2, 2), np.float32)
    a[1], b[3] = 1.0, 3.0  # channel 3 is strongest over both images, channel 1 in the first alone
    fig = comparison_figure([{tap.name: a}, {tap.name: b}], ["a", "b"], (tap,), channels=1, select="top")
    assert [ax.get_label() for ax in fig.axes if ax.get_label().startswith("compare")] == [
        f"compare {tap.name} 0 3", f"compare {tap.name} 1 3"]


# ---------------------------------------------------------------- PNG files


def test_saved_montage_is_truecolour_with_many_colours(run, tmp_path):
    from PIL import Image

    maps, taps, _, meta = run
    fig = montage_figure(maps["features.0"], taps[0], provenance=provenance(meta))
    path = save_figure(fig, tmp_path / "m.png", dpi=150)  # large: the old code palette-quantised above 600 kB
    data = path.read_bytes()
    assert len(data) > 600_000
    assert data[12:16] == b"IHDR" and data[25] in (2, 6)  # colour type: truecolour (no palette, 3)
    with Image.open(path) as im:
        assert im.mode in ("RGB", "RGBA")
        assert im.size == (round(fig.get_figwidth() * 150), round(fig.get_figheight() * 150))
        colours = im.getcolors(maxcolors=1 << 24)
    assert len(colours) > 300  # a palette PNG has at most 256 (viridis alone is 256, plus text and edges)
