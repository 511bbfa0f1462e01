"""Padding to the model's size multiple and cropping back (centred zero padding, as the official test)."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from .models.hpcm import SIZE_MULTIPLE


def padded_size(height: int, width: int, multiple: int = SIZE_MULTIPLE) -> tuple[int, int]:
    """The smallest multiple of ``multiple`` at least ``height`` x ``width``."""
    return (-(-height // multiple) * multiple, -(-width // multiple) * multiple)


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
