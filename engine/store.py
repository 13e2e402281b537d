"""The bulk feature store: a Zarr v3 directory with one array per tap, indexed like the input list.

Layout (``OUT.zarr/``)::

    zarr.json        group attributes["featuremaps"]: store format, the exported model's metadata,
                     model path and SHA-256, batch size, dtype, compression, stored output shapes
    paths            (N,) str      the input list, sorted, fixed when the store is created
    status           (N,) uint8    0 pending, 1 ok, 2 error            chunks of B rows
    errors           (N,) str      the reason for each error row ("" otherwise)
    features.17      (N, C, H, W)  fp32 or fp16 (reduced taps: (N, C) or (N, C, H/k, W/k))

Every per-row array is chunked by the batch size B along N, and nothing is sharded, so
batch ``b`` owns exactly one chunk of every array. A batch is *done* when its status chunk
says so; the status chunk is written last, after every tap chunk and the error chunk.
Zarr's LocalStore writes each chunk to a temporary file and renames it into place, so a
kill -9 leaves every chunk either old or new, never torn: after a crash, a batch without
its status chunk is simply redone, and the rewrite yields the same bytes.
"""

from __future__ import annotations

import datetime as _dt
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..contracts import Tap
from ..errors import StoreError

log = logging.getLogger(__name__)

STORE_FORMAT = "featuremaps-store/1"
ATTR_KEY = "featuremaps"
PENDING, OK, ERROR = 0, 1, 2
STATUS_NAMES = ("pending", "ok", "error")
DTYPES = {"fp32": np.float32, "fp16": np.float16}
COMPRESSIONS = ("zstd", "none")
_ROW_ARRAYS = ("paths", "status", "errors")


@dataclass(frozen=True)
class ErrorRow:
    index: int
    path: str
    message: str


def output_shapes(metadata: dict, session=None) -> dict[str, tuple[int, ...]]:
    """Per-image shape of every model output, from the export metadata (reduced taps carry
    their reduced shape there); outputs that are not taps (``logits``) from the session."""
    taps = {d["name"]: tuple(d["shape"]) for d in metadata["taps"]}
    shapes = {}
    for name in metadata["outputs"]:
        if name in taps:
            shapes[name] = taps[name]
        elif session is not None:
            out = next(o for o in session.get_outputs() if o.name == name)
            shapes[name] = tuple(int(d) for d in out.shape[1:])
        else:
            raise StoreError(f"no shape for output {name!r} in the model metadata")
    return shapes


