"""Shared fixtures. Models are small (64x64 input) unless a test is about full size."""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import sys
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:  # numpy is imported where used: pytest_configure must run on a bare interpreter
    import numpy as np


def pytest_configure(config) -> None:
    _exit_unless_installed()
    # A script's background job (`python -m pytest &`) starts with Ctrl-C ignored, and so would every
    # command the tests start: the Ctrl-C tests would wait forever. Tests run as from a terminal.
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def pytest_collection_modifyitems(config, items) -> None:
    """Modules marked ``long_module`` (minutes each: every docs block, a simulated cluster) run
    first. Under pytest-xdist's ``--dist loadfile`` a module is one unit of work handed out in
    collection order; one that starts last stretches the whole run by its length."""
    items.sort(key=lambda item: item.get_closest_marker("long_module") is None)  # stable: order kept


def _exit_unless_installed() -> None:
    """Without the package installed, ``python -m pytest`` imports the bare ``featuremaps/`` folder
    from the current directory, whose ``engine``/``export``/``bench`` live in other top-level folders
    (``package-dir`` in pyproject.toml): every test file would fail to import. Say so once instead."""
    try:
        missing = [m for m in ("featuremaps.engine", "featuremaps.export", "featuremaps.bench")
                   if importlib.util.find_spec(m) is None]
    except ImportError as e:  # featuremaps itself, or one of its dependencies
        missing = [e.name or str(e)]
    if missing:
        pytest.exit(f"featuremaps is not installed for {sys.executable} (cannot import {missing[0]}): "
                    "activate its virtual environment (. .venv/bin/activate) or install it "
                    "(pip install -e \".[dev]\"), then run the tests again", returncode=2)


os.environ.setdefault("MPLBACKEND", "Agg")

# ---------------------------------------------------------------- memory: reference cycles
# A test that catches an error from build_model (pytest.raises(...) as err) keeps the traceback, its
# frames and their 553 MB VGG16 alive in a reference cycle; tensors hardly count towards the cyclic
# collector's thresholds, so such cycles piled up to 5 GB in one run. Collect when the process has
# grown by COLLECT_STEP since the last collection: a few dozen collections a run, not one per test.
COLLECT_STEP = 256 * 2**20


def _rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError):  # not Linux: never collect
        return 0


@pytest.hookimpl(trylast=True)  # after the test's fixtures are torn down
def pytest_runtest_teardown(item, nextitem) -> None:
    import gc

    stash = item.config.stash
    baseline = stash.get(_RSS_AFTER_COLLECT, 0)
    if _rss_bytes() > baseline + COLLECT_STEP:
        gc.collect()
        stash[_RSS_AFTER_COLLECT] = _rss_bytes()


_RSS_AFTER_COLLECT = pytest.StashKey[int]()

SMALL = 64  # input size for most tests: every VGG stage still has >= 2x2 pixels
ALL_TAPS = tuple(range(31))
TINY_MODEL = os.path.join(os.path.dirname(__file__), "models", "vgg16-features0-32.onnx")


def tiny_record(**meta):
    """The record of the checked-in tiny model (VGG16 features.0 at 32x32, seeded random weights),
    with ``meta`` replacing keys of its metadata (model, weights, reductions...): a real record
    for code that takes one, without an export."""
    from featuremaps.engine.validate import ModelRecord, read_model_record

    record = read_model_record(TINY_MODEL)
    return ModelRecord.from_metadata(dict(record.metadata, **meta), record.path) if meta else record


@pytest.fixture(scope="session")
def vgg_net():
    """Seeded random VGG16, eval mode, and its WeightsInfo (the SHA-256 of the weights a cut graph
    reads). The classifier head is an Identity: its 490 of VGG16's 553 MB would stay in memory for
    the whole session, and no cut graph reads it (the logits test builds the full network itself)."""
    import torch

    from featuremaps.export.zoo import build_model

    net, info = build_model("vgg16", "random", seed=0, need_classifier=False)
    net.classifier = torch.nn.Identity()
    return net, info


