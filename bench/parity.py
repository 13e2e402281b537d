"""Parity of an exported model against the PyTorch clone-hook reference, per tap and provider.

Two different questions, kept apart:

* **model parity**: ONNX Runtime and PyTorch on the *same* input tensor (engine-preprocessed
  photos). Judged against the budget of the model's precision (:data:`PRECISION_BUDGETS`).
* **pipeline gap** (:func:`pipeline_gap`): the engine's decode/resize/normalize (OpenCV +
  PIL-exact resize) against the seed's PIL + torchvision transforms, in pixels and in tap
  error end to end. Informational: two JPEG decoders may legitimately differ by a level.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..export.gate import DEFAULT_MAX_REL_L2, DEFAULT_MIN_COSINE
from ..export.taps import Tap
from .stats import TapError, compare, max_abs_error
from ..errors import InputError, ReferenceWeightsError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Budget:
    """Pass/fail limits for one precision: rel L2 at most ``rel_l2``; cosine at least ``cosine``."""

    rel_l2: float
    cosine: float | None
    why: str

    def passes(self, row: TapError) -> bool:
        return row.rel_l2 <= self.rel_l2 and (self.cosine is None or row.cosine >= self.cosine)

    def to_dict(self) -> dict:
        return {"rel_l2": self.rel_l2, "cosine": self.cosine, "why": self.why}


# The one table of budgets; a new precision adds a row here. Measured against the fp32
# PyTorch reference on the same input tensor.
PRECISION_BUDGETS: dict[str, Budget] = {
    "fp32": Budget(1e-5, None,
                   "same arithmetic, different summation order and conv algorithms; measured "
                   "rel L2 is ~1e-7..1e-6 for VGG16 taps, so 1e-5 leaves 10x margin and still "
                   "catches any real bug (a wrong tap, a missing ReLU, a perturbed weight)"),
    "fp16": Budget(1e-2, 0.9999,
                   "fp16 unit roundoff is 4.9e-4; rounding weights and activations over up to 13 "
                   "conv layers accumulates to ~1e-3 rel L2, the budget allows 10x that"),
    "bf16": Budget(1e-2, 0.9999, "bf16 math (OpenVINO's default on CPUs with AMX/AVX-512 BF16): 8-bit mantissa "
                   "(unit roundoff 3.9e-3) with f32 accumulation; measured worst VGG16 tap 7.3e-3 rel L2"),
    "int8": Budget(DEFAULT_MAX_REL_L2, DEFAULT_MIN_COSINE,
                   "the calibrated int8 export gate's defaults (export/gate.py): every tap "
                   "cosine >= 0.99 and rel L2 <= 0.1 against fp32"),
}


def budget_for(precision: str) -> Budget:
    """The budget for ``precision`` (``fp32``, ``fp16``, ``bf16``, ``int8``)."""
    try:
        return PRECISION_BUDGETS[precision]
    except KeyError:
        raise ValueError(f"no parity budget for precision {precision!r}; known: "
                         f"{', '.join(PRECISION_BUDGETS)} (add a row to PRECISION_BUDGETS)") from None


# ---------------------------------------------------------------- reference weights


def load_reference_net(meta: dict, weights: str | None = None):
    """The torchvision network an exported model came from, with its weights verified.

    ``weights`` (a ``.pth``/``.safetensors`` path, ``imagenet`` or ``random``) overrides what the
    metadata records; by default the metadata's source is used: seeded random weights are
    rebuilt from the recorded seed, ImageNet weights come from the torch hub cache, a file
    from its recorded path. The state_dict SHA-256 must equal the recorded one, or
    :class:`ReferenceWeightsError` is raised: a reference with other weights proves nothing.
    Returns ``(net, WeightsInfo)``.
    """
    from ..export.zoo import build_model

    rec = meta.get("weights") or {}
    source = weights or rec.get("source") or "random"
    seed = rec.get("seed") if rec.get("seed") is not None else 0
    if source not in ("random", "imagenet") and not Path(source).is_file():
        raise ReferenceWeightsError(
            f"the model was exported from weights file {source!r}, which is not here; "
            "pass it with --weights PATH")
    net, info = build_model(meta["model"], source, seed, need_classifier=bool(meta.get("logits")))
    if rec.get("sha256") and rec["sha256"] not in _weight_hashes(net, info):
        raise ReferenceWeightsError(
            f"weights {source!r} (sha256 {info.sha256[:12]}) are not the ones the model was exported "
            f"from (sha256 {rec['sha256'][:12]}); pass the right file with --weights PATH")
    if rec.get("sha256"):  # report the hash in the metadata's convention (it matched)
        info = dataclasses.replace(info, sha256=rec["sha256"])
    return net, info


def _weight_hashes(net, info) -> set[str]:
    """SHA-256s the metadata may record for ``net``: over ``features.*`` only, or over features and
    classifier (an exporter that built the whole network hashes both, even for a cut graph)."""
    from ..export.zoo import state_dict_sha256

    state = net.state_dict()
    both = {k: v for k, v in state.items() if k.startswith(("features.", "classifier."))}
    feats = {k: v for k, v in both.items() if k.startswith("features.")}
    return {info.sha256, state_dict_sha256(feats), state_dict_sha256(both)}


# ---------------------------------------------------------------- model parity


@dataclass
class ProviderParity:
    """Parity of one provider: ``status`` is ``ok``, ``fail`` or ``skipped`` (with ``reason``)."""

    provider: str
    status: str
    rows: list[TapError] = field(default_factory=list)
    reason: str = ""
    note: str = ""
    mode: str = ""  # the math mode the provider ran in (fp32, bf16, int8, ...)
    budget: Budget | None = None  # the budget it was judged by; None: the model's

    def to_dict(self, budget: Budget) -> dict:
        budget = self.budget or budget
        return {"provider": self.provider, "status": self.status, "reason": self.reason,
                "note": self.note, "mode": self.mode, "budget": budget.to_dict(),
                "taps": [dict(r.to_dict(), ok=budget.passes(r)) for r in self.rows]}


def judged_budget(model_budget: Budget, mode: str) -> tuple[str, Budget]:
    """The budget for a provider that ran in math ``mode``: the looser of the model's budget and
    the mode's (an fp32 model run in bf16 is judged by bf16; an int8 model by int8 either way).
    Returns ``(name, budget)``; the name is ``mode`` or ``"model"``."""
    mode_budget = PRECISION_BUDGETS.get(mode)
    if mode_budget is not None and mode_budget.rel_l2 > model_budget.rel_l2:
        return mode, mode_budget
    return "model", model_budget


def provider_unavailable(provider: str) -> str | None:
    """Why ``provider`` (an ONNX Runtime provider or ``openvino``) cannot run here, or None."""
    if provider == "openvino":
        from ..engine.openvino_backend import unavailable_reason

        return unavailable_reason()
    from ..engine.session import provider_unavailable_reason

    return provider_unavailable_reason(provider)


def model_parity(model_path: str | Path, reference: dict[str, np.ndarray], batch: np.ndarray,
                 providers: tuple[str, ...], budget: Budget) -> tuple[list[ProviderParity], dict]:
    """Run ``model_path`` on ``batch`` with each provider and compare with ``reference``
    (tap name -> ``(N, C, H, W)``). Unavailable providers are skipped with their reason. Each
    provider is judged by :func:`judged_budget` for the math mode it reports (OpenVINO: bf16
    by default on CPUs with bf16 units).
    Returns the per-provider results and the CPU (or first) provider's outputs."""
    from ..engine.extractor import Extractor
    from ..engine.session import ProviderError

    results, first_outs = [], None
    for prov in providers:
        name, _, math_mode = prov.partition(":")  # "openvino:fp32" = OpenVINO in strict fp32
        reason = provider_unavailable(name)
        if reason is not None:
            results.append(ProviderParity(prov, "skipped", reason=reason))
            continue
        try:
            with Extractor(model_path, provider=name, max_batch=max(len(batch), 1),
                           math_mode=math_mode or "default") as ex:
                outs, note, mode = ex.run(batch), ex.info.note, ex.math_mode
        except ProviderError as e:
            results.append(ProviderParity(prov, "skipped", reason=str(e).splitlines()[0]))
            continue
        except Exception as e:  # noqa: BLE001 - an ORT runtime error on an available provider is a failure
            msg = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
            results.append(ProviderParity(prov, "fail", reason=f"{type(e).__name__}: {msg}"))
            continue
        rows = compare({k: outs[k] for k in reference}, reference)
        _, judged = judged_budget(budget, mode)
        status = "ok" if all(judged.passes(r) for r in rows) else "fail"
        results.append(ProviderParity(prov, status, rows=rows, note=note, mode=mode, budget=judged))
        if first_outs is None or name == "cpu":
            first_outs = outs
    return results, first_outs or {}


