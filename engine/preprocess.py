"""Image decoding and preprocessing for the engine: OpenCV + NumPy only, no torch, no PIL.

The reference pipeline (the seed) is PIL ``Image.open(...).convert("RGB")`` ->
``transforms.Resize((224, 224))`` -> ``ToTensor`` -> ``Normalize(mean, std)``. PIL's bilinear
resize is *antialiased*: when shrinking, its triangle filter widens with the scale factor.
OpenCV's ``INTER_LINEAR`` does not (it samples 2x2 pixels and aliases badly on large
photos) and ``INTER_AREA`` is a box filter, so neither matches. :func:`resize_pil_bilinear`
re-implements PIL's separable resampler with the same fixed-point coefficients and the
same uint8 rounding between the horizontal and vertical passes, so on the same decoded
pixels it reproduces PIL bit for bit (tested against Pillow). What remains of the pipeline
gap is the JPEG decoder (and EXIF orientation, which OpenCV applies and the seed ignores).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from ..errors import ImageDecodeError

RESIZE_METHOD = "pil-bilinear-antialias"
_PRECISION_BITS = 32 - 8 - 2  # Pillow's Resample.c


@dataclass(frozen=True)
class Preprocessing:
    """What the model expects; stored in the exported model's metadata.

    ``size`` is ``(H, W)``; mean/std are per RGB channel on the 0..1 scale.
    """

    size: tuple[int, int] = (224, 224)
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    colour_order: str = "RGB"
    resize: str = RESIZE_METHOD
    layout: str = "NCHW float32"
    # The model's input: "uint8_nhwc" (pixels, normalized in the graph; new exports) or
    # "float_nchw" (normalized float; models exported before uint8 input, where the key is absent)
    input_layout: str = "float_nchw"

    def to_dict(self) -> dict:
        return {"size": list(self.size), "mean": list(self.mean), "std": list(self.std),
                "colour_order": self.colour_order, "resize": self.resize, "layout": self.layout,
                "input_layout": self.input_layout}

    @classmethod
    def from_dict(cls, d: dict) -> "Preprocessing":
        return cls(size=tuple(d["size"]), mean=tuple(d["mean"]), std=tuple(d["std"]),
                   colour_order=d.get("colour_order", "RGB"), resize=d.get("resize", RESIZE_METHOD),
                   layout=d.get("layout", "NCHW float32"), input_layout=d.get("input_layout", "float_nchw"))


def truncation_reason(data: bytes) -> str | None:
    """Why ``data`` looks cut short (JPEG without its end marker, PNG without IEND), or None."""
    if data[:2] == b"\xff\xd8" and data.rfind(b"\xff\xd9") < 2:
        return "truncated JPEG (no end-of-image marker)"
    if data[:8] == b"\x89PNG\r\n\x1a\n" and b"IEND" not in data[-64:]:
        return "truncated PNG (no IEND chunk)"
    return None


def decode_image(data: bytes) -> np.ndarray:
    """Decode encoded image bytes to ``(H, W, 3) uint8`` RGB, EXIF orientation applied.

    Greyscale and alpha images become 3-channel RGB (alpha dropped, as PIL's ``convert("RGB")``).
    Raises :class:`ImageDecodeError` for empty, truncated or undecodable bytes.
    """
    import cv2

    if not data:
        raise ImageDecodeError("empty file (0 bytes)")
    # A truncated JPEG decodes "successfully" in OpenCV (the missing part comes out grey), so
    # completeness is checked from the file's end markers first.
    reason = truncation_reason(data)
    if reason:
        raise ImageDecodeError(reason)
    buf = np.frombuffer(data, dtype=np.uint8)
    # IMREAD_COLOR applies the EXIF orientation tag and converts grey/alpha/16-bit to 8-bit BGR.
    bgr = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    if bgr is None:
        raise ImageDecodeError("not a decodable image (OpenCV could not read it)")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def read_image(path) -> np.ndarray:
    """Read and decode an image file to ``(H, W, 3) uint8`` RGB."""
    with open(path, "rb") as f:
        return decode_image(f.read())


@lru_cache(maxsize=64)
def _pil_coeffs(in_size: int, out_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pillow's bilinear (triangle) resampling taps for one axis.

    Returns ``(index (out, K) int64, weight (out, K) int64 fixed-point)``; unused taps have
    weight 0 and index 0. Mirrors ``precompute_coeffs`` + ``normalize_coeffs_8bpc``.
    """
    scale = in_size / out_size
    filterscale = max(scale, 1.0)
    support = 1.0 * filterscale  # bilinear filter support is 1.0
    ksize = int(np.ceil(support)) * 2 + 1
    idx = np.zeros((out_size, ksize), np.int64)
    wts = np.zeros((out_size, ksize), np.int64)
    for xx in range(out_size):
        center = (xx + 0.5) * scale
        xmin = max(int(center - support + 0.5), 0)
        xmax = min(int(center + support + 0.5), in_size) - xmin
        x = np.arange(xmax, dtype=np.float64)
        w = np.clip(1.0 - np.abs((x + xmin - center + 0.5) / filterscale), 0.0, None)
        total = w.sum()
        if total != 0.0:
            w = w / total
        fixed = np.where(w < 0, np.trunc(w * (1 << _PRECISION_BITS) - 0.5),
                         np.trunc(w * (1 << _PRECISION_BITS) + 0.5))
        idx[xx, :xmax] = xmin + np.arange(xmax)
        wts[xx, :xmax] = fixed.astype(np.int64)
    return idx, wts


def _resample_axis(img: np.ndarray, out_size: int, axis: int) -> np.ndarray:
    idx, wts = _pil_coeffs(img.shape[axis], out_size)
    # int32 on a contiguous (in, rest) copy: 3-5x faster than int64 on a strided view, and
    # exact: triangle weights are >= 0 and sum to ~2**22, so 255 * 2**22 + 2**21 < 2**31.
    src = np.ascontiguousarray(np.moveaxis(img, axis, 0))
    rest = src.shape[1:]
    src = src.reshape(src.shape[0], -1).astype(np.int32)
    w32 = wts.astype(np.int32)
    acc = np.full((out_size, src.shape[1]), 1 << (_PRECISION_BITS - 1), np.int32)
    for k in range(idx.shape[1]):
        acc += src[idx[:, k]] * w32[:, k:k + 1]
    out = np.clip(acc >> _PRECISION_BITS, 0, 255).astype(np.uint8).reshape((out_size, *rest))
    return np.moveaxis(out, 0, axis)


def resize_pil_bilinear(img: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize ``(H, W, C) uint8`` to ``size = (H, W)`` exactly as PIL's ``Image.BILINEAR``.

    Horizontal pass first, then vertical, each rounded to uint8, as Pillow does.
    """
    out_h, out_w = size
    if img.shape[1] != out_w:
        img = _resample_axis(img, out_w, axis=1)
    if img.shape[0] != out_h:
        img = _resample_axis(img, out_h, axis=0)
    return np.ascontiguousarray(img)


def to_input(rgb: np.ndarray, pre: Preprocessing) -> np.ndarray:
    """``(H, W, 3) uint8`` RGB at the model size -> ``(3, H, W) float32`` normalized."""
    x = rgb.astype(np.float32) / np.float32(255)  # as ToTensor: divide, not multiply by 1/255
    x -= np.asarray(pre.mean, np.float32)
    x /= np.asarray(pre.std, np.float32)
    return np.ascontiguousarray(x.transpose(2, 0, 1))


def preprocess_bytes(data: bytes, pre: Preprocessing | None = None) -> np.ndarray:
    """Encoded image bytes -> ``(3, H, W) float32`` model input, as the metadata says."""
    pre = pre or Preprocessing()
    return to_input(resize_pil_bilinear(decode_image(data), pre.size), pre)


def load_batch(paths, pre: Preprocessing | None = None) -> np.ndarray:
    """Image files -> ``(N, 3, H, W) float32`` batch."""
    pre = pre or Preprocessing()
    out = []
    for p in paths:
        with open(p, "rb") as f:
            out.append(preprocess_bytes(f.read(), pre))
    return np.stack(out)
