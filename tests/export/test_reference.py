"""The clone-hook reference and the seed's no-clone hazard."""

import numpy as np
import pytest

from featuremaps.export.reference import reference_features, seed_features, tap_hooks
from featuremaps.engine.extractor import Extractor
from featuremaps.export.taps import parse_taps

from conftest import SMALL


def test_reference_matches_manual_sequential_forward(vgg_net, small_batch):
    import torch

    net, _ = vgg_net
    taps = parse_taps("0,4,17", input_size=SMALL)
    ref = reference_features(net, small_batch, taps)
    x = torch.from_numpy(small_batch)
    with torch.no_grad():
        for i, layer in enumerate(net.features[:18]):
            # out-of-place copy of each step: no in-place op can touch what we keep
            x = torch.relu(x) if isinstance(layer, torch.nn.ReLU) else layer(x)
            if f"features.{i}" in ref:
                np.testing.assert_allclose(ref[f"features.{i}"], x.numpy(), rtol=1e-5, atol=1e-6)


def test_seed_hazard_no_clone_returns_post_relu(vgg_net, small_model, small_batch):
    """features.0 is followed by ReLU(inplace=True): without a clone the hook's tensor is
    overwritten, so the seed's "layer 0" is relu(conv). The clone matches ONNX; the seed does not."""
    net, _ = vgg_net
    taps = parse_taps("0,5", input_size=SMALL)
    cloned = reference_features(net, small_batch, taps)["features.0"]
    seed = seed_features(net, small_batch, taps)["features.0"]
    with Extractor(small_model.path, provider="cpu") as ex:
        onnx_out = ex.run(small_batch)["features.0"]

    assert (cloned < 0).mean() > 0.2  # a conv output: a good share negative
    np.testing.assert_array_equal(seed, np.maximum(cloned, 0))
    np.testing.assert_allclose(cloned, onnx_out, rtol=1e-5, atol=1e-5)
    assert np.abs(seed - onnx_out).max() > 0.1


def test_hooks_are_removed_even_on_error(vgg_net):
    net, _ = vgg_net
    taps = parse_taps("0,5", input_size=SMALL)
    with pytest.raises(RuntimeError):
        with tap_hooks(net, taps):
            raise RuntimeError("boom")
    assert all(not m._forward_hooks for m in net.features)


def test_early_stop_equals_full_forward(vgg_net, small_batch):
    net, _ = vgg_net
    taps = parse_taps("5,10", input_size=SMALL)
    early = reference_features(net, small_batch, taps)
    full = reference_features(net, small_batch, taps, full=True)
    for k in early:
        np.testing.assert_array_equal(early[k], full[k])
