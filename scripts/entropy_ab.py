#!/usr/bin/env python
"""Entropy-coding time of a whole encode and decode through ``Codec`` (PyTorch stages, 1 thread), for comparing
two checkouts back to back: run it with ``PYTHONPATH`` pointing at each.

    SPREAD=3 PYTHONPATH=/path/to/checkout python scripts/entropy_ab.py [hpcm-base|WEIGHTS.pt] [REPEATS]

A preset gets seeded random weights with its last analysis layer scaled by ``SPREAD`` (default 20, as ``bench``'s
exports; 3 gives HPCM-Base a realistic rate of about 1.3 bpp at 768x512); a ``.pt`` file is loaded as the tiny
Phase 2 model. The image is a smooth random 768x512 picture. Prints one JSON line: medians of
``timings["entropy"]`` (CDF indexes and rANS coding) for encode and decode, the stream size, y symbols/s.
"""

import json
import os
import statistics
import sys

import numpy as np
import torch


def main() -> None:
    torch.set_num_threads(1)
    import hpcm_deploy as hd
    from hpcm_deploy.models.api import LATENT_SPREAD, spread_latent

    preset = sys.argv[1] if len(sys.argv) > 1 else "hpcm-base"
    repeats = int(sys.argv[2]) if len(sys.argv) > 2 else 5
    if preset.endswith(".pt"):
        model = hd.load_model("tiny-phase2", preset)
    else:
        model = hd.load_model(preset, seed=5)
        spread_latent(model, float(os.environ.get("SPREAD", LATENT_SPREAD)))
    codec = hd.Codec.from_model(model)
    g = torch.Generator().manual_seed(7)
    coarse = torch.rand(1, 3, 16, 24, generator=g)
    x = torch.nn.functional.interpolate(coarse, size=(512, 768), mode="bilinear", align_corners=False)
    x = (x + 0.03 * torch.rand(1, 3, 512, 768, generator=g)).clamp(0, 1)
    img = (x[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    enc, dec, size = [], [], 0
    for _ in range(repeats):
        r = codec.compress_detailed([img])[0]
        enc.append(r.timings["entropy"])
        size = len(r.stream)
        dec.append(codec.decompress_detailed([r.stream])[0].timings["entropy"])
    symbols = model.config.M * 32 * 48
    print(json.dumps({"tree": hd.__file__, "encode_entropy_ms": 1e3 * statistics.median(enc),
                      "decode_entropy_ms": 1e3 * statistics.median(dec), "bytes": size, "symbols": symbols,
                      "decode_msym_s": symbols / statistics.median(dec) / 1e6}))


if __name__ == "__main__":
    main()
