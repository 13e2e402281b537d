"""The arrays of a store: what :meth:`.core.FeatureStore.create` makes from the attributes
(:func:`array_specs`, :func:`write_layout`) and how an opened store's arrays are checked against
them before any chunk is read (:func:`layout_problem`)."""

from __future__ import annotations

import json

import numpy as np

from .format import DTYPES, ERROR, OK, PENDING, STATUS_NAMES, STORE_FORMAT, ATTR_KEY
from .paths import encode_path
from .shard_format import shard_spec


def dimension_names(name: str, shape: tuple[int, ...]) -> tuple[str, ...]:
    """``image`` plus the tap's own axes (``features.17.channel``, ``.y``, ``.x``): per tap,
    because xarray needs one size per dimension name and taps differ in channels and size."""
    axes = {1: ("channel",), 3: ("channel", "y", "x")}.get(len(shape), tuple(f"dim{i}" for i in range(len(shape))))
    return ("image",) + tuple(f"{name}.{a}" for a in axes)


def array_specs(info: dict) -> dict[str, dict]:
    """``create_array`` keywords of every array of a store with attributes ``info``: what
    :func:`write_layout` creates, and what an opened store's arrays are checked against."""
    from zarr.codecs import Crc32cCodec, ZstdCodec

    n, c = info["n"], info["chunk_rows"]
    crc = [Crc32cCodec()]
    rows = {"shape": (n,), "chunks": (info.get("row_chunk", c),), "dimension_names": ("image",), "compressors": crc}
    specs = {"paths": dict(rows, dtype=str), "status": dict(rows, dtype="uint8", fill_value=PENDING),
             "errors": dict(rows, dtype=str)}
    if info.get("format") == STORE_FORMAT:
        specs["path_bytes"] = dict(rows, dtype=str)
    codecs = ([ZstdCodec()] if info.get("compression") == "zstd" else []) + crc
    for name, shape in info["outputs"].items():
        if info.get("shard_rows"):
            specs[name] = dict(shard_spec(c, info["shard_rows"], tuple(shape), DTYPES[info["dtype"]],
                                          info.get("compression", "zstd")),
                               shape=(n, *shape), dimension_names=dimension_names(name, tuple(shape)))
            continue
        specs[name] = {"shape": (n, *shape), "chunks": (c, *shape), "dtype": DTYPES[info["dtype"]], "fill_value": 0,
                       "compressors": codecs, "dimension_names": dimension_names(name, tuple(shape))}
    return specs


def write_layout(group, info: dict, paths: list[str]) -> None:
    """Create every array of a new store in ``group``, then the attributes (a store is
    recognisable only once all of its arrays exist)."""
    specs = array_specs(info)
    display, b64 = zip(*map(encode_path, paths)) if paths else ((), ())
    group.create_array("paths", **specs.pop("paths"))[:] = np.asarray(display, dtype=str)
    group.create_array("path_bytes", **specs.pop("path_bytes"))[:] = np.asarray(b64, dtype=str)
    group.create_array("status", **specs.pop("status"),
                       attributes={"flag_values": [PENDING, OK, ERROR], "flag_meanings": " ".join(STATUS_NAMES),
                                   "long_name": "extraction status per image"})
    for name, spec in specs.items():
        group.create_array(name, **spec)
    group.attrs[ATTR_KEY] = info


def layout_problem(arr, spec: dict) -> str | None:
    """How ``arr`` differs from what ``create`` writes for it (shape, chunks, data type, codec
    chain), or None: a store's own metadata is checked before any chunk is read."""
    import zarr

    wanted = zarr.create_array(zarr.storage.MemoryStore(), **spec)
    want = wanted.metadata
    have = arr.metadata
    if getattr(have, "zarr_format", 3) != 3:
        return "it is not a Zarr v3 array"
    for what, a, b in (("shape", have.shape, want.shape), ("chunk shape", arr.chunks, tuple(spec["chunks"])),
                       ("data type", str(have.data_type), str(want.data_type)),
                       ("codecs", [c.to_dict()["name"] for c in have.codecs],
                        [c.to_dict()["name"] for c in want.codecs]),
                       ("chunk key encoding", have.chunk_key_encoding.to_dict(), want.chunk_key_encoding.to_dict()),
                       ("shards", arr.shards or (), wanted.shards or ()),
                       ("inner codecs", _inner_codecs(have), _inner_codecs(want))):
        if tuple(a) != tuple(b) if isinstance(a, (list, tuple)) else a != b:
            return f"its {what} {_short(a)} is not the {_short(b)} featuremaps writes"
    return None


def _inner_codecs(metadata) -> list:
    """The codec chain inside a sharding codec (names and configuration), or [] for an unsharded array."""
    for codec in metadata.codecs:
        d = codec.to_dict()
        if d["name"] == "sharding_indexed":
            conf = d.get("configuration", {})
            chain = [*conf.get("codecs", ()), *conf.get("index_codecs", ()), conf.get("index_location")]
            return [json.dumps(x.to_dict() if hasattr(x, "to_dict") else x, sort_keys=True, default=str)
                    for x in chain]
    return []


def _short(x) -> str:
    text = str(list(x) if isinstance(x, tuple) else x)
    return text if len(text) <= 80 else text[:77] + "..."
