"""Run exported models: sessions and providers, preprocessing, extraction. Never imports torch."""

from .extractor import Extractor
from .preprocess import ImageDecodeError, Preprocessing, decode_image, load_batch, preprocess_bytes
from .session import ProviderError, make_session

__all__ = ["Extractor", "ImageDecodeError", "Preprocessing", "ProviderError", "decode_image",
           "load_batch", "make_session", "preprocess_bytes"]
