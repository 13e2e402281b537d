"""`featuremaps show` with several images, folders and @lists, on a ResNet export and a reduced
store; `featuremaps layers` on every family and on an exported .onnx file."""

from __future__ import annotations

import shutil

import pytest

from featuremaps.cli import main
from featuremaps.families import all_models

from conftest import SMALL

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def resnet_model(tmp_path_factory):
    """resnet18 (seeded random) exported with taps layer1 and layer3.1.relu_1 at 64x64."""
    from featuremaps.export.onnx_export import export_model
    from featuremaps.export.zoo import build_model

    net, info = build_model("resnet18", "random", seed=0)
    path = tmp_path_factory.mktemp("models") / "r.onnx"
    return export_model("layer1,layer3.1.relu_1", path, model="resnet18", input_size=SMALL, net=net,
                        weights_info=info)


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


# ---------------------------------------------------------------- several images


def test_show_several_images_writes_a_folder_each_and_a_comparison(tmp_path, small_model, sample_paths, capsys):
    photos = tmp_path / "photos"
    photos.mkdir()
    for p in sample_paths[1:3]:
        shutil.copy(p, photos / p.name)
    listed = tmp_path / "list.txt"
    listed.write_text(f"{sample_paths[0]}\n")
    out = tmp_path / "figs"
    rc = main(["show", str(photos), f"@{listed}", "--model", str(small_model.path), "--channels", "3",
               "--layers", "0,10", "--dpi", "40", "-o", str(out)])
    printed = capsys.readouterr().out
    assert rc == 0
    stems = sorted(p.stem for p in [sample_paths[0], *sample_paths[1:3]])
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == stems
    for stem in stems:
        assert sorted(p.name for p in (out / stem).iterdir()) == [f"{stem}-layers-first-channel.png",
                                                                   f"{stem}-overview.png"]
    compare = out / "compare-first.png"
    assert compare.read_bytes().startswith(PNG_MAGIC) and str(compare) in printed
    assert "precision fp32, math mode fp32" in printed
    assert printed.count("stretched to 64\u00d764 from") + printed.count("resized to 64\u00d764 from") == 3


def test_show_draws_a_file_name_that_is_not_utf8_and_the_rest_of_the_folder(tmp_path, small_model, sample_paths,
                                                                             capsys):
    """matplotlib cannot draw surrogate-escaped bytes: titles show them as \\xNN, files keep the real name."""
    import os

    photos = tmp_path / "photos"
    photos.mkdir()
    bad = os.fsdecode(os.path.join(os.fsencode(photos), b"bad-\xff\xfe.png"))
    shutil.copy(sample_paths[0], bad)
    shutil.copy(sample_paths[1], photos / "good.png")
    out = tmp_path / "figs"
    for argv in (["show", str(photos)], ["show", bad]):
        target = out / argv[1][-3:]
        assert main([*argv, "--model", str(small_model.path), "--layers", "0", "--dpi", "30", "-o", str(target)]) == 0
        captured = capsys.readouterr()
        assert "Traceback" not in captured.err and "bad-\\xff\\xfe.png: vgg16 input" in captured.out
    pngs = {os.fsencode(p.name) for p in out.rglob("*.png")}
    assert b"bad-\xff\xfe-overview.png" in pngs and b"good-overview.png" in pngs and b"compare-first.png" in pngs


@pytest.mark.parametrize("arg, match", [
    ("missing-folder/", "'missing-folder/' not found; pass image files, folders or @list.txt"),
    ("@nolist.txt", "list file nolist.txt not found"),
    ("nope.png", "image 'nope.png' not found"),
])
def test_show_bad_inputs_are_one_line(tmp_path, small_model, capsys, monkeypatch, arg, match):
    monkeypatch.chdir(tmp_path)
    rc = main(["show", arg, "--model", str(small_model.path), "-o", str(tmp_path / "o")])
    assert rc == 2 and match in _one_error_line(capsys)


def test_show_empty_folder_is_one_line(tmp_path, small_model, capsys):
    (tmp_path / "empty").mkdir()
    rc = main(["show", str(tmp_path / "empty"), "--model", str(small_model.path), "-o", str(tmp_path / "o")])
    assert rc == 2 and "no images found" in _one_error_line(capsys)


def test_show_dpi_out_of_range(capsys):
    with pytest.raises(SystemExit):
        main(["show", "x.jpg", "--dpi", "5"])
    assert "--dpi must be in 30..600" in capsys.readouterr().err


# ---------------------------------------------------------------- a ResNet export


def test_show_on_a_resnet18_export_labels_taps_by_name(tmp_path, resnet_model, sample_paths, capsys):
    out = tmp_path / "o"
    rc = main(["show", str(sample_paths[1]), "--model", str(resnet_model.path), "--channels", "2",
               "--montage", "layer3", "-o", str(out)])
    printed = capsys.readouterr().out
    assert rc == 0, printed
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted(["chelsea-layers-first-channel.png", "chelsea-overview.png",
                            "chelsea-montage-layer3.1.relu_1-channel.png"])
    assert "resnet18 \u00b7 weights: random init (seed 0), untrained: not what resnet18 learned" in printed
    rows = [ln.split() for ln in printed.splitlines() if ln.startswith("layer")]
    assert [r[:4] for r in rows] == [["layer1.1.relu_1", "layer1", "64", "16x16"],
                                     ["layer3.1.relu_1", "layer3", "256", "4x4"]]
    assert all(r[4].endswith("%") for r in rows)  # post-ReLU, unreduced: fraction active is counted


