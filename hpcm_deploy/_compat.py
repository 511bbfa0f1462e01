"""Imports with known noise: CompressAI pulls in torchvision, which warns about torch.jit.script."""

from __future__ import annotations

import warnings
from types import ModuleType


def compressai_ans() -> ModuleType:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        import compressai.ans as ans
    return ans


def pmf_to_quantized_cdf(pmf: list[float], precision: int) -> list[int]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        from compressai._CXX import pmf_to_quantized_cdf as fn
    return fn(pmf, precision)
