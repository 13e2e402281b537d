"""``load_batch`` from a plain script: decode workers never run the caller's main module.

multiprocessing's spawn and forkserver children re-import the parent's main script so that
functions defined there unpickle; a script without an ``if __name__ == "__main__":`` guard ran
again in every worker (and a script read from stdin killed them: "decoder process died")."""

from __future__ import annotations

import subprocess
import sys

import pytest
from PIL import Image

SCRIPT = """
import glob, sys
with open(sys.argv[1], "a") as f:
    f.write("top level ran\\n")
import featuremaps.engine.decode_pool as dp
from featuremaps import load_batch
from featuremaps.engine.preprocess import Preprocessing

started = []
spawn = dp.DecodePool._spawn
dp.DecodePool._spawn = lambda self: started.append(1) or spawn(self)
batch = load_batch(sorted(glob.glob(sys.argv[2] + "/*.png")), Preprocessing(size=(16, 16)), workers=2)
print(batch.shape, batch.dtype, "workers", len(started))
"""


@pytest.fixture(scope="module")
def many_pngs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pngs")
    for i in range(300):
        Image.new("RGB", (20, 20), (i % 256, 40, 90)).save(folder / f"{i:03d}.png")
    return folder


@pytest.mark.slow
@pytest.mark.parametrize("how", ["file", "stdin"])
def test_a_script_without_a_main_guard_runs_its_top_level_once(tmp_path, many_pngs, how):
    counter = tmp_path / "runs.txt"
    if how == "file":
        script = tmp_path / "plain.py"
        script.write_text(SCRIPT)
        res = subprocess.run([sys.executable, str(script), str(counter), str(many_pngs)], capture_output=True,
                             text=True, timeout=300, cwd=tmp_path)
    else:
        res = subprocess.run([sys.executable, "-", str(counter), str(many_pngs)], input=SCRIPT, capture_output=True,
                             text=True, timeout=300, cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.split() == ["(300,", "3,", "16,", "16)", "float32", "workers", "2"]  # the pool did decode
    assert counter.read_text() == "top level ran\n"  # once: no worker re-ran the script
