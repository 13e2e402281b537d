"""The family registry's pure-Python layer tables, checked against torchvision's own graphs."""

from __future__ import annotations

import pytest

from featuremaps.errors import LayerError
from featuremaps.families import all_models, family_layers, family_of

# Published multiply-accumulates per 224x224 image (torchvision's model cards list GFLOPS as GMACs).
PUBLISHED_GMACS = {"vgg16": 15.47, "vgg11_bn": 7.61, "resnet18": 1.81, "resnet50": 4.09, "resnet152": 11.51,
                   "alexnet": 0.71}


def skeleton(model: str):
    """torchvision's network on the meta device, in eval mode: its modules and graph with no weights
    allocated or initialised (VGG's classifier alone is 490 MB), which is all these checks read."""
    torch = pytest.importorskip("torch")
    torchvision = pytest.importorskip("torchvision")
    with torch.device("meta"):
        return torchvision.models.get_model(model).eval()


@pytest.mark.parametrize("model", all_models())
def test_layer_names_are_torchvision_fx_node_names_in_order(model):
    pytest.importorskip("torchvision")
    from torchvision.models.feature_extraction import get_graph_node_names

    _, eval_nodes = get_graph_node_names(skeleton(model))
    names = [t.name for t in family_layers(model, 224)]
    assert names == [n for n in eval_nodes if n in set(names)]  # same relative order
    tappable = [n for n in eval_nodes if n != "x" and not n.startswith(("classifier", "flatten", "fc"))
                and not (n == "avgpool" and not model.startswith("resnet"))]
    assert names == tappable


@pytest.mark.parametrize("model", ["vgg11_bn", "resnet18", "resnet50", "alexnet"])
@pytest.mark.parametrize("size", [64, 97])
def test_declared_shapes_equal_torch_outputs(model, size):
    """Shapes only: the forward runs on meta tensors (shape propagation, no arithmetic)."""
    torch = pytest.importorskip("torch")
    from torchvision.models.feature_extraction import create_feature_extractor

    layers = family_layers(model, size)
    fx = create_feature_extractor(skeleton(model), return_nodes=[t.name for t in layers])
    with torch.no_grad():
        out = fx(torch.zeros(1, 3, size, size, device="meta"))
    assert {t.name: t.shape for t in layers} == {k: tuple(v.shape[1:]) for k, v in out.items()}


@pytest.mark.parametrize("model, gmacs", sorted(PUBLISHED_GMACS.items()))
def test_total_macs_match_published_figures(model, gmacs):
    assert family_layers(model, 224)[0].total_macs / 1e9 == pytest.approx(gmacs, rel=0.01)


def test_aliases_name_the_stage_outputs():
    by_alias = {t.alias: t.name for t in family_layers("resnet50") if t.alias}
    assert by_alias["layer1"] == "layer1.2.relu_2" and by_alias["layer4"] == "layer4.2.relu_2"
    assert {t.alias: t.name for t in family_layers("vgg16_bn")}["relu4_1"] == "features.26"


@pytest.mark.parametrize("model", ["vgg16_bn", "resnet34", "alexnet"])
def test_declared_kinds_are_the_module_types(model):
    net = skeleton(model)
    for t in family_layers(model):
        if t.kind != "add":
            assert type(net.get_submodule(t.name.rsplit("_", 1)[0] if t.name[-2:-1] == "_" else t.name)
                        ).__name__ == t.kind, t.name


def test_unknown_model_and_tiny_input_are_one_line_errors():
    with pytest.raises(LayerError, match="unknown model 'resnet9'; the zoo has vgg11"):
        family_of("resnet9")
    with pytest.raises(LayerError, match="too small for alexnet.*>= 63"):
        family_layers("alexnet", 40)
