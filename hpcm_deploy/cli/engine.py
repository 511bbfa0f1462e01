"""``hpcm-deploy build-engine``."""

from __future__ import annotations

import click
from rich.console import Console

from . import main
from .options import parse_size


@main.command("build-engine")
@click.argument("export_dir", type=click.Path(file_okay=False))
@click.option("--out", type=click.Path(file_okay=False), help="Output directory (default: "
              "engines/<name>/<gpu-arch>-trt<version>-<precision>).")
@click.option("--precision", type=click.Choice(["fp32", "fp16"]), default="fp32", show_default=True,
              help="fp16: the mixed-precision recipe (docs/tensorrt.md), applied to the graphs before building.")
@click.option("--min-size", default="256x256", show_default=True, help="Smallest image size (padded to 256).")
@click.option("--opt-size", default="768x512", show_default=True, help="Size TensorRT tunes for.")
@click.option("--max-size", default="2048x2048", show_default=True, help="Largest image size.")
@click.option("--max-batch", type=int, default=1, show_default=True)
@click.option("--timing-cache", type=click.Path(dir_okay=False), help="Timing cache to reuse and update.")
@click.option("--workspace", default="4G", show_default=True, help="Builder workspace, e.g. 2G or 512M.")
@click.option("--device", default="cuda", show_default=True)
def build_engine(export_dir, out, precision, min_size, opt_size, max_size, max_batch, timing_cache, workspace,
                 device) -> None:
    """Build one TensorRT engine per stage of an export."""
    from ..exporting.manifest import Manifest
    from ..trt.build import build_engines, parse_workspace
    from ..trt.profiles import SizeRange

    manifest = Manifest.load(export_dir)
    min_hw, opt_hw, max_hw = (parse_size(t) if t is not None else None for t in (min_size, opt_size, max_size))
    sizes = SizeRange.from_sizes(min_hw, opt_hw, max_hw, max_batch)
    console = Console(stderr=True)
    root = build_engines(manifest, out, precision, sizes, timing_cache, parse_workspace(workspace), device,
                         progress=lambda s, sec: console.print(f"  built {s:10s} {sec:6.1f} s"))
    click.echo(f"wrote {root}")

