"""Engine: preprocessing parity with PIL/torchvision, input checks, providers, no torch."""

import subprocess
import sys
import textwrap

import numpy as np
import pytest

from featuremaps.engine.extractor import Extractor
from featuremaps.errors import ModelFileError
from featuremaps.engine.preprocess import (ImageDecodeError, Preprocessing, decode_image, preprocess_bytes,
                                           resize_pil_bilinear)
from featuremaps.engine.session import PROVIDERS, ProviderError, make_session, provider_options


@pytest.mark.parametrize("size", [(224, 224), (64, 64), (100, 300), (700, 50)], ids=str)
def test_resize_matches_pil(sample_paths, size):
    """The engine resizes with Pillow itself; the old NumPy re-implementation (kept in
    bench/decode_bench.py for the speed comparison) stays within 1 grey level of it at any size
    and bit-exact for the square model sizes of the sample photos."""
    from PIL import Image

    from featuremaps.bench.decode_bench import numpy_resize

    for path in sample_paths[:3]:
        rgb = np.asarray(Image.open(path).convert("RGB"))
        ours = numpy_resize(rgb, size).astype(int)
        pil = np.asarray(Image.fromarray(rgb).resize((size[1], size[0]), Image.BILINEAR)).astype(int)
        assert ours.shape == pil.shape
        np.testing.assert_array_equal(resize_pil_bilinear(rgb, size), pil)
        assert np.abs(ours - pil).max() <= 1
        if size[0] == size[1]:
            np.testing.assert_array_equal(ours, pil)


def test_preprocessing_matches_torchvision_on_same_pixels(sample_paths):
    """Same decoded pixels -> our resize+normalize equals the seed's transforms exactly (float32)."""
    import torch
    from PIL import Image
    from torchvision import transforms

    seed = transforms.Compose([transforms.Resize((224, 224)), transforms.ToTensor(),
                               transforms.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])])
    png = next(p for p in sample_paths if p.suffix == ".png")  # lossless: decoders agree
    ref = seed(Image.open(png).convert("RGB")).numpy()
    ours = preprocess_bytes(png.read_bytes(), Preprocessing())
    assert ours.shape == ref.shape == (3, 224, 224) and ours.dtype == np.float32
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-6)
    assert isinstance(ref, np.ndarray) and torch  # torch only for the reference


def test_decode_applies_exif_orientation(tmp_path):
    from PIL import Image

    img = Image.new("RGB", (40, 20), (255, 0, 0))
    img.paste((0, 0, 255), (0, 0, 20, 20))  # left half blue
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 CW when displayed
    path = tmp_path / "rot.jpg"
    img.save(path, exif=exif.tobytes(), quality=95)
    rgb = decode_image(path.read_bytes())
    assert rgb.shape == (40, 20, 3)  # portrait after orientation
    assert rgb[2, 10, 2] > 200 and rgb[-3, 10, 0] > 200  # blue on top, red at bottom


@pytest.mark.parametrize("data, match", [(b"", "empty file"), (b"not an image at all", "not a decodable image")])
def test_decode_errors(data, match):
    with pytest.raises(ImageDecodeError, match=match):
        decode_image(data)


def test_grey_and_alpha_images_become_rgb(tmp_path):
    import cv2

    grey = np.full((10, 12), 77, np.uint8)
    ok, enc = cv2.imencode(".png", grey)
    assert decode_image(enc.tobytes()).shape == (10, 12, 3)
    bgra = np.zeros((5, 6, 4), np.uint8)
    bgra[..., 2] = 200  # red, BGR order
    ok, enc = cv2.imencode(".png", bgra)
    rgb = decode_image(enc.tobytes())
    assert rgb.shape == (5, 6, 3) and rgb[0, 0, 0] == 200 and rgb[0, 0, 2] == 0


def test_run_rejects_wrong_shapes_with_the_fix(small_model):
    with Extractor(small_model.path, provider="cpu") as ex:
        with pytest.raises(ValueError, match=r"got \(3, 64, 64\) float32; add a batch axis"):
            ex.run(np.zeros((3, 64, 64), np.float32))
        with pytest.raises(ValueError, match=r"expected a batch of shape \(N, 64, 64, 3\) uint8 or \(N, 3, 64, 64\) float32"):
            ex.run(np.zeros((1, 3, 32, 32), np.float32))


def test_missing_model_file(tmp_path):
    with pytest.raises(ModelFileError, match="featuremaps export"):
        Extractor(tmp_path / "none.onnx")


def test_auto_reports_the_provider_it_used(small_model):
    from featuremaps.engine.session import provider_unavailable_reason

    sess, info = make_session(small_model.path, "auto")
    assert PROVIDERS[info.provider] == sess.get_providers()[0]
    assert "\n" not in info.note
    if provider_unavailable_reason("cuda") is not None:
        assert info.provider == "cpu"
        assert "skipped tensorrt" in info.note and "cuda:" in info.note


def test_explicit_gpu_provider_without_gpu_is_a_clear_error(small_model):
    from featuremaps.engine.session import provider_unavailable_reason

    if provider_unavailable_reason("cuda") is None:
        pytest.skip("a GPU is present")
    with pytest.raises(ProviderError, match="provider 'cuda' cannot run here: .*use --provider cpu"):
        make_session(small_model.path, "cuda")


def test_tensorrt_options_have_profile_and_keyed_caches(small_model):
    a = provider_options("tensorrt", model_path=small_model.path, input_shape=(3, 64, 64), max_batch=16)
    assert a["trt_profile_min_shapes"] == "input:1x3x64x64"
    assert a["trt_profile_opt_shapes"] == "input:8x3x64x64"
    assert a["trt_profile_max_shapes"] == "input:16x3x64x64"
    assert a["trt_engine_cache_enable"] and a["trt_timing_cache_enable"]
    b = provider_options("tensorrt", model_path=small_model.path, input_shape=(3, 64, 64), max_batch=32)
    c = provider_options("tensorrt", model_path=small_model.path, input_shape=(3, 64, 64), max_batch=16, fp16=True)
    assert len({a["trt_engine_cache_path"], b["trt_engine_cache_path"], c["trt_engine_cache_path"]}) == 3
    assert provider_options("cuda")["cudnn_conv_algo_search"] == "EXHAUSTIVE"
    assert provider_options("cpu") == {}
    with pytest.raises(ValueError, match="unknown provider 'rocm'"):
        provider_options("rocm")
    assert set(PROVIDERS) == {"cpu", "cuda", "tensorrt"}


def test_engine_runs_without_torch(small_model, sample_paths):
    """Edge machines have no torch: make importing it fail, then extract from a real photo."""
    code = textwrap.dedent(f"""
        import sys
        class Block:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in ("torch", "torchvision"):
                    raise ImportError("torch is blocked in this test")
        sys.meta_path.insert(0, Block())
        import featuremaps
        from featuremaps import Extractor, load_batch
        with Extractor({str(small_model.path)!r}, provider="auto") as ex:
            out = ex.run(load_batch([{str(sample_paths[0])!r}], ex.preprocessing))
        assert out["features.28"].shape == (1, 512, 4, 4), out["features.28"].shape
        assert "torch" not in sys.modules
        print("ok", ex.provider)
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("ok")
    assert "Error" not in proc.stderr  # no wall of provider-library errors
