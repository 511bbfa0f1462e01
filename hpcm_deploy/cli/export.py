"""``hpcm-deploy export`` and ``hpcm-deploy verify``."""

from __future__ import annotations

import contextlib
import json
import sys
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from ..config import PRESETS
from ..errors import ConfigError, ExportError
from . import main
from .options import backend_option, check_runnable, device_option, parse_overrides, parse_size, set_option
from .progress import StageBar, print_table


@main.command("export")
@click.option("--preset", type=click.Choice(list(PRESETS)), help="Architecture (default: from the checkpoint, "
              "else tiny-phase2).")
@click.option("--checkpoint", type=click.Path(dir_okay=False), help="Weights to export (official, reference or ours).")
@click.option("--out", type=click.Path(file_okay=False), help="Output directory (default: export/<name>).")
@click.option("--opset", type=int, default=18, show_default=True, help="ONNX opset to request.")
@click.option("--batch", type=int, help="Fix the batch size (default: dynamic).")
@click.option("--jobs", type=int, help="Parallel tracing processes (default: one per CPU, at most 4).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the random weights when no "
              "checkpoint is given.")
@click.option("--check/--no-check", default=True, show_default=True, help="Check every graph against PyTorch at "
              "three other sizes with ONNX Runtime after exporting.")
@click.option("--precision", type=click.Choice(["fp32", "fp16", "fp16-full"]), default="fp32", show_default=True,
              help="fp16: the transforms in float16, the entropy path fp32 (streams exact against fp32); fp16-full: "
                   "every graph (streams cross-decode only with --margin 4e-3); docs/tensorrt.md.")
@set_option
def export_cmd(preset, checkpoint, out, opset, batch, jobs, seed, check, precision, overrides) -> None:
    """Export every stage of a model to ONNX, with its manifest and entropy tables."""
    from ..checks.verify import check_export
    from ..exporting.onnx_export import export_model
    from ..models.api import load_model
    from ..stages import build_program

    if batch is not None and batch < 1:
        raise ConfigError("--batch must be at least 1")
    if checkpoint is None and preset is None:
        preset = "tiny-phase2"
    model = load_model(preset, checkpoint, seed=seed, **parse_overrides(overrides))
    name = Path(checkpoint).stem if checkpoint else str(preset)
    target = Path(out) if out else Path("export") / name
    checked = []

    def run_check(manifest) -> None:
        # fp16 graphs differ from the fp32 stages by design: `verify` and `precision-cost` say by how much
        if check and precision == "fp32":
            checked.append(check_export(model, manifest))
            if not checked[-1].ok:
                raise ExportError(f"{checked[-1].summary()}; nothing was written to {target}")

    with StageBar("exporting") as bar:
        bar.start(len(build_program(model.config).stages))
        export_model(model, target, name, opset=opset, batch=batch, jobs=jobs, progress=bar.done,
                     source=str(checkpoint or f"preset {preset} (seed {seed})"), precision=precision[:4],
                     check=run_check, fp16_recipe="full" if precision == "fp16-full" else "exact")
    from ..artifacts.export import Manifest
    from ..artifacts.weights import weight_usage

    manifest = Manifest.load(target)
    size = sum(s.bytes for s in manifest.stages.values())
    shared = max(manifest.weights.bytes if manifest.weights else 0, 1)
    used = sum(weight_usage({s: manifest.stage_path(s) for s in manifest.stages}).values())
    click.echo(f"wrote {target} ({len(manifest.stages)} graphs of {size / 1e6:.1f} MB and one weight file of "
               f"{shared / 1e6:.1f} MB, which the graphs read {used / shared:.1f} times over; {precision}, opset "
               f"{manifest.opset}, {manifest.export_seconds} s)")
    if checked:
        click.echo(checked[-1].summary())


@main.command()
@click.argument("export_dir", type=click.Path(file_okay=False))
@backend_option
@device_option
@click.option("--size", "sizes", multiple=True, help="Padded size HxW to check (repeatable; default: 256x256, "
              "256x512, 768x512).")
@click.option("--batch", type=int, default=1, show_default=True)
@click.option("--random-images", type=int, default=0, help="Also encode N random images of random sizes on both "
              "PyTorch and the backend and count differing streams.")
