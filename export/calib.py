"""Which real photos calibrate an int8 model and which, never seen by calibration, gate it.

Default calibration set: the sample photos (:func:`featuremaps.samples.sample_images`).
Default hold-out set: other real photos that ship with scikit-image (a motorcycle, the Hubble
deep field, a retina, a microscopy slide, the cameraman, gravel), disjoint from the calibration
set. No downloads.
"""

from __future__ import annotations

from pathlib import Path

from ..engine.inputs import IMAGE_EXTENSIONS, images_in
from ..samples import sample_images, skimage_data_dir
from ..errors import CalibrationError

HOLDOUT_SKIMAGE = ("motorcycle_left.png", "hubble_deep_field.jpg", "retina.jpg", "ihc.png", "camera.png",
                   "gravel.png")


def default_holdout() -> list[Path]:
    """scikit-image's extra real photos (empty when scikit-image is not installed)."""
    data = skimage_data_dir()
    return [data / f for f in HOLDOUT_SKIMAGE if data is not None and (data / f).is_file()]


def resolve_images(spec: str | Path | list | tuple | None, option: str = "--calib") -> list[Path]:
    """Image files from a folder, a comma-separated list of files/folders, or a list of paths;
    folders contribute their image files in sorted order (not recursive). ``option`` names the
    argument in errors (``--calib`` or ``--holdout``)."""
    if spec is None:
        return []
    items = spec.split(",") if isinstance(spec, str) else list(spec)
    paths: list[Path] = []
    for item in items:
        p = Path(str(item).strip())
        if p.is_dir():
            paths += images_in(p)
        elif p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS:
            paths.append(p)
        elif p.exists():
            raise CalibrationError(f"{option} {str(p)!r} is not an image file or a folder; pass a folder of photos "
                                   f"or image files ({', '.join(sorted(IMAGE_EXTENSIONS))}), comma-separated")
        else:
            raise CalibrationError(f"{option} image or folder {str(p)!r} not found; pass a folder of photos "
                                   "or image files, comma-separated")
    return paths


def split_images(calib=None, holdout=None, *, calib_count: int | None = None,
                 min_holdout: int = 2) -> tuple[list[Path], list[Path]]:
    """``(calibration, hold-out)`` image paths, disjoint (by resolved path).

    ``calib``/``holdout``: see :func:`resolve_images`; ``None`` means the defaults (module
    docstring). ``calib_count`` caps the calibration set (first N).
    """
    cal = resolve_images(calib) if calib is not None else sample_images()
    if calib_count is not None:
        if calib_count < 1:
            raise CalibrationError(f"--calib-count must be >= 1, got {calib_count}")
        cal = cal[:calib_count]
    if not cal:
        raise CalibrationError("no calibration images; pass --calib DIR or a list of photos")
    seen = {p.resolve() for p in cal}
    hold = [p for p in (resolve_images(holdout, "--holdout") if holdout is not None else default_holdout())
            if p.resolve() not in seen]
    if len(hold) < min_holdout:
        fix = ("pass more with --holdout (a folder, or files comma-separated)" if holdout is not None
               else "install scikit-image or pass --holdout DIR")
        raise CalibrationError(f"need >= {min_holdout} held-back images not used for calibration, found "
                               f"{len(hold)}; {fix}")
    return cal, hold
