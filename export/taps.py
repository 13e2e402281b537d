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

# torchvision's VGG configurations: channel counts, "M" = MaxPool2d(2, 2).
_VGG_CFGS: dict[str, tuple] = {
    "vgg11": (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"),
    "vgg13": (64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"),
    "vgg16": (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"),
    "vgg19": (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M",
              512, 512, 512, 512, "M", 512, 512, 512, 512, "M"),
}
MODELS = tuple(_VGG_CFGS)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_CLASSIFIER_MACS = 512 * 7 * 7 * 4096 + 4096 * 4096 + 4096 * 1000


def model_layers(model: str = "vgg16", input_size: int = 224) -> tuple[Tap, ...]:
    """Every tappable ``features.i`` layer of a zoo model at ``input_size`` (square input)."""
    cfg = _VGG_CFGS.get(model.lower())
    if cfg is None:
        raise LayerError(f"unknown model {model!r}; the zoo has {', '.join(MODELS)} "
                         "(or pass the path of an exported .onnx file)")
    if input_size < 32:
        raise LayerError(f"input size {input_size} is too small: VGG halves it five times; use >= 32")
    rows: list[tuple[str, str, tuple[int, int, int], int]] = []
    c, hw, macs, block, conv_in_block = 3, input_size, 0, 1, 0
    for v in cfg:
        if v == "M":
            hw //= 2
            rows.append(("MaxPool2d", f"pool{block}", (c, hw, hw), macs))
            block, conv_in_block = block + 1, 0
            continue
        conv_in_block += 1
        macs += hw * hw * v * c * 9
        c = v
        rows.append(("Conv2d", f"conv{block}_{conv_in_block}", (c, hw, hw), macs))
        rows.append(("ReLU", f"relu{block}_{conv_in_block}", (c, hw, hw), macs))
    total = macs + _CLASSIFIER_MACS
    return tuple(Tap(name=f"features.{i}", index=i, alias=alias, kind=kind, shape=shape,
                     macs=m, total_macs=total)
                 for i, (kind, alias, shape, m) in enumerate(rows))


def parse_taps(spec: str | int | Tap | list | tuple, model: str = "vgg16",
               input_size: int = 224) -> tuple[Tap, ...]:
    """Parse a layer selection into taps, in the order given.

    Accepts ``"0,5,10,17,28"``, ``"features.17"``, VGG aliases (``conv4_1``, ``relu4_1``,
    ``pool4``; case-insensitive), or a list of any of these.

    >>> [t.name for t in parse_taps("0,conv4_1,pool5")]
    ['features.0', 'features.17', 'features.30']
    """
    layers = model_layers(model, input_size)
    by_key: dict[str, Tap] = {}
    for t in layers:
        by_key[str(t.index)] = by_key[t.name] = by_key[t.alias] = t
    items = _split(spec)
    if not items:
        raise LayerError(f"no layers given; pick from features.0-{len(layers) - 1} "
                         f"(see `featuremaps layers --model {model}`)")
    taps: list[Tap] = []
    for item in items:
        tap = item if isinstance(item, Tap) else by_key.get(str(item).strip().lower())
        if tap is None:
            raise LayerError(f"unknown layer {str(item).strip()!r}; {model} has features.0-"
                             f"{len(layers) - 1} (or 0-{len(layers) - 1}, conv1_1, relu1_1, pool1, ...), "
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
