#!/usr/bin/env python
"""Load test of `hpcm-deploy serve`: start a server on free loopback ports, send PNG images to its `compress`
model from 1, 4 and 16 concurrent clients, print requests per second and p50/p95 latency, stop it.

    python scripts/serve_load.py [--export DIR] [--clients 1 4 16] [--requests 4] [--size 256x256] [--json]

`--requests` is per client. Start-up and the graceful stop are timed too.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import warnings

import numpy as np
from PIL import Image

from hpcm_deploy.errors import BackendError
from hpcm_deploy.serving.triton import wait_ready


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _png(h: int, w: int, seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    coarse = rng.random((h // 16 + 1, w // 16 + 1, 3))
    img = np.kron(coarse, np.ones((16, 16, 1)))[:h, :w]
    buf = io.BytesIO()
    Image.fromarray((img * 255).astype(np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def run_clients(url: str, image: bytes, clients: int, per_client: int) -> dict[str, float]:
    from pytriton.client import ModelClient

    # PyTriton warns on every client that its connection timeout is shorter than the long inference timeout
    warnings.filterwarnings("ignore", message="Client network and/or connection timeout")

    latencies: list[float] = []
    lock = threading.Lock()

    def client() -> None:
        with ModelClient(url, "compress", inference_timeout_s=900) as c:
            for _ in range(per_client):
                start = time.perf_counter()
                c.infer_sample(image=np.array([image], dtype=object))
                with lock:
                    latencies.append(time.perf_counter() - start)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    return {"clients": clients, "requests": len(latencies), "rps": len(latencies) / wall,
            "p50_s": float(np.percentile(latencies, 50)), "p95_s": float(np.percentile(latencies, 95))}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--export", help="export directory (default: the embedded demo model)")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--requests", type=int, default=4, help="requests per client")
    parser.add_argument("--size", default="256x256")
    parser.add_argument("--max-batch", type=int, default=8)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    h, w = (int(v) for v in args.size.split("x"))
    http, grpc = _free_port(), _free_port()
    cmd = [sys.executable, "-c", "from hpcm_deploy.cli import main; main()", "serve", "--http-port", str(http),
           "--grpc-port", str(grpc), "--max-batch", str(args.max_batch)]
    cmd += ["--export", args.export] if args.export else []
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=os.environ)
    rows: list[dict[str, float]] = []
    try:
        try:
            wait_ready(f"127.0.0.1:{http}", proc, timeout=300)
        except BackendError as exc:
            raise SystemExit(f"{exc}: {proc.stderr.read() if proc.stderr else ''}") from None
        startup = time.perf_counter() - start
        image, url = _png(h, w, 0), f"127.0.0.1:{http}"
        run_clients(url, image, 1, 1)  # warm-up
        for n in args.clients:
            rows.append(run_clients(url, image, n, args.requests))
            if not args.json:
                r = rows[-1]
                print(f"{n:3d} clients: {r['rps']:.2f} req/s, p50 {r['p50_s']:.2f} s, p95 {r['p95_s']:.2f} s",
                      flush=True)
    finally:
        stop = time.perf_counter()
        proc.send_signal(signal.SIGTERM)
        proc.wait(120)
        stopped = time.perf_counter() - stop
    summary = {"export": args.export or "demo", "size": [h, w], "startup_s": startup, "stop_s": stopped,
               "runs": rows}
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(f"server start {startup:.1f} s, graceful stop {stopped:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
