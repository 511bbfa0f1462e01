"""The runtime codec: container format (``container``), image conversions (``images``), and the ``Codec`` class.

``Codec`` and its result types load on first use, so that the light ``container`` and ``images`` modules can be
imported without torch or a backend.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = ["Codec", "CompressResult", "DecompressResult", "Decisions"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from . import codec

        return getattr(codec, name)
    raise AttributeError(f"module 'hpcm_deploy.codec' has no attribute {name!r}")


if TYPE_CHECKING:  # pragma: no cover
    from .codec import Codec, CompressResult, Decisions, DecompressResult
