"""Serve a :class:`~hpcm_deploy.Codec` with Triton Inference Server through PyTriton (``pip install .[triton]``).

Two models:

- ``compress``: input ``image`` (BYTES, the file bytes of a PNG, JPEG, ... image) -> output ``stream`` (BYTES, the
  ``.hpcm`` stream);
- ``decompress``: input ``stream`` (BYTES) -> output ``image`` (BYTES, a PNG file). A request's parameters may
  ask for a preview: ``preview`` (``s1``, ``s2``, ``s3`` or a step count 1-11) and ``fill`` (``thumbnail``, the
  default, or ``context``), as ``decompress --preview/--fill`` (previews are decoded one stream at a time).

Every request is answered alone: an input the codec refuses comes back to its own client as a Triton error
carrying the codec's message, the requests coded in the same batch get their results, and the server goes on
serving. PyTriton 0.7.0 cannot fail one request of a batch that Triton formed (its inference callable returns
one response per request or raises for the whole batch; it has no per-request error), so Triton's dynamic
batcher is not used. Each model runs ``max_batch`` instances instead (at most :data:`MAX_INSTANCES`; one Python
backend stub process of about 45 MB each); every instance hands its request to the model's
:class:`RequestBatcher` in this process, which codes the requests that arrive within ``max_queue_delay_ms`` of
each other (at most ``max_batch`` images) in one codec call. A batch that fails is coded again one image at a
time (:func:`hpcm_deploy.serving.compress_files`), so a bad request costs the others of its batch a retry,
never their results. A request that carries several images along its batch axis succeeds or fails as a whole
(its error names the image).
"""

from __future__ import annotations

import logging
import os
import queue
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
from . import Outcome, compress_files, decompress_files, preview_request

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


class _Job:
    """One request's images, waiting in a :class:`RequestBatcher`."""

    def __init__(self, items: list[bytes]) -> None:
        self.items = items
        self.outcomes: list[Outcome] = []
        self.done = threading.Event()


class RequestBatcher:
    """Codes the requests that the model's instances hand over concurrently in batched codec calls, and gives
    each request its own outcomes.

    A thread of its own takes the first waiting request, gathers more for up to ``max_delay_s`` or until
    ``max_items`` images, and runs ``work`` (:func:`~hpcm_deploy.serving.compress_files` or
    :func:`~hpcm_deploy.serving.decompress_files`, which isolate failed items) on all of their images.
    """

    def __init__(self, name: str, work: Callable[[Sequence[bytes]], list[Outcome]], lock: threading.Lock,
                 max_items: int, max_delay_s: float) -> None:
        self.name = name
        self._work = work
        self._lock = lock
        self.max_items = max(1, max_items)
        self.max_delay_s = max(0.0, max_delay_s)
        self._queue: queue.Queue[_Job | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        self.batches = 0  # codec calls so far (each batch counts once)

    def __call__(self, items: list[bytes]) -> list[Outcome]:
        """The outcomes of ``items`` (one request's images), once their batch is coded."""
        if not items:
            return []
        self._ensure_started()
        job = _Job(items)
        self._queue.put(job)
        job.done.wait()
        return job.outcomes

    def close(self) -> None:
        """Stop the batcher's thread once the requests it holds are answered."""
        thread, self._thread = self._thread, None
        if thread is not None:
            self._queue.put(None)
            thread.join(timeout=60)

    def _ensure_started(self) -> None:
        with self._start_lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name=f"hpcm-{self.name}-batcher", daemon=True)
                self._thread.start()

    def _loop(self) -> None:
        held: _Job | None = None
        while True:
            job = held if held is not None else self._queue.get()
            held = None
            if job is None:
                return
            jobs, count = [job], len(job.items)
            deadline = time.monotonic() + self.max_delay_s
            while count < self.max_items:
                try:
                    more = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    break
                if more is None:  # close(): answer what is held, then stop
                    self._queue.put(None)
                    break
                if count + len(more.items) > self.max_items:
                    held = more  # the first of the next batch
                    break
                jobs.append(more)
                count += len(more.items)
            self._run(jobs)

    def _run(self, jobs: list[_Job]) -> None:
        items = [item for job in jobs for item in job.items]
        start = time.perf_counter()
        try:
            with self._lock:  # one codec serves both models
                outcomes: list[Outcome] = self._work(items)
        except Exception as exc:  # the work isolates items; never leave a request without an answer
            log.exception("%s: a batch of %d requests failed", self.name, len(jobs))
            error = exc if isinstance(exc, HPCMError) else HPCMError(
                f"could not be coded ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})")
            outcomes = [type(error)(str(error)) for _ in items]
        self.batches += 1
        failed = sum(isinstance(o, HPCMError) for o in outcomes)
        log.debug("%s: %d requests, %d items, %d failed, in %.3f s", self.name, len(jobs), len(items), failed,
                  time.perf_counter() - start)
        k = 0
        for job in jobs:
            job.outcomes = outcomes[k:k + len(job.items)]
            k += len(job.items)
            job.done.set()


