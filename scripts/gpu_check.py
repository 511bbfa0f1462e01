#!/usr/bin/env python
"""For a machine with an NVIDIA GPU and TensorRT (10.8+ or 11.x): build engines for the demo export in fp32
and fp16, verify them against the PyTorch stages, benchmark every backend, print one summary table.

    python scripts/gpu_check.py [--export DIR] [--size 512x768] [--repeat 5]
"""

from __future__ import annotations

import argparse
import sys
import time

from rich.console import Console
from rich.table import Table


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--export", help="export directory (default: the embedded demo model)")
    parser.add_argument("--size", default="512x768")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()

    from hpcm_deploy.backends.tensorrt import TensorRTBackend
    from hpcm_deploy.demo import default_export
    from hpcm_deploy.evaluation.bench import bench
    from hpcm_deploy.exporting.manifest import Manifest
    from hpcm_deploy.exporting.verify import verify_export
    from hpcm_deploy.trt.build import build_engines

    console = Console()
    export = Manifest.load(args.export or default_export())
    size = tuple(int(v) for v in args.size.split("x"))
    rows = []
    for precision in ("fp32", "fp16"):
        start = time.perf_counter()
        engines = build_engines(export, precision=precision,
                                progress=lambda s, sec, p=precision: console.print(f"  {p} {s}: {sec:.1f} s"))
        built = time.perf_counter() - start
        backend = TensorRTBackend.from_export(export, "cuda", engines=engines)
        report = verify_export(export, backend, lint=False)
        worst = max(report.stages, key=lambda r: r.max_abs)
        rows.append((f"tensorrt {precision}", f"{built:.0f} s", "PASSED" if report.ok else "FAILED",
                     f"{worst.max_abs:.1e} ({worst.stage})",
                     f"{max(s.largest_scale_error for s in report.streams):.1e}"))
        backend.close()
    result = bench(str(export.root), ["torch", "onnxruntime@cpu", "tensorrt:fp32", "tensorrt:fp16"], size,
                   args.repeat, device="cuda")
    table = Table(title=f"{export.root} on {result['export']} at {args.size}")
    for col in ("runner", "build", "verify", "worst stage error", "largest scale error", "encode s", "decode s",
                "encode / ref", "decode / ref"):
        table.add_column(col)
    ref = result["reference"]
    table.add_row("PyTorch reference (cuda)", "", "", "", "", f"{ref['encode']['median']:.3f}",
                  f"{ref['decode']['median']:.3f}", "1.00", "1.00")
    timed = {b["backend"]: b for b in result["backends"]}
    for name in ("torch", "onnxruntime@cpu"):
        b = timed[name]
        table.add_row(name, "", "", "", "", f"{b['encode']['median']:.3f}", f"{b['decode']['median']:.3f}",
                      f"{b['ratio_encode']:.2f}", f"{b['ratio_decode']:.2f}")
    for row in rows:
        b = timed["tensorrt:" + row[0].split()[1]]
        timing = [f"{b['encode']['median']:.3f}", f"{b['decode']['median']:.3f}", f"{b['ratio_encode']:.2f}",
                  f"{b['ratio_decode']:.2f}"]
        table.add_row(*row, *timing)
    console.print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