@click.option("--lint/--no-lint", default=True, show_default=True, help="Run polygraphy check lint on every graph.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable report.")
def verify(export_dir, backend, device, sizes, batch, random_images, lint, as_json) -> None:
    """Check an export against the PyTorch stages: per-stage errors, whole-image streams, TensorRT compatibility."""
    from ..artifacts.export import Manifest
    from ..backends import open_backend
    from ..checks.verify import DEFAULT_SIZES, random_sizes, verify_export

    check_runnable(backend, device)
    manifest = Manifest.load(export_dir)
    chosen = [parse_size(s, padded=True) for s in sizes] or list(DEFAULT_SIZES)
    # Polygraphy prints some notices with print(); keep them off a JSON report's stdout
    with contextlib.redirect_stdout(sys.stderr) if as_json else contextlib.nullcontext():
        report = verify_export(manifest, open_backend(backend, manifest, device), chosen, batch, lint=lint,
                               random_sizes=random_sizes(random_images))
    if as_json:
        click.echo(json.dumps(report.as_dict(), indent=2))
    else:
        _print_report(report)
    if not report.ok:
        raise SystemExit(1)


def _print_report(report) -> None:
    console = Console(soft_wrap=True)
    table = Table(title=f"stages: {report.backend} vs PyTorch (worst over outputs and sizes)")
    for col in ("stage", "outputs", "max abs", "max rel", "ok"):
        table.add_column(col)
    by_stage: dict[str, list] = {}
    for r in report.stages:
        by_stage.setdefault(r.stage, []).append(r)
    for stage, rows in by_stage.items():
        table.add_row(stage, str(len({r.output for r in rows})), f"{max(r.max_abs for r in rows):.2e}",
                      f"{max(r.max_rel for r in rows):.2e}", "yes" if all(r.ok for r in rows) else "NO")
    print_table(table)
    streams = Table(title="whole images: symbols and streams vs PyTorch stages")
    for col in ("size", "same streams", "differing symbols", "first difference", "own round trip",
                "largest scale error / margin", "signalled, decoded across"):
        streams.add_column(col)
    for s in report.streams:
        streams.add_row(f"{s.size[0]}x{s.size[1]}", "yes" if s.same_streams else "NO", str(s.differing_symbols),
                        str(s.first_difference or "-"), "exact" if s.decode_exact else "NOT EXACT",
                        f"{s.largest_scale_error:.1e} / {s.margin:.0e}", "exact" if s.cross_exact else "NOT EXACT")
    print_table(streams)
    compat = Table(title="TensorRT compatibility (static check)")
    for col in ("graph", "opset", "nodes", "errors", "warnings"):
        compat.add_column(col)
    for g in report.compatibility:
        errors = [f"{f.op}: {f.message}" for f in g.findings if f.severity == "error"]
        warnings = [f for f in g.findings if f.severity == "warning"]
        compat.add_row(g.graph, str(g.opset), str(g.nodes), "; ".join(errors) or "0", str(len(warnings)))
    print_table(compat)
    if report.lint:
        failed = [g for g, ok in report.lint.items() if not ok]
        console.print(f"polygraphy check lint: {len(report.lint) - len(failed)}/{len(report.lint)} graphs pass"
                      + (f"; failing: {', '.join(failed)}" if failed else ""))
    if report.random:
        r = report.random
        console.print(f"random images: {r['images']} encoded on PyTorch and {report.backend}: "
                      f"{r['differing_streams']} streams differ; first difference per stream: "
                      f"{r['first_steps'] or '-'}; largest scale error {r['largest_scale_error']:.1e} (over the "
                      f"{r['scale_error_images']} images whose symbols agree)")
        fails = r["decode_failures"]
        console.print("  decoded on the other side, failures: " + ", ".join(f"{k} {v}" for k, v in fails.items())
                      + f"; signalling costs {r['side_bpp']:.5f} bpp ({100 * r['side_bytes'] / r['stream_bytes']:.2f}"
                      " % of the payload)")
    console.print("verify: " + ("PASSED" if report.ok else "FAILED"))
