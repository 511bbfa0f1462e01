"""``polygraphy check lint`` on the graphs of an export, with concrete input shapes."""

from __future__ import annotations

import contextlib
import io

from ..artifacts.export import Manifest
from ..artifacts.shapes import shape_at


def polygraphy_lint(manifest: Manifest, stage: str, size: tuple[int, int] = (256, 256),
                    batch: int = 1) -> tuple[bool, str]:
    """``polygraphy check lint`` on one stage, with concrete input shapes (a derived dimension like
    ``16*hk`` cannot be guessed by its data loader); returns (passed, its output)."""
    from polygraphy.tools import main as polygraphy_main

    program = manifest.program()
    shapes = [f"{n}:{list(shape_at(program.tensors[n].shape, size, batch))}".replace(" ", "")
              for n in program.stages[stage].inputs]
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf):
        status = polygraphy_main(["check", "lint", str(manifest.stage_path(stage)), "--input-shapes", *shapes])
    return status == 0, buf.getvalue()
