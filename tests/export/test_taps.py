"""Tap parsing and the static layer table (no torch needed)."""

import pytest

from featuremaps.export.taps import LayerError, Tap, model_layers, parse_taps


def test_vgg16_layer_table_matches_torchvision(vgg_net):
    net, _ = vgg_net
    layers = model_layers("vgg16", 224)
    assert len(layers) == len(net.features) == 31
    for tap, module in zip(layers, net.features):
        assert tap.kind == type(module).__name__
        if tap.kind == "Conv2d":
            assert tap.channels == module.out_channels


def test_vgg16_total_macs_is_the_known_15_5_gmacs():
    # VGG16 at 224x224: 15.47 GMACs (30.9 GFLOPs), the figure quoted across the literature.
    assert model_layers("vgg16")[0].total_macs == pytest.approx(15.47e9, rel=1e-3)
    # Taps up to features.10 need 2.7x less compute than the full network.
    assert 1 / parse_taps("10")[0].mac_share == pytest.approx(2.75, abs=0.05)


@pytest.mark.parametrize("spec, names", [
    ("0,5,10,17,28", ["features.0", "features.5", "features.10", "features.17", "features.28"]),
    ("features.17", ["features.17"]),
    ("conv1_1, relu1_1,pool1", ["features.0", "features.1", "features.4"]),
    ("CONV5_3,pool5", ["features.28", "features.30"]),
    ("28,0", ["features.28", "features.0"]),  # order is kept
    ([3, "features.4"], ["features.3", "features.4"]),
], ids=["indices", "canonical", "aliases", "upper-case", "order-kept", "list"])
def test_parse_taps(spec, names):
    assert [t.name for t in parse_taps(spec)] == names


def test_alias_blocks_follow_vgg_naming():
    by_alias = {t.alias: t.index for t in model_layers("vgg16")}
    assert by_alias["conv4_1"] == 17 and by_alias["relu4_1"] == 18 and by_alias["pool4"] == 23
    assert by_alias["conv5_3"] == 28 and by_alias["pool5"] == 30


def test_shapes_follow_input_size():
    (t,) = parse_taps("pool5", input_size=64)
    assert t.shape == (512, 2, 2)


@pytest.mark.parametrize("spec, match", [
    ("31", r"unknown layer '31'; vgg16 has features\.0-30"),
    ("features.99", r"unknown layer 'features\.99'.*featuremaps layers"),
    ("conv6_1", r"unknown layer 'conv6_1'"),
    ("-1", r"unknown layer '-1'"),
    ("", r"no layers given"),
    ("0,conv1_1", r"features\.0 is selected twice"),
])
def test_bad_layers_are_one_line_errors(spec, match):
    with pytest.raises(LayerError, match=match) as err:
        parse_taps(spec)
    assert "\n" not in str(err.value)


def test_unknown_model_and_tiny_input():
    with pytest.raises(LayerError, match="unknown model 'resnet9'"):
        parse_taps("0", model="resnet9")
    with pytest.raises(LayerError, match="unknown layer '0'; resnet50 has conv1 .. avgpool"):
        parse_taps("0", model="resnet50")  # bare integers are a features-family shorthand
    with pytest.raises(LayerError, match="too small"):
        model_layers("vgg16", 16)


def test_tap_dict_round_trip():
    for tap in model_layers("vgg19", 96):
        assert Tap.from_dict(tap.to_dict()) == tap