class FeatureStore:
    """A bulk feature store, read or written by row (image) index.

    >>> import featuremaps
    >>> st = featuremaps.open_store("out.zarr")              # doctest: +SKIP
    >>> st.paths[0], st.status[0], st["features.17"][0].shape  # doctest: +SKIP
    ('/data/a.jpg', 'ok', (512, 28, 28))
    """

    def __init__(self, group, path: Path):
        self._group = group
        self.path = path
        attrs = dict(group.attrs)
        if ATTR_KEY not in attrs or attrs[ATTR_KEY].get("format") != STORE_FORMAT:
            raise StoreError(f"{path} is not a featuremaps store (no {STORE_FORMAT} attributes); "
                             "write one with `featuremaps extract -o PATH.zarr`")
        self.info: dict = attrs[ATTR_KEY]
        self._paths: list[str] | None = None

    # ------------------------------------------------------------ create / open

    @classmethod
    def create(cls, path: str | Path, *, paths: list[str], metadata: dict, shapes: dict[str, tuple[int, ...]],
               batch_size: int, dtype: str = "fp32", compression: str = "zstd",
               model_path: str | Path | None = None, model_sha256: str | None = None) -> "FeatureStore":
        """Create a new store for ``paths`` (every row pending). An existing path is a
        :class:`StoreError`: a store is never overwritten."""
        import zarr

        path = Path(path)
        if path.exists():
            raise StoreError(f"{path} already exists; add --resume to complete it, or choose a new -o path")
        if dtype not in DTYPES:
            raise StoreError(f"unknown dtype {dtype!r}; use fp32 or fp16")
        if compression not in COMPRESSIONS:
            raise StoreError(f"unknown compression {compression!r}; use {' or '.join(COMPRESSIONS)}")
        n, b = len(paths), int(batch_size)
        if b < 1:
            raise StoreError("batch size must be >= 1")
        compressors = None if compression == "none" else "auto"
        from .. import __version__

        info = {"format": STORE_FORMAT, "n": n, "batch_size": b, "dtype": dtype, "compression": compression,
                "outputs": {k: list(v) for k, v in shapes.items()}, "model": metadata,
                "model_path": str(model_path) if model_path else None, "model_sha256": model_sha256,
                "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                "featuremaps": __version__}
        group = zarr.open_group(str(path), mode="w-", zarr_format=3)
        group.create_array("paths", shape=(n,), chunks=(max(n, 1),), dtype=str)[:] = np.asarray(paths, dtype=str)
        group.create_array("status", shape=(n,), chunks=(b,), dtype="uint8", fill_value=PENDING)
        group.create_array("errors", shape=(n,), chunks=(b,), dtype=str)
        for name, shape in shapes.items():
            group.create_array(name, shape=(n, *shape), chunks=(b, *shape), dtype=DTYPES[dtype],
                               fill_value=0, compressors=compressors, dimension_names=("image",) + (None,) * len(shape))
        # Attributes last: a store is recognisable only once all of its arrays exist.
        group.attrs[ATTR_KEY] = info
        return cls(group, path)

    @classmethod
    def open(cls, path: str | Path, mode: str = "r") -> "FeatureStore":
        import zarr

        path = Path(path)
        if not (path / "zarr.json").is_file():
            raise StoreError(f"no featuremaps store at {path}; write one with `featuremaps extract -o PATH.zarr`")
        return cls(zarr.open_group(str(path), mode=mode, zarr_format=3), path)

    # ------------------------------------------------------------ reading

    def __len__(self) -> int:
        return int(self.info["n"])

    @property
    def batch_size(self) -> int:
        return int(self.info["batch_size"])

    @property
    def dtype(self) -> str:
        return self.info["dtype"]

    @property
    def metadata(self) -> dict:
        """The exported model's metadata (taps, preprocessing, weights, reductions, ...)."""
        return self.info["model"]

    @property
    def outputs(self) -> list[str]:
        return list(self.info["outputs"])

    @property
    def taps(self) -> tuple[Tap, ...]:
        """The stored taps; ``shape`` is the per-image stored shape (reduced where reduced)."""
        return tuple(Tap.from_dict(d) for d in self.metadata["taps"])

    @property
    def paths(self) -> list[str]:
        if self._paths is None:
            self._paths = [str(p) for p in self._group["paths"][:]]
        return self._paths

    @property
    def status_codes(self) -> np.ndarray:
        """``(N,) uint8``: 0 pending, 1 ok, 2 error."""
        return np.asarray(self._group["status"][:])

    @property
    def status(self) -> np.ndarray:
        """``(N,)`` of ``'pending' | 'ok' | 'error'``."""
        return np.asarray(STATUS_NAMES)[self.status_codes]

    @property
    def errors(self) -> list[ErrorRow]:
        """Every error row: index, path and the reason."""
        idx = np.flatnonzero(self.status_codes == ERROR)
        if not len(idx):
            return []
        msgs = self._group["errors"][:]
        return [ErrorRow(int(i), self.paths[i], str(msgs[i])) for i in idx]

    def __getitem__(self, tap):
        """The zarr array of one output (``'features.17'`` or a :class:`Tap`), N first."""
        name = tap.name if isinstance(tap, Tap) else str(tap)
        if name not in self.info["outputs"]:
            raise KeyError(f"no output {name!r} in this store; it has {', '.join(self.outputs)}")
        return self._group[name]

    def maps(self, index: int) -> dict[str, np.ndarray]:
        """All stored outputs of image ``index``: ``{name: (C, H, W)}`` (reduced shapes where reduced)."""
        return {name: np.asarray(self._group[name][index]) for name in self.outputs}

    def n_batches(self) -> int:
        return -(-len(self) // self.batch_size)

    def batch_rows(self, b: int) -> tuple[int, int]:
        start = b * self.batch_size
        return start, min(start + self.batch_size, len(self))

    def pending_batches(self) -> list[int]:
        """Batches with any pending row: written partly or not at all; a run (re)does these."""
        codes = self.status_codes
        return [b for b in range(self.n_batches()) if (codes[slice(*self.batch_rows(b))] == PENDING).any()]

    def nbytes_on_disk(self) -> int:
        return sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(self.path) for f in fs)

    # ------------------------------------------------------------ writing

    def write_batch(self, b: int, outputs: dict[str, np.ndarray], ok_rows, errors: dict[int, str]) -> int:
        """Write batch ``b``: ``outputs[name]`` holds the maps of ``ok_rows`` (row offsets inside
        the batch, in order); ``errors`` maps row offsets to reasons. Tap chunks first, then
        the error chunk, then the status chunk (the commit). Returns feature bytes written
        (uncompressed)."""
        written = self.write_maps(b, outputs, ok_rows)
        self.commit_batch(b, errors)
        return written

    def write_maps(self, b: int, outputs: dict[str, np.ndarray], ok_rows) -> int:
        """Write batch ``b``'s chunk of every output (zeros for rows not in ``ok_rows``); no commit.
        Any process may do this for a batch it owns: batches never share a chunk."""
        start, stop = self.batch_rows(b)
        ok_rows = list(ok_rows)
        dtype = DTYPES[self.dtype]
        written = 0
        for name in self.outputs:
            full = np.zeros((stop - start, *self.info["outputs"][name]), dtype)
            if ok_rows:
                full[ok_rows] = outputs[name]
            self._group[name][start:stop] = full
            written += full.nbytes
        return written

    def commit_batch(self, b: int, errors: dict[int, str]) -> None:
        """Mark batch ``b`` done: its error chunk, then its status chunk (ok, or error for the
        row offsets in ``errors``). Call only after :meth:`write_maps` returned for ``b``."""
        start, stop = self.batch_rows(b)
        msgs = np.full(stop - start, "", dtype=object)
        status = np.full(stop - start, OK, np.uint8)
        for row, msg in errors.items():
            msgs[int(row)], status[int(row)] = msg, ERROR
        self._group["errors"][start:stop] = msgs.astype(str)
        self._group["status"][start:stop] = status

    def clean_partials(self) -> int:
        """Remove ``*.partial`` files a killed writer left behind (never read by zarr)."""
        removed = 0
        for root, _, files in os.walk(self.path):
            for f in files:
                if f.endswith(".partial"):
                    os.unlink(os.path.join(root, f))
                    removed += 1
        return removed

    def __repr__(self) -> str:
        codes = self.status_codes
        return (f"FeatureStore({str(self.path)!r}, n={len(self)}, ok={int((codes == OK).sum())}, "
                f"errors={int((codes == ERROR).sum())}, pending={int((codes == PENDING).sum())}, "
                f"outputs={self.outputs}, dtype={self.dtype})")


def open_store(path: str | Path) -> FeatureStore:
    """Open a bulk feature store read-only: ``.paths``, ``.status``, ``.errors``, ``.taps``,
    ``.metadata``, and ``store['features.17']`` (zarr array, N first).

    >>> import featuremaps
    >>> st = featuremaps.open_store("out.zarr")   # doctest: +SKIP
    >>> ok = st.status == "ok"                     # doctest: +SKIP
    >>> st["features.28"][0]                       # doctest: +SKIP
    """
    return FeatureStore.open(path, mode="r")
