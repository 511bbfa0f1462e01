"""``hpcm-deploy bench`` and ``hpcm-deploy eval``."""

from __future__ import annotations

import json

import click
from rich.console import Console
from rich.table import Table

from . import main
from .options import backend_option, check_runnable, device_option, parse_size, resolve_export
from .progress import demo_export, print_table


@main.command("bench")
@click.option("--export", "export_dir", type=click.Path(file_okay=False), help="Export (default: the demo model).")
@click.option("--backend", "backends", multiple=True, metavar="NAME[:PRECISION][,KEY=VALUE][@DEVICE]",
              help="Backend to time (repeatable; default: onnxruntime and torch): onnxruntime, torch or tensorrt, "
                   "e.g. tensorrt:fp16@cuda, torch:bf16 (torch:bf16-full), torch,layout=channels_last, "
                   "onnxruntime,optimization=extended.")
@click.option("--size", default="512x768", show_default=True, help="Image size HxW (512x768 is a 768x512 photo).")
@click.option("--repeat", type=click.IntRange(min=1), default=5, show_default=True, help="Timed runs after warm-up.")
@click.option("--warmup", type=click.IntRange(min=0), default=1, show_default=True)
@click.option("--device", help="Device of the reference model and of every --backend without its own @DEVICE "
              "(default: cpu; each backend's own default, cuda for tensorrt).")
@click.option("--json", "as_json", is_flag=True)
def bench_cmd(export_dir, backends, size, repeat, warmup, device, as_json) -> None:
    """Time each stage, whole encode/decode and the host part per backend, against the PyTorch reference."""
    from ..backends import parse_backend_spec
    from ..evaluation.bench import bench

    hw = parse_size(size)
    check_runnable("torch", device)  # the reference model runs there
    specs = []
    for spec in backends or ("onnxruntime", "torch"):
        name, dev, _ = parse_backend_spec(spec, device)  # every spec checked before anything is timed
        check_runnable(name, dev)
        specs.append(spec if "@" in spec or device is not None or dev == "cpu" else f"{spec}@{dev}")
    device = device or "cpu"
    console = Console(stderr=True)
    result = bench(resolve_export(export_dir), specs, hw,
                   repeat, warmup, device, progress=lambda n: console.print(f"  timing {n}"))
    if as_json:
        click.echo(json.dumps(result, indent=2))
        return
    ref, machine = result["reference"], result["machine"]
    rates = machine["matmul_gflops"]
    click.echo(f"CPU: {machine['found']} found; matmul fp32 {rates['fp32']:.0f} GFLOP/s, bf16 {rates['bf16']:.0f} "
               f"GFLOP/s ({machine['threads']} threads)")
    table = Table(title=f"{result['export']} at {size}, median of {repeat} runs ({result['threads']} threads)")
    for col in ("runner", "encode s", "decode s", "encode / ref", "decode / ref", "outside stages (enc/dec) s",
                "entropy enc/dec ms", "peak MB", "open s / MB"):
        table.add_column(col, justify="right")
    table.add_row("PyTorch reference model", f"{ref['encode']['median']:.3f}", f"{ref['decode']['median']:.3f}", "1.00",
                  "1.00", "", "", f"{ref['peak_mb']:.0f}", "")
    for b in result["backends"]:
        h = b["host"]
        table.add_row(f"{b['backend']} ({b['precision']})", f"{b['encode']['median']:.3f}",
                      f"{b['decode']['median']:.3f}",
                      f"{b['ratio_encode']:.2f}", f"{b['ratio_decode']:.2f}",
                      f"{h['encode_outside_stages']['median']:.3f} / {h['decode_outside_stages']['median']:.3f}",
                      f"{1000 * h['encode_entropy']['median']:.1f} / {1000 * h['decode_entropy']['median']:.1f}",
                      f"{b['peak_mb']:.0f}", f"{b['open_seconds']:.2f} / {b['open_mb']:.0f}")
    print_table(table)
    stages = Table(title="per stage, median ms (encode / decode)")
    stages.add_column("stage")
    for b in result["backends"]:
        stages.add_column(b["backend"], justify="right")
    names = list(dict.fromkeys([s for b in result["backends"] for s in (*b["encode_stages"], *b["decode_stages"])]))
    for s in names:
        cells = []
        for b in result["backends"]:
            e, d = b["encode_stages"].get(s), b["decode_stages"].get(s)
            cells.append(" / ".join(f"{1000 * v['median']:.1f}" if v else "-" for v in (e, d)))
        stages.add_row(s, *cells)
    print_table(stages)


@main.command("eval")
@click.argument("images", nargs=-1)
@click.option("--export", "exports", multiple=True, type=click.Path(file_okay=False),
              help="Export to evaluate (repeatable; default: the two embedded demo models, tiny-phase2 and tiny-base).")
