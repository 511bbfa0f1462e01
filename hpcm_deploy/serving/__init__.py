"""Scale-out on existing engines: a Triton server (``serving.triton``, PyTriton) and bulk jobs (``serving.bulk``,
Ray Data).

Both code file bytes with the batch coders of :mod:`hpcm_deploy.codec.jobs` (file bytes in, file bytes out, one
failed item never failing the others), the CLI's ``compress``/``decompress`` with its file jobs. This module
imports neither PyTriton nor Ray (they are optional extras, ``.[triton]`` and ``.[ray]``); the submodules import
them when used.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..codec.jobs import Outcome, compress_files, decompress_files
from ..errors import InputError


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


__all__ = ["Outcome", "compress_files", "decompress_files", "preview_request"]
