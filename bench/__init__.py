"""Measure: the PyTorch hook reference, parity statistics, timing."""

from .stats import compare, cosine_similarity, max_abs_error, rel_l2_error

__all__ = ["compare", "cosine_similarity", "max_abs_error", "rel_l2_error", "reference_features",
           "seed_features"]


def __getattr__(name):
    if name in ("reference_features", "seed_features"):
        from . import reference

        return getattr(reference, name)
    raise AttributeError(name)
