"""Progress that reads like a tool, not a log: one bar for work done stage by stage (an export), per-stage lines
only with ``-v``; and, for tables, plain text when the output is not a terminal."""

from __future__ import annotations

import logging
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn


def verbose() -> bool:
    """``-v`` was given (the CLI's log level is INFO or lower)."""
    return logging.getLogger().isEnabledFor(logging.INFO)


class StageBar:
    """``with StageBar("exporting") as bar: bar.start(18); ...; bar.done("g_a", 4.2)``: one transient bar on
    stderr; :meth:`start` may print one plain line first. Nothing is shown until :meth:`start` is called, so work
    that turns out not to be needed (an export already in the cache) prints nothing."""

    def __init__(self, what: str) -> None:
        self.console = Console(stderr=True)
        self._progress = Progress(TextColumn(f"{what} {{task.description}}"), BarColumn(), MofNCompleteColumn(),
                                  TimeElapsedColumn(), console=self.console, transient=True,
                                  disable=not self.console.is_terminal)  # a log file gets no bar (nor a blank line)
        self._task = None
        self._verbose = verbose()

    def __enter__(self) -> StageBar:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._task is not None:
            self._progress.stop()

    def start(self, total: int, line: str | None = None) -> None:
        if line:
            self.console.print(line, markup=False, highlight=False, soft_wrap=True)
        self._progress.start()
        self._task = self._progress.add_task("", total=total)

    def done(self, stage: str, seconds: float) -> None:
        if self._task is None:
            self.start(0)
        if self._verbose:
            self._progress.console.print(f"  {stage:10s} {seconds:6.1f} s", markup=False, highlight=False)
        self._progress.update(self._task, advance=1, description=stage)


def demo_export(base: bool = False) -> Path:
    """The embedded demo model's export (``base``: its HPCM-Base twin's), made on first use with one line and a
    bar."""
    from ..app.bundled import default_export

    with StageBar("exporting") as bar:
        def announce(root: Path, stages: int) -> None:
            bar.start(stages, f"exporting the embedded demo model{' (Base)' if base else ''} to {root}: once, "
                      "about a minute and a half on 2 cores")

        return default_export(base=base, progress=bar.done, announce=announce)


def print_table(table) -> None:
    """A rich table on stdout: drawn for a terminal; as plain aligned text when stdout is a pipe or a file, where
    rich would squeeze it into 80 columns and cut the cells ("PyTor...")."""
    import sys

    from rich.text import Text

    if sys.stdout.isatty():
        Console().print(table)
        return

    def plain(cell) -> str:
        return cell.plain if isinstance(cell, Text) else Text.from_markup(str(cell)).plain

    columns = [[plain(c.header), *(plain(v) for v in c.cells)] for c in table.columns]
    widths = [max(len(v) for v in col) for col in columns]
    if table.title:
        print(plain(table.title))
    for r in range(len(columns[0]) if columns else 0):
        cells = [col[r].rjust(w) if c.justify == "right" else col[r].ljust(w)
                 for col, w, c in zip(columns, widths, table.columns)]
        print("  ".join(cells).rstrip())
