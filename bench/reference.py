"""Moved to :mod:`featuremaps.export.reference` (the clone-hook reference is export's check);
re-exported here so older imports keep working."""

from ..export.reference import reference_features, seed_features, tap_hooks  # noqa: F401

__all__ = ["reference_features", "seed_features", "tap_hooks"]
