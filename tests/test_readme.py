"""The README's Python examples run as written (in a scratch folder: they write models/ and feats.zarr)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).parents[1] / "README.md"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


@pytest.mark.slow
def test_python_api_and_store_examples_run(tmp_path, monkeypatch, sample_paths):
    from featuremaps.cli import main

    monkeypatch.chdir(tmp_path)
    api = next(b for b in python_blocks() if "export_model(" in b)
    scope: dict = {}
    exec(api, scope)  # noqa: S102 - the README's own example
    assert scope["maps"]["features.28"].shape == (len(scope["batch"]), 512, 14, 14)
    assert scope["parity"]["features.28"] <= 1e-5  # the example's own parity check
    assert main(["extract", *map(str, sample_paths[:2]), "--model", "models/vgg16.onnx", "-o", "feats.zarr",
                 "--no-progress", "--workers", "0"]) == 0
    store_block = next(b for b in python_blocks() if 'open_store("feats.zarr")' in b)
    exec(store_block, scope)  # noqa: S102
    assert scope["st"]["features.17"][0].shape == (512, 28, 28)


def test_reference_features_takes_names_and_says_what_is_missing():
    torch = pytest.importorskip("torch")
    from featuremaps.errors import LayerError
    from featuremaps.export.reference import reference_features

    maps = reference_features("resnet18", torch.zeros(1, 3, 64, 64), "layer1,layer2.0.add")
    assert maps["layer1.1.relu_1"].shape == (1, 64, 16, 16) and maps["layer2.0.add"].shape == (1, 128, 8, 8)
    net = __import__("torchvision").models.vgg11()
    with pytest.raises(LayerError, match="say which model they belong to"):
        reference_features(net, torch.zeros(1, 3, 32, 32), "0,5")