@click.option("--label", "labels", multiple=True, help="Curve label per --export (same label = same RD curve).")
@click.option("--heldout", is_flag=True, help="Also use the bundled held-out images (rocket, china, flower).")
@click.option("--anchor", "anchors", multiple=True, type=click.Choice(["jpeg", "webp", "avif", "all"]),
              help="Also report this Pillow codec's PSNR at each image's bits per pixel, and BD-rates against its "
                   "curve (repeatable; all: every one this Pillow has).")
@click.option("--jpeg", is_flag=True, help="Same as --anchor jpeg.")
@click.option("--progressive", is_flag=True, help="Also report, per coding step, the bytes a progressive decoder "
              "needs, the PSNR of its preview and the time to decode it (first export only).")
@backend_option
@device_option
@click.option("--plot", type=click.Path(dir_okay=False), help="Draw the RD curves (with the anchors') to this PNG.")
@click.option("--json", "as_json", is_flag=True)
def eval_cmd(images, exports, labels, heldout, anchors, jpeg, progressive, backend, device, plot, as_json) -> None:
    """Bits per pixel (from the real streams, per scale and per step), PSNR and MS-SSIM per image and mean;
    RD curves and BD-rates between labelled exports and against JPEG, WebP and AVIF."""
    from ..errors import InputError
    from ..evaluation.evaluate import bd_rates, evaluate, load_images, mean_anchor_curve, plot_rd
    from ..evaluation.metrics import available_anchors

    check_runnable(backend, device)
    chosen = available_anchors() if "all" in anchors else list(dict.fromkeys([*anchors, *(["jpeg"] if jpeg else [])]))
    missing = [a for a in chosen if a not in available_anchors()]
    if missing:
        raise InputError(f"this Pillow cannot encode {', '.join(missing)}")

    pics = load_images(list(images), heldout)
    if not pics:
        raise InputError("no images: pass image files or folders, or --heldout")
    if exports:
        if labels and len(labels) != len(exports):
            raise InputError("give one --label per --export")
        pairs = list(zip(exports, labels or exports))
    else:  # the two embedded demo models: Phase 2 against its HPCM-Base twin
        pairs = [(str(demo_export()), "demo tiny-phase2"), (str(demo_export(base=True)), "demo tiny-base")]
    console = Console(stderr=True)
    results = evaluate(pairs, pics, backend, device, tuple(chosen),
                       progress=lambda lab, n: console.print(f"  {lab}: {n}"))
    curves = {a: mean_anchor_curve(pics, a) for a in chosen} if chosen or plot else {}
    if plot and not curves:
        curves = {"jpeg": mean_anchor_curve(pics, "jpeg")}
    bd = bd_rates(results, curves)
    if plot:
        plot_rd(results, plot, curves)
    previews = _previews(pairs[0][0], pics, backend, device) if progressive else {}
    if as_json:
        click.echo(json.dumps({"exports": [r.as_dict() for r in results], "bd_rate_percent": bd,
                               "anchor_curves": curves, "progressive": previews}, indent=2))
        return
    table = Table(title=f"{len(pics)} images, {backend}")
    for col in ("export", "image", "bpp", "PSNR dB", "MS-SSIM dB", "bpp s1/s2/s3/z",
                *(f"{a.upper()} PSNR at same bpp" for a in chosen)):
        table.add_column(col)
    for r in results:
        for row in [*r.images, None]:
            if row is None:
                d = r.as_dict()
                m, sc = d["mean"], d["mean_bpp_per_scale"]
                cells = ("[bold]mean[/]", f"{m['bpp']:.4f}", f"{m['psnr']:.2f}", f"{m['ms_ssim_db']:.2f}",
                         f"{sc['s1']:.3f}/{sc['s2']:.3f}/{sc['s3']:.3f}/{sc['z']:.3f}",
                         *(f"{m[a + '_psnr']:.2f}" for a in chosen))
            else:
                sc = row.bpp_per_scale
                cells = (row.image, f"{row.bpp:.4f}", f"{row.psnr:.2f}", f"{row.ms_ssim_db:.2f}",
                         f"{sc['s1']:.3f}/{sc['s2']:.3f}/{sc['s3']:.3f}/{sc['z']:.3f}",
                         *("-" if row.anchors.get(a) is None else f"{row.anchors[a]:.2f}" for a in chosen))
            table.add_row(r.label, *cells)
    print_table(table)
    for k, v in bd.items():
        click.echo(f"BD-rate {k}: " + ("n/a (PSNR ranges do not overlap)" if v is None else f"{v:+.2f} %"))
    if not bd:
        click.echo(_why_no_bd_rate(results))
    if previews:
        _print_previews(previews, pairs[0][1])
    if plot:
        click.echo(f"wrote {plot}")


