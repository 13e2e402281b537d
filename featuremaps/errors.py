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
    "terminal_text", "terminal_lines",
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

    >>> require("no_such_package", extra="export", what="exporting a model")
    Traceback (most recent call last):
    ...
    featuremaps.errors.DependencyError: exporting a model needs no_such_package: pip install 'featuremaps[export]'
    """
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise DependencyError(f"{what} needs {module}: pip install 'featuremaps[{extra}]'") from None


def terminal_text(text) -> str:
    r"""``text`` safe to print: every character Python calls unprintable is written as its escape.

    File names, model metadata and store attributes are hostile wherever they land. On a terminal,
    ``ESC[2J`` clears the screen, ``ESC[8m`` hides what follows, ``\r`` or a newline forges a line,
    and a bidi control (U+202E) shows ``gnp.exe`` as ``exe.png``. Unprintable here is what
    :meth:`str.isprintable` says: C0 and C1 controls, DEL, format characters (bidi controls,
    zero-width marks), line and paragraph separators, surrogates, unassigned code points.
    Every data-derived string goes through this (or :func:`terminal_lines`) before it is printed.

    >>> terminal_text("vgg16\x1b[2J\u202egnp.exe\r")
    'vgg16\\x1b[2J\\u202egnp.exe\\r'
    >>> terminal_text("caf\u00e9 \u732b.jpg") == "caf\u00e9 \u732b.jpg"  # printable letters stay
    True
    """
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in str(text))


def terminal_lines(text) -> str:
    r"""Several lines of ``text``, each through :func:`terminal_text` (the newlines between them kept).

    >>> terminal_lines("a\x1b[8m\nb")
    'a\\x1b[8m\nb'
    """
    return "\n".join(terminal_text(line) for line in str(text).split("\n"))


def one_line(err: BaseException) -> str:
    r"""The first line of ``err``'s message, through :func:`terminal_text` (paths and metadata can
    hold control characters). Only a newline ends the line: a carriage return or another line
    break inside a quoted path is escaped, not a place to cut the message.

    >>> one_line(StoreError("bad\tname\nsecond line"))
    'bad\\tname'
    >>> one_line(StoreError("row 0 (/x/a\rb.jpg) is error: empty file"))
    'row 0 (/x/a\\rb.jpg) is error: empty file'
    """
    text = str(err).strip()
    return terminal_text(text.split("\n", 1)[0] if text else type(err).__name__)