def test_resnet_figure_titles_are_generic(resnet_model, sample_paths):
    from featuremaps.cli.show import extract_samples
    from featuremaps.viz.draw import provenance
    from featuremaps.viz.figures import channel_figure

    samples, taps, _, record, math_mode = extract_samples(resnet_model.path, [sample_paths[1]], layers=None,
                                                          montage=None)
    prov = provenance(record, math_mode=math_mode)
    fig = channel_figure(samples[0].maps, taps, channels=2, provenance=prov)
    rows = [sub._suptitle.get_text() for sub in fig.subfigs]
    # resnet18 at 64: 67 tappable layers; layer1.1.relu_1 is the 18th, layer3.1.relu_1 the 50th
    assert rows[0].startswith("layer1.1.relu_1 (layer1, ReLU, layer 18 of 67)  \u2014  first 2 of 64")
    assert rows[1].startswith("layer3.1.relu_1 (layer3, ReLU, layer 50 of 67)")
    assert not any("Layer " in r or "features." in r for r in rows)


def test_show_zoo_resnet_defaults_to_its_stages():
    from featuremaps.families import default_taps as default_layers

    assert default_layers("resnet50", SMALL) == "conv1,layer1,layer2,layer3,layer4"
    assert default_layers("vgg16", SMALL) == "0,5,10,17,28"
    assert default_layers("alexnet", 224) == "features.0,features.3,features.6,features.8,features.10"


# ---------------------------------------------------------------- show --store with reductions


def test_show_from_a_reduced_store_draws_every_tap(tmp_path, small_model, sample_paths, capsys):
    from featuremaps.export.reduce import parse_reductions, reduce_model

    model = tmp_path / "red.onnx"
    reduce_model(small_model.path, model, parse_reductions("features.5=mean,features.10=avgpool:4",
                                                          small_model.taps))
    store = tmp_path / "s.zarr"
    assert main(["extract", str(sample_paths[1]), "--model", str(model), "-o", str(store), "--workers", "1"]) == 0
    capsys.readouterr()
    out = tmp_path / "o"
    assert main(["show", "--store", str(store), "--index", "0", "--channels", "2", "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "reductions: features.5=mean, features.10=avgpool:4" in printed
    rows = {ln.split()[0]: ln for ln in printed.splitlines() if ln.startswith("features.")}
    assert set(rows) == {"features.0", "features.5", "features.10", "features.17", "features.28"}
    assert "(C,)" in rows["features.5"] and "(reduced: mean)" in rows["features.5"]
    assert rows["features.10"].split()[3:5] == ["4x4", "-"]  # pooled: no fraction active
    assert sorted(p.name for p in out.iterdir()) == ["chelsea-layers-first-channel.png", "chelsea-overview.png"]


# ---------------------------------------------------------------- layers


def test_layers_resnet50_lists_fx_names_aliases_shapes_and_shares(capsys):
    assert main(["layers", "--model", "resnet50", "--input-size", "64"]) == 0
    lines = capsys.readouterr().out.splitlines()
    rows = {ln.split()[0]: ln.split() for ln in lines[2:] if ln and not ln.startswith("full network")}
    # 64 -> conv1 32 -> maxpool 16 -> layer2 8 -> layer3 4 -> layer4 2; bottleneck width x4 channels
    assert rows["layer4.2.relu_2"][1:4] == ["layer4", "ReLU", "2048x2x2"]
    assert rows["layer3.5.relu_2"][1:3] == ["layer3", "ReLU"] and rows["layer3.5.relu_2"][3] == "1024x4x4"
    assert rows["layer2.0.conv1"][1:3] == ["Conv2d", "128x16x16"]  # no alias: the column is empty
    assert rows["conv1"][-1] < rows["layer4.2.relu_2"][-1]
    shares = [float(r[-1].rstrip("%")) for r in rows.values()]
    assert shares == sorted(shares) and shares[-1] <= 100.0


@pytest.mark.parametrize("model", all_models())
def test_layers_works_for_every_family(capsys, model):
    assert main(["layers", "--model", model, "--input-size", "64"]) == 0
    assert "GMACs per image" in capsys.readouterr().out


def test_layers_on_an_exported_file_prints_its_taps_and_metadata(small_model, capsys):
    assert main(["layers", "--model", str(small_model.path)]) == 0
    out = capsys.readouterr().out
    assert "vgg16 exported by featuremaps" in out
    assert "precision     fp32" in out
    assert "weights       random init (seed 0), untrained: not what vgg16 learned" in out
    assert "input         uint8_nhwc 64x64x3" in out
    taps = [ln.split()[:4] for ln in out.splitlines() if ln.startswith("features.")]
    assert taps == [["features.0", "conv1_1", "Conv2d", "64x64x64"], ["features.5", "conv2_1", "Conv2d", "128x32x32"],
                    ["features.10", "conv3_1", "Conv2d", "256x16x16"], ["features.17", "conv4_1", "Conv2d", "512x8x8"],
                    ["features.28", "conv5_3", "Conv2d", "512x4x4"]]


def test_layers_on_a_missing_file_is_one_line(tmp_path, capsys):
    assert main(["layers", "--model", str(tmp_path / "gone.onnx")]) == 2
    assert "model file" in _one_error_line(capsys)

