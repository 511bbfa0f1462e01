"""Scale-out on existing engines: a Triton server (``serving.triton``, PyTriton) and bulk jobs (``serving.bulk``,
Ray Data).

This module holds what both share: file bytes in, file bytes out, with one failed item never failing the others.
It imports neither PyTriton nor Ray (they are optional extras, ``.[triton]`` and ``.[ray]``); the submodules
import them when used.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from ..errors import HPCMError, InputError
from ..image import image_from_bytes, png_bytes

log = logging.getLogger(__name__)

#: One item's result: the output bytes, or the error that stopped it.
Outcome = bytes | HPCMError


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


def decompress_files(codec, streams: Sequence[bytes], catch_all: bool = False,
                     previews: Sequence[tuple[int, str] | None] | None = None) -> list[Outcome]:
    """``.hpcm`` streams -> PNG file bytes; a stream the codec refuses becomes its error, the others are decoded.
    ``previews``: per stream, ``None`` (the full image, decoded in one batch with the others) or ``(steps,
    fill)`` of a preview (:meth:`~hpcm_deploy.Codec.preview`, one stream at a time)."""
    data = [bytes(s) for s in streams]
    wanted = list(previews) if previews is not None else [None] * len(data)
    out: list[Any] = [None] * len(data)
    full = [i for i, p in enumerate(wanted) if p is None]
    decoded = _isolated(lambda batch: codec.decompress(batch, kind="pil"), [data[i] for i in full], catch_all)
    for i, result in zip(full, decoded):
        out[i] = result
    for i, p in enumerate(wanted):
        if p is not None:
            steps, fill = p
            out[i] = _isolated(lambda one, s=steps, f=fill: [codec.preview(one[0], s, kind="pil", fill=f).image],
                               [data[i]], catch_all)[0]
    return [png_bytes(r) if not isinstance(r, HPCMError) else r for r in out]


def preview_request(parameters: Mapping[str, Any] | None) -> tuple[int, str] | None:
    """A request's preview from its parameters (``preview``: s1, s2, s3 or 1-11; ``fill``: thumbnail or
    context), or ``None`` for the full image; one line (``InputError``) for a bad value or an unknown name."""
    from ..runtime.preview import FILLS, parse_preview

    params = dict(parameters or {})
    unknown = sorted(set(params) - {"preview", "fill"})
    if unknown:
        raise InputError(f"unknown request parameter {', '.join(unknown)} (decompress takes preview and fill)")
    steps = parse_preview(params.get("preview"))
    fill = str(params.get("fill", FILLS[0]))
    if fill not in FILLS:
        raise InputError(f"fill must be {' or '.join(FILLS)}, not {fill!r}")
    if steps is None:
        if "fill" in params:
            raise InputError("fill goes with a preview parameter")
        return None
    return steps, fill


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


__all__ = ["Outcome", "compress_files", "decompress_files", "preview_request"]
