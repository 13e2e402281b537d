"""Model input layouts: ``uint8_nhwc`` (pixels; the graph normalizes) and ``float_nchw`` (normalized).

New exports take ``uint8 (N, H, W, 3)`` RGB and do cast, /255, (x - mean) / std and the NCHW
transpose inside the graph: 4x fewer bytes cross to a GPU and the CPU does no float work.
Models exported earlier take the normalized ``float32 (N, 3, H, W)`` tensor. Callers may hand
either layout to either model; :func:`as_model_input` converts:

* pixels for a float model: normalized here exactly as :func:`preprocess.to_input` does;
* a float batch for a pixel model: mapped back to pixels (``x * std + mean) * 255`` rounded).
  That is exact when the floats came from 8-bit pixels (every decode path here makes them so);
  anything else (random noise, a resize done in float) cannot be represented and is an
  :class:`InputError`, never a silent rounding.
"""

from __future__ import annotations

import numpy as np

from ..errors import InputError

LAYOUTS = ("uint8_nhwc", "float_nchw")
# largest distance (in 0..255 levels) a float input may be from a whole pixel value: float32
# normalization and its inverse move a level by ~1e-5, a real non-pixel input by up to 0.5
_PIXEL_SLACK = 1e-2


def _mean_std(pre) -> tuple[np.ndarray, np.ndarray]:
    return np.asarray(pre.mean, np.float32), np.asarray(pre.std, np.float32)


def pixels_to_float(pixels: np.ndarray, pre) -> np.ndarray:
    """``uint8 (N, H, W, 3)`` RGB -> ``float32 (N, 3, H, W)`` normalized (the engine's arithmetic:
    divide by 255, subtract mean, divide by std, in that order)."""
    mean, std = _mean_std(pre)
    x = pixels.astype(np.float32) / np.float32(255)
    x -= mean
    x /= std
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


def float_to_pixels(batch: np.ndarray, pre) -> np.ndarray:
    """``float32 (N, 3, H, W)`` normalized -> ``uint8 (N, H, W, 3)``; :class:`InputError` when the
    floats are not normalized 8-bit pixels (see the module docstring)."""
    mean, std = _mean_std(pre)
    levels = (batch.transpose(0, 2, 3, 1).astype(np.float32) * std + mean) * np.float32(255)
    pixels = np.rint(levels)
    if levels.size and (float(np.abs(levels - pixels).max()) > _PIXEL_SLACK
                        or pixels.min() < 0 or pixels.max() > 255):
        raise InputError("this model takes uint8 (N, H, W, 3) RGB pixels and the float batch given is not "
                         "normalized 8-bit pixels; pass pixels, or export with input_layout='float_nchw'")
    return np.ascontiguousarray(pixels.astype(np.uint8))


def layout_of(batch: np.ndarray) -> str | None:
    """``uint8_nhwc`` for a ``(N, H, W, 3) uint8`` batch, ``float_nchw`` for ``(N, 3, H, W)``
    floating point, None for anything else."""
    if batch.ndim != 4:
        return None
    if batch.dtype == np.uint8 and batch.shape[3] == 3:
        return "uint8_nhwc"
    if np.issubdtype(batch.dtype, np.floating) and batch.shape[1] == 3:
        return "float_nchw"
    return None


def as_model_input(batch: np.ndarray, pre) -> np.ndarray:
    """``batch`` in the layout the model takes (``pre.input_layout``), contiguous, converting if
    needed; a batch in neither layout or of the wrong size is an :class:`InputError`."""
    batch = np.asarray(batch)
    h, w = pre.size
    got = layout_of(batch)
    spatial = {"uint8_nhwc": batch.shape[1:3], "float_nchw": batch.shape[2:4]}.get(got)
    if got is None or tuple(spatial) != (h, w):
        hint = "; add a batch axis with x[None]" if batch.ndim == 3 else ""
        raise InputError(f"expected a batch of shape (N, {h}, {w}, 3) uint8 or (N, 3, {h}, {w}) float32, "
                         f"got {tuple(batch.shape)} {batch.dtype}{hint}")
    want = pre.input_layout
    if got == want:
        return np.ascontiguousarray(batch, dtype=np.uint8 if want == "uint8_nhwc" else np.float32)
    if want == "uint8_nhwc":
        return float_to_pixels(batch, pre)
    return pixels_to_float(batch, pre)
