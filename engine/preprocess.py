"""Image decoding and preprocessing for the engine: Pillow (+ simplejpeg for strict JPEG), no torch.

The reference pipeline (the seed) is PIL ``Image.open(...).convert("RGB")`` ->
``transforms.Resize((224, 224))`` -> ``ToTensor`` -> ``Normalize(mean, std)``. torchvision's
Resize on a PIL image *is* ``Image.resize((w, h), Image.BILINEAR)`` (antialiased: Pillow's
triangle filter widens with the scale factor), so the engine calls exactly that, Pillow's own C
resampler: equal to the seed on the same pixels by construction, and about 3x faster than the
NumPy re-implementation it replaces (kept in ``bench/decode_bench.py`` for the comparison).

Decoding has a budget (:class:`DecodeBudget`), because one hostile file must cost one error row,
not the run: the file must be a regular file no larger than ``max_file_bytes`` (checked on the
opened descriptor, so a FIFO or ``/dev/zero`` is never read); the header is probed first
(``Image.open`` reads only the header) and more than ``max_pixels`` is refused before any pixel
buffer exists. Completeness is judged by the decoder, not by end markers: JPEGs decode with
libjpeg-turbo through simplejpeg in strict mode, where any libjpeg warning (premature end of data,
a truncated scan with a forged ``FF D9``) is an error; other formats decode with Pillow with
``LOAD_TRUNCATED_IMAGES`` off. Every failure is an :class:`ImageDecodeError` with the reason.
EXIF orientation is applied (as OpenCV's ``IMREAD_COLOR`` did before; the seed ignores it).

Only the formats in :data:`IMAGE_FORMATS` are decoded, matched to the *content* (Pillow's own
sniffing restricted with ``formats=``), whatever the file is called: left alone, ``Image.open``
tries some 40 formats, and loading one of them, EPS, runs Ghostscript on the file's PostScript.
Every ``Image.open`` on user data in the project goes through :func:`open_image`.

The model input layout comes from the export metadata (``preprocessing.input_layout``):
``"float_nchw"`` (``(3, H, W) float32`` normalized, models exported before uint8 input) or
``"uint8_nhwc"`` (``(H, W, 3) uint8`` RGB; the graph normalizes).
"""

from __future__ import annotations

import io
import os
import re
import stat
import warnings
from dataclasses import dataclass

import numpy as np

from ..contracts import (DECODE_MODES, FLOAT_NCHW, INPUT_LAYOUTS, RESIZE_METHOD, UINT8_NHWC,  # noqa: F401
                         Preprocessing)  # re-exported: engine.preprocess.Preprocessing is public
from ..errors import ImageDecodeError

# The formats decoded (Pillow's names), chosen for what photo and vision data sets use and for a
# small, well-fuzzed decoder behind each: JPEG (and MPO, JPEG's multi-picture form, which Pillow
# opens as JPEG; libjpeg-turbo), PNG (zlib, APNG's first frame), BMP (a plain header and raw or RLE
# rows), TIFF (microscopy and scanners; libtiff), WEBP (libwebp; keep Pillow updated, CVE-2023-4863),
# GIF (first frame; LZW in Pillow) and PPM (PPM/PGM/PBM: a text header and raw samples, common in
# older vision data). Out: EPS (loading runs Ghostscript on the file's PostScript), PSD, FITS,
# ICNS, XPM, DDS, SPIDER, JPEG 2000 (OpenJPEG: a large parser with a long CVE record, rare in photo
# data) and Pillow's other niche readers: rarely photos, seldom fuzzed, more code for a hostile
# file to reach. Convert such files to PNG first.
IMAGE_FORMATS = ("JPEG", "PNG", "BMP", "TIFF", "WEBP", "GIF", "PPM")
FORMATS_TEXT = "JPEG, PNG, BMP, TIFF, WebP, GIF (first frame) and PPM/PGM/PBM"
# Pillow modes whose convert("RGB") clips instead of scaling: decoded with OpenCV (scales to 8 bit).
_WIDE_MODES = frozenset({"I", "F", "I;16", "I;16B", "I;16L", "I;16N", "RGB;16", "RGBA;16"})
# EXIF orientation -> Pillow transpose, as PIL.ImageOps.exif_transpose maps it.
_ORIENTATION = {2: 0, 3: 3, 4: 1, 5: 5, 6: 4, 7: 6, 8: 2}