class CodecModel:
    """The inference callable of one model instance: each request it is given is coded (batched with the other
    instances' requests by the shared :class:`RequestBatcher`) and answered on its own."""

    def __init__(self, name: str, batcher: RequestBatcher) -> None:
        self.name = name
        self.input, self.output = TENSORS[name]
        self._batcher = batcher

    def __call__(self, requests: list[Any]) -> list[dict[str, np.ndarray]]:
        # Without Triton's dynamic batcher each call holds one request; a request may carry several images along
        # its batch axis.
        responses, failed = [], None
        for r, request in enumerate(requests):
            items: list[Any] = [bytes(v) for v in np.asarray(request[self.input], dtype=object).reshape(-1)]
            outcomes: list[Outcome] | None = None
            if self.name == DECOMPRESS:
                try:
                    preview = preview_request(getattr(request, "parameters", None))
                    items = [(item, preview) for item in items]
                except HPCMError as exc:  # this request's error, before anything is decoded
                    outcomes = [exc]
            if outcomes is None:
                outcomes = self._batcher(items)
            error = _request_error(self.name, outcomes)
            if error is not None and failed is None:
                failed = (r, error)
            out = np.empty((len(outcomes), 1), dtype=object)  # object, not bytes_: numpy drops trailing zero bytes
            out[:, 0] = [o if isinstance(o, bytes) else b"" for o in outcomes]
            responses.append({self.output: out})
        if failed is not None:
            r, error = failed
            if len(requests) > 1:  # only if Triton batched requests after all: PyTriton fails them together
                raise for_client(type(error)(f"request {r + 1} of {len(requests)} that Triton batched together "
                                             f"failed: {error}")) from None
            raise for_client(error) from None
        return responses


class ClientError(HPCMError):
    """A refusal on its way to a Triton client: only its one line travels. PyTriton sends the client
    ``traceback.format_exception(None, error, error.__traceback__)``, which for a codec refusal would be some 30
    lines of this server's stack; this class reads as having no traceback, so the client's message ends in one
    ``hpcm_deploy.InputError: ...`` line (PyTriton's stub still puts its own few lines of frame before it)."""

    @property  # type: ignore[override]
    def __traceback__(self):
        return None

    @__traceback__.setter
    def __traceback__(self, value) -> None:  # raising sets it; what the client is sent never shows it
        pass


def for_client(error: HPCMError) -> ClientError:
    """``error`` as the one line a client gets, named by its kind (``hpcm_deploy.BitstreamError: ...``); still an
    instance of that kind (``except InputError`` in the process that raised it keeps working)."""
    kind = type(type(error).__name__, (ClientError, type(error)), {"__module__": "hpcm_deploy"})
    return kind(str(error))


def _request_error(model: str, outcomes: list[Outcome]) -> HPCMError | None:
    """The error of a request whose images did not all succeed: the codec's own error for a one-image request."""
    failures = [(j, o) for j, o in enumerate(outcomes) if isinstance(o, HPCMError)]
    if not failures:
        return None
    j, first = failures[0]
    log.warning("%s: refused an input: %s%s", model, f"image {j + 1} of {len(outcomes)}: " if len(outcomes) > 1
                else "", first)
    if len(outcomes) == 1:
        return first
    more = f"; {len(failures) - 1} more of its images failed" if len(failures) > 1 else ""
    return type(first)(f"image {j + 1} of {len(outcomes)} of this request: {first}{more}")


#: Most Triton instances of a model (one Python backend stub process each, about 45 MB): a larger ``max_batch``
#: still batches that many images, from requests that carry several.
MAX_INSTANCES = 8

#: How often :meth:`CodecServer.start` tries: PyTriton 0.7.0 starts a model's instances in parallel, and the
#: others fetch their configuration from the first one's socket once, within a second, without retrying; on a
#: busy machine one of them may find the socket before it listens ("Connection refused") and fail the load.
START_ATTEMPTS = 3
_HANDSHAKE = "get_config_from_handshake_server"  # where that failure is raised, in its traceback


