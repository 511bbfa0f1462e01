"""Helpers shared by the tests."""

from __future__ import annotations

import torch

import hpcm_deploy as hd
from hpcm_deploy.image import random_image
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
    """Smooth random images (one random value per 16 pixels, interpolated, plus 5 % white noise)."""
    return random_image(batch, (height, width), seed, noise=0.05, cell=16)
