"""Hostile names in a real browser: no script runs, names show as literal text, bidi controls as escapes.

The first report is the attack as found: `featuremaps report DIR --model M` (parity on, so the
parity table, once built with innerHTML from the image and tap names, is drawn) on images named
like HTML, with a tap alias that is HTML too. The second is built in-process with a model name
holding ``</script>`` (a file name cannot hold ``/``) and a parity table. Each payload would set
``window.fmPwned`` or ``document.title``; an injected ``<img src=x>`` would also log a failed load.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from featuremaps.errors import terminal_text

from conftest import tiny_record

pytestmark = pytest.mark.slow

GOOD = Path(__file__).parent.parent / "models" / "vgg16-features0-32.onnx"
NAMES = ("<img src=x onerror=\"document.title='X';window.fmPwned=1\">.png",
         "<!--<script>window.fmPwned=2<.png",
         "bidi\u202egnp.exe\u2066\u200f.png")  # shows as "bidiexe.png..." reversed if left raw
ALIAS = "<img src=y onerror=window.fmPwned=3>"
MODEL = "</script><script>window.fmPwned=4;document.title='Y'</script><!--"
HIDDEN = ("\u202e", "\u2066", "\u200f")


def _model_with_alias(folder: Path) -> Path:
    import onnx

    proto = onnx.load(str(GOOD))
    entry = next(p for p in proto.metadata_props if p.key == "featuremaps")
    meta = json.loads(entry.value)
    meta["taps"][0]["alias"] = ALIAS
    entry.value = json.dumps(meta)
    onnx.save(proto, str(folder / "m.onnx"))
    return folder / "m.onnx"


@pytest.fixture(scope="module")
def cli_report(tmp_path_factory):
    """``featuremaps report`` of three tiny images with hostile names, parity on."""
    import cv2

    from featuremaps.cli import main

    root = tmp_path_factory.mktemp("hostile-report")
    imgs = root / "imgs"
    imgs.mkdir()
    for i, name in enumerate(NAMES):
        cv2.imwrite(str(imgs / name), np.random.RandomState(i).randint(0, 255, (20, 20, 3), np.uint8))
    assert main(["report", str(imgs), "--model", str(_model_with_alias(root)), "-o", str(root / "r")]) == 0
    manifest = json.loads((root / "r" / "report.json").read_text())
    assert all(im["parity"] for im in manifest["images"]), "parity must be computed: its table was the sink"
    return root / "r", manifest


@pytest.fixture(scope="module")
def model_name_report(tmp_path_factory):
    """A report whose model name (hence title) holds ``</script>``, with a parity table."""
    from featuremaps.export.taps import parse_taps
    from featuremaps.report import ReportImage, build_report, write_report

    taps = parse_taps("0", "vgg16", 32)
    m = np.random.RandomState(0).randn(*taps[0].shape).astype(np.float32)
    im = ReportImage(name=NAMES[1], image=np.zeros((32, 32, 3), np.uint8), maps={taps[0].name: m},
                     reference={taps[0].name: m})
    record = tiny_record(model=MODEL, weights={"source": MODEL})
    manifest, sprites = build_report([im], taps, record=record, title=f"report of {MODEL}",
                                     budget={"rel_l2": 1e-5, "cosine": None})
    out = tmp_path_factory.mktemp("title-report")
    write_report(manifest, sprites, out)
    return out, manifest


def _open(driver, folder: Path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get((folder / "index.html").as_uri())
    WebDriverWait(driver, 20).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#grid-a .tile"))


def _assert_inert(driver, manifest: dict) -> None:
    """No payload ran, no element was injected, and nothing failed to load."""
    import time

    time.sleep(0.3)  # an onerror handler runs after the failed load, not synchronously
    assert driver.execute_script("return window.fmPwned") is None
    assert driver.title == manifest["title"]  # the manifest's title, as text, not 'X' or 'Y'
    assert driver.execute_script("return document.querySelectorAll('img').length") == 2  # img-a, img-b
    assert driver.execute_script("return document.scripts.length") == 2  # data.js, report.js
    severe = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
    assert not severe, severe


def test_hostile_file_names_and_alias_are_text_in_the_report(cli_report, driver):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    folder, manifest = cli_report
    _open(driver, folder)
    _assert_inert(driver, manifest)
    names = [im["name"] for im in manifest["images"]]
    assert sorted(names) == sorted(NAMES)
    shown = []
    for i in range(len(names)):  # each name in turn as image A: its parity table is drawn
        Select(driver.find_element(By.ID, "image-a")).select_by_index(i)
        _assert_inert(driver, manifest)
        shown.append((driver.find_element(By.CSS_SELECTOR, "#parity th").get_attribute("textContent"),
                      driver.find_element(By.ID, "cap-a").get_attribute("textContent"),
                      "within fp32 budget" in driver.find_element(By.ID, "parity").text))
    assert shown == [(f"parity features.0 vs PyTorch ({terminal_text(n)})", "A: " + terminal_text(n), True)
                     for n in names]
    options = [o.get_attribute("textContent") for o in driver.find_elements(By.CSS_SELECTOR, "#image-a option")]
    assert options == [terminal_text(n) for n in names]  # literal, with bidi controls escaped as in the terminal
    assert ALIAS in driver.find_element(By.ID, "tap").get_attribute("textContent")
    body = driver.execute_script("return document.body.textContent + document.title")
    assert not [c for c in HIDDEN if c in body], "a bidi control reached the page unescaped"
    assert "bidi\\u202egnp.exe\\u2066\\u200f.png" in body


def test_script_end_tag_in_the_model_name_is_inert(model_name_report, driver):
    from selenium.webdriver.common.by import By

    folder, manifest = model_name_report
    assert "</script" not in (folder / "data.js").read_text().lower()  # escaped for a script element too
    _open(driver, folder)
    _assert_inert(driver, manifest)
    assert driver.find_element(By.ID, "title").text == f"report of {MODEL}"
    assert driver.find_element(By.ID, "model-line").text.startswith(MODEL)
    assert driver.find_element(By.ID, "weights-line").text.startswith(f"Weights: {MODEL}")
    assert driver.find_elements(By.CSS_SELECTOR, "#parity table th")  # the table was drawn, from elements


def test_no_inner_html_in_the_page_script():
    """The page script never parses strings as HTML: no innerHTML, outerHTML, insertAdjacentHTML,
    document.write or string event handlers."""
    import re

    from featuremaps.report import write

    js = (Path(write.__file__).parent / "assets" / "report.js").read_text()
    code = re.sub(r"/\*.*?\*/|//[^\n]*", "", js, flags=re.S)  # the header comment names innerHTML
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "setAttribute(\"on",
                 "eval(", "new Function"):
        assert sink not in code, sink
