"""Decode budget and exactness: Pillow's resize equals torchvision's; hostile files are error rows."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from hostile import GOOD, ODD_NAME, jpeg_declaring, make_corpus, png_declaring  # noqa: E402

from featuremaps.engine.inputs import (collect_inputs, path_from_text, path_to_text, printable_path,  # noqa: E402
                                       read_image_bytes)
from featuremaps.engine.preprocess import (DecodeBudget, ImageDecodeError, Preprocessing, decode_image,  # noqa: E402
                                           preprocess_bytes, preprocess_file)

MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


def _photos():
    """Real photos of different shapes: grace_hopper.jpg (512x600) and scikit-image's data."""
    import matplotlib.cbook as cbook
    from featuremaps.samples import skimage_data_dir

    hopper = Path(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))
    sk = Path(skimage_data_dir())
    return [hopper] + [sk / n for n in ("astronaut.png", "coffee.png", "chelsea.png", "rocket.jpg")
                       if (sk / n).exists()]


@pytest.mark.parametrize("size", [(224, 224), (64, 64), (32, 32), (100, 300), (300, 90)], ids=str)
def test_engine_equals_torchvision_on_same_pixels(size):
    """Same decoded pixels -> engine == torchvision Resize + ToTensor + Normalize (float32, <= 1e-6)
    and == Resize alone in the uint8 layout (0 grey levels), non-square sources and targets."""
    from PIL import Image
    from torchvision import transforms

    seed = transforms.Compose([transforms.Resize(size), transforms.ToTensor(), transforms.Normalize(MEAN, STD)])
    photos = _photos()
    assert len(photos) >= 3 and any(Image.open(p).size[0] != Image.open(p).size[1] for p in photos)
    for path in photos:
        data = path.read_bytes()
        pil = Image.fromarray(decode_image(data))  # the engine's decoded pixels, as a PIL image
        ref = seed(pil).numpy()
        ours = preprocess_bytes(data, Preprocessing(size=size))
        assert ours.shape == ref.shape == (3, *size) and ours.dtype == np.float32
        np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-6)
        ours_u8 = preprocess_bytes(data, Preprocessing(size=size, input_layout="uint8_nhwc"))
        ref_u8 = np.asarray(transforms.Resize(size)(pil))
        assert ours_u8.dtype == np.uint8 and ours_u8.shape == (*size, 3)
        assert np.abs(ours_u8.astype(int) - ref_u8).max() == 0


def test_jpeg_decode_equals_pillow():
    """The strict libjpeg-turbo decode gives Pillow's own pixels (so the seed's, for JPEGs)."""
    from PIL import Image

    path = _photos()[0]
    np.testing.assert_array_equal(decode_image(path.read_bytes()), np.asarray(Image.open(path).convert("RGB")))


def test_reduced_decode_is_close_and_smaller_work():
    path = _photos()[0]
    data = path.read_bytes()
    full = preprocess_bytes(data, Preprocessing(size=(64, 64), input_layout="uint8_nhwc")).astype(int)
    red = preprocess_bytes(data, Preprocessing(size=(64, 64), input_layout="uint8_nhwc", decode="reduced"))
    assert red.shape == (64, 64, 3)
    assert 0 < np.abs(full - red).mean() < 6  # different pixels, same picture


@pytest.fixture()
def corpus(tmp_path, sample_paths):
    photo = next(p for p in _photos() if p.suffix == ".jpg")
    folder = tmp_path / "corpus"
    return folder, make_corpus(folder, photo)


def test_hostile_files_are_decode_errors_with_reasons(corpus):
    folder, expected = corpus
    pre = Preprocessing(size=(32, 32))
    for name, reason in expected.items():
        with pytest.raises(ImageDecodeError, match=reason):
            preprocess_file(os.path.join(folder, name), pre)
    for name in (*GOOD, ODD_NAME):
        assert preprocess_file(os.path.join(folder, name), pre).shape == (3, 32, 32)


def test_budget_limits_are_the_users():
    data = png_declaring(3000, 3000)
    with pytest.raises(ImageDecodeError, match=r"9 megapixels, over the 1-megapixel limit; raise --max-pixels"):
        decode_image(data, DecodeBudget(max_pixels=1_000_000))
    with pytest.raises(ImageDecodeError, match="over the 100-megapixel limit"):
        decode_image(jpeg_declaring(12000, 12000))
    with pytest.raises(ImageDecodeError, match=r"declares (64x64 = )?4096 pixels, over the 1000-pixel limit"):
        decode_image(png_declaring(64, 64), DecodeBudget(max_pixels=1000))  # was "0 megapixels, over 0.001"
    bomb = png_declaring(15000, 15000)  # 225 MP: over Pillow's own refusal (2 x 89.5 MP)
    with pytest.raises(ImageDecodeError, match="over the 100-megapixel limit; raise --max-pixels"):
        decode_image(bomb)
    with pytest.raises(ImageDecodeError) as raised:  # a raised --max-pixels is the user's, not Pillow's
        decode_image(bomb, DecodeBudget(max_pixels=300_000_000))
    assert "limit" not in str(raised.value)  # this tiny file then fails as what it is: truncated