@dataclass(frozen=True)
class DecodeBudget:
    """Limits on one input file: decoded pixels (from the header, before decoding) and file bytes.

    Peak decode memory per image is about ``max_file_bytes + 4 * max_pixels`` bytes (the encoded
    bytes, the RGB pixels and Pillow's resize buffer), so a run's decode peak is at most that
    times the number of decode workers.
    """

    max_pixels: int = 100_000_000
    max_file_bytes: int = 256 * 1024 * 1024

    def __post_init__(self):
        if self.max_pixels < 1 or self.max_file_bytes < 1:
            raise ValueError("max_pixels and max_file_bytes must be >= 1")


def _file_kind(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a named pipe (FIFO)"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "not a regular file"


def read_file_bytes(path, max_file_bytes: int = DecodeBudget.max_file_bytes) -> bytes:
    """The bytes of a regular file of at most ``max_file_bytes``; else :class:`ImageDecodeError`.

    The type and size are checked on the *opened* descriptor (no window between a check and the
    open); ``O_NONBLOCK`` makes opening a FIFO return at once instead of waiting for a writer.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as e:
        raise ImageDecodeError(f"unreadable: {e.strerror or e}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ImageDecodeError(f"{_file_kind(st.st_mode)}, not an image file; only regular files are read")
        if st.st_size > max_file_bytes:
            raise ImageDecodeError(f"file is {st.st_size} bytes, over the {max_file_bytes}-byte limit; "
                                   "raise --max-file-bytes to accept it")
        with os.fdopen(os.dup(fd), "rb") as f:
            data = f.read(max_file_bytes + 1)
    except OSError as e:
        raise ImageDecodeError(f"unreadable: {e.strerror or e}") from None
    finally:
        os.close(fd)
    if len(data) > max_file_bytes:
        raise ImageDecodeError(f"file grew over the {max_file_bytes}-byte limit while being read")
    return data


def _pixels(n: int) -> str:
    """``12.6 megapixels`` or, for small counts, ``4096 pixels``."""
    return f"{round(n / 1e6, 1):g} megapixels" if n >= 100_000 else f"{n} pixels"


def _limit(n: int) -> str:
    """``100-megapixel limit`` or, for small limits, ``1000-pixel limit``."""
    return f"{round(n / 1e6, 1):g}-megapixel limit" if n >= 100_000 else f"{n}-pixel limit"


def _decoder_error(e: BaseException, fmt: str | None = None) -> ImageDecodeError:
    """A third-party decoder's exception (PIL, simplejpeg, cv2, MemoryError) -> one-line reason."""
    if isinstance(e, MemoryError):
        return ImageDecodeError("out of memory while decoding")
    # no object reprs ("<_io.BytesIO object at 0x...>"): a resumed run must give the same message
    text = re.sub(r"\s*<[^<>]* at 0x[0-9a-fA-F]+>", "", " ".join(str(e).split()))[:200] or type(e).__name__
    if fmt and any(w in text.lower() for w in ("truncated", "premature end", "broken data stream")):
        return ImageDecodeError(f"truncated {fmt} (the decoder says: {text})")
    return ImageDecodeError(f"not a decodable image ({text})")


def _refused_formats(prefix: bytes) -> str | None:
    """The formats, not decoded here, that Pillow would have tried on ``prefix`` ("EPS", or
    "XBM or XPM" where their checks overlap), by the plugins' ``_accept`` checks: pure functions of
    the first 16 bytes (nothing is opened or parsed); None when none matches."""
    from PIL import Image

    Image.init()
    names = []
    for name in Image.ID:  # Pillow's own order
        accept = Image.OPEN.get(name, (None, None))[1]
        if name in IMAGE_FORMATS or accept is None:
            continue
        try:
            if accept(prefix):
                names.append(name)
        except Exception:  # noqa: BLE001 - a plugin's check failing on odd bytes means "not this one"
            continue
    return " or ".join(names) or None


def open_image(fp):
    """``PIL.Image.open(fp)`` restricted to :data:`IMAGE_FORMATS` (lazy: only the header is read).

    ``fp``: a path or a binary file object. A file in another format Pillow knows is an
    :class:`ImageDecodeError` naming it ("EPS is not a supported image format; ..."); anything
    else Pillow cannot identify raises its own ``UnidentifiedImageError``.
    """
    from PIL import Image, UnidentifiedImageError

    try:
        return Image.open(fp, formats=IMAGE_FORMATS)
    except UnidentifiedImageError:
        if hasattr(fp, "seek"):
            fp.seek(0)
            prefix = fp.read(16)
        else:
            with open(fp, "rb") as f:
                prefix = f.read(16)
        name = _refused_formats(prefix)
        if name is None:
            raise
        raise ImageDecodeError(f"{name} is not a supported image format; featuremaps reads {FORMATS_TEXT} "
                               "(convert the file to PNG)") from None


def probe(data: bytes, budget: DecodeBudget):
    """Open ``data`` with Pillow reading only the header; refuse it if it declares too many pixels.

    Returns the lazy ``PIL.Image.Image`` (no pixels decoded yet).
    """
    from PIL import Image

    if not data:
        raise ImageDecodeError("empty file (0 bytes)")
    # Pillow refuses images over 2 * MAX_IMAGE_PIXELS by itself: follow --max-pixels (ours is checked below)
    Image.MAX_IMAGE_PIXELS = max(budget.max_pixels, 1)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = open_image(io.BytesIO(data))
    except ImageDecodeError:
        raise
    except Image.DecompressionBombError as e:  # over 2 * MAX_IMAGE_PIXELS
        n = re.search(r"\((\d+) pixels\)", str(e))
        declared = _pixels(int(n.group(1))) if n else "too many pixels"
        raise ImageDecodeError(f"image declares {declared}, over the {_limit(budget.max_pixels)}; raise "
                               "--max-pixels to accept it") from None
    except Exception as e:  # noqa: BLE001 - any decoder failure on hostile bytes is that file's error
        raise _decoder_error(e) from None
    w, h = im.size
    if w * h > budget.max_pixels:
        raise ImageDecodeError(f"image declares {w}x{h} = {_pixels(w * h)}, over the {_limit(budget.max_pixels)}; "
                               "raise --max-pixels to accept it")
    if w < 1 or h < 1:
        raise ImageDecodeError(f"image declares an empty size {w}x{h}")
    return im


def _orientation(im) -> int:
    try:
        return int(im.getexif().get(0x0112, 1))
    except Exception:  # noqa: BLE001 - a broken EXIF block means no orientation, not a bad image
        return 1


def _decode_jpeg(data: bytes, min_size: tuple[int, int] | None):
    """Strict libjpeg-turbo decode (any libjpeg warning is an error) -> PIL RGB image, or None
    when simplejpeg is not installed or cannot convert this JPEG's colour space."""
    try:
        import simplejpeg
    except ImportError:
        return None
    from PIL import Image

    kw = {"min_height": min_size[0], "min_width": min_size[1]} if min_size else {}
    try:
        return Image.fromarray(simplejpeg.decode_jpeg(data, colorspace="RGB", strict=True, **kw))
    except ValueError as e:
        if "color" in str(e).lower() and "conver" in str(e).lower():
            return None  # e.g. CMYK: Pillow converts it below
        raise


def _decode_pillow(im, data: bytes, min_size: tuple[int, int] | None):
    """Pillow decode (truncation raises), 16-bit/float modes through OpenCV -> PIL RGB image."""
    from PIL import Image, ImageFile

    if ImageFile.LOAD_TRUNCATED_IMAGES:
        raise ImageDecodeError("PIL.ImageFile.LOAD_TRUNCATED_IMAGES is on; switch it off so truncated "
                               "files are errors, not grey rows")
    if min_size and im.format == "JPEG":
        im.draft("RGB", (min_size[1], min_size[0]))
    im.load()
    if im.mode == "F":  # no photo range to map to 0..255: guessing one would invent the pixels
        raise ImageDecodeError("32-bit float pixels (mode F: a measurement, not a photo); convert the file to "
                               "8- or 16-bit first")
    if im.mode in _WIDE_MODES:
        import cv2
        from cv2.utils import logging as cv_log

        level = cv_log.getLogLevel()
        cv_log.setLogLevel(cv_log.LOG_LEVEL_ERROR)  # OpenCV's warning lines would cut into the progress bar
        try:
            bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        finally:
            cv_log.setLogLevel(level)
        if bgr is None:
            raise ImageDecodeError(f"not a decodable image ({im.mode} pixels OpenCV could not read)")
        return Image.fromarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))  # OpenCV applied EXIF already
    return im if im.mode == "RGB" else im.convert("RGB")


