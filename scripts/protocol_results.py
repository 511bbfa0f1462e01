"""The seed's experiment protocol, measured: the figures behind docs/results.md, written to docs/results.json.

    python scripts/protocol_results.py cost [--size 512x768] [--repeat 2]      # 1: full-size cost, no training
    python scripts/protocol_results.py relies                                  # 2: the demo model, config ablations
    python scripts/protocol_results.py trained [--runs runs/protocol]          # 3-5: RD curves, ablations, bits
    python scripts/protocol_results.py compare --out docs/results-crop.png      # 6: what it looks like
    python scripts/protocol_results.py tables                                  # the JSON as markdown tables

Each part replaces its own key in the JSON (``--json``, default docs/results.json) and prints its table. Every
stream is real: bits per pixel are the container's bytes, the decoder must read back the encoder's symbols.
Models run as PyTorch stages (``Codec.from_model``), the same stages every backend runs.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
COST_PRESETS = ("hpcm-base", "phase2", "phase2-memory", "phase2-speed", "phase2-quality")


# ----------------------------------------------------------------------------------------------- part 1: cost
def _scale_of(stage: str) -> str:
    """Which part of the coding a stage belongs to: transforms, hyperprior, or a scale's context steps."""
    if stage in ("g_a", "g_s"):
        return "transforms"
    if stage in ("h_a", "h_s", "y_pack"):
        return "hyperprior"
    return stage.split("_")[0]  # s1_start, s2_enter, s3_step4 ...


