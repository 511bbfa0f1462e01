"""``hpcm-deploy info``: a preset's configuration and parameter counts."""

from __future__ import annotations

import json

import click

from ..config import PRESETS, get_config
from . import main
from .options import parse_overrides, set_option


@main.command()
@click.argument("preset", type=click.Choice(list(PRESETS)), default="phase2")
@set_option
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def info(preset: str, overrides: tuple[str, ...], as_json: bool) -> None:
    """Show the configuration and parameter counts of PRESET, and what this CPU offers for bf16."""
    from ..backends.lowp import cpu_features
    from ..models.api import build_model, parameter_counts

    config = get_config(preset, **parse_overrides(overrides))
    counts = parameter_counts(build_model(config, seed=0))
    cpu = cpu_features()
    if as_json:
        click.echo(json.dumps({"preset": preset, "config": config.to_dict(), "parameters": counts,
                               "cpu": {**cpu.as_dict(), "found": cpu.describe()}}, indent=2))
        return
    click.echo(f"{preset} ({config.family})")
    for key, value in config.to_dict().items():
        click.echo(f"  {key:30s} {value}")
    click.echo("parameters")
    for key, value in counts.items():
        click.echo(f"  {key:52s} {value:>12,d}  ({value / 1e6:.2f} M)")
    bf16 = "torch:bf16 runs natively" if cpu.native_bf16 else "torch:bf16 is refused here"
    click.echo(f"cpu: {cpu.describe()} ({bf16})")
