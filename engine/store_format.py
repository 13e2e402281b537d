"""Constants of the store format shared by the store and its chunk checker (no logic)."""

from __future__ import annotations

from dataclasses import dataclass

STORE_FORMAT = "featuremaps-store/2"
PENDING, OK, ERROR = 0, 1, 2  # status codes; names in the status array's flag_meanings
FIXED_ARRAYS = ("paths", "path_bytes")  # written once at creation: damage there is not redone by a batch


@dataclass(frozen=True)
class Damage:
    """One chunk that fails its checksum or is missing: array, chunk index, rows it covers."""

    array: str
    chunk: int
    rows: tuple[int, int]
    reason: str
