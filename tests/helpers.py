"""Helpers shared by the tests."""

from __future__ import annotations

import torch

import hpcm_deploy as hd
from hpcm_deploy.models.api import LATENT_SPREAD, spread_latent


def spread(model: hd.HPCM, gain: float = LATENT_SPREAD) -> hd.HPCM:
    """A random model with realistic latent magnitudes (:func:`hpcm_deploy.models.api.spread_latent`)."""
    return spread_latent(model, gain)


def open_gates(model: hd.HPCM) -> None:
    """A fresh bank's gate is nearly closed; open it so the banks visibly change the context in tests."""
    with torch.no_grad():
        for s in (1, 2, 3):
            bank = model.bank(s)
            if bank is not None:
                bank.fusion_gate[0].bias.zero_()


def images(batch: int, height: int, width: int, seed: int = 0) -> torch.Tensor:
    """Smooth random images (low-frequency noise), more image-like than white noise."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(batch, 3, max(1, height // 16), max(1, width // 16), generator=g)
    x = torch.nn.functional.interpolate(coarse, size=(height, width), mode="bilinear", align_corners=False)
    return (x + 0.05 * torch.rand(batch, 3, height, width, generator=g)).clamp(0, 1)
