"""Tap parsing, model zoo, ONNX export and verification.

Importing this package does not import torch; the functions that need it import it lazily.
"""

from .taps import LayerError, Tap, model_layers, parse_taps

__all__ = ["LayerError", "Tap", "model_layers", "parse_taps", "export_model", "read_metadata"]


def __getattr__(name):
    if name in ("export_model", "read_metadata"):
        from . import onnx_export

        return getattr(onnx_export, name)
    raise AttributeError(name)
