"""``hpcm-deploy build-engine``."""

from __future__ import annotations

import click
from rich.console import Console

from . import main
from .options import parse_size, parse_workspace


@main.command("build-engine")
@click.argument("export_dir", type=click.Path(file_okay=False))
@click.option("--out", type=click.Path(file_okay=False), help="Output directory (default: "
              "engines/<name>/<gpu-arch>-trt<version>-<precision>).")
@click.option("--precision", type=click.Choice(["fp32", "fp16"]), default=None,
              help="fp16: the mixed-precision recipe (docs/tensorrt.md), applied to an fp32 export's graphs before "
              "building. Default: the export's own precision (an fp16 export builds fp16 engines only).")
@click.option("--min-size", default="256x256", show_default=True, help="Smallest image size HxW (padded to 256).")
@click.option("--opt-size", default="512x768", show_default=True, help="Size HxW TensorRT tunes for.")
@click.option("--max-size", default="2048x2048", show_default=True, help="Largest image size HxW.")
@click.option("--max-batch", type=int, default=1, show_default=True, help="Largest batch the engines run "
              "(Codec and serve batch at most this many images).")
@click.option("--tf32/--no-tf32", default=False, show_default=True, help="Let every stage use TF32 tensor cores. "
              "Off by default: g_a's output decides symbols, so TF32 engines need fp16-wide signalling margins to "
              "interoperate with fp32 streams.")
@click.option("--strip-weights", is_flag=True, help="Weight-stripped plans: no weights in the engine folder; each "
              "engine is refitted at load from the export's shared weight file (docs/tensorrt.md).")
@click.option("--timing-cache", type=click.Path(dir_okay=False), help="Timing cache to start from and update "
              "(its folder is created; a cache from another GPU or TensorRT version is replaced, with a notice).")
@click.option("--workspace", default="4G", show_default=True, help="Builder workspace, e.g. 2G or 512M.")
@click.option("--device", default="cuda", show_default=True, help="cuda or cuda:N: the GPU to build for.")
def build_engine(export_dir, out, precision, min_size, opt_size, max_size, max_batch, tf32, strip_weights,
                 timing_cache, workspace, device) -> None:
    """Build one TensorRT engine per stage of an export."""
    from ..artifacts.export import Manifest
    from ..artifacts.shapes import SizeRange
    from ..exporting.engine_build import build_engines

    manifest = Manifest.load(export_dir)
    min_hw, opt_hw, max_hw = (parse_size(t) if t is not None else None for t in (min_size, opt_size, max_size))
    sizes = SizeRange.from_sizes(min_hw, opt_hw, max_hw, max_batch)
    console = Console(stderr=True)
    root = build_engines(manifest, out, precision, sizes, timing_cache, parse_workspace(workspace), device, tf32,
                         strip_weights, progress=lambda s, sec: console.print(f"  built {s:10s} {sec:6.1f} s"))
    click.echo(f"wrote {root}")