def test_file_size_limit_refuses_without_reading(tmp_path):
    big = tmp_path / "big.jpg"
    with open(big, "wb") as f:
        f.truncate(10_000_000)  # sparse: a read would be needed to notice it is zeros
    with pytest.raises(ImageDecodeError, match=r"10000000 bytes, over the 1000000-byte limit; raise --max-file-bytes"):
        read_image_bytes(str(big), max_file_bytes=1_000_000)


def test_non_utf8_list_file_and_paths_round_trip(tmp_path, sample_paths):
    import shutil

    raw = os.path.join(os.fsencode(tmp_path), b"\xff\xfeimg.jpg")
    shutil.copy(sample_paths[0], raw)
    lst = tmp_path / "list.txt"
    lst.write_bytes(b"# comment\n\xff\xfeimg.jpg\n")
    (path,) = collect_inputs([f"@{lst}"])
    assert os.fsencode(path) == raw
    assert preprocess_file(path, Preprocessing(size=(32, 32))).shape == (3, 32, 32)
    text = path_to_text(path)
    text.encode("utf-8")  # valid UTF-8 for a store
    assert path_from_text(text) == path and "\\xff\\xfe" in text


@pytest.mark.parametrize("raw", [b"a/b.jpg", b"back\\slash\\x41.jpg", b"\xff\\\xfe.jpg", "日本.jpg".encode()])
def test_path_text_round_trip(raw):
    p = os.fsdecode(raw)
    assert os.fsencode(path_from_text(path_to_text(p))) == raw


def test_printable_path_escapes_control_characters_and_bad_bytes():
    shown = printable_path(os.fsdecode(b"/x/caf\xe9\nfake line\t.jpg"))
    assert shown == "/x/caf\\xe9\\nfake line\\t.jpg" and "\n" not in shown


def test_arbitrary_bytes_are_ok_or_decode_error():
    """Property: any bytes (random, or a real JPEG/PNG cut and corrupted) -> an array or ImageDecodeError."""
    from hypothesis import HealthCheck, given, settings, strategies as st

    photo = _photos()[0].read_bytes()
    png = png_declaring(8, 8)
    pre = Preprocessing(size=(16, 16), input_layout="uint8_nhwc")

    def corrupt(base: bytes):
        return st.tuples(st.integers(0, len(base)), st.lists(st.tuples(st.integers(0, len(base) - 1),
                                                                       st.integers(0, 255)), max_size=8)
                         ).map(lambda t: _mutate(base, *t))

    @settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
    @given(st.one_of(st.binary(max_size=512), corrupt(photo), corrupt(png)))
    def check(data):
        try:
            out = preprocess_bytes(data, pre)
        except ImageDecodeError:
            return
        assert out.shape == (16, 16, 3) and out.dtype == np.uint8

    check()


def _mutate(base: bytes, cut: int, flips) -> bytes:
    data = bytearray(base[:max(cut, 1)])
    for i, v in flips:
        if i < len(data):
            data[i] = v
    return bytes(data)


def test_extract_cli_budget_and_reduced_decode_options(tmp_path, small_model, sample_paths):
    """--max-pixels makes error rows with the fix; --decode reduced and --workers 0 still extract."""
    from featuremaps.cli import main
    from featuremaps.engine.store import open_store

    imgs = [str(p) for p in sample_paths[:2]]
    base = ["extract", *imgs, "--model", str(small_model.path), "--no-progress", "--workers", "0"]
    assert main([*base, "-o", str(tmp_path / "a.zarr"), "--max-pixels", "1000"]) == 1
    st = open_store(tmp_path / "a.zarr")
    assert [e.message.split(",")[1].strip() for e in st.errors] == ["over the 1000-pixel limit; raise --max-pixels to accept it"] * 2
    assert main([*base, "-o", str(tmp_path / "b.zarr"), "--decode", "reduced"]) == 0
    assert list(open_store(tmp_path / "b.zarr").status) == ["ok", "ok"]


def test_wide_pixel_modes_are_named_and_opencv_stays_quiet(capfd):
    """A float TIFF was called a "16-bit image" after an OpenCV warning line on stderr; 16-bit PNGs
    still decode (through OpenCV)."""
    import io

    from PIL import Image

    def tiff(array, mode) -> bytes:
        buf = io.BytesIO()
        Image.fromarray(array, mode=mode).save(buf, format="TIFF")
        return buf.getvalue()

    with pytest.raises(ImageDecodeError, match=r"32-bit float pixels \(mode F"):
        decode_image(tiff(np.random.rand(8, 8).astype(np.float32), "F"))
    with pytest.raises(ImageDecodeError, match=r"\(I pixels OpenCV could not read\)"):
        decode_image(tiff((np.random.rand(8, 8) * 2**31).astype(np.int32), "I"))
    buf = io.BytesIO()
    Image.fromarray((np.arange(64).reshape(8, 8) * 1000).astype(np.uint16)).save(buf, format="PNG")
    assert np.asarray(decode_image(buf.getvalue())).shape[:2] == (8, 8)
    assert "WARN" not in capfd.readouterr().err
