"""Parity of an exported model against the PyTorch clone-hook reference, per tap and provider.

Two different questions, kept apart:

* **model parity**: ONNX Runtime and PyTorch on the *same* input tensor (engine-preprocessed
  photos). Judged against the budget of the model's precision (:data:`featuremaps.compare.PRECISION_BUDGETS`).
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

from ..compare import PRECISION_BUDGETS, Budget, TapError, budget_for, compare, max_abs_error  # noqa: F401
from ..contracts import Tap
from ..engine.extractor import Extractor
from ..engine.inputs import IMAGE_EXTENSIONS, images_in, printable_path
from ..engine.preprocess import Preprocessing, open_image, preprocess_file
from ..engine.session import ProviderError, provider_unavailable_reason
from ..engine.validate import ModelRecord
from ..errors import InputError, ReferenceWeightsError
from ..families import all_models
from ..export.reduce import Reduction, reference_reduced
from ..export.zoo import build_model, weight_hashes  # torch only when called
from .reference import reference_features

log = logging.getLogger(__name__)
_ZOO_WEIGHTS = ("random", "imagenet")  # rebuilt from the seed or torchvision's cache: no path involved


# ---------------------------------------------------------------- reference weights


def load_reference_net(record: ModelRecord, weights: str | None = None):
    """The torchvision network an exported model came from, with its weights verified.

    ``record``: the exported model's (:func:`~featuremaps.engine.validate.read_model_record`,
    ``Extractor.record``). ``weights`` (a ``.pth``/``.safetensors`` path, ``imagenet`` or ``random``)
    overrides what the record names; by default the recorded source is used: seeded random weights are
    rebuilt from the recorded seed, ImageNet weights come from the torch hub cache. A weights
    *file* is opened only when the caller names it: a model whose metadata records a file is a
    :class:`ReferenceWeightsError` that names it (escaped) and asks for ``--weights PATH`` (the
    metadata is the model file's, and a model file must not choose which local file is read).
    The state_dict SHA-256 must equal the recorded one, or :class:`ReferenceWeightsError` is
    raised: a reference with other weights proves nothing. Returns ``(net, WeightsInfo)``.
    """

    if str(record.model).lower() not in all_models():
        raise ReferenceWeightsError(
            f"the model's metadata names {record.model!r}, which this version cannot rebuild as the PyTorch "
            f"reference (the zoo has {', '.join(all_models())}); re-export it with `featuremaps export`")
    rec = record.weights
    recorded = rec.get("source") or "random"
    if weights is None and recorded not in _ZOO_WEIGHTS:
        raise ReferenceWeightsError(
            f"the model was exported from the weights file '{printable_path(str(recorded))[:200]}'; parity reads "
            "only a weights file you name: pass it with --weights PATH")
    source = weights or recorded
    seed = rec.get("seed") if rec.get("seed") is not None else 0
    if source not in _ZOO_WEIGHTS and not Path(source).is_file():
        raise ReferenceWeightsError(f"weights file {source!r} not found; pass the file the model was exported "
                                    "from with --weights PATH")
    net, info = build_model(record.model, source, seed, need_classifier=record.logits)
    if rec.get("sha256") and rec["sha256"] not in weight_hashes(net, record.model) | {info.sha256}:
        raise ReferenceWeightsError(
            f"weights {source!r} (sha256 {info.sha256[:12]}) are not the ones the model was exported "
            f"from (sha256 {rec['sha256'][:12]}); pass the right file with --weights PATH")
    if rec.get("sha256"):  # report the hash in the metadata's convention (it matched)
        info = dataclasses.replace(info, sha256=rec["sha256"])
    return net, info


# ---------------------------------------------------------------- model parity


@dataclass
class ProviderParity:
    """Parity of one provider: ``status`` is ``ok``, ``fail`` or ``skipped`` (with ``reason``)."""

    provider: str
    status: str
    rows: list[TapError] = field(default_factory=list)
    reason: str = ""
    note: str = ""
    math_mode: str = ""  # the mode it ran in (fp32, tf32, fp16, int8); "" when it did not run
    budget: Budget | None = None  # the budget of that mode

    def passes(self, row: TapError) -> bool:
        return self.budget is not None and self.budget.passes(row)

    def to_dict(self, budget: Budget | None = None) -> dict:
        budget = self.budget or budget
        return {"provider": self.provider, "status": self.status, "reason": self.reason,
                "note": self.note, "math_mode": self.math_mode,
                "budget": budget.to_dict() if budget else None,
                "taps": [dict(r.to_dict(), ok=bool(budget and budget.passes(r))) for r in self.rows]}


def provider_unavailable(provider: str) -> str | None:
    """Why ``provider`` (a provider-table name; ``openvino:fp32`` counts as ``openvino``) cannot run
    here, or None."""

    return provider_unavailable_reason(provider.partition(":")[0])


def _device_for(provider: str, device: int | str | None) -> int | str | None:
    """``device`` where it is of the provider's kind (an OpenVINO name for openvino, a GPU index
    for the others), else None (the provider's default): ``--device 1`` picks the GPU and
    leaves OpenVINO on its CPU in the same run."""
    wants_name = provider == "openvino"
    return device if isinstance(device, str) == wants_name else None


def model_parity(model_path: str | Path | ModelRecord, reference: dict[str, np.ndarray], batch: np.ndarray,
                 providers: tuple[str, ...], budget: Budget | None = None, *, tf32: bool = True,
                 device: int | str | None = None) -> tuple[list[ProviderParity], dict]:
    """Run ``model_path`` on ``batch`` with each provider and compare with ``reference``
    (tap name -> ``(N, C, H, W)``). Unavailable providers are skipped with their reason.

    Each provider is judged by the budget of the math mode it ran (``Extractor.math_mode``: an
    fp32 model on CUDA runs tf32 unless ``tf32=False``), or by ``budget`` (the model's own, e.g.
    fp16 for an fp32 model with fp16 outputs) where that is looser; OpenVINO reports its mode from
    the compiled model (bf16 by default on CPUs with bf16 units). ``openvino:fp32`` (or ``:bf16``)
    asks OpenVINO for that math mode. ``device`` goes to the providers of its kind (see
    :func:`_device_for`). Returns the per-provider results and the CPU (or first) provider's outputs."""

    results, first_outs = [], None
    for prov in providers:
        name, _, math_mode = prov.partition(":")  # "openvino:fp32" = OpenVINO in strict fp32
        reason = provider_unavailable(name)
        if reason is not None:
            results.append(ProviderParity(prov, "skipped", reason=reason))
            continue
        try:
            with Extractor(model_path, provider=name, max_batch=max(len(batch), 1),
                           device=_device_for(name, device), tf32=tf32, math_mode=math_mode or "default") as ex:
                outs, note, mode = ex.run(batch), ex.info.note, ex.math_mode
        except ProviderError as e:
            results.append(ProviderParity(prov, "skipped", reason=str(e).splitlines()[0]))
            continue
        except Exception as e:  # noqa: BLE001 - an ORT runtime error on an available provider is a failure
            msg = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
            results.append(ProviderParity(prov, "fail", reason=f"{type(e).__name__}: {msg}"))
            continue
        judge = looser(budget_for(mode), budget)
        rows = compare({k: outs[k].astype(np.float32) for k in reference}, reference)
        status = "ok" if all(judge.passes(r) for r in rows) else "fail"
        results.append(ProviderParity(prov, status, rows=rows, note=note, math_mode=mode, budget=judge))
        if first_outs is None or prov == "cpu":
            first_outs = outs
    return results, first_outs or {}


def reduce_reference(reference: dict[str, np.ndarray], record: ModelRecord) -> dict[str, np.ndarray]:
    """The reference as a model exported with ``--reduce`` returns it: each reduced tap's
    NumPy reduction (float32; not rounded to fp16, so an ``--fp16-outputs`` model's own
    rounding shows in its error). Unreduced models get ``reference`` back unchanged."""

    reductions = {k: Reduction(v["op"], v.get("k")) for k, v in record.reductions.items()}
    if not reductions:
        return reference
    return reference_reduced(reference, reductions)


def looser(a: Budget, b: Budget | None) -> Budget:
    """The looser of two budgets (larger rel L2 bound); ``a`` when ``b`` is None."""
    return a if b is None or a.rel_l2 >= b.rel_l2 else b


def budget_for_model(record: ModelRecord) -> Budget:
    """The budget for an exported model: its precision's, or fp16's when an fp32 model casts its
    outputs to float16 in the graph (``--fp16-outputs``)."""
    precision = record.precision
    if precision == "fp32" and record.output_dtype == "fp16":
        precision = "fp16"
    return budget_for(precision)


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
    from torchvision import transforms

    resize = transforms.Resize(tuple(size))
    post = transforms.Compose([transforms.ToTensor(), transforms.Normalize(list(mean), list(std))])
    tensors, pixels = [], []
    for p in paths:
        with open_image(p) as im:  # the engine's format allow-list (no EPS -> Ghostscript)
            small = resize(im.convert("RGB"))
        pixels.append(np.asarray(small, dtype=np.uint8))
        tensors.append(post(small).numpy())
    return np.stack(tensors).astype(np.float32), pixels


def engine_pixels(paths, size: tuple[int, int], decode: str = "full") -> list[np.ndarray]:
    """The engine's resized ``(H, W, 3) uint8`` RGB images (its decode + Pillow's bilinear resize;
    ``decode="reduced"``: JPEGs decoded at 1/2-1/8 scale first)."""

    pre = Preprocessing(size=tuple(size), input_layout="uint8_nhwc", decode=decode)
    return [preprocess_file(p, pre) for p in paths]


def pipeline_gap(paths, pre, engine_batch: np.ndarray, engine_outputs: dict[str, np.ndarray],
                 net, taps: tuple[Tap, ...], record: ModelRecord | None = None) -> PipelineGap:
    """Measure the preprocessing gap (see :class:`PipelineGap`). ``engine_batch`` and
    ``engine_outputs`` are the engine's input tensor and ONNX Runtime outputs for ``paths``;
    ``record``: the model's, whose reductions the reference gets (None: taps unreduced)."""

    seed_batch, seed_px = seed_pipeline(paths, pre.size, pre.mean, pre.std)
    eng_px = engine_pixels(paths, pre.size, getattr(pre, "decode", "full"))
    diffs = [np.abs(a.astype(np.int16) - b.astype(np.int16)) for a, b in zip(eng_px, seed_px)]
    seed_ref = reference_features(net, seed_batch, taps)
    seed_ref = seed_ref if record is None else reduce_reference(seed_ref, record)
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
        what = "is not a folder" if folder.exists() else "not found"
        raise InputError(f"image folder {str(folder)!r} {what}; pass a folder of "
                         "JPEG/PNG files or leave --images out to use the sample photos")

    paths = images_in(folder)
    if not paths:
        raise InputError(f"no images ({', '.join(sorted(IMAGE_EXTENSIONS))}) in {str(folder)!r}")
    return paths[:limit] if limit else paths
