#!/usr/bin/env python
"""Peak memory and time of coding one large photo (default 4000x3000, 12 MP), each side in a fresh process.

    python scripts/large_image.py EXPORT [--size 3000x4000] [--memory auto|none|2G] [--backend onnxruntime]

The photo is the bundled sample (scikit-image's rocket) resized to the size; the peak is the process's whole
resident set (VmHWM: Python, the libraries, the sessions and weights, and the coding), read after compressing in
one process and after decompressing in another, with the codec's tile budget ``--memory``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

SIDE = r'''
import json, resource, sys, time
import numpy as np
from PIL import Image
import hpcm_deploy as hd
from hpcm_deploy.app.bundled import SAMPLE, data_path
from hpcm_deploy.cli.options import parse_memory
verb, export, h, w, memory, backend, path = sys.argv[1:8]
codec = hd.Codec(export, backend=backend, memory_budget=parse_memory(memory), max_pixels=None)
opened = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
start = time.perf_counter()
if verb == "compress":
    img = np.asarray(Image.open(data_path(SAMPLE)).convert("RGB").resize((int(w), int(h)), Image.BICUBIC))
    start = time.perf_counter()
    stream = codec.compress(img)
    open(path, "wb").write(stream)
    extra = {"bytes": len(stream), "bpp": 8 * len(stream) / (int(h) * int(w))}
else:
    out = codec.decompress(open(path, "rb").read(), kind="numpy")
    extra = {"shape": list(out.shape)}
seconds = time.perf_counter() - start
tiles = {f"{k[0]} {k[1][0]}x{k[1][1]}": len(v.tiles) for k, v in codec.tile_plans().items()}
print(json.dumps({"verb": verb, "seconds": seconds, "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
                  / 1024, "opened_mb": opened, "tiles": tiles, **extra}))
'''


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("export")
    parser.add_argument("--size", default="3000x4000", help="HxW")
    parser.add_argument("--memory", default="auto")
    parser.add_argument("--backend", default="onnxruntime")
    args = parser.parse_args()
    h, w = args.size.split("x")
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        stream = str(Path(tmp) / "large.hpcm")
        for verb in ("compress", "decompress"):
            run = subprocess.run([sys.executable, "-c", SIDE, verb, args.export, h, w, args.memory, args.backend,
                                  stream], capture_output=True, text=True)
            if run.returncode:
                print(run.stderr[-3000:], file=sys.stderr)
                return 1
            results.append(json.loads(run.stdout.strip().splitlines()[-1]))
    print(json.dumps({"export": args.export, "size": args.size, "memory": args.memory, "backend": args.backend,
                      "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
