"""featuremaps: CNN feature maps as ONNX outputs, extracted fast, proven right, drawn well.

>>> from featuremaps import export_model, Extractor, load_batch, sample_images
>>> res = export_model("0,5,10,17,28", "/tmp/vgg16-taps.onnx", weights="random", input_size=64)
>>> with Extractor(res.path, provider="cpu") as ex:
...     maps = ex.run(load_batch(sample_images()[:1], ex.preprocessing))
>>> maps["features.28"].shape
(1, 512, 4, 4)

Heavy modules (torch) load only when a function needs them.
"""

__version__ = "0.1.0"

__all__ = ["Extractor", "FeaturemapsError", "LayerError", "Tap", "export_model", "load_batch", "model_layers",
           "parse_taps", "preprocess_bytes", "read_metadata", "reference_features", "sample_images", "seed_features",
           "open_store", "__version__"]

_LAZY = {
    "open_store": "featuremaps.engine.store",
    "Extractor": "featuremaps.engine.extractor",
    "load_batch": "featuremaps.engine.decode_pool",
    "preprocess_bytes": "featuremaps.engine.preprocess",
    "export_model": "featuremaps.export.onnx_export",
    "read_metadata": "featuremaps.contracts",
    "FeaturemapsError": "featuremaps.errors",
    "LayerError": "featuremaps.errors",
    "Tap": "featuremaps.contracts",
    "model_layers": "featuremaps.export.taps",
    "parse_taps": "featuremaps.export.taps",
    "reference_features": "featuremaps.export.reference",
    "seed_features": "featuremaps.export.reference",
    "sample_images": "featuremaps.samples",
}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'featuremaps' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_LAZY))
