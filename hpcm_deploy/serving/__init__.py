"""Scale-out on existing engines: a Triton server (``serving.triton``, PyTriton) and bulk jobs (``serving.bulk``,
Ray Data).

This module holds what both share: file bytes in, file bytes out, with one failed item never failing the others.
It imports neither PyTriton nor Ray (they are optional extras, ``.[triton]`` and ``.[ray]``); the submodules
import them when used.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Sequence

from ..errors import HPCMError, InputError

log = logging.getLogger(__name__)

#: One item's result: the output bytes, or the error that stopped it.
Outcome = bytes | HPCMError


def image_from_bytes(data: bytes):
    """A PIL image from encoded file bytes (PNG, JPEG, ...); an :class:`InputError` when they are not an image."""
    from PIL import Image, UnidentifiedImageError

    if not data:
        raise InputError("no image bytes")
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()
            return img.copy()
    except UnidentifiedImageError:
        raise InputError(f"not a readable image: {len(data)} bytes in no image format that Pillow reads") from None
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise InputError(f"not a readable image ({str(exc).splitlines()[0]})") from None


def png_bytes(image) -> bytes:
    """A decoded PIL image as PNG file bytes (greyscale and 16-bit stay as such)."""
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def compress_files(codec, files: Sequence[bytes], catch_all: bool = False) -> list[Outcome]:
    """Encoded images -> ``.hpcm`` streams, in one batched codec call where possible.

    A file that is not an image, or that the codec refuses, becomes its error; the others are still coded.
    ``catch_all``: any other exception too becomes the error of its file.
    """
    out: list[Outcome | None] = [None] * len(files)
    images, where = [], []
    for i, data in enumerate(files):
        try:
            images.append(image_from_bytes(bytes(data)))
            where.append(i)
        except HPCMError as exc:
            out[i] = exc
    for i, result in zip(where, _isolated(codec.compress, images, catch_all)):
        out[i] = result
    return [r if r is not None else InputError("not coded") for r in out]


def decompress_files(codec, streams: Sequence[bytes], catch_all: bool = False) -> list[Outcome]:
    """``.hpcm`` streams -> PNG file bytes; a stream the codec refuses becomes its error, the others are decoded."""
    results = _isolated(lambda s: codec.decompress(s, kind="pil"), [bytes(s) for s in streams], catch_all)
    return [png_bytes(r) if not isinstance(r, HPCMError) else r for r in results]


def _isolated(fn, items: list, catch_all: bool = False) -> list:
    """``fn(items)`` as one batch; if the batch fails with a user error, each item alone, so that one bad item
    costs the others only a retry (the codec checks every input before it codes any of them, so the retry is
    cheap in the usual case of a malformed input). ``catch_all`` also isolates unexpected errors (a bulk job
    reports them per file instead of stopping)."""
    if not items:
        return []
    catch = Exception if catch_all else HPCMError
    try:
        return list(fn(items))
    except catch as exc:
        if len(items) == 1:
            return [_as_user_error(exc)]
        log.debug("batch of %d failed (%s); coding its items one by one", len(items), exc)
    out: list = []
    for item in items:
        try:
            out.append(fn([item])[0])
        except catch as exc:
            out.append(_as_user_error(exc))
    return out


def _as_user_error(exc: Exception) -> HPCMError:
    if isinstance(exc, HPCMError):
        return exc
    log.warning("unexpected error while coding: %s: %s", type(exc).__name__, exc)
    return HPCMError(f"could not be coded ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})")


__all__ = ["Outcome", "compress_files", "decompress_files", "image_from_bytes", "png_bytes"]
