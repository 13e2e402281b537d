"""Tappable layers of the model zoo and the parser for layer selections.

Pure Python on purpose: listing layers, parsing ``--layers`` and reading an exported
model's taps must not import torch (the engine runs on machines without it).

A *tap* is the output of one module, named by its module path (``features.17``). A layer
selection such as ``"0,5,conv4_1,features.28"`` is parsed once, here, into a tuple of
frozen :class:`featuremaps.contracts.Tap` objects; everything downstream (export, engine, store, figures) reads
those and never re-parses strings.
"""

from __future__ import annotations

from ..contracts import Tap
from ..errors import LayerError  # noqa: F401 - re-exported (featuremaps.export.LayerError)
from ..families import all_models, family_layers, family_of

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
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
