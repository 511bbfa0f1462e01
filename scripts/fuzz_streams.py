#!/usr/bin/env python
"""Structure-aware fuzzing of the decoder (hpcm_deploy.checks.fuzz): mutated streams, CRC recomputed, decoded in
worker processes; prints the outcomes, the slowest case and every case that did not end in an image or a
BitstreamError.

    python scripts/fuzz_streams.py [--export DIR] [--cases 10000] [--seed 0] [--json]

Without --export it exports the tiny Phase 2 preset (random weights, latent spread as the tests do) to a
temporary folder first. The streams it mutates: version 3 with and without signalled decisions (a wide margin, so
that CDF indexes and bank choices are signalled) and versions 1 and 2 (CompressAI payloads).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np


def make_streams(export: str, folder: Path) -> list[str]:
    import hpcm_deploy as hd
    from hpcm_deploy.image import random_image
    from hpcm_deploy.runtime.decisions import Margins

    pics = [(random_image(1, size, seed)[0].permute(1, 2, 0).numpy() * 255).astype(np.uint8)
            for seed, size in enumerate([(48, 64), (200, 300)])]
    paths = []
    for name, options in {"v3-signalled": {"margins": Margins(4e-3, 1.0)}, "v3-plain": {"margins": None},
                          "v2": {"margins": Margins(4e-3, 1.0), "legacy_streams": True},
                          "v1": {"margins": None, "legacy_streams": True}}.items():
        codec = hd.Codec(export, **options)
        for i, pic in enumerate(pics):
            path = folder / f"{name}-{i}.hpcm"
            path.write_bytes(codec.compress(pic))
            paths.append(str(path))
    return paths


def tiny_export(folder: Path) -> str:
    import torch

    import hpcm_deploy as hd
    from hpcm_deploy.exporting.onnx_export import export_model
    from hpcm_deploy.models.api import spread_latent

    model = hd.load_model("tiny-phase2", seed=2)
    spread_latent(model)  # realistic latent magnitudes for random weights
    with torch.no_grad():
        for s in (1, 2, 3):
            model.bank(s).fusion_gate[0].bias.zero_()
    return str(export_model(model, folder / "tiny-phase2", "tiny-phase2"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--export", help="export to fuzz (default: the tiny Phase 2 preset, exported first)")
    parser.add_argument("--cases", type=int, default=10000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch", type=int, default=500, help="cases per worker process")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    from hpcm_deploy.checks.fuzz import fuzz

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        export = args.export or tiny_export(folder)
        streams = make_streams(export, folder)
        report = fuzz(export, streams, args.cases, args.seed, args.batch)
    if args.json:
        print(json.dumps(report.as_dict(), indent=2))
    else:
        print(f"{report.cases} cases in {report.seconds:.0f} s: {dict(report.outcomes)}")
        print(f"by mutation: {dict(report.kinds)}")
        print(f"slowest: case {report.slowest.get('case')} ({report.slowest.get('kind')}, "
              f"{report.slowest.get('seconds', 0):.2f} s, {report.slowest.get('outcome')}); peak RSS of a worker "
              f"{report.peak_mb:.0f} MB")
        print("most frequent errors:")
        for message, n in report.errors.most_common(12):
            print(f"  {n:6d}  {message}")
        for bug in report.bugs:
            print(f"BUG case {bug['case']} ({bug['kind']}): {bug['outcome']} {bug['detail']}")
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
