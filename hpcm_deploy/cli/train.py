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
    start = resolve_init(init) if init else None
    with TrainBar(steps) as bar:
        weights = train(out, settings, resume=not no_resume, init=start, progress=bar.update, notice=bar.say)
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


class TrainBar:
    """One bar for a training run: step, loss, PSNR and bpp (means of the last 20 steps) and the time left. When
    stderr is not a terminal (a log file), one plain line every 100 steps instead. Off with -v, which prints the
    log's lines."""

    WINDOW, PLAIN_EVERY = 20, 100

    def __init__(self, total: int) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        from .progress import verbose

        self.total = total
        self.console = Console(stderr=True)
        self.live = self.console.is_terminal and not verbose()
        self.plain = not self.console.is_terminal and not verbose()
        self._bar = Progress(TextColumn("step"), MofNCompleteColumn(), BarColumn(), TextColumn("{task.description}"),
                             TextColumn("left"), TimeRemainingColumn(), console=self.console, transient=True,
                             disable=not self.live)
        self._task = self._bar.add_task("", total=total)
        self._recent: list[dict[str, float]] = []
        self._start_step, self._started = 0, 0.0

    def __enter__(self) -> TrainBar:
        self._bar.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._bar.stop()

    def say(self, text: str) -> None:
        self._bar.console.print(text, markup=False, highlight=False, soft_wrap=True)

    def update(self, step: int, stats: dict[str, float]) -> None:
        import time

        if not stats:  # the step the run starts at
            self._start_step, self._started = step, time.monotonic()
            self._bar.update(self._task, completed=step)
            return
        self._recent = [*self._recent[-(self.WINDOW - 1):], stats]
        mean = {k: sum(r[k] for r in self._recent) / len(self._recent) for k in ("loss", "bpp", "psnr")}
        text = f"loss {mean['loss']:.4f}  PSNR {mean['psnr']:.2f} dB  {mean['bpp']:.4f} bpp"
        self._bar.update(self._task, completed=step, description=text)
        if self.plain and (step % self.PLAIN_EVERY == 0 or step == self.total):
            done = step - self._start_step
            left = (time.monotonic() - self._started) / done * (self.total - step) if done else 0.0
            self.say(f"step {step}/{self.total}  {text}  ({left / 3600:.1f} h left)")
