"""What ships inside the package: the embedded demo models, the sample image, and their default export.

The default export is made once, on first use, into the user's cache folder (``$XDG_CACHE_HOME/hpcm-deploy``
on Linux, ``~/Library/Caches/hpcm-deploy`` on macOS, ``%LOCALAPPDATA%\\hpcm-deploy`` on Windows), or wherever
``HPCM_DEPLOY_DEFAULT_EXPORT`` points; it is remade when the embedded weights change. The CLI and the servers use
it when no export is given; :class:`~hpcm_deploy.Codec` itself always takes an explicit export.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from importlib import resources
from pathlib import Path

from ..errors import ExportError
from ..files import sha256_file, user_cache_dir

log = logging.getLogger(__name__)

DEMO_WEIGHTS = "demo_tiny_phase2.pt"
DEMO_BASE_WEIGHTS = "demo_tiny_base.pt"
SAMPLE = "sample.png"
ENV_EXPORT = "HPCM_DEPLOY_DEFAULT_EXPORT"


def data_path(name: str) -> Path:
    """A file shipped in ``hpcm_deploy/data``."""
    return Path(str(resources.files("hpcm_deploy") / "data" / name))


def demo_weights(base: bool = False) -> Path:
    path = data_path(DEMO_BASE_WEIGHTS if base else DEMO_WEIGHTS)
    if not path.is_file():
        raise ExportError(f"the embedded demo weights are missing ({path}); reinstall hpcm-deploy")
    return path


def default_export_dir(base: bool = False) -> Path:
    """Where the embedded model's export lives (the Base twin's beside it, with ``-base`` appended)."""
    root = Path(os.environ[ENV_EXPORT]) if os.environ.get(ENV_EXPORT) else user_cache_dir() / "demo"
    return root.with_name(root.name + "-base") if base else root


def default_export(root: str | os.PathLike | None = None, progress: Callable[[str, float], None] | None = None,
                   jobs: int | None = None, base: bool = False,
                   announce: Callable[[Path, int], None] | None = None) -> Path:
    """The export of the embedded demo model (``base``: of its tiny HPCM-Base twin), made once if missing or
    stale. ``announce(root, stages)`` is called once before an export starts (a command line shows its own
    line and bar then); without it the export is announced as a log warning."""
    from ..artifacts.export import Manifest

    root = Path(root) if root is not None else default_export_dir(base)
    weights = demo_weights(base)
    digest = sha256_file(weights)
    try:
        if Manifest.load(root, verify_hashes=False).extra.get("source_sha256") == digest:
            return root
    except ExportError:
        pass
    from ..exporting.onnx_export import export_model
    from ..models.api import load_model

    model = load_model(checkpoint=weights, seed=None)
    if announce is not None:
        from ..stages import build_program

        announce(root, len(build_program(model.config).stages))
    else:
        log.warning("exporting the embedded demo model to %s (once; about a minute and a half on 2 cores)", root)
    export_model(model, root, "demo-base" if base else "demo", jobs=jobs, progress=progress,
                 source=f"embedded {weights.name}", extra={"source_sha256": digest})
    return root
