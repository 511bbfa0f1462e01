"""``hpcm-deploy info``: a preset's configuration and parameter counts."""

from __future__ import annotations

import json

import click

from ..config import PRESETS, get_config
from ..models.api import build_model
from ..models.hpcm import HPCM
from . import main
from .options import parse_overrides, set_option

_PARTS = {
    "analysis/synthesis (g_a, g_s)": ("g_a.", "g_s."),
    "hyperprior (h_a, h_s, z model)": ("h_a.", "h_s.", "means_hyper", "scales_hyper"),
    "context model (priors, attention, adaptive params)": (
        "y_spatial_prior", "attn_", "context_net", "adaptive_params_list"),
    "memory banks": ("memory_bank_",),
    "hierarchical transfer": ("hierarchical_manager",),
}


def parameter_counts(model: HPCM) -> dict[str, int]:
    """Parameters per part of the model, plus ``total`` and ``total without adaptive params``."""
    counts = {part: 0 for part in _PARTS}
    for name, p in model.named_parameters():
        part = next(k for k, prefixes in _PARTS.items() if name.startswith(prefixes))
        counts[part] += p.numel()
    counts["total"] = sum(p.numel() for p in model.parameters())
    counts["total without adaptive params"] = counts["total"] - sum(
        p.numel() for n, p in model.named_parameters() if n.startswith("adaptive_params_list"))
    return counts


@main.command()
@click.argument("preset", type=click.Choice(list(PRESETS)), default="phase2")
@set_option
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def info(preset: str, overrides: tuple[str, ...], as_json: bool) -> None:
    """Show the configuration and parameter counts of PRESET."""
    config = get_config(preset, **parse_overrides(overrides))
    counts = parameter_counts(build_model(config, seed=0))
    if as_json:
        click.echo(json.dumps({"preset": preset, "config": config.to_dict(), "parameters": counts}, indent=2))
        return
    click.echo(f"{preset} ({config.family})")
    for key, value in config.to_dict().items():
        click.echo(f"  {key:30s} {value}")
    click.echo("parameters")
    for key, value in counts.items():
        click.echo(f"  {key:52s} {value:>12,d}  ({value / 1e6:.2f} M)")