@pytest.fixture(scope="session")
def small_model(tmp_path_factory, vgg_net):
    """VGG16 exported with taps 0,5,10,17,28 at 64x64 from ``vgg_net``: ExportResult."""
    from featuremaps.export.onnx_export import export_model

    net, info = vgg_net
    path = tmp_path_factory.mktemp("models") / "vgg16-small.onnx"
    return export_model("0,5,10,17,28", path, input_size=SMALL, net=net, weights_info=info)


@pytest.fixture(scope="session")
def sample_paths():
    from featuremaps.samples import sample_images

    return sample_images()


@pytest.fixture(scope="session")
def photo_folder(tmp_path_factory, sample_paths):
    """``make(name, n, width, height)``: a new folder of ``n`` small JPEGs of the sample photos
    (``width + i`` pixels wide, so no two are alike) plus two bad files, an empty ``empty.jpg`` and
    a text file named ``text.png``."""
    import cv2

    def make(name: str, n: int, width: int, height: int):
        root = tmp_path_factory.mktemp(name)
        for i in range(n):
            bgr = cv2.imread(str(sample_paths[i % len(sample_paths)]))
            cv2.imwrite(str(root / f"img{i:02d}.jpg"),
                        cv2.resize(bgr, (width + i, height), interpolation=cv2.INTER_AREA))
        (root / "empty.jpg").write_bytes(b"")
        (root / "text.png").write_text("not an image")
        return root

    return make


@pytest.fixture(scope="session")
def small_batch(sample_paths):
    """Two real photos preprocessed to (2, 3, 64, 64) float32."""
    from featuremaps.engine.preprocess import Preprocessing
    from featuremaps.engine.decode_pool import load_batch

    return load_batch(sample_paths[:2], Preprocessing(size=(SMALL, SMALL)))


def random_batch(n: int, size: int = SMALL, seed: int = 0) -> np.ndarray:
    """``(n, 3, size, size) float32``: random 8-bit pixels, normalized as the engine does (so a
    uint8-input model represents it exactly)."""
    import numpy as np

    from featuremaps.engine.layouts import pixels_to_float
    from featuremaps.engine.preprocess import Preprocessing

    pixels = np.random.RandomState(seed).randint(0, 256, (n, size, size, 3)).astype(np.uint8)
    return pixels_to_float(pixels, Preprocessing(size=(size, size)))


# ---------------------------------------------------------------- the headless browser (report tests)
# Debian's chromium + chromium-driver via Selenium, skipped with the reason when either is absent
# (`.ci/run` installs them with apt when it runs as root).

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")


@pytest.fixture(scope="module")
def driver():
    if not (CHROMIUM and DRIVER):
        pytest.skip(f"chromium ({CHROMIUM or 'absent'}) or chromedriver ({DRIVER or 'absent'}) not installed; "
                    "apt-get install -y chromium chromium-driver")
    webdriver = pytest.importorskip("selenium.webdriver", reason="pip install selenium (the dev extra)")
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
              "--window-size=1400,1000"):
        opts.add_argument(a)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    d = webdriver.Chrome(service=Service(DRIVER), options=opts)
    yield d
    d.quit()


# ---------------------------------------------------------------- S3 on 127.0.0.1 (tests/s3server.py)


@pytest.fixture(scope="session")
def s3_server():
    """moto's S3 server on 127.0.0.1 for the whole session; this process's AWS variables point at it
    (restored at the end), so no test can reach a real bucket."""
    pytest.importorskip("moto.server", reason="S3 tests need moto[server] (the dev extra)")
    pytest.importorskip("s3fs", reason="S3 tests need s3fs (the s3 extra)")
    import s3server

    server = s3server.start()
    saved = {k: os.environ.get(k) for k in server.env_vars}
    os.environ.update(server.env_vars)
    try:
        yield server
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        server.server.stop()


@pytest.fixture
def s3(s3_server):
    """A fresh, empty bucket on the session's S3 server (:class:`tests.s3server.Bucket`)."""
    import s3server

    return s3server.Bucket(s3_server, s3_server.new_bucket())
