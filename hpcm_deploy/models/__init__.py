"""The PyTorch reference model (HPCM-Base and Phase 2)."""

from .api import build_model, load_model, parameter_counts
from .hpcm import CODING_STEPS, HPCM

__all__ = ["CODING_STEPS", "HPCM", "build_model", "load_model", "parameter_counts"]
