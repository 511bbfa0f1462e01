"""Serve a :class:`~hpcm_deploy.Codec` with Triton Inference Server through PyTriton (``pip install .[triton]``).

Two models, both with Triton's dynamic batcher:

- ``compress``: input ``image`` (BYTES, the file bytes of a PNG, JPEG, ... image) -> output ``stream`` (BYTES, the
  ``.hpcm`` stream);
- ``decompress``: input ``stream`` (BYTES) -> output ``image`` (BYTES, a PNG file).

An input the codec refuses comes back to its client as a Triton error carrying the codec's message, and the
server goes on serving. PyTriton 0.7.0 can only fail a whole batch at once, so requests that Triton batched
together with a bad one fail with it (their error says so); a client may resend them.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import sysconfig
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import BackendError, ConfigError, HPCMError
from . import Outcome, compress_files, decompress_files

log = logging.getLogger(__name__)

COMPRESS, DECOMPRESS = "compress", "decompress"
#: (input, output) tensor names of each model.
TENSORS = {COMPRESS: ("image", "stream"), DECOMPRESS: ("stream", "image")}


def prefer_own_libpython() -> None:
    """Put this interpreter's library folder first on ``LD_LIBRARY_PATH``.

    PyTriton's Python backend stub links ``libpython3.X.so``; when the interpreter is not the system Python (a
    pyenv or conda build), the loader would otherwise pick the system's library, whose ABI differs, and the stub
    fails (``'_thread.RLock' object has no attribute '_recursion_count'``). PyTriton copies ``os.environ`` into
    the tritonserver process it starts, which passes it on to the stubs, so setting it here, before the server
    starts, is enough: nothing needs to re-exec.
    """
    libdir = sysconfig.get_config_var("LIBDIR")
    if not libdir or not sysconfig.get_config_var("Py_ENABLE_SHARED") or not any(Path(libdir).glob("libpython3*")):
        return
    parts = [p for p in os.environ.get("LD_LIBRARY_PATH", "").split(os.pathsep) if p and p != libdir]
    os.environ["LD_LIBRARY_PATH"] = os.pathsep.join([libdir, *parts])


class CodecModel:
    """The inference callable of one model: all requests of a Triton batch in one batched codec call."""

    def __init__(self, name: str, work: Callable[[Sequence[bytes]], list[Outcome]], lock: threading.Lock) -> None:
        self.name = name
        self.input, self.output = TENSORS[name]
        self._work = work
        self._lock = lock

    def __call__(self, requests: list[Any]) -> list[dict[str, np.ndarray]]:
        # A request may carry several items along its batch axis; code them all together.
        counts, items = [], []
        for request in requests:
            flat = [bytes(v) for v in np.asarray(request[self.input], dtype=object).reshape(-1)]
            counts.append(len(flat))
            items += flat
        start = time.perf_counter()
        with self._lock:  # one codec serves both models; its runner is not meant for concurrent calls
            outcomes = self._work(items)
        log.debug("%s: %d requests, %d items in %.3f s", self.name, len(requests), len(items),
                  time.perf_counter() - start)
        responses, failures, k = [], [], 0
        for r, n in enumerate(counts):
            mine = outcomes[k:k + n]
            k += n
            for j, o in enumerate(mine):
                if isinstance(o, HPCMError):
                    failures.append((r, j, n, o))
            out = np.empty((n, 1), dtype=object)  # object, not bytes_: numpy would drop trailing zero bytes
            out[:, 0] = [o if isinstance(o, bytes) else b"" for o in mine]
            responses.append({self.output: out})
        if failures:
            raise _batch_error(self.name, len(requests), failures)
        return responses


def _batch_error(model: str, n_requests: int, failures: list[tuple[int, int, int, HPCMError]]) -> HPCMError:
    """The error for a batch with failed items: the codec's own error when the batch was that one request."""
    r, j, n_items, first = failures[0]
    where = f"item {j + 1} of {n_items}: " if n_items > 1 else ""
    log.warning("%s: refused an input: %s%s", model, where, first)
    if n_requests == 1 and len(failures) == 1 and not where:
        return first
    text = f"{where}{first}"
    if n_requests > 1:
        text = (f"request {r + 1} of {n_requests} that Triton batched together failed: {text} (the other requests "
                "of that batch fail with it and may be sent again)")
    if len(failures) > 1:
        text += f"; {len(failures) - 1} more failed"
    return type(first)(text)


def _check_port(host: str, port: int, what: str) -> None:
    if not 0 < port < 65536:
        raise ConfigError(f"{what} port {port} is not a port number")
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((host, port))
        except OSError as exc:
            raise ConfigError(f"cannot listen on {host}:{port} for {what} ({exc.strerror}); choose another "
                              f"--{what}-port") from None


