"""Tap parsing, model zoo, ONNX export and verification.

Importing this package does not import torch; the functions that need it import it lazily.
"""

from .onnx_export import export_model, read_metadata
from .taps import LayerError, Tap, model_layers, parse_taps

__all__ = ["LayerError", "Tap", "model_layers", "parse_taps", "export_model", "read_metadata"]
