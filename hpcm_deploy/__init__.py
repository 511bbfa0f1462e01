"""hpcm-deploy: deployment toolkit for the HPCM learned image codec and its Phase 2 multi-reference extension.

The public names are imported on first use, so that ``import hpcm_deploy`` (and the command line's ``--help``)
stays fast and loads neither torch nor ONNX Runtime until something needs them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._lazy import lazy_names
from ._version import __version__

_NAMES = {
    "Codec": "codec", "CompressResult": "codec", "DecompressResult": "codec",
    "PRESETS": "config", "HPCMConfig": "config", "get_config": "config",
    "BackendError": "errors", "BitstreamError": "errors", "CheckpointError": "errors", "ConfigError": "errors",
    "ExportError": "errors", "HPCMError": "errors", "InputError": "errors",
    "crop_image": "image", "pad_image": "image", "padded_size": "config",
    "HPCM": "models", "build_model": "models", "load_model": "models", "parameter_counts": "models",
    "default_export": "app.bundled",
}

__all__ = [
    "HPCM", "PRESETS", "BackendError", "BitstreamError", "CheckpointError", "Codec", "CompressResult", "ConfigError",
    "DecompressResult", "ExportError", "HPCMConfig", "HPCMError", "InputError", "__version__", "build_model",
    "crop_image", "default_export", "get_config", "load_model", "pad_image", "padded_size", "parameter_counts",
]


__getattr__ = lazy_names(__name__, _NAMES, globals())


def __dir__() -> list[str]:
    return sorted(__all__)


if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs
    from .app.bundled import default_export
    from .codec import Codec, CompressResult, DecompressResult
    from .config import PRESETS, HPCMConfig, get_config, padded_size
    from .errors import BackendError, BitstreamError, CheckpointError, ConfigError, ExportError, HPCMError, InputError
    from .image import crop_image, pad_image
    from .models import HPCM, build_model, load_model, parameter_counts
