"""hpcm-deploy: deployment toolkit for the HPCM learned image codec and its Phase 2 multi-reference extension."""

from .codec import Codec
from .config import PRESETS, HPCMConfig, get_config
from .errors import BackendError, BitstreamError, CheckpointError, ConfigError, ExportError, HPCMError, InputError
from .image import crop_image, pad_image, padded_size
from .models import HPCM, build_model, load_model

__version__ = "0.1.0"

__all__ = [
    "HPCM", "PRESETS", "Codec", "BackendError", "BitstreamError", "CheckpointError", "ConfigError", "ExportError",
    "HPCMConfig", "HPCMError", "InputError", "build_model", "crop_image", "get_config", "load_model",
    "pad_image", "padded_size", "__version__",
]
