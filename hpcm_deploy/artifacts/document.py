"""The one loader and writer of the JSON manifests an export or an engine build leaves on disk.

Both manifests are a JSON object with a ``format`` name and a ``format_version``; both are read the same way (a
missing, unreadable or foreign file is one line of the caller's error class) and written whole or not at all.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..files import write_json_atomic


def read_document(path: Path, fmt: str, what: str, error: type[Exception], missing: str) -> dict[str, Any]:
    """The JSON object at ``path`` whose ``format`` is ``fmt`` (its version is the caller's to check), else one
    ``error``: ``missing`` when there is no file, and ``what`` names the kind of manifest expected."""
    if not path.is_file():
        raise error(missing)
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise error(f"cannot read {path}: {exc}") from None
    if not isinstance(data, dict) or data.get("format") != fmt:
        raise error(f"{path} is not an hpcm-deploy {what}")
    return data


def write_document(path: Path, data: dict[str, Any]) -> None:
    write_json_atomic(path, data)


def extras(data: dict[str, Any], names: tuple[str, ...]) -> dict[str, Any]:
    """The entries of ``data`` that are not among ``names`` (kept through a load and save unchanged)."""
    return {k: v for k, v in data.items() if k not in names}