class CodecServer:
    """A Triton server (tritonserver started by PyTriton) with the ``compress`` and ``decompress`` models.

    ``with CodecServer(codec, http_port=8000) as server: server.wait(stop_event)``. ``stop()`` shuts Triton down
    gracefully (about 5 s) and removes the workspace, the server's processes and their shared memory.
    """

    def __init__(self, codec, *, host: str = "127.0.0.1", http_port: int = 8000, grpc_port: int = 8001,
                 max_batch: int = 8, max_queue_delay_ms: float = 5.0, triton_log: bool = False) -> None:
        if max_batch < 1:
            raise ConfigError("--max-batch must be at least 1")
        if http_port == grpc_port:
            raise ConfigError("the HTTP and gRPC ports must differ")
        self.codec = codec
        self.host, self.http_port, self.grpc_port = host, http_port, grpc_port
        self.max_batch = max_batch
        self.max_queue_delay_ms = max_queue_delay_ms
        self.triton_log = triton_log
        self._triton: Any = None
        self._dir: Path | None = None
        self._lock = threading.Lock()

    @property
    def http_url(self) -> str:
        return f"http://{_url_host(self.host)}:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"grpc://{_url_host(self.host)}:{self.grpc_port}"

    @property
    def workspace(self) -> Path | None:
        """The temporary folder of this server (Triton's workspace and log), removed by :meth:`stop`."""
        return self._dir

    def start(self) -> CodecServer:
        """Start tritonserver and load both models; returns when they answer."""
        _check_port(self.host, self.http_port, "http")
        _check_port(self.host, self.grpc_port, "grpc")
        try:
            from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor
            from pytriton.triton import Triton, TritonConfig
        except ImportError as exc:
            raise BackendError(f"PyTriton is not installed ({exc}); install it with: pip install "
                               "'hpcm-deploy[triton]'") from None
        prefer_own_libpython()
        self._dir = Path(tempfile.mkdtemp(prefix="hpcm-triton-"))
        # The workspace must not exist yet (PyTriton creates it, and removes it on stop).
        config = TritonConfig(http_address=self.host, http_port=self.http_port, grpc_address=self.host,
                              grpc_port=self.grpc_port, allow_metrics=False, allow_sagemaker=False,
                              allow_vertex_ai=False, log_verbose=0,
                              log_file=None if self.triton_log else self._dir / "tritonserver.log")
        try:
            self._triton = Triton(config=config, workspace=self._dir / "workspace")
            delay_us = int(self.max_queue_delay_ms * 1000)
            work = {COMPRESS: lambda items: compress_files(self.codec, items),
                    DECOMPRESS: lambda items: decompress_files(self.codec, items)}
            for name, (inp, out) in TENSORS.items():
                self._triton.bind(
                    model_name=name, infer_func=CodecModel(name, work[name], self._lock),
                    inputs=[Tensor(name=inp, dtype=bytes, shape=(1,))],
                    outputs=[Tensor(name=out, dtype=bytes, shape=(1,))],
                    config=ModelConfig(max_batch_size=self.max_batch,
                                       batcher=DynamicBatcher(max_queue_delay_microseconds=delay_us)),
                    strict=True)
            self._triton.run()
        except Exception as exc:
            tail = self._log_tail()
            self.stop()
            raise BackendError(f"Triton did not start ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})"
                               + (f"; its log ends with: {tail}" if tail else "")) from None
        log.info("serving %s and %s on %s and %s", COMPRESS, DECOMPRESS, self.http_url, self.grpc_url)
        return self

    def is_alive(self) -> bool:
        return self._triton is not None and self._triton.is_alive()

    def wait(self, stop: threading.Event, poll_s: float = 1.0) -> None:
        """Block until ``stop`` is set or the server dies."""
        while not stop.wait(poll_s):
            if not self.is_alive():
                log.warning("Triton stopped by itself")
                return

    def stop(self) -> None:
        """Stop Triton gracefully and remove everything it left (idempotent)."""
        triton, self._triton = self._triton, None
        try:
            if triton is not None:
                triton.stop()
                # The server may also have been stopped by PyTriton's own exit callback, in another thread: wait
                # for its process to be gone so that nothing outlives us.
                server = getattr(triton, "_triton_server", None)
                deadline = time.monotonic() + 30
                while server is not None and server.is_alive() and time.monotonic() < deadline:
                    time.sleep(0.1)
        finally:
            if self._dir is not None:
                shutil.rmtree(self._dir, ignore_errors=True)
                self._dir = None

    def _log_tail(self, lines: int = 3) -> str:
        path = self._dir / "tritonserver.log" if self._dir else None
        if path is None or not path.is_file():
            return ""
        text = [ln.strip() for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
        return " | ".join(text[-lines:])

    def __enter__(self) -> CodecServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _url_host(host: str) -> str:
    if host in ("0.0.0.0", ""):
        return "127.0.0.1"
    return f"[{host}]" if ":" in host else host


def serve(codec, stop: threading.Event, **options: Any) -> None:
    """Serve ``codec`` until ``stop`` is set (or the server dies), then stop cleanly."""
    with CodecServer(codec, **options) as server:
        server.wait(stop)


__all__ = ["COMPRESS", "DECOMPRESS", "TENSORS", "CodecModel", "CodecServer", "prefer_own_libpython", "serve"]
