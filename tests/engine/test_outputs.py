"""The output ring and IO binding on CPU: outputs land in the preallocated arrays, equal
``session.run``'s, and a slot is never handed out while its contents are still in use."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from conftest import SMALL

from featuremaps.engine.extractor import Extractor
from featuremaps.engine.outputs import OutputRing, load_cudart, pin


def _pixels(n, seed=0):
    return np.random.RandomState(seed).randint(0, 256, (n, SMALL, SMALL, 3)).astype(np.uint8)


def test_outputs_land_in_the_preallocated_buffers(small_model):
    with Extractor(small_model.path, provider="cpu") as ex:
        ring = ex.output_ring(max_batch=4, slots=2)
        assert not ring.is_pinned  # CPU: ordinary memory
        slot = ring.acquire()
        before = {k: a.ctypes.data for k, a in slot.arrays.items()}
        for n, seed in ((3, 0), (4, 1)):  # a short and a full batch through the same slot
            x = _pixels(n, seed)
            views = ex.run_into(x, slot)
            expected = ex.session.run(ex.output_names, {ex.input_name: x})
            for (name, view), want in zip(views.items(), expected):
                assert view.shape == want.shape and view.dtype == want.dtype
                assert view.ctypes.data == before[name]  # written in place, not a fresh array
                np.testing.assert_array_equal(view, want)
                np.testing.assert_array_equal(slot.arrays[name][:n], want)


def test_batch_larger_than_the_ring_is_refused(small_model):
    with Extractor(small_model.path, provider="cpu") as ex:
        slot = ex.output_ring(max_batch=2, slots=1).acquire()
        with pytest.raises(ValueError, match="batch of 3 does not fit"):
            ex.run_into(_pixels(3), slot)


def test_ring_never_hands_out_a_slot_in_use():
    ring = OutputRing(shapes={"t": (2, 3)}, dtypes={"t": np.dtype(np.float32)}, max_batch=4, slots=3)
    held = [ring.acquire(timeout=0) for _ in range(3)]
    assert len({s.index for s in held}) == 3
    assert ring.acquire(timeout=0.05) is None  # all three in use: nothing to hand out
    got = []
    waiter = threading.Thread(target=lambda: got.append(ring.acquire(timeout=5)))
    waiter.start()
    ring.release(held[1])
    waiter.join(5)
    assert got and got[0] is held[1]  # the released slot, and only after its release
    with pytest.raises(ValueError, match="released twice"):
        ring.release(held[0]) or ring.release(held[0])


def test_slots_do_not_share_memory():
    ring = OutputRing(shapes={"a": (8,), "b": (2, 2)}, dtypes={"a": np.dtype(np.float16), "b": np.dtype(np.float32)},
                      max_batch=2, slots=2)
    s0, s1 = ring.acquire(), ring.acquire()
    for k in ("a", "b"):
        assert not np.shares_memory(s0.arrays[k], s1.arrays[k])
    assert s0.arrays["a"].dtype == np.float16 and s0.arrays["b"].shape == (2, 2, 2)


def test_pin_is_a_noop_without_a_cuda_runtime():
    a = np.zeros(16, np.float32)
    assert pin(a, None) is False
    if load_cudart() is None:  # CPU machines: the ring still builds, unpinned
        ring = OutputRing(shapes={"t": (4,)}, dtypes={"t": np.dtype(np.float32)}, max_batch=2, pinned=True)
        assert not ring.is_pinned


@pytest.mark.gpu
def test_cuda_outputs_land_in_pinned_buffers(small_model):
    from featuremaps.engine.session import provider_unavailable_reason

    reason = provider_unavailable_reason("cuda")
    if reason is not None:
        pytest.skip(reason)
    with Extractor(small_model.path, provider="cuda", tf32=False) as ex:
        ring = ex.output_ring(max_batch=4, slots=2)
        assert ring.is_pinned, "cudaHostRegister failed: outputs would be copied into pageable memory"
        slot = ring.acquire()
        x = _pixels(4)
        views = ex.run_into(x, slot)
        expected = ex.session.run(ex.output_names, {ex.input_name: x})
        for (name, view), want in zip(views.items(), expected):
            assert np.shares_memory(view, slot.arrays[name])
            np.testing.assert_allclose(view, want, rtol=1e-5, atol=1e-6)
        ring.release(slot)
        ring.close()