def decode_pil(data: bytes, budget: DecodeBudget | None = None, *, reduce_to: tuple[int, int] | None = None):
    """Encoded bytes -> ``PIL.Image.Image`` in mode RGB, EXIF orientation applied, within ``budget``.

    ``reduce_to=(H, W)`` lets a JPEG decode at 1/2, 1/4 or 1/8 scale while staying at least that
    size (either orientation). Raises :class:`ImageDecodeError` with the reason.
    """
    im = probe(data, budget or DecodeBudget())
    min_size = (max(reduce_to),) * 2 if reduce_to else None
    try:
        out = None
        if im.format == "JPEG" and im.mode in ("RGB", "L"):
            out = _decode_jpeg(data, min_size)
        wide = im.mode in _WIDE_MODES
        if out is None:
            out = _decode_pillow(im, data, min_size)
        turn = 1 if wide else _orientation(im)
        return out.transpose(_ORIENTATION[turn]) if turn in _ORIENTATION else out
    except ImageDecodeError:
        raise
    except Exception as e:  # noqa: BLE001 - PIL/libjpeg/cv2 errors on hostile bytes are that file's error
        raise _decoder_error(e, im.format) from None


def decode_image(data: bytes, budget: DecodeBudget | None = None) -> np.ndarray:
    """Decode encoded image bytes to ``(H, W, 3) uint8`` RGB, EXIF orientation applied.

    Greyscale and alpha images become 3-channel RGB (alpha dropped, as PIL's ``convert("RGB")``).
    Raises :class:`ImageDecodeError` for empty, truncated, oversized or undecodable bytes.
    """
    return np.asarray(decode_pil(data, budget))


