"""Real photos that ship inside installed packages (no downloads): matplotlib's Grace Hopper
portrait always, scikit-image's cat, coffee, astronaut and rocket when it is installed."""

from __future__ import annotations

from pathlib import Path

_SKIMAGE_FILES = ("chelsea.png", "coffee.png", "astronaut.png", "rocket.jpg")


def skimage_data_dir() -> Path | None:
    """scikit-image's bundled ``data/`` folder of real photos, or None when it is not installed."""
    import importlib.util

    spec = importlib.util.find_spec("skimage")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / "data"


def sample_images() -> list[Path]:
    """Paths of the sample photos available in this environment (at least one)."""
    import matplotlib.cbook

    paths = [Path(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))]
    data = skimage_data_dir()
    if data is not None:
        paths += [data / f for f in _SKIMAGE_FILES if (data / f).is_file()]
    return paths
