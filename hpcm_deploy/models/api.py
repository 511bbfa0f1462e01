"""``load_model``: a ready-to-compress reference model from a preset name and an optional checkpoint."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import torch

from ..config import HPCMConfig, get_config
from ..errors import CheckpointError
from .hpcm import HPCM
from .loading import load_into, read_checkpoint


def build_model(config: HPCMConfig, seed: int | None = None) -> HPCM:
    """A freshly initialised model; with ``seed``, the same weights on every run of the same torch."""
    if seed is None:
        return HPCM(config)
    devices = []  # fork the RNG so seeding here does not disturb the caller's random stream
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        return HPCM(config)


def load_model(name: str | None = None, checkpoint: str | os.PathLike | Mapping[str, Any] | None = None, *,
               seed: int | None = 0, device: str | torch.device = "cpu", **overrides: Any) -> HPCM:
    """The reference model in eval mode with its CDF tables built, ready to compress.

    ``name`` is a preset (``hpcm-base``, ``phase2``, ``tiny-phase2``...); any config field can be overridden by
    keyword. ``checkpoint`` may be a raw ``state_dict``, ``{"state_dict": ...}``, or carry a ``module.`` prefix:
    official HPCM-Base files load into ``hpcm-base`` and ``phase2``; Phase 2 reference-code files into
    ``phase2``; files written by ``hpcm-deploy train`` carry their config, so ``name`` may be omitted.
    Without a checkpoint the weights are a seeded random initialisation (``seed=None`` for an unseeded one).
    """
    state = ckpt_config = None
    if checkpoint is not None:
        state, ckpt_config = read_checkpoint(checkpoint)
    if name is None:
        if ckpt_config is None:
            raise CheckpointError("no preset given and the checkpoint carries no configuration; pass a preset name")
        config = HPCMConfig.from_dict(ckpt_config).replace(**overrides)
    else:
        config = get_config(name, **overrides)
    model = build_model(config, seed)
    if state is not None:
        load_into(model, state)
    model.update(force=True)
    return model.to(device).eval()


_PARTS = {
    "analysis/synthesis (g_a, g_s)": ("g_a.", "g_s."),
    "hyperprior (h_a, h_s, z model)": ("h_a.", "h_s.", "means_hyper", "scales_hyper"),
    "context model (priors, attention, adaptive params)": (
        "y_spatial_prior", "attn_", "context_net", "adaptive_params_list"),
    "memory banks": ("memory_bank_",),
    "hierarchical transfer": ("hierarchical_manager",),
}


def parameter_counts(model: HPCM) -> dict[str, int]:
    """Parameters per part of the model, plus ``total`` and ``total without adaptive params`` (the official
    count leaves the adaptive parameters out)."""
    counts = {part: 0 for part in _PARTS}
    for name, p in model.named_parameters():
        part = next(k for k, prefixes in _PARTS.items() if name.startswith(prefixes))
        counts[part] += p.numel()
    counts["total"] = sum(p.numel() for p in model.parameters())
    counts["total without adaptive params"] = counts["total"] - sum(
        p.numel() for n, p in model.named_parameters() if n.startswith("adaptive_params_list"))
    return counts


LATENT_SPREAD = 20.0  # the gain that gives a random model's latent realistic magnitudes


def spread_latent(model: HPCM, gain: float = LATENT_SPREAD) -> HPCM:
    """Scale the last analysis layer so that a model with random weights has a latent of realistic magnitudes (a
    random ``g_a`` gives almost all-zero symbols, which would make tests, checks and benchmarks trivially easy);
    in place, and returned."""
    with torch.no_grad():
        model.g_a.branch[-1].weight.mul_(gain)
    return model
