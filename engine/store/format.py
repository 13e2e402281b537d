"""The store format: its constants, the attributes (``zarr.json``) every reader relies on and their
checks, and the largest chunk each array may hold. No I/O: :mod:`.layout` turns these into arrays."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ...errors import FeaturemapsError, StoreError
from ..validate import ModelRecord

STORE_FORMAT = "featuremaps-store/2"
READABLE_FORMATS = ("featuremaps-store/1", STORE_FORMAT)
ATTR_KEY = "featuremaps"
PENDING, OK, ERROR = 0, 1, 2  # status codes; names in the status array's flag_meanings
STATUS_NAMES = ("pending", "ok", "error")
FIXED_ARRAYS = ("paths", "path_bytes")  # written once at creation: damage there is not redone by a batch
ROW_ARRAYS = ("paths", "status", "errors")
DTYPES = {"fp32": np.float32, "fp16": np.float16}
COMPRESSIONS = ("zstd", "none")
# Inside the status array's folder: zarr and xarray list the store's top level for members and
# warn about any other file there; nothing lists an array's folder outside ``c/``.
LOCK_NAME = "status/featuremaps.lock"
ROW_CHUNK = 16384  # rows per chunk of paths/status/errors (about: a multiple of chunk_rows); see sizing.row_chunk_for
MAX_ROWS = 2**32
MAX_SIDE = 4096  # preprocessing size, as for model files (engine.validate)
MAX_IMAGE_BYTES = 2**31  # stored bytes of one image, all outputs
MAX_PATH_ROW_BYTES = 20 * 1024  # a stored path (PATH_MAX bytes, escaped) or its base64
MAX_ERROR_CHARS = 8192  # a stored error message is cut here


def chunk_key(name: str, index: int, ndim: int) -> str:
    """The key of object ``index`` along the rows of array ``name`` (``ndim`` dimensions), a chunk or,
    in a sharded tap, a shard: zarr v3's default chunk key, ``name/c/<index>/0/0/0``."""
    return "/".join([name, "c", str(int(index)), *(["0"] * (ndim - 1))])


@dataclass(frozen=True)
class Damage:
    """One chunk that fails its checksum or is missing: array, chunk index, rows it covers."""

    array: str
    chunk: int
    rows: tuple[int, int]
    reason: str


def _is_count(x, lo: int = 0) -> bool:
    return isinstance(x, int) and not isinstance(x, bool) and x >= lo


def attrs_problem(info: dict) -> str | None:
    """What is wrong with a store's attributes (``zarr.json``), or None: the counts, dtype and
    compression, and the model metadata every reader relies on (taps, preprocessing size,
    reductions, weights)."""
    for key, lo in (("n", 0), ("batch_size", 1), ("chunk_rows", 1), ("row_chunk", 1)):
        if key in info and not _is_count(info[key], lo):
            return f"{key} {info[key]!r} is not an integer >= {lo}"
    problem = _counts_problem(info)
    if problem:
        return problem
    if info.get("dtype") not in DTYPES:
        return f"dtype {info.get('dtype')!r} is not one of {', '.join(DTYPES)}"
    if "compression" in info and info["compression"] not in COMPRESSIONS:
        return f"compression {info['compression']!r} is not one of {', '.join(COMPRESSIONS)}"
    outputs = info["outputs"]
    if not all(isinstance(v, list) and all(_is_count(d, 1) for d in v) for v in outputs.values()):
        return "an output shape is not a list of positive integers"
    model = info.get("model")
    if not isinstance(model, dict):
        return "the model metadata is missing" if model is None else "the model metadata is not an object"
    taps = model.get("taps", [])  # a store made by the library may carry no model metadata ({})
    if not isinstance(taps, list) or not all(isinstance(t, dict) and isinstance(t.get("name"), str)
                                             and isinstance(t.get("shape"), list) for t in taps):
        return "the model's taps are not a list of {name, shape}"
    pre = model.get("preprocessing", {"size": [1, 1]})
    size = pre.get("size") if isinstance(pre, dict) else None
    if not isinstance(size, list) or len(size) != 2 or not all(_is_count(d, 1) and d <= MAX_SIDE for d in size):
        return f"the model's preprocessing size is not [H, W] within 1..{MAX_SIDE}"
    for t in taps:
        if t["name"] in outputs and list(t["shape"]) != outputs[t["name"]]:
            return f"output {t['name']!r} has shape {outputs[t['name']]} but the model's tap says {t['shape']}"
    per_image = np.dtype(DTYPES[info["dtype"]]).itemsize * sum(math.prod(v) for v in outputs.values())
    if per_image > MAX_IMAGE_BYTES:
        return f"one image's outputs would be {size_text(per_image)}, more than {size_text(MAX_IMAGE_BYTES)}"
    reductions = model.get("reductions")
    if reductions is not None and not (isinstance(reductions, dict)
                                       and all(isinstance(v, dict) for v in reductions.values())):
        return "the model's reductions are not an object of {tap: {op, k, spec}}"
    if model.get("weights") is not None and not isinstance(model["weights"], dict):
        return "the model's weights entry is not an object"
    return None


