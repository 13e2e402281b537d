"""Weights from .pth and .safetensors files, refusal of code-running pickles, offline ImageNet."""

import pickle

import numpy as np
import pytest

from featuremaps.export.reference import reference_features
from featuremaps.engine.extractor import Extractor
from featuremaps.export.onnx_export import export_model
from featuremaps.export.taps import parse_taps
from featuremaps.export.zoo import WeightsError, build_model, load_state_file, state_dict_sha256

from conftest import SMALL, random_batch


@pytest.fixture(scope="module")
def other_net():
    """A VGG16 with weights different from the session fixture (seed 7), without its classifier
    head (490 MB that no cut graph reads)."""
    import torch

    net, _ = build_model("vgg16", "random", seed=7, need_classifier=False)
    net.classifier = torch.nn.Identity()
    return net


@pytest.mark.parametrize("fmt", ["pth", "safetensors"])
def test_weights_file_is_used(tmp_path, other_net, vgg_net, fmt):
    import torch

    path = tmp_path / f"w.{fmt}"
    state = {k: v for k, v in other_net.state_dict().items() if k.startswith("features.")}
    if fmt == "pth":
        torch.save(state, path)
    else:
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    res = export_model("0,10", tmp_path / "m.onnx", weights=str(path), input_size=SMALL)
    assert res.metadata["weights"]["source"] == str(path)
    assert res.metadata["weights"]["sha256"] == state_dict_sha256(state)
    x = random_batch(2)
    with Extractor(res.path, provider="cpu") as ex:
        out = ex.run(x)
    ref = reference_features(other_net, x, parse_taps("0,10", input_size=SMALL))
    for k in ref:
        np.testing.assert_allclose(out[k], ref[k], rtol=1e-4, atol=1e-5)
    # and not the default seed-0 weights
    other = reference_features(vgg_net[0], x, parse_taps("0", input_size=SMALL))["features.0"]  # seed 0
    assert np.abs(other - out["features.0"]).max() > 1e-2


class _Payload:
    def __reduce__(self):
        import os

        return (os.system, ("touch PWNED_MARKER",))


def test_malicious_pth_is_refused_and_nothing_runs(tmp_path, monkeypatch, recwarn):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "evil.pth"
    with open(path, "wb") as f:
        pickle.dump({"features.0.weight": _Payload()}, f)
    with pytest.raises(WeightsError, match=r"refusing to load evil\.pth.*re-save it"):
        load_state_file(path)
    assert not (tmp_path / "PWNED_MARKER").exists()
    assert not [w for w in recwarn if "pickle" in str(w.message)], "torch's warning reached the user"


def test_weights_that_do_not_fit_are_named(tmp_path, other_net):
    import torch

    state = {k: v for k, v in other_net.state_dict().items() if k.startswith("features.")}
    del state["features.28.weight"]
    torch.save(state, tmp_path / "partial.pth")
    with pytest.raises(WeightsError, match=r"missing features\.28\.weight"):
        build_model("vgg16", str(tmp_path / "partial.pth"), need_classifier=False)
    state["features.28.weight"] = torch.zeros(3, 3)
    torch.save(state, tmp_path / "badshape.pth")
    with pytest.raises(WeightsError, match=r"features\.28\.weight has shape \(3, 3\)"):
        build_model("vgg16", str(tmp_path / "badshape.pth"), need_classifier=False)


def test_missing_file_and_offline_imagenet_messages(tmp_path, monkeypatch):
    import torch

    with pytest.raises(WeightsError, match="not found"):
        build_model("vgg16", str(tmp_path / "nope.pth"))
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))

    def offline(*a, **k):
        raise OSError("network unreachable")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    with pytest.raises(WeightsError, match=r"not available offline.*--weights random.*--weights PATH") as err:
        build_model("vgg16", "imagenet")
    assert "\n" not in str(err.value) and "vgg16-397923af.pth" in str(err.value)
