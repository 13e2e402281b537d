"""fp32 -> fp16 through ONNX Runtime's Cast kernel: the same bits as NumPy's cast, on every kind of value."""

from __future__ import annotations

import numpy as np
import pytest

from featuremaps.engine import cast
from featuremaps.engine.unit import FP16_MAX, nonfinite_rows

SPECIAL = np.array([0.0, -0.0, 1.0, 65504.0, 65519.99, 65520.0, -65520.0, 1e6, -1e30, np.inf, -np.inf, np.nan,
                    6e-8, 5.96e-8, 2.98e-8, 2.99e-8, 1e-10, -1e-10, 6.1e-5, 6.09e-5,
                    1.00048828125, 1.000732421875, 1.0009765625, 2049.0, 2051.0, -2051.0], np.float32)


def _values(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    a = np.concatenate([rng.standard_normal(n // 2).astype(np.float32) * np.float32(200.0),
                        rng.uniform(-1e-4, 1e-4, n - n // 2 - SPECIAL.size).astype(np.float32), SPECIAL])
    a[::7] = rng.integers(0, 2**32, a[::7].size, dtype=np.uint64).astype(np.uint32).view(np.float32)  # any bits
    return a


def _same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    return a.dtype == b.dtype == np.float16 and np.array_equal(a.view(np.uint16), b.view(np.uint16))


def test_the_embedded_model_is_the_one_node_cast_graph():
    helper = pytest.importorskip("onnx.helper")
    from onnx import TensorProto

    g = helper.make_graph([helper.make_node("Cast", ["x"], ["y"], to=TensorProto.FLOAT16)], "cast",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n"])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT16, ["n"])])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)
    assert model.SerializeToString() == cast.CAST_MODEL


@pytest.mark.parametrize("n", [cast.SMALL * 4 + 3, 100])
def test_to_fp16_has_numpy_bits_for_every_kind_of_value(n):
    a = _values(n)
    with np.errstate(over="ignore", invalid="ignore"):
        want = a.astype(np.float16)
    nan = np.isnan(want)
    got = cast.to_fp16(a)
    assert _same_bits(got[~nan], want[~nan]) and np.isnan(got[nan]).all()
    if n > cast.SMALL:
        assert cast._session() is not None  # the vectorised path ran, not the fallback


def test_to_fp16_writes_into_out_from_a_strided_view():
    a = _values(cast.SMALL * 8).reshape(64, -1)[:, ::2]  # not contiguous
    out = np.full(a.shape, 7, np.float16)
    with np.errstate(over="ignore", invalid="ignore"):
        want = a.astype(np.float16)
    assert cast.to_fp16(a, out) is out
    assert np.array_equal(np.isnan(out), np.isnan(want))
    assert _same_bits(out[~np.isnan(want)], want[~np.isnan(want)])
    with pytest.raises(ValueError, match="C-contiguous float16"):
        cast.to_fp16(a, np.empty(a.shape, np.float32))


def test_without_onnx_runtime_numpy_casts_the_same_bits(monkeypatch):
    a = _values(cast.SMALL * 2, seed=3)
    monkeypatch.setattr(cast, "_session", lambda: None)
    with np.errstate(over="ignore", invalid="ignore"):
        want = a.astype(np.float16)
    got = cast.to_fp16(a)
    ok = ~np.isnan(want)
    assert _same_bits(got[ok], want[ok])


def test_the_check_on_the_fp32_maps_tells_overflow_from_nan():
    src = np.ones((3, cast.SMALL), np.float32)
    src[1, 5] = 1e5  # finite, beyond fp16
    src[2, 9] = np.nan
    bad = nonfinite_rows("t", src, np.float16)
    assert set(bad) == {1, 2}
    assert "overflows fp16 storage" in bad[1] and f"{FP16_MAX:.0f}" in bad[1] and "1e+05" in bad[1]
    assert "NaN or inf" in bad[2]
