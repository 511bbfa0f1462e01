"""``hpcm-deploy compress``, ``decompress`` and ``demo``."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from ..errors import HPCMError, InputError
from ..files import write_atomic
from . import main

STREAM_SUFFIX = ".hpcm"


def _targets(inputs: tuple[str, ...], out: str, suffixes: set[str], new_suffix: str) -> list[tuple[Path, Path]]:
    from ..codec.images import list_images

    files = list_images(list(inputs), suffixes)
    if not files:
        raise InputError("no input files found")
    out_path = Path(out)
    single_file = len(files) == 1 and Path(inputs[0]).is_file() and not out_path.is_dir() and out_path.suffix
    if single_file:
        return [(files[0][0], out_path)]
    return [(f, out_path / rel.with_suffix(new_suffix)) for f, rel in files]


def _run_files(jobs: list[tuple[Path, Path]], work: Callable[[Path, Path], dict[str, Any]], verb: str,
               as_json: bool) -> None:
    console = Console(stderr=True)
    summary, failures = [], 0
    with Progress(TextColumn(f"{verb} {{task.description}}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=console, transient=True, disable=len(jobs) < 2) as bar:
        task = bar.add_task("", total=len(jobs))
        for src, dst in jobs:
            bar.update(task, description=src.name)
            try:
                summary.append({"input": str(src), "output": str(dst), **work(src, dst)})
            except HPCMError as exc:
                failures += 1
                bar.console.print(f"error: {src}: {exc}", markup=False, highlight=False, soft_wrap=True)
                if len(jobs) == 1:
                    raise SystemExit(1) from None
            bar.advance(task)
    if as_json:
        click.echo(json.dumps({"files": summary, "failed": failures}, indent=2))
    else:
        for row in summary:
            extra = f"  {row['bpp']:.4f} bpp" if "bpp" in row else ""
            click.echo(f"{row['input']} -> {row['output']}{extra}")
    if failures:
        raise SystemExit(1)


def _codec(export: str | None, backend: str, device: str, margin: float | None = None):
    from ..codec import Codec
    from ..runtime.decisions import DEFAULT_MARGINS, Margins

    if margin is None:
        return Codec(export, backend=backend, device=device)
    if margin < 0:
        from ..errors import ConfigError

        raise ConfigError("--margin must be 0 (no signalled decisions) or positive")
    margins = None if margin == 0 else Margins(scale=margin, topk=max(margin, DEFAULT_MARGINS.topk))
    return Codec(export, backend=backend, device=device, margins=margins)


codec_options = [
    click.option("--export", "export_dir", type=click.Path(file_okay=False), help="Export directory (default: the "
                 "embedded demo model, exported to export/demo on first use)."),
    click.option("--backend", type=click.Choice(["onnxruntime", "torch", "tensorrt"]), default="onnxruntime",
                 show_default=True),
    click.option("--device", default="cpu", show_default=True, help="cpu, cuda or cuda:N."),
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
@_with_codec_options
def compress(inputs, out, margin, export_dir, backend, device, as_json) -> None:
    """Compress images (files or folders) to .hpcm streams."""
    from ..codec.images import IMAGE_SUFFIXES, read_image

    jobs = _targets(inputs, out, IMAGE_SUFFIXES, STREAM_SUFFIX)
    codec = _codec(export_dir, backend, device, margin)

    def work(src: Path, dst: Path) -> dict[str, Any]:
        start = time.perf_counter()
        img = read_image(src)
        read = time.perf_counter() - start
        result = codec.compress_detailed([img])[0]
        start = time.perf_counter()
        write_atomic(dst, result.stream)
        io = read + time.perf_counter() - start
        t = result.timings
        return {"bytes": len(result.stream), "bpp": result.bpp, "height": result.height, "width": result.width,
                "seconds": {"network": t["network"], "entropy": t["entropy"], "transfer": t["transfer"],
                            "host": t["host"], "io": io, "total": t["total"] + io}}

    _run_files(jobs, work, "compressing", as_json)


@main.command()
@click.argument("inputs", nargs=-1, required=True)
@click.option("-o", "--out", required=True, help="Output file (one input) or folder (PNG files).")
@_with_codec_options
def decompress(inputs, out, export_dir, backend, device, as_json) -> None:
    """Decompress .hpcm streams (files or folders) to PNG images."""
    jobs = _targets(inputs, out, {STREAM_SUFFIX}, ".png")
    codec = _codec(export_dir, backend, device)

    def work(src: Path, dst: Path) -> dict[str, Any]:
        start = time.perf_counter()
        data = src.read_bytes()
        read = time.perf_counter() - start
        result = codec.decompress_detailed([data], kind="pil")[0]
        start = time.perf_counter()
        write_atomic(dst, lambda tmp: result.image.save(tmp, format="PNG"))
        io = read + time.perf_counter() - start
        t = result.timings
        return {"bytes": len(data), "bpp": 8 * len(data) / (result.height * result.width), "height": result.height,
                "width": result.width, "seconds": {"network": t["network"], "entropy": t["entropy"],
                                                   "transfer": t["transfer"], "io": io, "total": t["total"] + io}}

    _run_files(jobs, work, "decompressing", as_json)


@main.command()
@click.option("--export", "export_dir", type=click.Path(file_okay=False), help="Export to run (default: the "
              "embedded demo model, exported on first use).")
@click.option("--image", type=click.Path(dir_okay=False, exists=True), help="Image to code (default: the bundled "
              "sample).")
@click.option("--json", "as_json", is_flag=True)
def demo(export_dir, image, as_json) -> None:
    """The main job: export the default model if needed, code the sample image with ONNX Runtime, check it."""
    from ..demo import run_demo

    console = Console(stderr=True)
    report = run_demo(export_dir, image, progress=lambda s, sec: console.print(f"  exported {s} ({sec:.1f} s)"))
    if as_json:
        click.echo(json.dumps(report.as_dict(), indent=2))
    else:
        _print_demo(report)
    if not report.ok:
        raise SystemExit(1)


def _print_demo(r) -> None:
    console = Console()
    console.print(f"[bold]{Path(r.image).name}[/] {r.width}x{r.height} with {r.export} on onnxruntime (CPU)")
    console.print(f"  {r.bytes} bytes, {r.bpp:.4f} bpp, PSNR {r.psnr:.2f} dB")
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
    console.print(table)
