"""Model families: every tappable layer of a network, declared once.

A family (VGG, VGG-BN, ResNet, AlexNet) declares, in pure Python, the layers of each of its
models at a given square input size: the torchvision FX node name (what
``torchvision.models.feature_extraction.get_graph_node_names`` lists in eval mode), a readable
alias, the module kind, the output shape ``(C, H, W)`` and the multiply-accumulates needed to
reach it. Everything downstream (export, the reference, figures, bench, the store) trusts that
declaration, as timm trusts ``FeatureInfo``; tests check it against torchvision's own graph.

Pure Python on purpose: listing layers and parsing ``--layers`` must work without torch.

>>> [t.name for t in family_layers("resnet18", 224)][:5]
['conv1', 'bn1', 'relu', 'maxpool', 'layer1.0.conv1']
>>> family_of("vgg16_bn").name, family_of("resnet50").name
('vgg', 'resnet')
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from .errors import LayerError
from .contracts import Tap

# torchvision's VGG configurations: channel counts, "M" = MaxPool2d(2, 2).
_VGG_CFGS: dict[str, tuple] = {
    "vgg11": (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"),
    "vgg13": (64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"),
    "vgg16": (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"),
    "vgg19": (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M",
              512, 512, 512, 512, "M", 512, 512, 512, 512, "M"),
}
_VGG_CLASSIFIER_MACS = 512 * 7 * 7 * 4096 + 4096 * 4096 + 4096 * 1000
# ResNet: block type and blocks per stage.
_RESNET_CFGS: dict[str, tuple[str, tuple[int, int, int, int]]] = {
    "resnet18": ("basic", (2, 2, 2, 2)), "resnet34": ("basic", (3, 4, 6, 3)),
    "resnet50": ("bottleneck", (3, 4, 6, 3)), "resnet101": ("bottleneck", (3, 4, 23, 3)),
    "resnet152": ("bottleneck", (3, 8, 36, 3)),
}


@dataclass(frozen=True)
class Family:
    """A model family: its models, its pure-Python layer table, and its tap shorthands.

    ``layers(model, input_size)`` returns every tappable layer in execution order (``Tap.index``
    is the position in that order, so "deepest tap" means the largest index). ``shorthand``
    maps a bare integer to a layer name where the family has one (``17`` -> ``features.17``).
    ``min_input`` is the smallest square input every layer still has a spatial extent for.
    ``head``/``logits_node`` say which weights and node the classifier is: a graph cut before
    it needs none of them (so a fine-tuned head of another shape still loads).
    """

    name: str
    models: tuple[str, ...]
    layers: Callable[[str, int], tuple[Tap, ...]]
    min_input: int
    head: str  # state_dict prefix of the classifier head; a cut graph never reads it
    logits_node: str  # the FX node whose output is the logits
    shorthand: str | None = None  # format string for a bare integer, e.g. "features.{}"
    sequential: bool = False  # every tap is a distinct submodule called once (hooks can tap it)


def _conv_out(h: int, k: int, s: int, p: int) -> int:
    return (h + 2 * p - k) // s + 1


class _Builder:
    """Accumulates layers in execution order with cumulative MACs."""

    def __init__(self):
        self.rows: list[tuple[str, str, str, tuple[int, int, int], int]] = []
        self.macs = 0

    def add(self, name: str, kind: str, shape: tuple[int, int, int], alias: str = "", macs: int = 0) -> None:
        self.macs += macs
        self.rows.append((name, alias, kind, shape, self.macs))

    def taps(self, extra_macs: int) -> tuple[Tap, ...]:
        total = self.macs + extra_macs
        return tuple(Tap(name=n, index=i, alias=a, kind=k, shape=s, macs=m, total_macs=total)
                     for i, (n, a, k, s, m) in enumerate(self.rows))


def _vgg_layers(model: str, input_size: int) -> tuple[Tap, ...]:
    bn = model.endswith("_bn")
    cfg = _VGG_CFGS[model.removesuffix("_bn")]
    b, i, c, hw, block, conv = _Builder(), 0, 3, input_size, 1, 0
    for v in cfg:
        if v == "M":
            hw //= 2
            b.add(f"features.{i}", "MaxPool2d", (c, hw, hw), f"pool{block}")
            i, block, conv = i + 1, block + 1, 0
            continue
        conv += 1
        b.add(f"features.{i}", "Conv2d", (v, hw, hw), f"conv{block}_{conv}", macs=hw * hw * v * c * 9)
        c, i = v, i + 1
        if bn:
            b.add(f"features.{i}", "BatchNorm2d", (c, hw, hw), f"bn{block}_{conv}")
            i += 1
        b.add(f"features.{i}", "ReLU", (c, hw, hw), f"relu{block}_{conv}")
        i += 1
    return b.taps(_VGG_CLASSIFIER_MACS)


def _alexnet_layers(model: str, input_size: int) -> tuple[Tap, ...]:
    b, c, hw = _Builder(), 3, input_size
    convs = {0: (64, 11, 4, 2), 3: (192, 5, 1, 2), 6: (384, 3, 1, 1), 8: (256, 3, 1, 1), 10: (256, 3, 1, 1)}
    n_conv = n_pool = 0
    for i in range(13):
        if i in convs:
            out, k, s, p = convs[i]
            hw = _conv_out(hw, k, s, p)
            n_conv += 1
            b.add(f"features.{i}", "Conv2d", (out, hw, hw), f"conv{n_conv}", macs=hw * hw * out * c * k * k)
            c = out
        elif i in (2, 5, 12):
            hw = _conv_out(hw, 3, 2, 0)
            n_pool += 1
            b.add(f"features.{i}", "MaxPool2d", (c, hw, hw), f"pool{n_pool}")
        else:
            b.add(f"features.{i}", "ReLU", (c, hw, hw), f"relu{n_conv}")
    return b.taps(256 * 6 * 6 * 4096 + 4096 * 4096 + 4096 * 1000)


def _resnet_block(b: _Builder, prefix: str, kind: str, c_in: int, width: int, stride: int,
                  hw: int) -> tuple[int, int]:
    """Add one block's nodes in torchvision's FX order; returns ``(channels out, hw out)``."""
    hw_out = _conv_out(hw, 3, stride, 1)
    if kind == "basic":
        c_out = width
        b.add(f"{prefix}.conv1", "Conv2d", (width, hw_out, hw_out), macs=hw_out * hw_out * width * c_in * 9)
        b.add(f"{prefix}.bn1", "BatchNorm2d", (width, hw_out, hw_out))
        b.add(f"{prefix}.relu", "ReLU", (width, hw_out, hw_out))
        b.add(f"{prefix}.conv2", "Conv2d", (width, hw_out, hw_out), macs=hw_out * hw_out * width * width * 9)
        b.add(f"{prefix}.bn2", "BatchNorm2d", (width, hw_out, hw_out))
        last_relu = "relu_1"
    else:
        c_out = width * 4
        b.add(f"{prefix}.conv1", "Conv2d", (width, hw, hw), macs=hw * hw * width * c_in)
        b.add(f"{prefix}.bn1", "BatchNorm2d", (width, hw, hw))
        b.add(f"{prefix}.relu", "ReLU", (width, hw, hw))
        b.add(f"{prefix}.conv2", "Conv2d", (width, hw_out, hw_out), macs=hw_out * hw_out * width * width * 9)
        b.add(f"{prefix}.bn2", "BatchNorm2d", (width, hw_out, hw_out))
        b.add(f"{prefix}.relu_1", "ReLU", (width, hw_out, hw_out))
        b.add(f"{prefix}.conv3", "Conv2d", (c_out, hw_out, hw_out), macs=hw_out * hw_out * c_out * width)
        b.add(f"{prefix}.bn3", "BatchNorm2d", (c_out, hw_out, hw_out))
        last_relu = "relu_2"
    if stride != 1 or c_in != c_out:
        b.add(f"{prefix}.downsample.0", "Conv2d", (c_out, hw_out, hw_out), macs=hw_out * hw_out * c_out * c_in)
        b.add(f"{prefix}.downsample.1", "BatchNorm2d", (c_out, hw_out, hw_out))
    b.add(f"{prefix}.add", "add", (c_out, hw_out, hw_out))
    b.add(f"{prefix}.{last_relu}", "ReLU", (c_out, hw_out, hw_out))
    return c_out, hw_out


def _resnet_layers(model: str, input_size: int) -> tuple[Tap, ...]:
    kind, blocks = _RESNET_CFGS[model]
    b = _Builder()
    hw = _conv_out(input_size, 7, 2, 3)
    b.add("conv1", "Conv2d", (64, hw, hw), "conv1", macs=hw * hw * 64 * 3 * 49)
    b.add("bn1", "BatchNorm2d", (64, hw, hw), "bn1")
    b.add("relu", "ReLU", (64, hw, hw), "relu")
    hw = _conv_out(hw, 3, 2, 1)
    b.add("maxpool", "MaxPool2d", (64, hw, hw), "stem")
    c = 64
    for stage, n in enumerate(blocks, start=1):
        for j in range(n):
            stride = 2 if stage > 1 and j == 0 else 1
            c, hw = _resnet_block(b, f"layer{stage}.{j}", kind, c, 64 * 2 ** (stage - 1), stride, hw)
        name, alias, k, shape, m = b.rows[-1]
        b.rows[-1] = (name, f"layer{stage}", k, shape, m)  # the stage's output: its last ReLU
    b.add("avgpool", "AdaptiveAvgPool2d", (c, 1, 1), "avgpool")
    return b.taps(c * 1000)


_FAMILIES: dict[str, Family] = {}


def register_family(family: Family) -> Family:
    """Add ``family`` to the registry (its model names must be new)."""
    clash = set(family.models) & set(all_models())
    if clash:
        raise ValueError(f"models {sorted(clash)} are registered already")
    _FAMILIES[family.name] = family
    return family


def all_models() -> tuple[str, ...]:
    """Every model name of every registered family, in registration order."""
    return tuple(m for f in _FAMILIES.values() for m in f.models)


def list_families() -> tuple[Family, ...]:
    return tuple(_FAMILIES.values())


register_family(Family("vgg", tuple(_VGG_CFGS) + tuple(f"{m}_bn" for m in _VGG_CFGS), _vgg_layers,
                       min_input=32, head="classifier.", logits_node="classifier.6", shorthand="features.{}",
                       sequential=True))
register_family(Family("resnet", tuple(_RESNET_CFGS), _resnet_layers, min_input=32, head="fc.",
                       logits_node="fc"))
register_family(Family("alexnet", ("alexnet",), _alexnet_layers, min_input=63, head="classifier.",
                       logits_node="classifier.6", shorthand="features.{}", sequential=True))


def family_of(model: str) -> Family:
    """The family that ``model`` belongs to; a one-line :class:`LayerError` naming the choices otherwise."""
    key = str(model).lower()
    for f in _FAMILIES.values():
        if key in f.models:
            return f
    raise LayerError(f"unknown model {model!r}; the zoo has {', '.join(all_models())} "
                     "(or pass the path of an exported .onnx file)")


VGG16_DEFAULT_TAPS = "0,5,10,17,28"  # the seed article's five: conv1_1, conv2_1, conv3_1, conv4_1, conv5_1's ReLU


def default_taps(model: str, input_size: int = 224) -> str:
    """The taps a command uses when ``--layers`` is not given (timm's ``out_indices`` idea): the
    seed's five for VGG16, a ResNet's stem and four stages, otherwise five convolutions spread
    from first to last.

    >>> default_taps("vgg16"), default_taps("resnet18")
    ('0,5,10,17,28', 'conv1,layer1,layer2,layer3,layer4')
    """
    if str(model).lower() == "vgg16":
        return VGG16_DEFAULT_TAPS
    layers = family_layers(model, input_size)
    aliases = {t.alias for t in layers}
    if {"layer1", "layer4"} <= aliases:
        return "conv1,layer1,layer2,layer3,layer4"
    convs = [t for t in layers if t.kind == "Conv2d"]
    n = min(5, len(convs))
    picks = sorted({round(i * (len(convs) - 1) / max(n - 1, 1)) for i in range(n)})
    return ",".join(convs[i].name for i in picks)


def family_layers(model: str, input_size: int = 224) -> tuple[Tap, ...]:
    """Every tappable layer of ``model`` at a square ``input_size``, in execution order."""
    fam = family_of(model)
    if not isinstance(input_size, int) or input_size < fam.min_input:
        raise LayerError(f"input size {input_size} is too small for {model}: its deepest layers would "
                         f"have no pixels left; use >= {fam.min_input}")
    return fam.layers(model.lower(), input_size)


def layer_count(model: str, input_size: int = 224) -> int | None:
    """How many tappable layers ``model`` has at ``input_size`` (figures' depth words: "layer 18 of
    31"); None for a model no family knows or an unusable size, since a figure can go without.

    >>> layer_count("vgg16"), layer_count("resnet18"), layer_count("my_net")
    (31, 67, None)
    """
    try:
        return len(family_layers(str(model), int(input_size)))
    except (LayerError, TypeError, ValueError):
        return None
