"""Padding to the model's size multiple and cropping back (centred zero padding, as the official test), and
the smooth random images that exports, checks and benchmarks are traced and measured on."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ..config import SIZE_MULTIPLE, padded_size

__all__ = ["crop_image", "pad_image", "padded_size", "random_image"]


def _margins(height: int, width: int, padded: tuple[int, int]) -> tuple[int, int, int, int]:
    ph, pw = padded
    left, top = (pw - width) // 2, (ph - height) // 2
    return left, pw - width - left, top, ph - height - top


def pad_image(x: Tensor, multiple: int = SIZE_MULTIPLE) -> tuple[Tensor, tuple[int, int]]:
    """``x [B, C, H, W]`` centred in zeros up to the next multiple; returns it and the original ``(H, W)``."""
    h, w = x.shape[-2:]
    left, right, top, bottom = _margins(h, w, padded_size(h, w, multiple))
    return F.pad(x, (left, right, top, bottom)), (h, w)


def crop_image(x: Tensor, size: tuple[int, int]) -> Tensor:
    """Inverse of :func:`pad_image`: the centred ``size`` region of ``x``."""
    h, w = size
    left, _, top, _ = _margins(h, w, (x.shape[-2], x.shape[-1]))
    return x[..., top:top + h, left:left + w]


def random_image(batch: int, size: tuple[int, int], seed: int, noise: float = 0.03, cell: int = 32) -> Tensor:
    """``[batch, 3, H, W]`` in [0, 1]: smooth low-frequency noise (one random value per ``cell`` pixels,
    interpolated) plus a little white noise; more image-like than white noise, and the same for a seed."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(batch, 3, max(1, size[0] // cell), max(1, size[1] // cell), generator=g)
    x = F.interpolate(coarse, size=size, mode="bilinear", align_corners=False)
    if noise:
        x = x + noise * torch.rand(batch, 3, *size, generator=g)
    return x.clamp(0, 1)
