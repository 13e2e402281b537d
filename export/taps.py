"""Tappable layers of the model zoo and the parser for layer selections.

Pure Python on purpose: listing layers, parsing ``--layers`` and reading an exported
model's taps must not import torch (the engine runs on machines without it).

A *tap* is the output of one module, named by its module path (``features.17``). A layer
selection such as ``"0,5,conv4_1,features.28"`` is parsed once, here, into a tuple of
frozen :class:`Tap` objects; everything downstream (export, engine, store, figures) reads
those and never re-parses strings.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from ..errors import LayerError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Tap:
    """One tappable module output.

    ``shape`` is ``(C, H, W)`` at the input size the spec was built for; ``macs`` is the
    number of multiply-accumulates per image needed to compute this output (cumulative from
    the input), ``total_macs`` those of the whole network including the classifier.
    """

    name: str  # canonical module path, e.g. "features.17"; also the ONNX output name
    index: int  # position in the model's execution order (for VGG: inside ``features``)
    alias: str  # readable alias: conv4_1, relu4_1, pool4 (VGG), layer3 (ResNet); "" if none
    kind: str  # torch module type: Conv2d, ReLU, MaxPool2d, BatchNorm2d; "add" for a residual sum
    shape: tuple[int, int, int]
    macs: int
    total_macs: int

    @property
    def channels(self) -> int:
        return self.shape[0]

    @property
    def mac_share(self) -> float:
        """Share of the full network's MACs needed to reach this tap (0..1)."""
        return self.macs / self.total_macs

    def to_dict(self) -> dict:
        return {"name": self.name, "index": self.index, "alias": self.alias, "kind": self.kind,
                "shape": list(self.shape), "channels": self.channels, "macs": self.macs,
                "total_macs": self.total_macs}

    @classmethod
    def from_dict(cls, d: dict) -> "Tap":
        fields = {f.name for f in dataclasses.fields(cls)}
        kw = {k: v for k, v in d.items() if k in fields}
        kw["shape"] = tuple(kw["shape"])
        return cls(**kw)


from .families import all_models, family_layers, family_of  # noqa: E402  (needs Tap defined above)

MODELS = all_models()


def model_layers(model: str = "vgg16", input_size: int = 224) -> tuple[Tap, ...]:
    """Every tappable layer of a zoo model at ``input_size`` (square input), in execution order."""
    return family_layers(model, input_size)


def parse_taps(spec: str | int | Tap | list | tuple, model: str = "vgg16",
               input_size: int = 224) -> tuple[Tap, ...]:
    """Parse a layer selection into taps, in the order given.

    Accepts torchvision FX node names (``features.17``, ``layer4.2.relu_2``), aliases
    (``conv4_1``, ``relu4_1``, ``pool4`` for VGG; ``layer1``..``layer4``, ``stem`` for ResNet;
    case-insensitive), bare integers where the family has them (``17`` = ``features.17``), or
    a list of any of these.

    >>> [t.name for t in parse_taps("0,conv4_1,pool5")]
    ['features.0', 'features.17', 'features.30']
    >>> [t.name for t in parse_taps("layer1,layer3.5.relu_2", "resnet50")]
    ['layer1.2.relu_2', 'layer3.5.relu_2']
    """
    layers = model_layers(model, input_size)
    fam = family_of(model)
    by_key: dict[str, Tap] = {}
    for t in layers:
        by_key[t.name.lower()] = t
        if t.alias:
            by_key.setdefault(t.alias.lower(), t)
    if fam.shorthand:
        for t in layers:
            if t.name.startswith(fam.shorthand.format("")):
                by_key.setdefault(t.name.rsplit(".", 1)[1], t)
    if fam.shorthand:
        span = f"{fam.shorthand.format('')}0-{len(layers) - 1}"
        hint = f"or 0-{len(layers) - 1}, {', '.join(t.alias for t in layers[:3] if t.alias)}, ..."
    else:
        span = f"{layers[0].name} .. {layers[-1].name}"
        hint = "aliases " + ", ".join([t.alias for t in layers if t.alias][-6:])
    items = _split(spec)
    if not items:
        raise LayerError(f"no layers given; pick from {span} (see `featuremaps layers --model {model}`)")
    taps: list[Tap] = []
    for item in items:
        tap = item if isinstance(item, Tap) else by_key.get(str(item).strip().lower())
        if tap is None:
            raise LayerError(f"unknown layer {str(item).strip()!r}; {model} has {span} ({hint}), "
                             f"see `featuremaps layers --model {model}`")
        if tap in taps:
            raise LayerError(f"layer {tap.name} is selected twice; list each layer once")
        taps.append(tap)
    return tuple(taps)


def _split(spec) -> list:
    if isinstance(spec, (Tap, int)):
        return [spec]
    if isinstance(spec, str):
        return [s for s in spec.split(",") if s.strip()]
    out: list = []
    for s in spec:
        out.extend(_split(s))
    return out