# ---------------------------------------------------------------- pipeline gap


@dataclass(frozen=True)
class PipelineGap:
    """Engine preprocessing vs the seed's PIL + torchvision transforms on the same files.

    Pixel figures are in uint8 levels (0..255) after the resize; ``input_max_abs`` is on the
    normalized input tensor; ``rows`` are end-to-end tap errors (engine pipeline + ONNX
    Runtime vs seed pipeline + PyTorch reference).
    """

    pixel_max_abs: int
    pixel_mean_abs: float
    pixels_differing: float  # fraction of uint8 values that differ
    input_max_abs: float
    rows: list[TapError]
    per_image_pixel_max_abs: list[int]

    def to_dict(self) -> dict:
        return {"pixel_max_abs": self.pixel_max_abs, "pixel_mean_abs": self.pixel_mean_abs,
                "pixels_differing": self.pixels_differing, "input_max_abs": self.input_max_abs,
                "per_image_pixel_max_abs": self.per_image_pixel_max_abs,
                "taps": [r.to_dict() for r in self.rows]}


def seed_pipeline(paths, size: tuple[int, int], mean, std) -> tuple[np.ndarray, list[np.ndarray]]:
    """The seed's preprocessing: PIL open -> RGB -> ``Resize(size)`` -> ToTensor -> Normalize.

    Returns ``((N, 3, H, W) float32 batch, [resized (H, W, 3) uint8 images])``.
    """
    from PIL import Image
    from torchvision import transforms

    resize = transforms.Resize(tuple(size))
    post = transforms.Compose([transforms.ToTensor(), transforms.Normalize(list(mean), list(std))])
    tensors, pixels = [], []
    for p in paths:
        with Image.open(p) as im:
            small = resize(im.convert("RGB"))
        pixels.append(np.asarray(small, dtype=np.uint8))
        tensors.append(post(small).numpy())
    return np.stack(tensors).astype(np.float32), pixels


