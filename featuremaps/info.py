"""What a file is: :func:`describe` an exported ``.onnx`` model or a bulk Zarr store as a plain dict.

The CLI (``featuremaps info``) formats the dict or prints it as JSON; nothing here prints.
The model side reads only the metadata the exporter wrote (``metadata_props["featuremaps"]``)
and the graph's input/output signature, so it needs onnxruntime alone, no torch.
"""

from __future__ import annotations

import os
from pathlib import Path

from .engine.store import FeatureStore
from .engine.store.verify import missing_chunks
from .engine.store.remote import is_url, local_path
from .engine.validate import read_model_record
from .errors import FeaturemapsError, ModelFileError, StoreError


def describe(path: str | Path, *, storage_options: dict | None = None) -> dict:
    """``{"kind": "model" | "store", ...}`` for an exported model file or a store folder.

    A missing path, a folder that is not a store, or a file that is not a featuremaps ONNX
    export raises :class:`ModelFileError` / :class:`StoreError` with one line naming the fix.
    """
    if is_url(path):
        return describe_store(path, storage_options=storage_options)
    path = Path(local_path(path))
    if path.is_dir():
        return describe_store(path)
    if path.is_file():
        return describe_model(path)
    what = "is not a regular file or folder" if os.path.lexists(path) else "not found"
    raise ModelFileError(f"{str(path)!r} {what}; pass an exported .onnx file or a store folder (OUT.zarr)")


def _session(path: Path):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # no constant folding: a hostile
    # graph's constant part (a 1 GiB Expand) would be computed while loading, just to read metadata
    try:
        return ort.InferenceSession(str(path), sess_options=so, providers=["CPUExecutionProvider"])
    except Exception as e:  # noqa: BLE001 - any load failure means "not a readable ONNX model"
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:160]
        raise ModelFileError(f"{path} is not a readable ONNX model ({first}); pass a file written by "
                             "`featuremaps export`") from None


def _shape(dims) -> list:
    return [d if isinstance(d, int) else str(d) for d in dims]


def describe_model(path: str | Path) -> dict:
    """Taps with shapes, precision, math mode, weights, preprocessing, input layout, opset, tools, size."""
    path = Path(path)
    record = read_model_record(path)  # anything unreadable or lying: one ModelFileError line
    sess = _session(path)
    inp = sess.get_inputs()[0]
    outputs = {o.name: {"shape": _shape(o.shape), "type": o.type} for o in sess.get_outputs()}
    taps = [{"name": t.name, "alias": t.alias, "channels": t.channels, "shape": list(t.shape),
             "reduction": record.reductions.get(t.name), "output_type": outputs.get(t.name, {}).get("type")}
            for t in record.taps]
    versions = record.versions
    return {"kind": "model", "path": str(path), "size_bytes": path.stat().st_size,
            "model": record.model, "input_size": record.input_size,
            "weights": record.weights, "precision": record.precision,
            "math_mode": record.math_mode, "output_dtype": record.output_dtype,
            "input": {"name": inp.name, "shape": _shape(inp.shape), "type": inp.type,
                      "layout": record.input_layout},
            "preprocessing": record.preprocessing.to_dict(), "taps": taps, "outputs": list(outputs),
            "logits": record.logits, "cut_after": record.cut_after,
            "opset": versions.pop("opset", None), "versions": versions, "created": record.created}


def describe_store(path: str | Path, *, storage_options: dict | None = None) -> dict:
    """Counts ok/error/pending, taps with stored shape, dtype and chunks, bytes on disk, creating command;
    ``missing_chunks``: tap chunk files of done rows that are absent (their rows would read as zeros)."""
    path = path if is_url(path) else Path(path)
    try:
        store = FeatureStore.open(path, mode="r", storage_options=storage_options)
    except FeaturemapsError:
        raise
    except Exception as e:  # noqa: BLE001 - a broken zarr.json is "not a store", one line
        raise StoreError(f"{path} is not a readable featuremaps store ({type(e).__name__}); "
                         "write one with `featuremaps extract -o PATH.zarr`") from None
    record = store.record  # None: a store the library made without model metadata
    reductions = record.reductions if record is not None else {}
    taps = []
    for name in store.outputs:
        arr = store[name]
        taps.append({"name": name, "shape": list(arr.shape), "dtype": str(arr.dtype), "chunks": list(arr.chunks),
                     "dimension_names": list(getattr(arr.metadata, "dimension_names", None) or []),
                     "reduction": reductions.get(name)})
    info = store.info
    missing = missing_chunks(store)  # a file check per chunk: cheap, unlike verify's full read
    objects, nbytes = store.footprint(check=True)  # one walk (one listing on object storage)
    return {"kind": "store", "path": str(store.path), "images": len(store),
            "counts": store.counts(),  # from the uint8 status codes: no string per row
            "missing_chunks": len(missing),
            "rows_with_missing_chunks": len({r for d in missing for r in range(*d.rows)}),
            "taps": taps, "dtype": store.dtype, "batch_size": store.batch_size, "chunk_rows": store.chunk_rows,
            "shard_rows": info.get("shard_rows"), "objects": objects,
            "compression": info.get("compression"), "bytes_on_disk": nbytes,
            "model": record and record.model, "weights": record.weights if record is not None else {},
            "precision": record.precision if record is not None else "fp32", "model_path": info.get("model_path"),
            "model_sha256": info.get("model_sha256"),
            "command": info.get("command") or (record and record.command), "created": info.get("created"),
            "featuremaps": info.get("featuremaps")}


def weights_line(weights: dict) -> str:
    """One prominent line on where the weights came from (random ones flagged as untrained)."""
    source = weights.get("source", "unknown")
    sha = (weights.get("sha256") or "")[:12]
    if source == "random":
        return f"RANDOM (seeded init, seed {weights.get('seed')}; untrained), sha256 {sha}"
    return f"{source}, sha256 {sha}" + (f", file sha256 {weights['file_sha256'][:12]}"
                                         if weights.get("file_sha256") else "")
