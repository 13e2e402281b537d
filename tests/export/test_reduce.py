"""In-graph reductions: parity against NumPy reductions of the PyTorch reference, metadata, store."""

from __future__ import annotations

import numpy as np
import pytest

from featuremaps.export.reference import reference_features
from featuremaps.compare import rel_l2_error
from featuremaps.engine.extractor import Extractor
from featuremaps.export.reduce import Reduction, parse_reductions, reduce_model, reference_reduced
from featuremaps.export.taps import LayerError

SPEC = "features.0=mean,features.10=avgpool:4,conv4_1=max,28=avgpool:2"


@pytest.fixture(scope="module")
def reference(vgg_net, small_model, small_batch):
    return reference_features(vgg_net[0], small_batch, small_model.taps)


@pytest.fixture(scope="module", params=[False, True], ids=["fp32-out", "fp16-out"])
def reduced(request, small_model, tmp_path_factory):
    red = parse_reductions(SPEC, small_model.taps)
    path = tmp_path_factory.mktemp("reduced") / "r.onnx"
    meta = reduce_model(small_model.path, path, red, fp16_outputs=request.param)
    return path, meta, red, request.param


def test_parse_reductions(small_model):
    red = parse_reductions(SPEC, small_model.taps)
    assert red == {"features.0": Reduction("mean"), "features.10": Reduction("avgpool", 4),
                   "features.17": Reduction("max"), "features.28": Reduction("avgpool", 2)}
    with pytest.raises(ValueError, match="write TAP=mean, TAP=max or TAP=avgpool:K"):
        parse_reductions("features.0=median", small_model.taps)
    with pytest.raises(LayerError, match="not exported; add it to --layers"):
        parse_reductions("features.3=mean", small_model.taps)
    with pytest.raises(ValueError, match="avgpool:3 does not divide features.28's 4x4"):
        parse_reductions("28=avgpool:3", small_model.taps)
    with pytest.raises(ValueError, match="names features.0 twice \\(mean and max\\)"):  # the last one won, silently
        parse_reductions("features.0=mean,0=max", small_model.taps)


def test_reduced_parity_against_numpy_reference(reduced, small_batch, reference):
    path, meta, red, fp16 = reduced
    with Extractor(path, provider="cpu") as ex:
        out = ex.run(small_batch)
    ref = reference_reduced(reference, red, fp16)
    tol = 1e-3 if fp16 else 1e-5  # fp16 rounding alone is ~3e-4 rel L2
    for name, r in ref.items():
        assert out[name].dtype == (np.float16 if fp16 else np.float32)
        assert out[name].shape == r.shape, name
        err = rel_l2_error(out[name].astype(np.float32), r.astype(np.float32))
        assert err <= tol, f"{name}: rel L2 {err:.2e} > {tol:g}"


def test_reduced_metadata_carries_shapes(reduced, small_model):
    path, meta, red, fp16 = reduced
    shapes = {d["name"]: tuple(d["shape"]) for d in meta["taps"]}
    assert shapes == {"features.0": (64,), "features.5": small_model.taps[1].shape,
                      "features.10": (256, 4, 4), "features.17": (512,), "features.28": (512, 2, 2)}
    assert meta["reductions"]["features.10"] == {"op": "avgpool", "k": 4, "spec": "avgpool:4"}
    assert meta["output_dtype"] == ("fp16" if fp16 else "fp32")
    assert meta["outputs"] == small_model.metadata["outputs"]  # names unchanged: the tap contract


def test_store_takes_reduced_shapes(reduced, sample_paths, tmp_path):
    from featuremaps.cli import main
    from featuremaps.engine.store import open_store

    path, meta, red, fp16 = reduced
    assert main(["extract", str(sample_paths[1]), str(sample_paths[2]), "--model", str(path), "-o",
                 str(tmp_path / "r.zarr"), "--no-progress"]) == 0
    st = open_store(tmp_path / "r.zarr")
    assert st["features.0"].shape == (2, 64) and st["features.10"].shape == (2, 256, 4, 4)
    assert st.dtype == ("fp16" if fp16 else "fp32")
    with Extractor(path, provider="cpu") as ex:
        ref = ex.run_files(st.paths)
    for name in st.outputs:
        np.testing.assert_allclose(st[name][:].astype(np.float32), ref[name].astype(np.float32),
                                   rtol=1e-3, atol=1e-4, err_msg=name)
