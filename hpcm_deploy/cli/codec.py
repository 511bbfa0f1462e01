"""``hpcm-deploy compress``, ``decompress`` and ``demo``."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from ..config import DEFAULT_MAX_PIXELS
from ..errors import InputError
from . import main
from .options import (
    backend_option,
    check_runnable,
    device_option,
    engine_options,
    engines_option,
    export_option,
    parse_memory,
    resolve_export,
)
from .progress import print_table

TOTAL_STEPS = 11  # coding steps of a full decode (scale 1: 2, scale 2: 3, scale 3: 6)


def _run_jobs(results: Iterator[Any], total: int, verb: str, as_json: bool) -> None:
    """Print what :func:`~hpcm_deploy.codec.jobs.code_jobs` did per file (a bar while it works); a lone file's
    failure, or any failure among several, is exit status 1."""
    console = Console(stderr=True)
    summary, failures = [], 0
    with Progress(TextColumn(f"{verb} {{task.description}}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=console, transient=True,
                  disable=total < 2 or not console.is_terminal) as bar:
        task = bar.add_task("", total=total)
        for r in results:
            bar.update(task, description=r.source.name)
            if r.error is not None:
                failures += 1
                where = "" if str(r.source) in str(r.error) else f"{r.source}: "  # the message may name the file
                bar.console.print(f"error: {where}{r.error}", markup=False, highlight=False, soft_wrap=True)
                if total == 1:
                    raise SystemExit(1) from None
            else:
                summary.append({"input": str(r.source), "output": str(r.output), **r.summary})
            bar.advance(task)
    if as_json:
        click.echo(json.dumps({"files": summary, "failed": failures}, indent=2))
    else:
        for row in summary:
            extra = f"  {row['bpp']:.4f} bpp" if "bpp" in row else ""
            if row.get("steps", TOTAL_STEPS) < TOTAL_STEPS:  # a preview or a truncated stream
                extra += f", {row['steps']} of {TOTAL_STEPS} coding steps decoded"
            click.echo(f"{row['input']} -> {row['output']}{extra}")
    if failures:
        raise SystemExit(1)


def _codec(export: str | None, backend: str, device: str, engines: str | None, max_pixels: int, memory_budget: str,
           margin: float | None = None, legacy: bool = False, alpha: str = "refuse"):
    from ..codec import Codec
    from ..image import parse_alpha
    from ..runtime.decisions import margins_for

    margins = margins_for(margin)  # checked before an export is made or loaded
    parse_alpha(alpha)
    extra = engine_options(engines, backend)
    check_runnable(backend, device)
    return Codec(resolve_export(export), backend=backend, device=device, margins=margins,
                 max_pixels=max_pixels or None, memory_budget=parse_memory(memory_budget), legacy_streams=legacy,
                 alpha=alpha, **extra)


codec_options = [
    export_option, backend_option, device_option,
    engines_option,
    click.option("--max-pixels", type=click.IntRange(min=0), default=DEFAULT_MAX_PIXELS, show_default=True,
                 help="Refuse images (compress) and streams (decompress) of more pixels than this; 0: no limit."),
    click.option("--memory-budget", "--memory", "memory_budget", default="auto", show_default=True,
                 help="Working memory of the analysis/synthesis transforms, e.g. 512M or 4G: above it they run in "
                 "overlapping tiles (auto: 1 GiB, or a quarter of a smaller machine; none: never tile). --memory is "
                 "its old name."),
    click.option("--json", "as_json", is_flag=True, help="Print a JSON summary (bits per pixel, time per phase)."),
]


def _with_codec_options(fn):
    for opt in reversed(codec_options):
        fn = opt(fn)
    return fn


@main.command()
@click.argument("inputs", nargs=-1, required=True)
@click.option("-o", "--out", required=True, help="Output file (one input) or folder.")
@click.option("--margin", type=float, default=None,
              help="Signal every decision this close to its discontinuity (log distance of a scale to a bucket edge; "
                   "top-k score gap). Default 2e-5 (fp32 decoders); about 4e-3 lets fp16-recipe decoders read the "
                   "stream; 0 writes no side information.")
@click.option("--legacy-streams", is_flag=True, help="Write format version 1/2 streams (CompressAI payloads, "
              "readable by hpcm-deploy before lane payloads) instead of version 3.")
@click.option("--alpha", default="refuse", show_default=True, metavar="refuse|drop|COLOUR",
              help="Images with an alpha channel (RGBA, LA, transparent PNG): refuse them, drop the alpha, or "
                   "composite them on a background colour (white, black, #rrggbb).")
@_with_codec_options
def compress(inputs, out, margin, legacy_streams, alpha, export_dir, backend, device, engines, max_pixels,
             memory_budget, as_json) -> None:
    """Compress images (files or folders) to .hpcm streams."""
    from ..codec.jobs import code_jobs, plan
    from ..image import probe_image

    jobs = plan(inputs, out, "compress")
    if len(jobs) == 1:
        probe_image(jobs[0][0])  # a lone bad input: refused before an export is made or loaded
    codec = _codec(export_dir, backend, device, engines, max_pixels, memory_budget, margin, legacy_streams, alpha)
    _run_jobs(code_jobs(codec, jobs, "compress"), len(jobs), "compressing", as_json)


@main.command()
@click.argument("inputs", nargs=-1, required=True)
@click.option("-o", "--out", required=True, help="Output file (one input) or folder (PNG files).")
@click.option("--preview", help="Decode only the first coding steps: s1 (scale 1, 2 steps), s2 (scales 1-2, 5 "
              "steps) or a step count 1-11; the rest of the image is predicted from them.")
@click.option("--fill", type=click.Choice(["thumbnail", "context"]), default="thumbnail", show_default=True,
              help="How --preview draws: thumbnail (the last complete scale drawn small and enlarged, 7-18 % of a "
              "full decode's time) or context (the context model's predictions for the rest, about a full "
              "decode's time, 4-5 dB sharper).")
@click.option("--partial", is_flag=True, help="Accept truncated streams (the first bytes of a version 3 file): "
              "decode as far as they go.")
@_with_codec_options
def decompress(inputs, out, preview, fill, partial, export_dir, backend, device, engines, max_pixels, memory_budget,
               as_json) -> None:
    """Decompress .hpcm streams (files or folders) to PNG images."""
    from ..codec.jobs import code_jobs, plan

    steps = _preview_steps(preview)
    jobs = plan(inputs, out, "decompress")
    codec = _codec(export_dir, backend, device, engines, max_pixels, memory_budget)
    _run_jobs(code_jobs(codec, jobs, "decompress", preview=steps, fill=fill, partial=partial), len(jobs),
              "decompressing", as_json)


@main.command()
@export_option
@click.option("--image", type=click.Path(dir_okay=False, exists=True), help="Image to code (default: the bundled "
              "sample).")
@click.option("--no-anchors", is_flag=True, help="Skip the comparison with JPEG, WebP and AVIF (AVIF's encoder "
              "takes a few seconds).")
@click.option("--compare", "compare_png", type=click.Path(dir_okay=False), help="Also write this PNG: one crop "
              "of the image as the embedded Phase 2 and Base models, JPEG, WebP and AVIF decode it at the same bpp.")
@click.option("--json", "as_json", is_flag=True)
def demo(export_dir, image, no_anchors, compare_png, as_json) -> None:
    """The main job: export the default model if needed, code the sample image with ONNX Runtime, check it, and
    compare it with JPEG, WebP and AVIF at the same bits per pixel."""
    from ..app.demo import run_demo

    if compare_png and image and Path(compare_png).resolve() == Path(image).resolve():
        raise InputError(f"--compare {compare_png} is the input image; choose another file")
    report = run_demo(resolve_export(export_dir), image, anchors=not no_anchors)
    if as_json:
        click.echo(json.dumps(report.as_dict(), indent=2))
    else:
        _print_demo(report)
    if compare_png:
        from ..app.demo import write_comparison

        shown = write_comparison(report.image, compare_png)
        click.echo(f"wrote {compare_png}: " + ", ".join(f"{k} {v:.2f} dB" for k, v in shown["psnr"].items())
                   + f" at <= {shown['bpp']:.4f} bpp", err=True)
    if not report.ok:
        raise SystemExit(1)


def _print_demo(r) -> None:
    console = Console(soft_wrap=True)
    console.print(f"[bold]{Path(r.image).name}[/] {r.width}x{r.height} with {r.export} on onnxruntime (CPU)")
    console.print(f"  {r.bytes} bytes, {r.bpp:.4f} bpp, PSNR {r.psnr:.2f} dB")
    names = {"jpeg": "JPEG (4:2:0, optimised)", "webp": "WebP (method 6)", "avif": "AVIF (speed 4)"}
    for name, value in r.anchors.items():
        if value is None:
            console.print(f"  {names[name]} cannot code this image at {r.bpp:.4f} bpp (its lowest quality is larger)")
        else:
            console.print(f"  {names[name]} at the same bpp: PSNR {value:.2f} dB (the model: {r.psnr - value:+.2f} dB)")
    console.print(f"  round trip exact (decoded symbols = encoded): {'yes' if r.round_trip_exact else 'NO'}")
    console.print(f"  payload identical to the PyTorch reference stages' (z and y rANS streams): "
                  f"{'yes' if r.matches_pytorch else 'NO'}")
    console.print(f"  encode {r.encode_seconds:.3f} s, decode {r.decode_seconds:.3f} s")
    table = Table(title="time per stage (ms)")
    table.add_column("stage")
    table.add_column("encode", justify="right")
    table.add_column("decode", justify="right")
    for stage in dict.fromkeys([*r.encode_stages, *r.decode_stages]):
        enc, dec = r.encode_stages.get(stage), r.decode_stages.get(stage)
        table.add_row(stage, f"{1000 * enc:.1f}" if enc is not None else "", f"{1000 * dec:.1f}" if dec is not None
                      else "")
    for phase in ("network", "entropy", "transfer", "host"):
        table.add_row(f"[italic]{phase}[/]", f"{1000 * r.encode_phases.get(phase, 0):.1f}",
                      f"{1000 * r.decode_phases.get(phase, 0):.1f}")
    print_table(table)


def _preview_steps(text: str | None) -> int | None:
    from ..runtime.preview import parse_preview

    try:
        return parse_preview(text)
    except InputError as exc:
        raise InputError(f"--{exc}") from None
