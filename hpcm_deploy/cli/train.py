"""``hpcm-deploy train``: a small model on the CPU from bundled images."""

from __future__ import annotations

import os
from pathlib import Path

import click

from ..app.bundled import demo_weights
from ..config import PRESETS
from ..errors import CheckpointError
from . import main
from .options import parse_overrides, set_option


@main.command("train")
@click.option("--preset", type=click.Choice(list(PRESETS)), default="tiny-phase2", show_default=True)
@click.option("--lambda", "lmbda", type=float, default=0.0035, show_default=True, help="Rate-distortion trade-off.")
@click.option("--steps", type=int, default=10000, show_default=True)
@click.option("--batch", type=int, default=8, show_default=True)
@click.option("--crop", type=int, default=256, show_default=True)
@click.option("--lr", type=float, default=5e-4, show_default=True)
@click.option("--lr-drop-at", type=click.FloatRange(0, 1), default=0.8, show_default=True,
              help="Fraction of --steps after which the learning rate drops to lr/5 (changing --steps when resuming "
              "moves the drop).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--threads", type=int, default=1, show_default=True, help="torch threads (two runs side by side "
              "on one thread each use a 2-core machine best).")
@click.option("--out", type=click.Path(file_okay=False), required=True, help="Run directory (checkpoint, log, "
              "final model.pt).")
@click.option("--no-resume", is_flag=True, help="Start over even if OUT holds a checkpoint.")
@click.option("--init", metavar="WEIGHTS", help="Start a new run from these weights instead of a random "
              "initialisation: a file, or demo-phase2 / demo-base (the embedded demo models). The model may "
              "differ from them only in its banks (--set max_refs_s1=0 ...): shared layers are copied.")
@set_option
def train_cmd(preset, lmbda, steps, batch, crop, lr, lr_drop_at, seed, threads, out, no_resume, init,
              overrides) -> None:
    """Train a model with the HPCM rate-distortion loss; resumes from OUT/checkpoint.pt."""
    from ..training.train import TrainSettings, train

    settings = TrainSettings(preset=preset, lmbda=lmbda, steps=steps, batch=batch, crop=crop, lr=lr,
                             lr_final=lr / 5, lr_drop_at=lr_drop_at, seed=seed, threads=threads,
                             overrides=tuple(sorted(parse_overrides(overrides).items())))
    weights = train(out, settings, resume=not no_resume, init=resolve_init(init) if init else None)
    click.echo(f"wrote {weights}")


INIT_NAMES = {"demo-phase2": False, "demo-base": True}  # --init names of the embedded demo weights (base?)


def resolve_init(init: str | os.PathLike) -> Path:
    """``--init``'s weights: an embedded demo model by name (``demo-phase2``, ``demo-base``) or a file."""
    if str(init) in INIT_NAMES:
        return demo_weights(base=INIT_NAMES[str(init)])
    path = Path(init)
    if not path.is_file():
        raise CheckpointError(f"--init {init}: no such file (or use {' / '.join(INIT_NAMES)}, the embedded "
                              "demo models)")
    return path
