"""Run exported models: sessions and providers, preprocessing, extraction. Never imports torch."""

from .decode_pool import DecodePool, load_batch
from .extractor import Extractor
from .preprocess import DecodeBudget, ImageDecodeError, Preprocessing, decode_image, preprocess_bytes
from .session import ProviderError, make_session

__all__ = ["DecodeBudget", "DecodePool", "Extractor", "ImageDecodeError", "Preprocessing", "ProviderError",
           "decode_image", "load_batch", "make_session", "preprocess_bytes"]