def _why_no_bd_rate(results) -> str:
    """Why no BD-rate was printed: every curve needs two or more rate points (exports sharing a --label)."""
    from ..evaluation.evaluate import rd_curves

    short = [label for label, points in rd_curves(results).items() if len(points) < 2]
    return (f"BD-rate: none ({', '.join(short)} {'has' if len(short) == 1 else 'have'} one rate point each; a "
            "BD-rate compares curves of two or more: give several --export of one model at different rates with "
            "the same --label)")


def _previews(export: str, pics: dict, backend: str, device: str | None) -> dict[str, list[dict]]:
    from dataclasses import asdict

    from ..codec import Codec
    from ..evaluation.evaluate import progressive_points

    with Codec(export, backend=backend, device=device) as codec:
        return {name: [asdict(p) for p in progressive_points(codec, img)] for name, img in pics.items()}


def _print_previews(previews: dict[str, list[dict]], label: str) -> None:
    table = Table(title=f"progressive decoding, {label}: bytes needed / PSNR of the preview / decode s")
    table.add_column("image")
    for k in range(1, 12):
        table.add_column(f"{k} step{'s' if k > 1 else ''}", justify="right")
    for name, points in previews.items():
        table.add_row(name, *(f"{p['bytes']} / {p['psnr']:.2f} / {p['seconds']:.2f}" for p in points))
    print_table(table)


@main.command("precision-cost")
@click.argument("export_dir", type=click.Path(file_okay=False))
@click.argument("images", nargs=-1)
@click.option("--precision", type=click.Choice(["fp16", "fp16-full", "bf16", "bf16-full"]), default="fp16",
              show_default=True, help="The recipe: fp16/fp16-full in ONNX Runtime (an fp16 export), bf16/bf16-full in "
              "the PyTorch stages (CPUs with AMX or AVX-512 BF16).")
@click.option("--fp16-export", type=click.Path(file_okay=False), help="The recipe export (default: derived from "
              "EXPORT_DIR into a temporary folder).")
@click.option("--heldout", is_flag=True, help="Also use the bundled held-out images.")
@click.option("--margin", type=float, default=0.0, show_default=True, help="Signalling margin of both coders "
              "(as compress --margin): 0 signals nothing; find the smallest with which a full recipe cross-decodes "
              "and its byte cost.")
@click.option("--json", "as_json", is_flag=True)
def precision_cost_cmd(export_dir, images, precision, fp16_export, heldout, margin, as_json) -> None:
    """What a precision recipe costs: bpp and PSNR against fp32, how often a CDF index or a top-k choice flips
    when an fp32 stream is decoded with the recipe, and whether streams cross-decode exactly both ways (by
    default with no signalled decisions; --margin to signal)."""
    import tempfile

    from ..artifacts.export import Manifest
    from ..errors import InputError
    from ..evaluation.evaluate import load_images
    from ..evaluation.precision_cost import bf16_cost, precision_cost
    from ..exporting.fp16_recipe import derive_export
    from ..runtime.decisions import margins_for

    margins = margins_for(margin)
    pics = load_images(list(images), heldout)
    if not pics:
        raise InputError("no images: pass image files or folders, or --heldout")
    if precision.startswith("bf16"):
        if fp16_export:
            raise InputError("--fp16-export goes with --precision fp16 or fp16-full")
        result = bf16_cost(export_dir, pics, precision, margins=margins)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            recipe = "full" if precision == "fp16-full" else "exact"
            target = fp16_export or derive_export(Manifest.load(export_dir), f"{tmp}/fp16", "fp16", recipe)
            result = precision_cost(export_dir, target, pics, margins=margins)
        result["recipe"] = precision
    result["margin"] = margin
    if as_json:
        click.echo(json.dumps(result, indent=2))
        return
    m, t, tag = result["mean"], result["total"], result["precision"]
    click.echo(f"{len(pics)} images: bpp {m['bpp_fp32']:.4f} (fp32) -> {m[f'bpp_{tag}']:.4f} ({precision}) "
               f"({result['delta_bpp_percent']:+.2f} %), PSNR {m['psnr_fp32']:.2f} -> {m[f'psnr_{tag}']:.2f} dB "
               f"({result['delta_psnr_db']:+.3f} dB)")
    click.echo(f"fp32 streams decoded with {precision}: {t['cdf_flips']} of {t['symbols']} CDF indexes flip "
               f"({100 * result['cdf_flip_rate']:.4f} %), {t['topk_flips']} of {t['topk_choices']} top-k choices "
               f"({100 * result['topk_flip_rate']:.2f} %)")
    cross = result["cross_exact"]
    how = f"with margin {margin:g}" if margin else "without signalled decisions"
    click.echo(f"cross-decoding {how}: " +
               ", ".join(f"{k.replace('_to_', ' -> ')} {'exact' if v else 'NOT exact'}" for k, v in cross.items()))