def read_image(path, budget: DecodeBudget | None = None) -> np.ndarray:
    """Read and decode an image file to ``(H, W, 3) uint8`` RGB, within ``budget``."""
    budget = budget or DecodeBudget()
    return decode_image(read_file_bytes(path, budget.max_file_bytes), budget)


def resize_pil_bilinear(img: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize ``(H, W, 3) uint8`` to ``size = (H, W)`` with Pillow's ``Image.BILINEAR`` (the seed's op)."""
    from PIL import Image

    if img.shape[:2] == tuple(size):
        return np.ascontiguousarray(img)
    return np.asarray(Image.fromarray(img).resize((size[1], size[0]), Image.BILINEAR))


def to_input(rgb: np.ndarray, pre: Preprocessing, out: np.ndarray | None = None) -> np.ndarray:
    """``(H, W, 3) uint8`` RGB at the model size -> one model input in ``pre.input_layout``:
    ``(H, W, 3) uint8`` as is, or ``(3, H, W) float32`` normalized (as ToTensor + Normalize).
    Writes into ``out`` (e.g. a shared-memory slot row) when given."""
    if pre.input_layout == UINT8_NHWC:
        x = rgb
    else:
        x = rgb.astype(np.float32) / np.float32(255)  # as ToTensor: divide, not multiply by 1/255
        x -= np.asarray(pre.mean, np.float32)
        x /= np.asarray(pre.std, np.float32)
        x = x.transpose(2, 0, 1)
    if out is None:
        return np.ascontiguousarray(x)
    out[...] = x
    return out


def preprocess_image(data: bytes, pre: Preprocessing, budget: DecodeBudget | None = None) -> np.ndarray:
    """Encoded bytes -> ``(H, W, 3) uint8`` RGB at the model size: decode (reduced if
    ``pre.decode == "reduced"``) then Pillow's bilinear resize."""
    from PIL import Image

    h, w = pre.size
    im = decode_pil(data, budget, reduce_to=pre.size if pre.decode == "reduced" else None)
    if im.size != (w, h):
        im = im.resize((w, h), Image.BILINEAR)
    return np.asarray(im)


def preprocess_bytes(data: bytes, pre: Preprocessing | None = None, budget: DecodeBudget | None = None) -> np.ndarray:
    """Encoded image bytes -> one model input, as the metadata says (see :func:`to_input`)."""
    pre = pre or Preprocessing()
    return to_input(preprocess_image(data, pre, budget), pre)


def preprocess_file(path, pre: Preprocessing, budget: DecodeBudget | None = None,
                    out: np.ndarray | None = None) -> np.ndarray:
    """Image file -> one model input (into ``out`` when given), within ``budget``."""
    budget = budget or DecodeBudget()
    rgb = preprocess_image(read_file_bytes(path, budget.max_file_bytes), pre, budget)
    return to_input(rgb, pre, out)
