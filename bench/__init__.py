"""Measure: the PyTorch hook reference, parity statistics, timing."""

from .reference import reference_features, seed_features  # torch is imported when they run
from .stats import compare, cosine_similarity, max_abs_error, rel_l2_error

__all__ = ["compare", "cosine_similarity", "max_abs_error", "rel_l2_error", "reference_features",
           "seed_features"]
