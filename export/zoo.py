"""Model zoo: build a torchvision model with weights from ImageNet, a file, or a seeded init.

Imports torch lazily (inside functions) so ``featuremaps.export`` stays importable without it.
"""

from __future__ import annotations

import hashlib
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path

from ..engine.hashing import file_sha256
from ..errors import WeightsError, require
from ..families import family_of

log = logging.getLogger(__name__)



@dataclass(frozen=True)
class WeightsInfo:
    """Where the weights came from. ``sha256`` is over the state_dict tensors (key order),
    so the same weights hash alike whether they came from a file or a seeded init."""

    source: str  # "imagenet", "random", or the file path
    sha256: str
    seed: int | None = None
    file_sha256: str | None = None

    def to_dict(self) -> dict:
        return {"source": self.source, "sha256": self.sha256, "seed": self.seed,
                "file_sha256": self.file_sha256}


def _imagenet_enum(model: str):
    import torchvision

    return torchvision.models.get_model_weights(model).IMAGENET1K_V1


def hub_checkpoint_path(model: str) -> Path:
    """Where torchvision keeps (or would keep) the ImageNet checkpoint for ``model``."""
    import torch

    return Path(torch.hub.get_dir()) / "checkpoints" / Path(_imagenet_enum(model).url).name


def state_dict_sha256(state: dict) -> str:
    h = hashlib.sha256()
    for k in sorted(state):
        t = state[k].detach().cpu().contiguous()
        h.update(k.encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()


def imagenet_state(model: str) -> dict:
    import contextlib
    import io

    enum = _imagenet_enum(model)
    try:
        # torch.hub writes a "Downloading ..." line to stderr even with progress=False
        with contextlib.redirect_stderr(io.StringIO()):
            return enum.get_state_dict(progress=False, check_hash=False)
    except Exception as e:  # URLError, socket errors, HTTP errors: all mean "cannot fetch"
        raise WeightsError(
            f"ImageNet weights for {model} are not available offline ({type(e).__name__}); put "
            f"{hub_checkpoint_path(model).name} into {hub_checkpoint_path(model).parent} or use "
            "--weights random [--seed N] or --weights PATH.pth|.safetensors") from None


def load_state_file(path: str | Path) -> dict:
    """Load a state_dict from ``.pth``/``.pt`` (``weights_only=True``, no fallback) or ``.safetensors``.

    A pickle that would run code is refused by ``weights_only=True``; nothing in it runs.
    A checkpoint dict holding the weights under ``state_dict`` or ``model`` is unwrapped, and a
    ``module.`` prefix (DataParallel) is stripped.
    """
    import torch

    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"weights file {str(path)!r} not found; pass an existing .pth/.safetensors "
                           "file, or --weights random|imagenet")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            state = load_file(str(path))
        except Exception as e:  # noqa: BLE001 - SafetensorError, OSError, MemoryError from a lying header, ...
            first = str(e).strip().splitlines()[0][:160] if str(e).strip() else type(e).__name__
            raise WeightsError(f"{path.name} is not a readable .safetensors file ({first}); save one with "
                               "safetensors.torch.save_file(model.state_dict(), PATH)") from None
    else:
        try:
            with warnings.catch_warnings():  # torch's notes on a foreign pickle: our line says what failed
                warnings.simplefilter("ignore")
                state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise WeightsError(
                f"refusing to load {path.name}: it is not a plain tensor state_dict "
                f"(weights_only load failed: {first[:160]}); re-save it with "
                "torch.save(model.state_dict(), PATH) or as .safetensors") from None
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsError(f"{path.name} does not hold a state_dict of tensors; "
                           "save one with torch.save(model.state_dict(), PATH)")
    return {k.removeprefix("module."): v for k, v in state.items()}


def _check_keys(model, state: dict, head: str, needed: set[str], source: str) -> dict:
    """The entries of ``state`` to load: every ``needed`` key with its shape; head keys
    (``head`` prefix) that are not needed may differ or be missing (a fine-tuned classifier)."""
    own = model.state_dict()
    missing = sorted(needed - set(state))
    unknown = sorted(k for k in set(state) - set(own) if not k.startswith(head))
    if missing or unknown:
        what = (f"missing {', '.join(missing[:3])}" if missing else "") + \
               (" and " if missing and unknown else "") + \
               (f"unexpected {', '.join(unknown[:3])}" if unknown else "")
        raise WeightsError(f"weights from {source} do not fit {type(model).__name__}: {what}; "
                           "use a state_dict saved from the same torchvision architecture")
    for k in sorted(needed):
        if tuple(state[k].shape) != tuple(own[k].shape):
            raise WeightsError(f"weights from {source}: {k} has shape {tuple(state[k].shape)}, "
                               f"the model needs {tuple(own[k].shape)}")
    return {k: v for k, v in state.items() if k in needed}


def used_keys(state_keys, head: str, need_classifier: bool) -> set[str]:
    """The state_dict keys a graph reads: all of them with the classifier, else all but the head's."""
    return {k for k in state_keys if need_classifier or not k.startswith(head)}


def weight_hashes(net, model: str) -> set[str]:
    """SHA-256s an export of ``net`` may record: over the weights a cut graph reads (all but the
    classifier head) or over all of them (an exporter handed a full network hashes both)."""
    state = net.state_dict()
    head = family_of(model).head
    return {state_dict_sha256({k: v for k, v in state.items() if k in used_keys(state, head, need)})
            for need in (False, True)}


def build_model(model: str = "vgg16", weights: str = "random", seed: int = 0,
                need_classifier: bool = True):
    """A torchvision model of any registered family, in eval mode, with the given weights.

    ``weights``: ``"random"`` (seeded torchvision init), ``"imagenet"`` (torchvision's
    IMAGENET1K_V1, from the torch hub cache when offline) or a ``.pth``/``.safetensors`` path.
    ``need_classifier=False`` lets a file leave out or change the classifier head (enough for a
    cut graph: a fine-tuned head of another shape loads). ``WeightsInfo.sha256`` hashes the
    weights the graph reads. Returns ``(module, WeightsInfo)``. Without torch:
    :class:`DependencyError` naming the extra.
    """
    torch = require("torch", extra="export", what="building a PyTorch model")
    torchvision = require("torchvision", extra="export", what="building a PyTorch model")

    fam = family_of(model)
    name = model.lower()
    torch.manual_seed(seed)
    net = torchvision.models.get_model(name, weights=None)
    needed = used_keys(net.state_dict(), fam.head, need_classifier)
    file_hash = None
    if weights == "random":
        source = "random"
    else:
        if weights == "imagenet":
            state, source = imagenet_state(name), "imagenet"
        else:
            state, source = load_state_file(weights), str(weights)
            file_hash = file_sha256(weights)
        net.load_state_dict(_check_keys(net, state, fam.head, needed, source), strict=False)
    net.eval()
    used = {k: v for k, v in net.state_dict().items() if k in needed}
    info = WeightsInfo(source=source, sha256=state_dict_sha256(used),
                       seed=seed if weights == "random" else None, file_sha256=file_hash)
    return net, info