def _cost_one(preset: str, size: tuple[int, int], repeat: int) -> dict:
    """One preset in this process (run in a fresh subprocess per preset, so peak memory is its own)."""
    import torch

    import hpcm_deploy as hd
    from hpcm_deploy.evaluation.bench import PeakMemory
    from hpcm_deploy.models.api import parameter_counts, spread_latent

    torch.set_num_threads(2)
    model = spread_latent(hd.load_model(preset, seed=0))  # realistic latents: the entropy coding does real work
    params = parameter_counts(model)
    rng = np.random.default_rng(7)
    coarse = rng.random((size[0] // 16, size[1] // 16, 3))
    image = (np.kron(coarse, np.ones((16, 16, 1))) * 0.9 + 0.1 * rng.random((*size, 3))) * 255
    image = image.round().astype(np.uint8)
    codec = hd.Codec.from_model(model)
    base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    enc, dec = [], []
    with PeakMemory() as mem:
        for i in range(repeat + 1):  # the first of each is a warm-up
            t = time.perf_counter()
            r = codec.compress_detailed([image])[0]
            if i:
                enc.append((time.perf_counter() - t, r.timings))
            t = time.perf_counter()
            d = codec.decompress_detailed([r.stream])[0]
            if i:
                dec.append((time.perf_counter() - t, d.timings))
    def per_scale(runs):
        parts: dict[str, list[float]] = {}
        for _, timings in runs:
            acc: dict[str, float] = {}
            for stage, sec in timings["stages"].items():
                acc[_scale_of(stage)] = acc.get(_scale_of(stage), 0.0) + sec
            acc["entropy"] = timings["entropy"]
            for k, v in acc.items():
                parts.setdefault(k, []).append(v)
        return {k: float(np.median(v)) for k, v in parts.items()}

    return {"preset": preset, "size": list(size), "repeat": repeat, "params": params["total"],
            "params_by_part": params, "weights_mb_fp32": params["total"] * 4 / 1e6,
            "encode_s": float(np.median([t for t, _ in enc])), "decode_s": float(np.median([t for t, _ in dec])),
            "encode_parts_s": per_scale(enc), "decode_parts_s": per_scale(dec), "peak_coding_mb": mem.megabytes,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "rss_before_coding_mb": base_rss / 1024, "bpp": 8 * len(r.stream) / (size[0] * size[1])}


def part_cost(args) -> dict:
    rows = []
    for preset in COST_PRESETS:
        out = subprocess.run([sys.executable, __file__, "_cost", preset, "--size", args.size, "--repeat",
                              str(args.repeat)], check=True, capture_output=True, text=True)
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(f"  {preset}: encode {rows[-1]['encode_s']:.2f} s, decode {rows[-1]['decode_s']:.2f} s", flush=True)
    base = next(r for r in rows if r["preset"] == "hpcm-base")
    for r in rows:
        r["vs_base"] = {k: r[k] / base[k] - 1 for k in ("params", "encode_s", "decode_s", "peak_rss_mb",
                                                        "peak_coding_mb")}
    return {"command": f"python scripts/protocol_results.py cost --size {args.size} --repeat {args.repeat}",
            "rows": rows}


# ------------------------------------------------------------------------------------- part 2: what it relies on
RELIES_VARIANTS: dict[str, dict] = {
    "shipped (banks s1+s2+s3, vres 8, top-k 1/2/2, transfer on)": {},
    "bank s1 off": {"max_refs_s1": 0},
    "bank s2 off": {"max_refs_s2": 0},
    "bank s3 off": {"max_refs_s3": 0},
    "banks s1+s2 off (s3 only)": {"max_refs_s1": 0, "max_refs_s2": 0},
    "all banks off": {"max_refs_s1": 0, "max_refs_s2": 0, "max_refs_s3": 0},
    "value resolution 4": {"value_resolution": 4},
    "value resolution 16": {"value_resolution": 16},
    "top-k 1/1/1": {"topk_refs_s1": 1, "topk_refs_s2": 1, "topk_refs_s3": 1},
    "top-k 1/2/3": {"topk_refs_s1": 1, "topk_refs_s2": 2, "topk_refs_s3": 3},
    "top-k 2/3/3": {"topk_refs_s1": 2, "topk_refs_s2": 3, "topk_refs_s3": 3},
    "transfer off": {"enable_hierarchical_transfer": False},
}


def _variant(weights: Path, overrides: dict):
    """The model in ``weights`` run under other bank settings (no new weights: banks removed or re-planned)."""
    import hpcm_deploy as hd
    from hpcm_deploy.models.api import build_model
    from hpcm_deploy.models.loading import copy_shared_weights

    shipped = hd.load_model(checkpoint=weights, seed=None)
    if not overrides:
        return shipped
    model = build_model(shipped.config.replace(**overrides), seed=0)
    left = copy_shared_weights(model, shipped, str(weights))
    if left["fresh"]:
        raise SystemExit(f"{overrides} needs new weights for {left['fresh']}")
    return model.eval()


def _eval(model, images: dict, anchors=()) -> dict:
    import hpcm_deploy as hd
    from hpcm_deploy.evaluation.evaluate import ExportResult, evaluate_image

    codec = hd.Codec.from_model(model)
    rows = [evaluate_image(codec, name, img, anchors) for name, img in images.items()]
    return ExportResult("", "", rows).as_dict()


def _summary(d: dict) -> dict:
    m, s = d["mean"], d["mean_bpp_per_scale"]
    return {"bpp": m["bpp"], "psnr": m["psnr"], "ms_ssim_db": m["ms_ssim_db"], **{f"bpp_{k}": v for k, v in s.items()},
            **{k: v for k, v in m.items() if k.endswith("_psnr")},
            "images": {r["image"]: {"bpp": r["bpp"], "psnr": r["psnr"]} for r in d["images"]}}


def part_relies(args) -> dict:
    import torch

    from hpcm_deploy.app.bundled import demo_weights
    from hpcm_deploy.training.data import bundled_images

    torch.set_num_threads(2)
    images = bundled_images("heldout")
    rows = {}
    for name, overrides in RELIES_VARIANTS.items():
        rows[name] = {"overrides": overrides, **_summary(_eval(_variant(demo_weights(), overrides), images))}
        r = rows[name]
        print(f"  {name:58s} {r['bpp']:.4f} bpp {r['psnr']:.2f} dB", flush=True)
    return {"command": "python scripts/protocol_results.py relies", "weights": "hpcm_deploy/data/demo_tiny_phase2.pt",
            "images": sorted(images), "rows": rows}


# ------------------------------------------------------------------------------- parts 3-5: the trained runs
TRAINED = {  # label -> (curve, weights relative to the runs folder, or the shipped model)
    "p2-l0.0018": ("Phase 2", "p2-l0.0018/model.pt"),
    "p2-l0.0035": ("Phase 2", "shipped:phase2"),
    "p2-l0.0067": ("Phase 2", "p2-l0.0067/model.pt"),
    "base-l0.0018": ("Base", "base-l0.0018/model.pt"),
    "base-l0.0035": ("Base", "shipped:base"),
    "base-l0.0067": ("Base", "base-l0.0067/model.pt"),
    "p2-all": ("ablation", "p2-all/model.pt"),
    "p2-all-seed12": ("ablation", "p2-all-seed12/model.pt"),
    "p2-s3-only": ("ablation", "p2-s3-only/model.pt"),
    "p2-s2-s3": ("ablation", "p2-s2-s3/model.pt"),
    "p2-no-transfer": ("ablation", "p2-no-transfer/model.pt"),
}


def _weights(runs: Path, where: str) -> Path:
    from hpcm_deploy.app.bundled import demo_weights

    if where.startswith("shipped:"):
        return demo_weights(base=where.endswith("base"))
    return runs / where


def _run_record(path: Path) -> dict:
    import torch

    meta = torch.load(path, map_location="cpu", weights_only=False).get("meta", {})
    s = meta.get("settings", {})
    return {"steps": meta.get("step"), "hours": meta.get("hours"), "lambda": s.get("lmbda"), "seed": s.get("seed"),
            "overrides": s.get("overrides")}


def part_trained(args) -> dict:
    import torch

    import hpcm_deploy as hd
    from hpcm_deploy.evaluation.evaluate import mean_anchor_curve
    from hpcm_deploy.evaluation.metrics import bd_rate
    from hpcm_deploy.training.data import bundled_images

    torch.set_num_threads(2)
    runs = Path(args.runs)
    images = bundled_images("heldout")
    old = json.loads(Path(args.json).read_text()).get("trained", {}) if Path(args.json).is_file() else {}
    rows = dict(old.get("rows", {})) if args.only else {}
    for label, (curve, where) in TRAINED.items():
        if args.only and label not in args.only.split(","):
            continue
        path = _weights(runs, where)
        if not path.is_file():
            print(f"  {label}: missing {path}, skipped", flush=True)
            continue
        result = _eval(hd.load_model(checkpoint=path, seed=None), images, anchors=("jpeg",))
        rows[label] = {"curve": curve, "weights": str(where), "run": _run_record(path), **_summary(result)}
        print(f"  {label:20s} {rows[label]['bpp']:.4f} bpp {rows[label]['psnr']:.2f} dB", flush=True)
        _save_part(Path(args.json), "trained", {**old, "rows": rows})  # a crash later keeps the evaluated rows
    anchors = old.get("anchors") if args.only and old.get("anchors") else {
        name: _monotone(mean_anchor_curve(images, name)) for name in ("jpeg", "webp", "avif")}
    curves: dict[str, list[tuple[float, float]]] = {}
    for r in rows.values():
        if r["curve"] in ("Phase 2", "Base"):
            curves.setdefault(r["curve"], []).append((r["bpp"], r["psnr"]))
    bd = {}
    if all(len(curves.get(c, [])) >= 2 for c in ("Phase 2", "Base")):
        bd["Phase 2 vs Base"] = bd_rate(_monotone(curves["Base"]), _monotone(curves["Phase 2"]))
    for name, pts in anchors.items():
        for c, mine in curves.items():
            if len(mine) >= 2:
                bd[f"{c} vs {name.upper()}"] = bd_rate(_monotone(pts), _monotone(mine))
    if args.plot:
        _plot(curves, rows, anchors, Path(args.plot))
    return {"command": f"python scripts/protocol_results.py trained --runs {args.runs}"
                       + (f" --plot {args.plot}" if args.plot else ""),
            "images": sorted(images), "rows": rows, "anchors": anchors, "bd_rate_percent": bd}


def _monotone(points) -> list[tuple[float, float]]:
    """(bpp, PSNR) points sorted by rate, keeping only those that raise both rate and PSNR (a BD-rate's
    interpolation needs strictly increasing sequences; an anchor's mean curve can repeat or dip)."""
    out: list[tuple[float, float]] = []
    for b, p in sorted((float(b), float(p)) for b, p in points):
        if not out or (b > out[-1][0] and p > out[-1][1]):
            out.append((b, p))
    return out


def _save_part(path: Path, part: str, value: dict) -> None:
    data = json.loads(path.read_text()) if path.is_file() else {}
    data[part] = value
    path.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")


def _plot(curves, rows, anchors, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.6))
    for name, pts in curves.items():
        pts = sorted(pts)
        ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-", label=f"tiny {name}")
    extra = {k: r for k, r in rows.items() if r["curve"] not in ("Phase 2", "Base")}
    for k, r in extra.items():
        ax.plot([r["bpp"]], [r["psnr"]], "x" if "seed" in k else "^", label=k)
    names = {"jpeg": "JPEG (optimised, 4:2:0)", "webp": "WebP (method 6)", "avif": "AVIF (speed 4)"}
    for name, pts in anchors.items():
        pts = sorted(p for p in pts if p[0] <= 0.45)
        ax.plot([p[0] for p in pts], [p[1] for p in pts], "s--", ms=3, label=names[name])
    ax.set_xlabel("bits per pixel (held-out images, mean)")
    ax.set_ylabel("PSNR (dB, mean)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ----------------------------------------------------------------------------------------- part 6: compare
def part_compare(args) -> dict:
    import hpcm_deploy as hd
    from hpcm_deploy.app.bundled import demo_weights
    from hpcm_deploy.evaluation.compare import compare_picture
    from hpcm_deploy.training.data import bundled_images

    images = bundled_images("heldout")
    name = args.image
    codecs = {label: hd.Codec.from_model(hd.load_model(checkpoint=demo_weights(base=base), seed=None))
              for label, base in (("Phase 2", False), ("Base", True))}
    info = compare_picture(images[name], args.out, codecs, crop=args.crop)
    print(f"  wrote {args.out}: {info['bpp']:.4f} bpp, " + ", ".join(
        f"{k} {v:.2f} dB" for k, v in info["psnr"].items()))
    return {"command": f"python scripts/protocol_results.py compare --image {name} --out {args.out}",
            "image": name, **info}


# ------------------------------------------------------------------------------ the tables of docs/results.md
def _md(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


def tables(data: dict) -> str:
    """Markdown tables of every part in ``data`` (docs/results.json)."""
    out = []
    if "cost" in data:
        rows = []
        for r in data["cost"]["rows"]:
            e, d, v = r["encode_parts_s"], r["decode_parts_s"], r["vs_base"]
            rows.append([r["preset"], f"{r['params'] / 1e6:.2f} M ({v['params']:+.1%})",
                         f"{r['weights_mb_fp32']:.0f}", f"{r['encode_s']:.2f} ({v['encode_s']:+.0%})",
                         f"{r['decode_s']:.2f} ({v['decode_s']:+.0%})",
                         " / ".join(f"{e.get(k, 0):.2f}" for k in ("transforms", "hyperprior", "s1", "s2", "s3")),
                         " / ".join(f"{d.get(k, 0):.2f}" for k in ("transforms", "hyperprior", "s1", "s2", "s3")),
                         f"{r['peak_rss_mb']:.0f} ({v['peak_rss_mb']:+.0%})",
                         f"{r['peak_coding_mb']:.0f} ({v['peak_coding_mb']:+.0%})"])
        out.append(_md(["preset", "parameters (vs Base)", "weights MB (fp32)", "encode s", "decode s",
                        "encode: transforms / hyper / s1 / s2 / s3 s", "decode: same", "peak RSS MB",
                        "growth while coding MB"], rows))
    if "relies" in data:
        rows, found = [], data["relies"]["rows"]
        ref = found[next(iter(RELIES_VARIANTS))]
        for name in [n for n in RELIES_VARIANTS if n in found] + [n for n in found if n not in RELIES_VARIANTS]:
            r = found[name]
            rows.append([name, f"{r['bpp']:.4f} ({r['bpp'] / ref['bpp'] - 1:+.1%})",
                         f"{r['psnr']:.2f} ({r['psnr'] - ref['psnr']:+.2f})",
                         " / ".join(f"{r[f'bpp_{k}']:.4f}" for k in ("z", "s1", "s2", "s3"))])
        out.append(_md(["setting", "bpp (vs shipped)", "PSNR dB (vs shipped)", "bpp z / s1 / s2 / s3"], rows))
    if "trained" in data:
        t = data["trained"]
        rows = []
        for label in [k for k in TRAINED if k in t["rows"]]:
            r = t["rows"][label]
            run = r["run"]
            rows.append([label, r["curve"], "shipped" if r["weights"].startswith("shipped") else
                         f"{run['steps']} steps, {run['hours']:.2f} h", f"{r['bpp']:.4f}", f"{r['psnr']:.2f}",
                         f"{r.get('jpeg_psnr', float('nan')):.2f}",
                         " / ".join(f"{r[f'bpp_{k}']:.4f}" for k in ("z", "s1", "s2", "s3"))])
        out.append(_md(["model", "curve", "fine-tune", "bpp", "PSNR dB", "JPEG dB at that bpp",
                        "bpp z / s1 / s2 / s3"], rows))
        out.append(_md(["BD-rate", "%"], [[k, "n/a (no overlap)" if v is None else f"{v:+.1f}"]
                                          for k, v in t["bd_rate_percent"].items()]))
    return "\n\n".join(out)


def part_tables(args) -> dict:
    print(tables(json.loads(Path(args.json).read_text())))
    raise SystemExit(0)


PARTS = {"cost": part_cost, "relies": part_relies, "trained": part_trained, "compare": part_compare,
         "tables": part_tables}


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "_cost":  # the per-preset subprocess of part 1
        p = argparse.ArgumentParser()
        p.add_argument("preset")
        p.add_argument("--size", default="512x768")
        p.add_argument("--repeat", type=int, default=2)
        a = p.parse_args(sys.argv[2:])
        size = tuple(int(v) for v in a.size.split("x"))
        print(json.dumps(_cost_one(a.preset, size, a.repeat)))
        return
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("part", choices=list(PARTS))
    p.add_argument("--json", default=str(ROOT / "docs" / "results.json"))
    p.add_argument("--size", default="512x768")
    p.add_argument("--repeat", type=int, default=2)
    p.add_argument("--runs", default="runs/protocol")
    p.add_argument("--plot", default=None)
    p.add_argument("--only", default=None, help="trained: evaluate only these labels (comma-separated), keep the rest")
    p.add_argument("--image", default="china")
    p.add_argument("--crop", default=None, help="TOP,LEFT,HEIGHT,WIDTH of the crop (default: the centre)")
    p.add_argument("--out", default=str(ROOT / "docs" / "results-crop.png"))
    args = p.parse_args()
    start = time.perf_counter()
    result = PARTS[args.part](args)
    result["seconds"] = time.perf_counter() - start
    result["date"] = time.strftime("%Y-%m-%d")
    _save_part(Path(args.json), args.part, result)
    print(f"{args.part}: {result['seconds']:.0f} s -> {args.json}")


if __name__ == "__main__":
    main()
