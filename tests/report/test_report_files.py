"""The report folder: files, full-colour sprites, statistics and order checked against NumPy,
no network references; the CLI on a model and on a store."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from featuremaps.errors import FeaturemapsError

from conftest import tiny_record


def _taps():
    from featuremaps.export.taps import parse_taps

    return parse_taps("0,28", "vgg16", 32)  # (64, 32, 32) and (512, 2, 2)


def _images(n=2, seed=0):
    from featuremaps.report import ReportImage

    rng = np.random.RandomState(seed)
    return [ReportImage(name=f"im{i}.png", image=rng.randint(0, 255, (32, 32, 3), dtype=np.uint8),
                        maps={t.name: rng.randn(*t.shape).astype(np.float32)
                              * (1 + np.arange(t.shape[0]))[:, None, None] for t in _taps()})
            for i in range(n)]


RECORD = tiny_record()  # vgg16 at 32x32, fp32, random weights (seed 0)


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    from featuremaps.report import build_report, write_report

    images = _images()
    manifest, sprites = build_report(images, _taps(), record=RECORD, title="t", tile_px=16, parity_note="none here")
    out = tmp_path_factory.mktemp("rep")
    return write_report(manifest, sprites, out), images


def test_report_folder_has_page_manifest_and_sprites(written):
    res, _ = written
    names = {p.relative_to(res.folder).as_posix() for p in res.folder.rglob("*") if p.is_file()}
    assert {"index.html", "report.js", "report.css", "data.js", "report.json", "images/img0.png",
            "tiles/img1/t1.png"} <= names
    assert res.files == len(names) == 5 + 2 + 2 * 2
    manifest = json.loads((res.folder / "report.json").read_text())
    js = (res.folder / "data.js").read_text()
    assert json.loads(js[js.index("{"):js.rindex("}") + 1]) == manifest  # data.js: the same manifest, file:// safe
    assert [t["channels"] for t in manifest["taps"]] == [64, 512]
    assert manifest["parity_note"] == "none here" and manifest["images"][0]["parity"] is None


def test_report_page_needs_no_network(written):
    res, _ = written
    for name in ("index.html", "report.js", "report.css"):
        text = (res.folder / name).read_text()
        assert not re.search(r"https?://|//cdn|@import", text), name
    refs = re.findall(r'(?:src|href)="([^"]+)"', (res.folder / "index.html").read_text())
    assert all(r.startswith("data:") or (res.folder / r).is_file() for r in refs), refs


def test_sprites_are_full_colour_and_tile_every_channel(written):
    import cv2

    res, images = written
    path = res.folder / "tiles/img0/t0.png"
    raw = path.read_bytes()
    assert raw[25] == 2, "PNG colour type must be truecolour RGB (2), not palette (3)"
    sheet = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert sheet.shape == (8 * 16, 8 * 16, 3)  # 64 channels as 8x8 tiles of 16 px (32 px maps downsampled)
    assert len(np.unique(sheet.reshape(-1, 3), axis=0)) > 256  # more than a palette could hold
    # the brightest (yellow) tile pixel of channel 9 sits where its area-averaged map is largest
    m = images[0].maps["features.0"][9].reshape(16, 2, 16, 2).mean(axis=(1, 3))
    tile = sheet[16:32, 16:32].astype(int)  # row 1, col 1 of 8 columns = channel 9
    brightness = tile.sum(axis=2)
    assert np.unravel_index(brightness.argmax(), brightness.shape) == np.unravel_index(m.argmax(), m.shape)


def test_stats_and_energy_order_match_numpy(written):
    res, images = written
    manifest = json.loads((res.folder / "report.json").read_text())
    m = images[1].maps["features.28"].reshape(512, -1).astype(np.float64)
    entry = manifest["images"][1]["taps"]["features.28"]
    np.testing.assert_allclose(entry["stats"]["energy"], (m ** 2).mean(1), rtol=1e-3)
    np.testing.assert_allclose(entry["stats"]["max"], m.max(1), rtol=1e-3)
    np.testing.assert_allclose(entry["stats"]["active"], (m > 0).mean(1), rtol=1e-3)
    assert entry["order"][:5] == list(np.argsort(-(m ** 2).mean(1), kind="stable")[:5])


def test_parity_rows_are_the_known_errors():
    from featuremaps.report import parity_rows

    ref = {"a": np.ones((2, 3, 3), np.float32)}
    rows = parity_rows({"a": ref["a"] * 1.01}, ref)["a"]
    assert rows["max_abs"] == pytest.approx(0.01, rel=1e-4) and rows["rel_l2"] == pytest.approx(0.01, rel=1e-4)
    assert rows["cosine"] == pytest.approx(1.0)


def test_build_report_needs_images():
    from featuremaps.report import build_report

    with pytest.raises(ValueError, match="at least one image"):
        build_report([], _taps(), record=RECORD, title="t")


# ---------------------------------------------------------------- the CLI


def test_report_cli_errors(tmp_path, capsys):
    from featuremaps.cli import main

    assert main(["report", "-o", str(tmp_path / "r"), "--model", str(tmp_path / "none.onnx"), "x.png"]) == 2
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "f").write_text("x")
    assert main(["report", "-o", str(tmp_path / "full"), "x.png"]) == 2
    many = [tmp_path / "full" / f"{i}.png" for i in range(33)]
    for f in many:
        f.write_bytes(b"")  # refused by count before any decode
    assert main(["report", "-o", str(tmp_path / "r2"), *map(str, many)]) == 2
    assert "at most 32 images" in capsys.readouterr().err


@pytest.mark.slow
def test_report_cli_from_model_and_store(tmp_path, small_model, sample_paths, capsys):
    from featuremaps.cli import main

    imgs = [str(p) for p in sample_paths[:2]]
    assert main(["report", *imgs, "--model", str(small_model.path), "-o", str(tmp_path / "r")]) == 0
    manifest = json.loads((tmp_path / "r" / "report.json").read_text())
    assert [t["name"] for t in manifest["taps"]] == ["features.0", "features.5", "features.10", "features.17",
                                                     "features.28"]
    parity = manifest["images"][0]["parity"]  # the fixture model is a seeded random VGG16: rebuildable
    assert all(row["rel_l2"] < 1e-5 and row["cosine"] > 0.99999 for row in parity.values())
    assert manifest["weights"]["source"] == "random"

    store = tmp_path / "s.zarr"
    assert main(["extract", *imgs, "--model", str(small_model.path), "-o", str(store), "--no-progress"]) == 0
    assert main(["report", "--store", str(store), "--rows", "1", "-o", str(tmp_path / "rs")]) == 0
    m2 = json.loads((tmp_path / "rs" / "report.json").read_text())
    assert len(m2["images"]) == 1 and m2["images"][0]["parity"] is None and "store" in m2["parity_note"]
    assert m2["images"][0]["taps"]["features.5"]["stats"] == manifest["images"][1]["taps"]["features.5"]["stats"]
    capsys.readouterr()
    assert main(["report", "--store", str(store), "--rows", "5", "-o", str(tmp_path / "rx")]) == 2
    assert "rows 0-1" in capsys.readouterr().err


def test_report_error_is_a_featuremaps_error(tmp_path):
    from featuremaps.cli.report import parse_rows

    class FakeStore:
        path = tmp_path
        status = np.array(["ok", "error"])

        def __len__(self):
            return 2

    with pytest.raises(FeaturemapsError, match="0,3,7 or 0-4"):
        parse_rows("a-b", FakeStore())
    assert parse_rows(None, FakeStore()) == [0]
    assert parse_rows("0-1", FakeStore()) == [0, 1]


def test_reduced_vector_tap_is_drawn_as_one_pixel_tiles():
    from featuremaps.report import ReportImage, build_report

    tap = _taps()[1]  # 512 channels, here a mean-reduced (C,) vector as a reduced store holds it
    vec = np.linspace(-1, 1, 512).astype(np.float16)
    im = ReportImage(name="a", image=np.zeros((32, 32, 3), np.uint8), maps={tap.name: vec})
    record = tiny_record(reductions={tap.name: "mean"})
    manifest, sprites = build_report([im], (tap,), record=record, title="t")
    entry = manifest["taps"][0]
    assert (entry["height"], entry["width"], entry["tile"], entry["reduction"]) == (1, 1, 1, "mean")
    assert sprites["tiles/img0/t0.png"].shape == (entry["rows"], entry["cols"], 3)
    assert manifest["images"][0]["taps"][tap.name]["order"][0] in (0, 511)  # |-1| and |1| are the most energetic
    sheet = sprites["tiles/img0/t0.png"].reshape(-1, 3)[:512].astype(int)
    assert (sheet[0] != sheet[511]).any() and len(np.unique(sheet, axis=0)) > 100  # one scale: values differ


def test_pixel_values_ship_as_data_uri_scripts(tmp_path):
    import base64

    import cv2

    from featuremaps.report import build_report, write_report

    images = _images(1)
    manifest, sprites = build_report(images, _taps(), record=RECORD, title="t", tile_px=32, pixel_values=True)
    write_report(manifest, sprites, tmp_path)
    rel = manifest["images"][0]["taps"]["features.0"]["values"]
    text = (tmp_path / rel).read_text()
    assert text.startswith(f'window.FM_VALUES("{rel}", "data:image/png;base64,')
    grey = cv2.imdecode(np.frombuffer(base64.b64decode(text.split("base64,")[1].split('"')[0]), np.uint8),
                        cv2.IMREAD_UNCHANGED)
    m = images[0].maps["features.0"][3]  # channel 3: row 0, col 3 of 8 columns, 32 px tiles (native)
    tile = grey[:32, 96:128].astype(np.float64)
    np.testing.assert_allclose(m.min() + tile / 255 * (m.max() - m.min()), m, atol=(m.max() - m.min()) / 510 + 1e-6)