def engine_pixels(paths, size: tuple[int, int]) -> list[np.ndarray]:
    """The engine's resized ``(H, W, 3) uint8`` RGB images (OpenCV decode + PIL-exact resize)."""
    from ..engine.preprocess import read_image, resize_pil_bilinear

    return [resize_pil_bilinear(read_image(p), tuple(size)) for p in paths]


def pipeline_gap(paths, pre, engine_batch: np.ndarray, engine_outputs: dict[str, np.ndarray],
                 net, taps: tuple[Tap, ...]) -> PipelineGap:
    """Measure the preprocessing gap (see :class:`PipelineGap`). ``engine_batch`` and
    ``engine_outputs`` are the engine's input tensor and ONNX Runtime outputs for ``paths``."""
    from .reference import reference_features

    seed_batch, seed_px = seed_pipeline(paths, pre.size, pre.mean, pre.std)
    eng_px = engine_pixels(paths, pre.size)
    diffs = [np.abs(a.astype(np.int16) - b.astype(np.int16)) for a, b in zip(eng_px, seed_px)]
    seed_ref = reference_features(net, seed_batch, taps)
    rows = compare({k: engine_outputs[k] for k in seed_ref}, seed_ref)
    return PipelineGap(pixel_max_abs=int(max(int(d.max()) for d in diffs)),
                       pixel_mean_abs=float(np.mean([d.mean() for d in diffs])),
                       pixels_differing=float(np.mean([(d > 0).mean() for d in diffs])),
                       input_max_abs=max_abs_error(engine_batch, seed_batch), rows=rows,
                       per_image_pixel_max_abs=[int(d.max()) for d in diffs])


# ---------------------------------------------------------------- images


def list_images(folder: str | Path, limit: int | None = None) -> list[Path]:
    """Image files directly in ``folder`` (sorted), at most ``limit``."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"image folder {str(folder)!r} not found; pass a folder of "
                                "JPEG/PNG files or leave --images out to use the sample photos")
    from ..engine.inputs import IMAGE_EXTENSIONS, images_in

    paths = images_in(folder)
    if not paths:
        raise InputError(f"no images ({', '.join(sorted(IMAGE_EXTENSIONS))}) in {str(folder)!r}")
    return paths[:limit] if limit else paths