def _counts_problem(info: dict) -> str | None:
    """Row count, batch size and chunk rows within bounds and consistent with each other."""
    n, batch, rows = info.get("n", 0), info.get("batch_size", 1), info.get("chunk_rows", info.get("batch_size", 1))
    if n > MAX_ROWS:
        return f"n {n} is more rows than a store can hold ({MAX_ROWS})"
    if batch > max(1, n) or batch % rows:
        return f"batch_size {batch} and chunk_rows {rows} do not fit {n} rows"
    row_chunk = info.get("row_chunk", rows)
    if row_chunk % rows or row_chunk > max(ROW_CHUNK, rows):
        return f"row_chunk {row_chunk} is not a multiple of chunk_rows {rows} up to {ROW_CHUNK}"
    return None


def output_shapes(record: ModelRecord, session=None) -> dict[str, tuple[int, ...]]:
    """Per-image shape of every output of the model ``record`` describes, from its taps (reduced
    taps carry their reduced shape there); outputs that are not taps (``logits``) from the session."""
    taps = {t.name: tuple(t.shape) for t in record.taps}
    shapes = {}
    for name in record.outputs:
        if name in taps:
            shapes[name] = taps[name]
        elif session is not None:
            out = next(o for o in session.get_outputs() if o.name == name)
            shapes[name] = tuple(int(d) for d in out.shape[1:])
        else:
            raise StoreError(f"no shape for output {name!r} in the model metadata")
    return shapes


def model_record(info: dict, path) -> ModelRecord | None:
    """The typed record of the model metadata a store keeps (``info["model"]``, after
    :func:`attrs_problem`), built once at open; None when it records no taps (a store the library
    made with ``metadata={}``: it opens, but cannot be drawn). Metadata a record cannot be built
    from is damage: one :class:`StoreError` line."""
    model = info["model"]
    if "taps" not in model:
        return None
    try:
        return ModelRecord.from_metadata(model, info.get("model_path") or "model")
    except (FeaturemapsError, KeyError, TypeError, ValueError):
        raise StoreError(f"{path}/zarr.json is damaged (its model metadata lacks a tap's name, shape or counts, "
                         "the input, the outputs or the preprocessing); the store cannot be used, re-create it "
                         "with `featuremaps extract`") from None


def chunk_limits(info: dict) -> dict[str, tuple[int, int | None]]:
    """Per array: the largest chunk file it may hold, and the exact decoded size a zstd chunk
    must declare (None without zstd). Anything larger is refused before it is read."""
    c, row_chunk = info["chunk_rows"], info.get("row_chunk", info["chunk_rows"])
    limits = {"status": (row_chunk + 64, None), "errors": (row_chunk * (4 * MAX_ERROR_CHARS + 8) + 64, None)}
    for name in ("paths", "path_bytes"):
        limits[name] = (row_chunk * (MAX_PATH_ROW_BYTES + 8) + 64, None)
    itemsize = np.dtype(DTYPES[info["dtype"]]).itemsize
    for name, shape in info["outputs"].items():
        raw = c * math.prod(shape) * itemsize
        zstd = info.get("compression") == "zstd"
        limits[name] = (raw + raw // 128 + 2**17 + 4, raw) if zstd else (raw + 4, None)
    return limits


def size_text(n: int) -> str:
    """``n`` bytes for a message: GiB from 1 GiB up, else MiB."""
    return f"{n / 2**30:.1f} GiB" if n >= 2**30 else f"{n / 2**20:.0f} MiB"
