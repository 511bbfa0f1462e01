"""The runtime codec: container format, image conversions, and the ``Codec`` class."""

from .codec import Codec, CompressResult, DecompressResult

__all__ = ["Codec", "CompressResult", "DecompressResult"]
