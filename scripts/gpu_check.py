#!/usr/bin/env python
"""The GPU check: every backend hpcm-deploy can run on a device, against the CPU, in one table.

For each model (the embedded demo model, and `hpcm-base` and `phase2` with random weights whose last analysis
layer is scaled x20 so that the latent has realistic magnitudes):

- stages: every stage of the PyTorch stages on the device against the CPU PyTorch stages, on identical inputs;
- streams: an image encoded on the device decodes exactly on the CPU (ONNX Runtime), and the reverse, with the
  default signalled decisions;
- timing: encode and decode, whole and per stage, on the device at 512x768 (HxW, the Kodak size);
- with ONNX Runtime's CUDA provider (when this onnxruntime has it, i.e. onnxruntime-gpu): the same three checks
  on the ONNX Runtime sessions on the device;
- with TensorRT (when it can build on the device; for the demo model unless --trt-models says more): fp32 and
  fp16 engines built, verified against the PyTorch stages with the tolerance of their precision (`hpcm-deploy
  verify`), and timed the same way.

    python scripts/gpu_check.py                       # cuda, the three models, within 420 s (--budget)
    python scripts/gpu_check.py --device cpu --quick  # the same checks on the CPU, demo model, 256x256
    python scripts/gpu_check.py --json                # the report as JSON on stdout (the table goes to stderr)

`--budget SECONDS` (default 420 on a GPU, none on the CPU): before each step the check estimates its time (from
what it measured so far, else a prior) and skips what does not fit in what is left, saying so in the table and in
`skipped`. Exit status 0 when every check that ran passed. Without TensorRT (or onnxruntime-gpu) those rows say
why they were skipped.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from hpcm_deploy.models.api import LATENT_SPREAD, spread_latent

GPU_MODELS = ("demo", "hpcm-base", "phase2")
CPU_MODELS = ("demo", "tiny-base", "tiny-phase2")
SPREAD = LATENT_SPREAD  # the last g_a layer's weight gain: a random g_a gives almost all-zero symbols otherwise
SEED = 0
GPU_BUDGET = 420.0  # seconds: the lent machine's command limit is 10 minutes, its session 15, installs included
# relative cost of each model's steps (the demo and tiny models 1), to scale what one model measured to another
WEIGHT = {"demo": 1.0, "tiny-base": 1.0, "tiny-phase2": 1.0, "hpcm-base": 4.0, "phase2": 8.0}
# seconds a step is assumed to take before anything was measured (demo model; scaled by WEIGHT)
PRIOR = {"gpu": {"export": 60.0, "stages": 20.0, "cross": 10.0, "timing": 15.0, "onnxruntime": 40.0,
                 "tensorrt": 150.0},
         "cpu": {"export": 240.0, "stages": 40.0, "cross": 20.0, "timing": 20.0, "onnxruntime": 80.0,
                 "tensorrt": 0.0}}


def parse_hw(text: str) -> tuple[int, int]:
    h, w = (int(v) for v in text.lower().split("x"))
    return h, w


# ---------------------------------------------------------------------------------------------- models
def random_export(preset: str, work: Path, jobs: int) -> Path:
    """``preset`` with seeded random weights, spread to realistic latents, exported once into ``work``."""
    from hpcm_deploy.artifacts.export import Manifest
    from hpcm_deploy.errors import ExportError
    from hpcm_deploy.exporting.onnx_export import export_model
    from hpcm_deploy.models.api import load_model

    root = work / f"{preset}-seed{SEED}-x{SPREAD:g}"
    with contextlib.suppress(ExportError, KeyError):
        if Manifest.load(root, verify_hashes=False).extra.get("gpu_check") == f"{preset}/{SEED}/{SPREAD}":
            return root
    model = load_model(preset, seed=SEED)
    spread_latent(model, SPREAD)
    return export_model(model, root, preset, jobs=jobs, source=f"random {preset}, seed {SEED}, g_a x{SPREAD:g}",
                        extra={"gpu_check": f"{preset}/{SEED}/{SPREAD}"})


def cached_export(name: str, work: Path) -> bool:
    """Whether ``name``'s export is made already (the demo's in the user cache, the others in ``work``)."""
    from hpcm_deploy.artifacts.export import Manifest
    from hpcm_deploy.errors import ExportError

    if name == "demo":
        from hpcm_deploy.app.bundled import default_export_dir

        root = default_export_dir()
    else:
        root = work / f"{name}-seed{SEED}-x{SPREAD:g}"
    try:
        Manifest.load(root, verify_hashes=False)
    except (ExportError, KeyError):
        return False
    return True


def model_export(name: str, work: Path, jobs: int) -> Path:
    if name == "demo":
        from hpcm_deploy.app.bundled import default_export

        return default_export(jobs=jobs)
    return random_export(name, work, jobs)


# ---------------------------------------------------------------------------------------------- the budget
class Budget:
    """Plans a run within ``seconds``: ``fits(step, model)`` says whether a step's estimate fits in what is left
    (recording it as skipped when not); ``took(step, model, seconds)`` records a measurement. A step is estimated
    from its last measurement on any model, scaled by the models' :data:`WEIGHT`, else from :data:`PRIOR`."""

    def __init__(self, seconds: float | None, where: str, clock=time.perf_counter) -> None:
        self.seconds, self.where, self.clock = seconds, where, clock
        self.start = clock()
        self.measured: dict[str, tuple[float, float]] = {}  # step -> (seconds, weight of the model it ran on)
        self.skipped: list[str] = []

    def left(self) -> float:
        return float("inf") if self.seconds is None else self.seconds - (self.clock() - self.start)

    def estimate(self, step: str, model: str) -> float:
        weight = WEIGHT.get(model, 4.0)
        if step in self.measured:
            seconds, measured_on = self.measured[step]
            return seconds * weight / measured_on
        return PRIOR[self.where].get(step, 30.0) * weight

    def fits(self, step: str, model: str) -> bool:
        need, left = self.estimate(step, model), self.left()
        if need <= left:
            return True
        self.skipped.append(f"{model}: {step} (needs about {need:.0f} s, {max(left, 0):.0f} s left)")
        return False

    def took(self, step: str, model: str, seconds: float) -> None:
        self.measured[step] = (max(seconds, 0.1), WEIGHT.get(model, 4.0))


