"""How `hpcm-deploy serve` answers a refused request and how long it takes to stop.

Starts the server (on the demo model, or on the export given as the first argument), sends it one non-image,
prints the client's message and its line count, sends SIGTERM and times the stop, printing the server's stderr
lines stamped from the signal on. ``VV=1`` runs the server with -vv, whose log shows where the stop time goes.
Needs PyTriton (``pip install -e '.[triton]'``).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time

import numpy as np

from hpcm_deploy.errors import BackendError
from hpcm_deploy.serving.triton import wait_ready


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    from pytriton.client import ModelClient

    http, grpc = free_port(), free_port()
    cmd = [sys.executable, "-c", "from hpcm_deploy.cli import main; main()", *(["-vv"] if os.environ.get("VV") else []),
           "serve", "--http-port", str(http), "--grpc-port", str(grpc), "--max-batch", "2"]
    if len(sys.argv) > 1:
        cmd += ["--export", sys.argv[1]]
    lines: list[tuple[float, str]] = []
    start = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def read() -> None:
        for line in proc.stderr:
            lines.append((time.monotonic(), line.rstrip()))

    threading.Thread(target=read, daemon=True).start()
    try:
        wait_ready(f"127.0.0.1:{http}", proc, timeout=600)
    except BackendError as exc:
        sys.exit(f"the server did not start ({exc}):\n" + "\n".join(line for _, line in lines))
    print(f"ready after {time.monotonic() - start:.1f} s")
    with ModelClient(f"127.0.0.1:{http}", "compress", inference_timeout_s=120) as client:
        try:
            client.infer_sample(image=np.array([b"this is not an image"], dtype=object))
        except Exception as exc:  # the Triton error the client gets
            print(f"client message ({len(str(exc).strip().splitlines())} lines): {str(exc)!r}")
    signalled = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=120)
    print(f"stopped {time.monotonic() - signalled:.1f} s after SIGTERM, exit {proc.returncode}")
    time.sleep(0.5)
    for stamp, line in lines:
        if stamp >= signalled - 0.01:
            print(f"  +{stamp - signalled:5.1f} s  {line[:150]}")


if __name__ == "__main__":
    main()
