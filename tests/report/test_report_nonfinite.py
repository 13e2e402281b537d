"""NaN and +-inf in the maps (a store written before such rows were refused, a hostile model): the
report is still written, counts them, paints them magenta and leaves them out of the statistics."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import tiny_record


def _tap():
    from featuremaps.export.taps import parse_taps

    return parse_taps("0", "vgg16", 32)[0]  # (64, 32, 32)


def test_nonfinite_maps_are_counted_marked_and_left_out(tmp_path):
    from featuremaps.report import ReportImage, build_report, write_report
    from featuremaps.report.data import NONFINITE_RGB

    tap = _tap()
    m = np.random.RandomState(0).randn(*tap.shape).astype(np.float32)
    m[0, :4, :4] = np.nan      # 16 in channel 0, in its top-left corner
    m[1, 5, 5] = np.inf
    m[1, 6, 6] = -np.inf       # 2 in channel 1
    m[2] = np.nan              # all of channel 2
    ref = m.copy()
    im = ReportImage(name="a.png", image=np.zeros((32, 32, 3), np.uint8), maps={tap.name: m}, reference={tap.name: ref})
    manifest, sprites = build_report([im], (tap,), record=tiny_record(), title="t", tile_px=32, pixel_values=True)
    write_report(manifest, sprites, tmp_path)  # JSON with allow_nan=False: this raised before

    entry = json.loads((tmp_path / "report.json").read_text())["images"][0]["taps"][tap.name]
    stats = entry["stats"]
    assert entry["nonfinite"] == 16 + 2 + 32 * 32 and stats["nonfinite"][:4] == [16, 2, 1024, 0]
    finite = m[1][np.isfinite(m[1])].astype(np.float64)
    np.testing.assert_allclose([stats["mean"][1], stats["max"][1]], [finite.mean(), finite.max()], rtol=1e-3)
    assert stats["energy"][2] is None and stats["min"][2] is None  # no finite value: no statistic
    assert entry["order"][-1] == 2  # a channel without an energy sorts last
    sheet = sprites["tiles/img0/t0.png"]  # 8x8 tiles of 32 px
    assert (sheet[:4, :4] == NONFINITE_RGB).all() and not (sheet[4:32, 4:32] == NONFINITE_RGB).all(-1).any()
    assert (sheet[0:32, 64:96] == NONFINITE_RGB).all()  # channel 2, wholly non-finite
    assert (sheet[5, 32 + 5] == NONFINITE_RGB).all() and (sheet[6, 32 + 6] == NONFINITE_RGB).all()
    assert manifest["images"][0]["parity"][tap.name]["rel_l2"] is None  # NaN - NaN: no number, not "0"


@pytest.mark.slow
def test_the_page_says_so(tmp_path, driver):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from featuremaps.report import ReportImage, build_report, write_report

    tap = _tap()
    m = np.random.RandomState(0).randn(*tap.shape).astype(np.float32)
    m[3, 0, :5] = np.inf
    im = ReportImage(name="a.png", image=np.zeros((32, 32, 3), np.uint8), maps={tap.name: m})
    write_report(*build_report([im], (tap,), record=tiny_record(), title="t"), tmp_path)
    driver.get((tmp_path / "index.html").as_uri())
    WebDriverWait(driver, 20).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#grid-a .tile"))
    assert "WARNING: 5 values of a.png here are NaN or ±inf (#ff00ff pixels)" in driver.find_element(By.ID, "tap-info").text
    driver.find_element(By.CSS_SELECTOR, '#grid-a .tile[data-ch="3"]').click()
    assert "NaN or ±inf 5" in driver.find_element(By.ID, "channel-stats").text
    assert not [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