def timed(budget: Budget, step: str, model: str, fn, *args, **kwargs):
    start = time.perf_counter()
    try:
        return fn(*args, **kwargs)
    finally:
        budget.took(step, model, time.perf_counter() - start)


def ort_cuda_reason(device: str) -> str | None:
    """Why ONNX Runtime's CUDA rows are not run here, or ``None`` when they are."""
    if not device.startswith("cuda"):
        return "needs a CUDA device"
    import onnxruntime

    if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
        return f"onnxruntime {onnxruntime.__version__} here is a CPU build (install onnxruntime-gpu)"
    return None


# ---------------------------------------------------------------------------------------------- checks
def image(size: tuple[int, int], seed: int) -> np.ndarray:
    from hpcm_deploy.image import random_image

    return (random_image(1, size, seed)[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)


def check_stages(manifest, device: str, sizes: list[tuple[int, int]], backend=None) -> dict[str, Any]:
    """Every stage of ``backend`` (default: the PyTorch stages on ``device``) against the CPU PyTorch stages."""
    from hpcm_deploy.backends.torch_backend import TorchBackend
    from hpcm_deploy.checks.verify import check_stages as compare

    program = manifest.program()
    on_device = backend or TorchBackend(manifest.load_model(device), program, device)
    results = compare(manifest.load_model(), program, on_device, sizes)
    worst = max(results, key=lambda r: r.max_abs if not r.flips else 0.0)
    bad = [f"{r.stage}/{r.output}@{r.size[0]}x{r.size[1]}" for r in results if not r.ok]
    return {"ok": not bad, "outputs": len(results), "worst_abs": worst.max_abs,
            "worst": f"{worst.stage}/{worst.output}", "flips": sum(r.flips for r in results), "failed": bad[:5]}


def decodes(decoder, encoded) -> tuple[bool, str]:
    try:
        dec = decoder.decompress_detailed([encoded.stream], kind="numpy", symbols=True)[0]
    except Exception as exc:  # a desynchronised decoder may fail in any way: that is the finding
        return False, f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    same = all(np.array_equal(a, b) for a, b in zip(encoded.symbols, dec.symbols))
    return same, "" if same else "decoded symbols differ"


def check_cross(manifest, codec, size: tuple[int, int], threads: int = 0, seed: int = 11) -> dict[str, Any]:
    """A stream encoded by ``codec`` decodes exactly in ONNX Runtime on the CPU, and the reverse."""
    from hpcm_deploy.codec import Codec

    cpu = Codec(manifest, backend="onnxruntime", margins=codec.margins, threads=threads)
    try:
        img = image(size, seed)
        here = codec.compress_detailed([img], symbols=True)[0]
        there = cpu.compress_detailed([img], symbols=True)[0]
        to_cpu, why_a = decodes(cpu, here)
        from_cpu, why_b = decodes(codec, there)
    finally:
        cpu.close()
    return {"ok": to_cpu and from_cpu, "to_cpu": to_cpu, "from_cpu": from_cpu,
            "why": "; ".join(filter(None, (why_a, why_b))),
            "signalled": [here.timings.get("signalled", 0), there.timings.get("signalled", 0)],
            "same_stream": here.stream == there.stream, "size": list(size)}


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def time_codec(codec, size: tuple[int, int], repeat: int, warmup: int) -> dict[str, Any]:
    """Encode and decode of one image, whole and per stage (medians)."""
    img = image(size, seed=7)
    stream = codec.compress_detailed([img])[0].stream
    for _ in range(warmup):
        codec.decompress_detailed([stream])
        codec.compress_detailed([img])
    enc = [codec.compress_detailed([img])[0].timings for _ in range(repeat)]
    dec = [codec.decompress_detailed([stream])[0].timings for _ in range(repeat)]

    def side(runs: list[dict]) -> dict[str, Any]:
        stages = {s: median([r["stages"].get(s, 0.0) for r in runs]) for s in runs[0]["stages"]}
        return {"seconds": median([r["total"] for r in runs]), "network": median([r["network"] for r in runs]),
                "stages": stages, "slowest": max(stages, key=stages.get) if stages else ""}

    return {"size": list(size), "repeat": repeat, "encode": side(enc), "decode": side(dec), "bytes": len(stream),
            "in_flight": in_flight_rates(codec, size)}


def in_flight_rates(codec, size: tuple[int, int], images: int = 8) -> dict[str, Any]:
    """Images per second through compress_many / decompress_many with 1 and 2 batches (of one image) in flight,
    and whether the streams and images equal those of one-by-one calls."""
    imgs = [image(size, seed=20 + i) for i in range(images)]
    one_by_one = [codec.compress(im) for im in imgs]
    out: dict[str, Any] = {}
    for flight in (1, 2):
        start = time.perf_counter()
        streams = list(codec.compress_many(imgs, in_flight=flight, batch=1))
        enc = time.perf_counter() - start
        start = time.perf_counter()
        decoded = list(codec.decompress_many(streams, in_flight=flight, batch=1, kind="numpy"))
        dec = time.perf_counter() - start
        same = streams == one_by_one and all(np.array_equal(d, codec.decompress(s, kind="numpy"))
                                             for d, s in zip(decoded, streams))
        out[str(flight)] = {"compress_images_per_s": images / enc, "decompress_images_per_s": images / dec,
                            "equal_to_one_by_one": same}
    return out


def tensorrt_rows(manifest, device: str, check_sizes, size, repeat, warmup, work: Path,
                  threads: int = 0) -> list[dict[str, Any]]:
    """fp32 and fp16 engines: built, verified against the PyTorch stages, timed."""
    from hpcm_deploy.artifacts.shapes import SizeRange
    from hpcm_deploy.backends import TensorRTOptions
    from hpcm_deploy.backends.tensorrt import TensorRTBackend
    from hpcm_deploy.checks.verify import verify_export
    from hpcm_deploy.codec import Codec
    from hpcm_deploy.exporting.engine_build import build_engines

    biggest = (max(s[0] for s in (*check_sizes, size)), max(s[1] for s in (*check_sizes, size)))
    sizes = SizeRange.from_sizes((256, 256), size, biggest)
    rows = []
    for precision in ("fp32", "fp16"):
        row: dict[str, Any] = {"runner": f"tensorrt {precision}"}
        start = time.perf_counter()
        root = build_engines(manifest, work / "engines" / manifest.name / precision, precision, sizes,
                             timing_cache=work / "engines" / f"{manifest.name}.timing.cache", device=device)
        row["build_seconds"] = time.perf_counter() - start
        options = TensorRTOptions(engines=str(root), precision=precision)
        backend = TensorRTBackend.from_export(manifest, device, options)
        try:
            report = verify_export(manifest, backend, sizes=check_sizes, lint=False)
        finally:
            backend.close()
        worst = max(report.stages, key=lambda r: r.max_abs if not r.flips else 0.0)
        row["stages"] = {"ok": all(r.ok for r in report.stages), "worst_abs": worst.max_abs,
                         "worst": f"{worst.stage}/{worst.output}", "tolerance": report.tolerance.name}
        row["verify"] = {"ok": report.ok, "streams": [vars(s) for s in report.streams]}
        # fp16 (and TF32) streams interoperate with fp32 ones through signalled decisions at the fp16 margin
        with Codec(manifest, backend="tensorrt", device=device, options=options,
                   margins=report.tolerance.margins) as codec:
            row["cross"] = check_cross(manifest, codec, check_sizes[-1], threads)
            row["timing"] = time_codec(codec, size, repeat, warmup)
        rows.append(row)
    return rows


# ---------------------------------------------------------------------------------------------- the run
def codec_rows(name: str, manifest, args, budget: Budget, say, backend: str, runner: str) -> dict[str, Any]:
    """Stages, streams and timing of one backend on the device, each step within the budget."""
    from hpcm_deploy.codec import Codec

    row: dict[str, Any] = {"runner": runner, "skipped": []}
    step = "stages" if backend == "torch" else "onnxruntime"
    if budget.fits(step, name):
        say(f"{name}: {runner} stages vs CPU PyTorch stages")
        if backend == "torch":
            row["stages"] = timed(budget, step, name, check_stages, manifest, args.device, args.check_sizes)
    else:
        row["skipped"].append("stages")
    with Codec(manifest, backend=backend, device=args.device) as codec:
        if backend != "torch" and "stages" not in row["skipped"]:
            row["stages"] = timed(budget, step, name, check_stages, manifest, args.device, args.check_sizes,
                                  codec.backend)
        if budget.fits("cross", name):
            say(f"{name}: streams {runner} <-> CPU ONNX Runtime")
            row["cross"] = timed(budget, "cross", name, check_cross, manifest, codec, args.check_sizes[-1],
                                 args.threads)
        else:
            row["skipped"].append("streams")
        if budget.fits("timing", name):
            say(f"{name}: timing {runner} at {args.size[0]}x{args.size[1]}")
            row["timing"] = timed(budget, "timing", name, time_codec, codec, args.size, args.repeat, args.warmup)
        else:
            row["skipped"].append("timing")
    return row


def run_model(name: str, export: Path, args, work: Path, trt_reason: str | None, say,
              budget: Budget | None = None, ort_reason: str | None = "not asked") -> dict[str, Any]:
    from hpcm_deploy.artifacts.export import Manifest

    budget = budget or Budget(None, "gpu" if args.device.startswith("cuda") else "cpu")
    manifest = Manifest.load(export)
    out: dict[str, Any] = {"model": name, "export": str(export), "rows": []}
    out["rows"].append(codec_rows(name, manifest, args, budget, say, "torch", f"torch ({args.device})"))
    if ort_reason is None:
        try:
            out["rows"].append(codec_rows(name, manifest, args, budget, say, "onnxruntime",
                                          f"onnxruntime ({args.device})"))
        except Exception as exc:  # a provider that fails on this machine is a row, not the end of the check
            out["rows"].append({"runner": f"onnxruntime ({args.device})", "error": f"{type(exc).__name__}: {exc}",
                                "trace": traceback.format_exc(limit=3)})
    if trt_reason is None and (args.trt_models == "all" or name in args.trt_models.split(",")):
        if budget.fits("tensorrt", name):
            say(f"{name}: TensorRT build, verify, timing")
            try:
                out["rows"] += timed(budget, "tensorrt", name, tensorrt_rows, manifest, args.device,
                                     args.check_sizes, args.size, args.repeat, args.warmup, work, args.threads)
            except Exception as exc:  # one model's TensorRT failure is a row, not the end of the check
                out["rows"].append({"runner": "tensorrt", "error": f"{type(exc).__name__}: {exc}",
                                    "trace": traceback.format_exc(limit=3)})
    return out


def row_ok(row: dict[str, Any]) -> bool:
    """A row passed when it has no error and every check it ran passed (a step skipped for the budget is neither
    passed nor failed: it is listed under ``skipped``)."""
    return "error" not in row and all(row[k]["ok"] for k in ("stages", "cross", "verify") if k in row)


def table(report: dict[str, Any]) -> Table:
    t = Table(title=f"hpcm-deploy GPU check on {report['device']} ({report['gpu']}); TensorRT: {report['tensorrt']}")
    for col in ("model", "runner", "build s", "stages vs CPU torch (worst abs)", "streams dev->CPU / CPU->dev",
                "encode s", "decode s", "slowest enc / dec stage"):
        t.add_column(col)
    for m in report["models"]:
        for row in m["rows"]:
            if "error" in row:
                t.add_row(m["model"], row["runner"], "", f"ERROR {row['error'][:80]}", "", "", "", "")
                continue
            st, cr, tm = row.get("stages"), row.get("cross"), row.get("timing")
            skip = "skipped (budget)"
            stages = skip
            if st:
                stages = f"{'ok' if st['ok'] else 'FAILED'} ({st['worst_abs']:.1e} {st['worst']})"
                if "tolerance" in st:
                    stages += f" [{st['tolerance']}]"
            cross = skip
            if cr:
                cross = " / ".join("exact" if cr.get(k) else "NOT EXACT" for k in ("to_cpu", "from_cpu"))
                if "verify" in row:
                    cross = f"verify {'ok' if row['verify']['ok'] else 'FAILED'}; {cross}"
                cross += f" (signalled {cr['signalled'][0]}/{cr['signalled'][1]})"
            build = f"{row['build_seconds']:.0f}" if "build_seconds" in row else ""
            times = ([f"{tm['encode']['seconds']:.3f}", f"{tm['decode']['seconds']:.3f}",
                      f"{tm['encode']['slowest']} / {tm['decode']['slowest']}"] if tm else [skip, "", ""])
            t.add_row(m["model"], row["runner"], build, stages, cross, *times)
    for line in report.get("skipped", []):
        t.add_row(line.split(":")[0], "", "", f"skipped: {line.split(': ', 1)[1]}", "", "", "", "")
    return t


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--device", default="cuda", help="cuda, cuda:N or cpu (default: cuda)")
    parser.add_argument("--quick", action="store_true", help="one model (the demo, or --export), 256x256, one run")
    parser.add_argument("--export", help="check this export instead of the default models")
    parser.add_argument("--models", help=f"comma-separated (default: {','.join(GPU_MODELS)} on a GPU, "
                        f"{','.join(CPU_MODELS)} on the CPU)")
    parser.add_argument("--size", help="HxW timed (default: 512x768 on a GPU, 256x256 on the CPU)")
    parser.add_argument("--check-size", action="append", help="HxW of the stage and stream checks (repeatable; "
                        "default: 256x256 and the timed size)")
    parser.add_argument("--repeat", type=int, help="timed runs (default 3; 1 with --quick)")
    parser.add_argument("--work", help="folder for exports and engines (default: <user cache>/hpcm-deploy/gpu-check)")
    parser.add_argument("--no-tensorrt", action="store_true", help="skip TensorRT even where it is available")
    parser.add_argument("--trt-models", default="demo", help="models whose TensorRT engines are built, verified and "
                        "timed: comma-separated or 'all' (default: demo; building a full-size model's 18 plans in two "
                        "precisions takes many minutes)")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads for PyTorch and ONNX Runtime (default: "
                        "theirs, one per core; 1 on a machine whose cores are busy with other work)")
    parser.add_argument("--budget", type=float, help=f"seconds to plan within: steps whose estimate does not fit "
                        f"in what is left are skipped, and listed (default {GPU_BUDGET:g} on a GPU, none on the CPU; "
                        "0: none)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON on stdout")
    args = parser.parse_args(argv)

    started = time.perf_counter()
    console = Console(stderr=True)
    if not console.is_terminal:
        console = Console(stderr=True, width=200)  # a log file: one table row per line

    def say(text: str) -> None:
        console.print(f"[dim]{time.perf_counter() - started:6.1f} s[/dim] {text}")

    from hpcm_deploy.backends import check_device
    from hpcm_deploy.files import user_cache_dir

    args.device = check_device("torch", args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    on_gpu = args.device.startswith("cuda")
    if on_gpu and not torch.cuda.is_available():
        console.print("error: no CUDA device is visible to torch; run with --device cpu")
        return 2
    if on_gpu:
        # PyTorch runs cuDNN convolutions in TF32 by default; the CPU stages and streams are fp32
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cuda.matmul.allow_tf32 = False
    args.size = parse_hw(args.size) if args.size else ((256, 256) if args.quick or not on_gpu else (512, 768))
    checks = [parse_hw(s) for s in args.check_size] if args.check_size else None
    args.check_sizes = checks or ([(256, 256)] if args.quick or args.size == (256, 256) else [(256, 256), args.size])
    args.repeat = args.repeat or (1 if args.quick else 3)
    args.warmup = 0 if args.quick else 1
    work = Path(args.work) if args.work else user_cache_dir() / "gpu-check"
    jobs = max(1, min(8, (os.cpu_count() or 2) // 2))
    if args.export:
        models = [(Path(args.export).name, Path(args.export))]
        args.trt_models = "all"
    else:
        names = args.models.split(",") if args.models else list(GPU_MODELS if on_gpu else CPU_MODELS)
        models = [(n, None) for n in (names[:1] if args.quick else names)]

    trt_reason = "skipped (--no-tensorrt)" if args.no_tensorrt else "needs a CUDA device" if not on_gpu else None
    if trt_reason is None:
        from hpcm_deploy.backends.trt_lib import unavailable_reason

        trt_reason = unavailable_reason(args.device)
    trt_version = None
    if trt_reason is None:
        import tensorrt

        trt_version = tensorrt.__version__
    seconds = args.budget if args.budget is not None else (GPU_BUDGET if on_gpu else None)
    budget = Budget(seconds or None, "gpu" if on_gpu else "cpu")
    ort_reason = ort_cuda_reason(args.device)
    report: dict[str, Any] = {
        "device": args.device, "gpu": torch.cuda.get_device_name(args.device) if on_gpu else "CPU",
        "torch": torch.__version__, "threads": torch.get_num_threads(),
        "tensorrt": trt_version or f"not run: {trt_reason}",
        "onnxruntime_cuda": "run" if ort_reason is None else f"not run: {ort_reason}", "budget": seconds,
        "size": list(args.size), "check_sizes": [list(s) for s in args.check_sizes], "models": []}
    for name, export in models:
        try:
            if export is None and not cached_export(name, work):
                if not budget.fits("export", name):
                    continue
                export = timed(budget, "export", name, model_export, name, work, jobs)
            export = export or model_export(name, work, jobs)
            say(f"{name}: export {export}")
            report["models"].append(run_model(name, export, args, work, trt_reason, say, budget, ort_reason))
        except Exception as exc:
            report["models"].append({"model": name, "rows": [{"runner": "setup", "error": f"{type(exc).__name__}: "
                                                              f"{exc}", "trace": traceback.format_exc(limit=4)}]})
    report["skipped"] = budget.skipped
    report["ok"] = all(row_ok(r) for m in report["models"] for r in m["rows"])
    report["seconds"] = time.perf_counter() - started
    console.print(table(report))
    done = "all checks that ran passed" if report["skipped"] else "all checks passed"
    console.print(f"{done if report['ok'] else 'SOME CHECKS FAILED'} in {report['seconds']:.0f} s"
                  + (f"; skipped for the {seconds:g} s budget: {'; '.join(report['skipped'])}"
                     if report["skipped"] else ""))
    if args.json:
        print(json.dumps(report, indent=2, default=str))
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
