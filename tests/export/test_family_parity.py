"""Every registered family exports, runs in ONNX Runtime, and matches torchvision's
``create_feature_extractor`` on the same weights (rel L2 <= 1e-5 per tap, fp32 on the CPU).

The reference is built here, independently of featuremaps' export path: torchvision's feature
extractor on a copy of the network with in-place ops switched off (the tap contract: a tap's
value is what its node produced, before any later in-place op)."""

from __future__ import annotations

import copy

import numpy as np
import pytest

from featuremaps.engine.extractor import Extractor
from featuremaps.errors import WeightsError
from featuremaps.families import all_models, family_layers, family_of, list_families
from featuremaps.export.onnx_export import export_model
from featuremaps.export.zoo import build_model

torch = pytest.importorskip("torch")
REL_L2 = 1e-5
# one model per family, with taps that only an FX-named contract can express: a BatchNorm or
# conv output that an in-place ReLU overwrites in eager PyTorch, a residual sum, a module's
# second call, a stage alias
CASES = {
    "vgg": ("vgg11_bn", "features.1,relu2_1,features.9,pool5", 32),
    "resnet": ("resnet18", "bn1,layer1.0.bn1,layer1.0.add,layer2.1.relu_1,layer3,avgpool", 64),
    "alexnet": ("alexnet", "features.0,conv3,features.12", 63),
}


def torchvision_reference(net, names, x):
    from torchvision.models.feature_extraction import create_feature_extractor

    body = copy.deepcopy(net).eval()
    for m in body.modules():
        if hasattr(m, "inplace"):
            m.inplace = False
    fx = create_feature_extractor(body, return_nodes=list(names))
    with torch.no_grad():
        return {k: v.numpy() for k, v in fx(torch.from_numpy(x)).items()}


def pixels_and_input(n: int, size: int, seed: int):
    """Random RGB pixels ``(n, size, size, 3) uint8`` (what exports take) and the normalized
    ``(n, 3, size, size) float32`` tensor torchvision's transforms would make of them."""
    pixels = np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)
    mean, std = np.array([0.485, 0.456, 0.406], np.float32), np.array([0.229, 0.224, 0.225], np.float32)
    x = (pixels.astype(np.float32) / 255.0 - mean) / std
    return pixels, np.ascontiguousarray(x.transpose(0, 3, 1, 2), dtype=np.float32)


def rel_l2(a, b):
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-12))


def test_every_family_has_a_case():
    assert {f.name for f in list_families()} == set(CASES)


@pytest.mark.parametrize("family", sorted(CASES))
def test_export_matches_create_feature_extractor(family, tmp_path):
    model, layers, size = CASES[family]
    net, info = build_model(model, "random", seed=3, need_classifier=False)
    res = export_model(layers, tmp_path / f"{model}.onnx", model=model, input_size=size, net=net, weights_info=info)
    pixels, x = pixels_and_input(2, size, seed=0)
    with Extractor(res.path, provider="cpu") as ex:
        out = ex.run(pixels)
    ref = torchvision_reference(net, [t.name for t in res.taps], x)
    assert list(out) == [t.name for t in res.taps]  # outputs named by tap, in the order asked
    for t in res.taps:
        assert out[t.name].shape == (2, *t.shape)  # the declaration the whole house trusts
        assert rel_l2(out[t.name], ref[t.name]) <= REL_L2, t.name
    assert res.metadata["family"] == family


def test_resnet_logits_output_matches_the_full_network(tmp_path):
    net, info = build_model("resnet18", "random", seed=1, need_classifier=True)
    res = export_model("layer2", tmp_path / "r.onnx", model="resnet18", input_size=64, logits=True, net=net,
                       weights_info=info)
    pixels, x = pixels_and_input(1, 64, seed=1)
    with Extractor(res.path, provider="cpu") as ex:
        out = ex.run(pixels)
    with torch.no_grad():
        want = net(torch.from_numpy(x)).numpy()
    assert rel_l2(out["logits"], want) <= REL_L2


def test_a_fine_tuned_head_of_another_shape_loads_for_a_cut_graph(tmp_path):
    net = __import__("torchvision").models.resnet18(num_classes=10)
    path = tmp_path / "finetuned.pth"
    torch.save(net.state_dict(), path)
    built, info = build_model("resnet18", str(path), need_classifier=False)
    assert torch.equal(built.layer4[1].conv2.weight, net.layer4[1].conv2.weight)
    with pytest.raises(WeightsError, match=r"fc\.(weight|bias) has shape \(10"):
        build_model("resnet18", str(path), need_classifier=True)


# One model per family and block type (plain VGG, VGG-BN, ResNet basic and bottleneck blocks, AlexNet):
# the others share these builders, and every model's layer table is checked against torchvision's
# own graph in test_families.py. All 14 took 150 s of CI; resnet152 alone 26 s.
EXPORTED = ("vgg11", "vgg16_bn", "resnet18", "resnet50", "alexnet")


def test_the_exported_models_cover_every_family():
    assert set(EXPORTED) <= set(all_models())
    assert {family_of(m).name for m in EXPORTED} == {f.name for f in list_families()}


@pytest.mark.slow
@pytest.mark.parametrize("model", EXPORTED)
def test_every_family_exports_its_deepest_layer_within_budget(model, tmp_path):
    layers = family_layers(model, 64)
    pick = ",".join(t.name for t in (layers[1], layers[len(layers) // 2], layers[-1]))
    net, info = build_model(model, "random", seed=0, need_classifier=False)
    res = export_model(pick, tmp_path / "m.onnx", model=model, input_size=64, net=net, weights_info=info)
    pixels, x = pixels_and_input(1, 64, seed=2)
    with Extractor(res.path, provider="cpu") as ex:
        out = ex.run(pixels)
    ref = torchvision_reference(net, [t.name for t in res.taps], x)
    assert max(rel_l2(out[k], ref[k]) for k in ref) <= REL_L2
