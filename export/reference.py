"""The PyTorch reference that every exported graph is checked against.

:func:`reference_features` hooks the *unmodified* torchvision model and ``clone()``s each
tapped module output, so a later ``ReLU(inplace=True)`` cannot overwrite it. That works where
every tap is a submodule of one ``nn.Sequential`` called once (VGG, AlexNet: the seed's
approach). Other families tap values that are not module outputs (``layer1.0.add``) or modules
called twice (a ResNet block's ``relu``, ``relu_1``): there the reference is torchvision's
``create_feature_extractor`` on a copy with in-place ops switched off, as the tap contract
demands (the value before any later in-place op).
:func:`seed_features` keeps the seed article's behaviour (``output.detach()`` without a
clone) for comparison: for a conv tap followed by an in-place ReLU it returns the
post-ReLU map, so the seed's "layer 0" pictures are really ``features.1``.
"""

from __future__ import annotations

from contextlib import contextmanager

import numpy as np

from ..contracts import Tap
from ..errors import LayerError
from .taps import parse_taps
from .zoo import build_model


class _StopForward(Exception):
    """Raised by the deepest tap's hook: nothing after it is needed."""


def _module(model, tap: Tap):
    return model.get_submodule(tap.name)


def hooks_can_tap(model, taps: tuple[Tap, ...]) -> bool:
    """True when every tap is a child of ``model.features``, an ``nn.Sequential`` that calls
    each child once, so a forward hook sees exactly the tap's value."""
    from torch import nn

    seq = getattr(model, "features", None)
    return isinstance(seq, nn.Sequential) and all(
        t.name.startswith("features.") and t.name.count(".") == 1 for t in taps)


def _fx_features(model, batch, taps: tuple[Tap, ...], full: bool) -> dict:
    import copy

    import torch
    from torchvision.models.feature_extraction import create_feature_extractor, get_graph_node_names

    body = copy.deepcopy(model).eval()
    for m in body.modules():
        if getattr(m, "inplace", False):
            m.inplace = False  # the tap contract: the value before any later in-place op
    nodes = [t.name for t in taps]
    if full:  # run the whole network, as the seed does
        nodes.append(get_graph_node_names(body)[1][-1])
    extractor = create_feature_extractor(body, return_nodes={n: n for n in dict.fromkeys(nodes)})
    with torch.inference_mode():
        out = extractor(_to_tensor(batch))
    return {t.name: out[t.name] for t in taps}


@contextmanager
def tap_hooks(model, taps: tuple[Tap, ...], *, clone: bool = True, stop_after_deepest: bool = False):
    """Register forward hooks on ``taps``; yields the dict they fill (tap name -> tensor).

    Hooks are removed on exit, whatever happens inside the block.
    """
    store: dict = {}
    deepest = max(t.index for t in taps)
    handles = []

    def make_hook(tap: Tap):
        def hook(_module, _inputs, output):
            # clone: the next ReLU(inplace=True) would overwrite this tensor
            store[tap.name] = output.detach().clone() if clone else output.detach()
            if stop_after_deepest and tap.index == deepest:
                raise _StopForward

        return hook

    try:
        for t in taps:
            handles.append(_module(model, t).register_forward_hook(make_hook(t)))
        yield store
    finally:
        for h in handles:
            h.remove()


def _to_tensor(x):
    import torch

    return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)) if isinstance(x, np.ndarray) else x


def _as_taps(taps, model_name: str | None, batch) -> tuple[Tap, ...]:
    """``taps`` as Tap objects: parsed once here when given as text (``"0,5"``, ``["layer1"]``)."""
    if isinstance(taps, Tap) or (isinstance(taps, (tuple, list)) and taps and all(isinstance(t, Tap) for t in taps)):
        return (taps,) if isinstance(taps, Tap) else tuple(taps)
    if model_name is None:
        raise LayerError(f"taps {taps!r} are names; say which model they belong to: "
                         "reference_features(net, batch, taps, model='vgg16') or pass parse_taps(...) objects")
    return parse_taps(taps, model_name, int(np.shape(batch)[-1]))


def reference_features(model, batch, taps, *, full: bool = False, model_name: str | None = None,
                       weights: str = "random", seed: int = 0) -> dict[str, np.ndarray]:
    """Tap outputs of ``model`` on ``batch`` ``(N, 3, H, W) float32`` (normalized): cloned at a
    forward hook where hooks can tap them (VGG, AlexNet), else from torchvision's
    ``create_feature_extractor`` on an in-place-free copy (ResNet).

    ``model`` is a torchvision network or a zoo name (``"vgg16"``: built with ``weights``/``seed``);
    ``taps`` are :class:`Tap` objects or a selection as text (``"0,5"``, ``"layer1,layer3"``),
    parsed for ``model_name`` (default: ``model`` when it is a name). The forward pass stops after
    the deepest tap unless ``full=True`` (which also runs the classifier, as the seed does).
    Returns tap name -> ``(N, C, H, W) float32`` numpy array.

    >>> import torch
    >>> maps = reference_features("vgg16", torch.zeros(1, 3, 64, 64), "0,5")
    >>> maps["features.5"].shape
    (1, 128, 32, 32)
    """
    import torch

    if isinstance(model, str):
        model_name = model_name or model
        model, _ = build_model(model, weights, seed, need_classifier=full)
    taps = _as_taps(taps, model_name, batch)

    if not hooks_can_tap(model, taps):
        return {k: v.cpu().numpy() for k, v in _fx_features(model, batch, taps, full).items()}
    with torch.inference_mode():
        store = hooked_forward(model, _to_tensor(batch), taps, full=full)
    return {t.name: store[t.name].cpu().numpy() for t in taps}


def hooked_forward(model, x, taps: tuple[Tap, ...], *, full: bool) -> dict:
    """Run ``model`` on the tensor ``x`` (on the model's device) with clone hooks on ``taps``;
    returns tap name -> tensor, left where the model computed it. The forward pass stops after the
    deepest tap unless ``full`` (the seed runs the classifier too). Call under ``inference_mode``."""
    with tap_hooks(model, taps, stop_after_deepest=not full) as store:
        try:
            model(x)
        except _StopForward:
            pass
    return store


def seed_features(model, batch, taps: tuple[Tap, ...]) -> dict[str, np.ndarray]:
    """The seed article's hooks: ``output.detach()`` without a clone, full network.

    Kept to document the hazard: a tap followed by ``ReLU(inplace=True)`` comes back
    post-ReLU. Use :func:`reference_features` for the true module output.
    """
    import torch

    with torch.no_grad(), tap_hooks(model, taps, clone=False) as store:
        model(_to_tensor(batch))
    return {t.name: store[t.name].cpu().numpy() for t in taps}
