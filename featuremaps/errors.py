r"""One family of errors for everything a user can get wrong.

Every error a user can cause (an argument, an image, a model file, a store, a missing extra)
is a :class:`FeaturemapsError`. Its message is one line that says what is wrong and how to fix
it; the command line prints that line and exits with status 2, in one place
(``featuremaps.cli``). Anything else is a bug and keeps its traceback.

Each subclass also inherits the builtin it refines (as zarr-python's ``errors.py`` does), so
``except ValueError`` in a caller's code keeps working:

>>> issubclass(StoreError, ValueError), issubclass(ProviderError, RuntimeError)
(True, True)

This module imports nothing from the project: it is the bottom layer.
"""

from __future__ import annotations

__all__ = [
    "FeaturemapsError", "ArgumentError", "LayerError", "InputError", "ImageDecodeError",
    "ModelFileError", "WeightsError", "StoreError", "ProviderError", "DependencyError",
    "ExtractionError", "CalibrationError", "ReferenceWeightsError", "ClusterError", "one_line", "require",
]


class FeaturemapsError(Exception):
    """Base of every user-facing error: ``str(e)`` is one line that names the fix."""


class ArgumentError(FeaturemapsError, ValueError):
    """A command-line argument or keyword that is out of range or contradicts another."""


class LayerError(ArgumentError):
    """A layer selection names something the model does not have."""


class InputError(FeaturemapsError, ValueError):
    """An input argument (file, folder, @list) names nothing usable."""


class ImageDecodeError(InputError):
    """Bytes that are not a decodable image, or one over the decode budget."""


class ModelFileError(FeaturemapsError, ValueError):
    """A model file that is missing, not ONNX, or whose metadata disagrees with its graph."""


class WeightsError(FeaturemapsError, ValueError):
    """Weights that cannot be had or do not fit the model."""


class StoreError(FeaturemapsError, ValueError):
    """A feature store that cannot be created, opened, locked or resumed as asked."""


class ProviderError(FeaturemapsError, RuntimeError):
    """An explicitly requested execution provider cannot run here."""


class DependencyError(FeaturemapsError, ImportError):
    """An optional package (an extra) that this operation needs is not installed."""


class ExtractionError(FeaturemapsError, RuntimeError):
    """``strict=True`` and an image failed: the message names it and the reason."""


class CalibrationError(FeaturemapsError, ValueError):
    """No usable calibration or hold-out images."""


class ReferenceWeightsError(FeaturemapsError, ValueError):
    """The reference network's weights are not the ones the model was exported from."""


class ClusterError(FeaturemapsError, ConnectionError):
    """A Ray cluster address that cannot be joined (nothing answers, not Ray, or unreachable as Ray
    would rewrite it)."""


def require(module: str, *, extra: str, what: str):
    """Import ``module`` (an optional package of the ``extra`` install), or raise one line that says
    which extra to install. ``what`` names the operation that needs it.

    >>> require("featuremaps_no_such_package", extra="export", what="exporting a model")
    Traceback (most recent call last):
    ...
    featuremaps.errors.DependencyError: exporting a model needs featuremaps_no_such_package: pip install 'featuremaps[export]'
    """
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise DependencyError(f"{what} needs {module}: pip install 'featuremaps[{extra}]'") from None


def one_line(err: BaseException) -> str:
    r"""The first line of ``err``'s message, control characters escaped (paths can hold them).

    >>> one_line(StoreError("bad\tname\nsecond line"))
    'bad\\tname'
    """
    text = str(err).strip()
    first = text.splitlines()[0] if text else type(err).__name__
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in first)
