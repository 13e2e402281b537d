"""The report in a real browser: Debian's chromium, headless, driven by Selenium + chromium-driver,
opened from file:// (no server). Skipped, with the reason, when chromium or the driver is absent
(`.ci/run` installs them with apt when it runs as root)."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import tiny_record

pytestmark = pytest.mark.slow


def _maps(c: int, h: int, seed: int) -> np.ndarray:
    """Structured maps: channel k is a ramp of slope k plus noise, so energies differ per channel."""
    rng = np.random.RandomState(seed)
    y, x = np.mgrid[0:h, 0:h] / max(h - 1, 1)
    k = rng.permutation(c)[:, None, None]
    return (k * (x + y)[None] / c + 0.1 * rng.randn(c, h, h)).astype(np.float32)


@pytest.fixture(scope="module")
def report_dir(tmp_path_factory):
    from featuremaps.export.taps import parse_taps
    from featuremaps.report import ReportImage, build_report, write_report

    taps = parse_taps("0,28", "vgg16", 32)  # 64 x 32x32 and 512 x 2x2
    rng = np.random.RandomState(0)
    images = [ReportImage(name=f"photo{i}.jpg", image=rng.randint(0, 255, (32, 32, 3), dtype=np.uint8),
                          maps={t.name: _maps(t.shape[0], t.shape[1], seed=i + 10 * j) for j, t in enumerate(taps)})
              for i in range(2)]
    record = tiny_record()  # vgg16 at 32x32, fp32, random weights (seed 0)
    manifest, sprites = build_report(images, taps, record=record, title="browser test", tile_px=32,
                                     parity_note="test: no reference", pixel_values=True)
    out = tmp_path_factory.mktemp("report")
    write_report(manifest, sprites, out)
    return out, images, taps


def test_report_in_chromium(report_dir, driver, tmp_path):
    import cv2
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    out, images, taps = report_dir
    driver.get((out / "index.html").as_uri())
    WebDriverWait(driver, 20).until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#grid-a .tile")) == 64)

    # selecting the 512-channel tap shows its channel count and one tile per channel
    Select(driver.find_element(By.ID, "tap")).select_by_index(1)
    assert "512 channels" in driver.find_element(By.ID, "tap-info").text
    tiles = driver.find_elements(By.CSS_SELECTOR, "#grid-a .tile")
    assert len(tiles) == 512
    # sorted by energy: the first tile is the channel with the largest mean square (computed here)
    m = images[0].maps[taps[1].name].astype(np.float64)
    assert int(tiles[0].get_attribute("data-ch")) == int(np.argmax((m ** 2).mean(axis=(1, 2))))
    assert "not computed" in driver.find_element(By.ID, "parity").text

    # hovering a tile shows its statistics; clicking pins them
    target = tiles[3]
    ch = target.get_attribute("data-ch")
    ActionChains(driver).move_to_element(target).perform()
    tip = driver.find_element(By.ID, "tooltip")
    WebDriverWait(driver, 5).until(lambda d: tip.is_displayed())
    assert f"ch {ch}" in tip.text and "energy" in tip.text
    target.click()
    panel = driver.find_element(By.ID, "channel-stats")
    assert panel.get_attribute("data-channel") == ch
    assert "rank" in panel.text and "4 / 512" in panel.text  # the 4th tile has energy rank 4

    # hovering the enlarged channel reads the value under the cursor (from the value sheet)
    big = driver.find_element(By.CSS_SELECTOR, "#channel-views .big")
    ActionChains(driver).move_to_element_with_offset(big, -big.size["width"] // 4, -big.size["height"] // 4).perform()
    WebDriverWait(driver, 5).until(lambda d: "value" in d.find_element(By.ID, "pixel-value").text
                                   and "at (y 0, x 0)" in d.find_element(By.ID, "pixel-value").text)
    shown = float(driver.find_element(By.ID, "pixel-value").text.rsplit("value ", 1)[1].split()[0])
    mch = images[0].maps[taps[1].name][int(ch)].astype(np.float64)  # 2x2: the top-left quadrant is (0, 0)
    assert abs(shown - mch[0, 0]) <= (mch.max() - mch.min()) / 255 + 1e-3 * abs(mch).max()

    # compare: a second grid of the same channels, in the same order
    driver.find_element(By.ID, "compare").click()
    first = str(int(np.argmax((m ** 2).mean(axis=(1, 2)))))  # image A's order on both sides
    grid_b = driver.find_elements(By.CSS_SELECTOR, "#grid-b .tile")
    assert len(grid_b) == 512 and grid_b[0].get_attribute("data-ch") == first

    png = driver.get_screenshot_as_png()
    (tmp_path / "shot.png").write_bytes(png)
    shot = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)
    assert shot is not None and shot.std() > 20, "the screenshot is blank"
    assert len(np.unique(shot.reshape(-1, 3), axis=0)) > 200, "no colour maps drawn"

    errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
    assert not errors, errors