class _InstanceRace(Exception):
    """A model instance failed to fetch its configuration at start-up: worth starting again."""


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
                 max_batch: int = 8, max_queue_delay_ms: float = 5.0, triton_log: bool = False,
                 metrics_port: int | None = None) -> None:
        if max_batch < 1:
            raise ConfigError("--max-batch must be at least 1")
        if len({http_port, grpc_port, metrics_port} - {None}) < 2 + (metrics_port is not None):
            raise ConfigError("the HTTP, gRPC and metrics ports must differ")
        self.metrics_port = metrics_port
        self.codec = codec
        self.host, self.http_port, self.grpc_port = host, http_port, grpc_port
        self.max_batch = max_batch
        self.instances = min(max_batch, MAX_INSTANCES)  # requests a model takes in at once
        self.max_queue_delay_ms = max_queue_delay_ms
        self.triton_log = triton_log
        self._triton: Any = None
        self._dir: Path | None = None
        self._lock = threading.Lock()
        self._batchers: list[RequestBatcher] = []

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
        if self.metrics_port is not None:
            _check_port(self.host, self.metrics_port, "metrics")
        try:
            from pytriton.model_config import ModelConfig, Tensor
            from pytriton.triton import Triton, TritonConfig
        except ImportError as exc:
            raise BackendError(f"PyTriton is not installed ({exc}); install it with: pip install "
                               "'hpcm-deploy[triton]'") from None
        prefer_own_libpython()
        for attempt in range(1, START_ATTEMPTS + 1):
            try:
                self._start_once(Triton, TritonConfig, ModelConfig, Tensor)
                break
            except _InstanceRace as exc:
                if attempt == START_ATTEMPTS:
                    raise BackendError(f"Triton did not start after {attempt} attempts ({exc})") from None
                log.warning("a Triton model instance did not start (PyTriton's instances race to fetch their "
                            "configuration, more so on a busy machine); starting again (%d of %d)", attempt + 1,
                            START_ATTEMPTS)
        log.info("serving %s and %s on %s and %s", COMPRESS, DECOMPRESS, self.http_url, self.grpc_url)
        return self

    def _start_once(self, Triton, TritonConfig, ModelConfig, Tensor) -> None:  # noqa: N803 - PyTriton's classes
        self._dir = Path(tempfile.mkdtemp(prefix="hpcm-triton-"))
        # The workspace must not exist yet (PyTriton creates it, and removes it on stop).
        config = TritonConfig(http_address=self.host, http_port=self.http_port, grpc_address=self.host,
                              grpc_port=self.grpc_port, allow_metrics=self.metrics_port is not None,
                              **({"metrics_port": self.metrics_port} if self.metrics_port is not None else {}),
                              allow_sagemaker=False,
                              allow_vertex_ai=False, log_verbose=0,
                              log_file=None if self.triton_log else self._dir / "tritonserver.log")
        try:
            self._triton = Triton(config=config, workspace=self._dir / "workspace")
            # catch_all: an unexpected error of one image is that image's error, not its batch's
            work = {COMPRESS: lambda items: compress_files(self.codec, items, catch_all=True),
                    DECOMPRESS: lambda items: decompress_files(self.codec, [s for s, _ in items], catch_all=True,
                                                               previews=[p for _, p in items])}
            for name, (inp, out) in TENSORS.items():
                batcher = RequestBatcher(name, work[name], self._lock, self.max_batch, self.max_queue_delay_ms / 1000)
                self._batchers.append(batcher)
                # No dynamic batcher (PyTriton would fail a whole batch for one bad request): the instances hand
                # their requests to the batcher, which batches them itself.
                self._triton.bind(
                    model_name=name, infer_func=[CodecModel(name, batcher) for _ in range(self.instances)],
                    inputs=[Tensor(name=inp, dtype=bytes, shape=(1,))],
                    outputs=[Tensor(name=out, dtype=bytes, shape=(1,))],
                    config=ModelConfig(max_batch_size=self.max_batch, batcher=None),
                    strict=True)
            self._triton.run()
        except Exception as exc:
            tail = self._log_tail()
            self.stop()
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            if _HANDSHAKE in str(exc) or _HANDSHAKE in tail:
                raise _InstanceRace(first) from None
            raise BackendError(f"Triton did not start ({first})" + (f"; its log ends with: {tail}" if tail else "")) \
                from None

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
            batchers, self._batchers = self._batchers, []
            for batcher in batchers:
                batcher.close()
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


def wait_ready(url: str, proc: Any = None, timeout: float = 180, model: str = COMPRESS, poll_s: float = 0.5) -> float:
    """Wait until the server at ``url`` (``host:port`` of its HTTP endpoint) says ``model`` is ready; the seconds
    it took. A :class:`~hpcm_deploy.errors.BackendError` if ``proc`` (the server's ``subprocess.Popen``, when it
    is one) exits first or ``timeout`` passes: for scripts and tests that start ``hpcm-deploy serve``."""
    import urllib.request

    start = time.monotonic()
    while True:
        try:
            with urllib.request.urlopen(f"http://{url}/v2/models/{model}/ready", timeout=5) as r:
                if r.status == 200:
                    return time.monotonic() - start
        except OSError:
            pass
        if proc is not None and proc.poll() is not None:
            raise BackendError(f"the server exited (status {proc.returncode}) before {model} was ready")
        if time.monotonic() - start > timeout:
            raise BackendError(f"{model} at {url} was not ready within {timeout:.0f} s")
        time.sleep(poll_s)


def _url_host(host: str) -> str:
    if host in ("0.0.0.0", ""):
        return "127.0.0.1"
    return f"[{host}]" if ":" in host else host


__all__ = ["COMPRESS", "DECOMPRESS", "TENSORS", "CodecModel", "CodecServer", "RequestBatcher",
           "prefer_own_libpython", "wait_ready"]
