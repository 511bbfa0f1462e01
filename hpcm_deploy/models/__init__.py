"""The PyTorch reference model (HPCM-Base and Phase 2)."""

from .api import build_model, load_model
from .hpcm import CODING_STEPS, HPCM, SIZE_MULTIPLE

__all__ = ["CODING_STEPS", "HPCM", "SIZE_MULTIPLE", "build_model", "load_model"]
