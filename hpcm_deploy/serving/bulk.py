"""Bulk compression and decompression of folders with Ray Data (``pip install .[ray]``).

Ray Data hands the input paths in batches to a pool of actors (one :class:`~hpcm_deploy.Codec` each), which read
and code them, and the driver writes each result atomically as it arrives. A file that cannot be read (it
disappeared or became unreadable after the job was planned), cannot be coded or cannot be written (disk full, no
permission: nothing is left of it) is reported and the others go on. The actors read the files themselves, rather
than Ray Data's file reader, because a read task that fails fails the whole dataset. By default a local Ray is
started (and stopped) on 127.0.0.1; ``address`` joins an existing cluster, whose workers must then see the input
paths (a shared file system).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..codec.jobs import compress_files, decompress_files, read_input
from ..errors import BackendError, ConfigError, HPCMError

log = logging.getLogger(__name__)

VERBS = ("compress", "decompress")


@dataclass
class BulkItem:
    """One input file and what became of it: ``error`` is None when ``output`` was written."""

    source: Path
    output: Path
    error: str | None = None
    bytes_in: int = 0
    bytes_out: int = 0
    data: bytes = field(default=b"", repr=False)  # the output, until it is written


@dataclass
class BulkReport:
    """The outcome of a bulk job."""

    done: int = 0
    failed: list[BulkItem] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def images_per_second(self) -> float:
        return (self.done + len(self.failed)) / self.seconds if self.seconds else 0.0


def plan(verb: str, input_dir: str | os.PathLike, output_dir: str | os.PathLike) -> list[tuple[Path, Path]]:
    """``(input file, output file)`` for every image (compress) or ``.hpcm`` stream (decompress) under
    ``input_dir``, keeping the folder structure (:func:`hpcm_deploy.codec.jobs.plan_folder`)."""
    from ..codec.jobs import plan_folder

    if verb not in VERBS:
        raise ConfigError(f"unknown bulk job {verb!r}: choose compress or decompress")
    return plan_folder(verb, input_dir, output_dir)


class CodecWorker:
    """The ``map_batches`` callable: builds one codec per actor, then codes the batches it is given."""

    def __init__(self, verb: str, export: str, backend: str, device: str, options: dict[str, Any]) -> None:
        from ..codec import Codec

        self.work = compress_files if verb == "compress" else decompress_files
        self.codec = Codec(export, backend=backend, device=device, options=options)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        paths = [str(p) for p in batch["path"]]
        outcomes: list[bytes | HPCMError] = []
        sizes = []
        for path in paths:
            content = read_input(path)
            outcomes.append(content)
            sizes.append(len(content) if isinstance(content, bytes) else 0)
        readable = [i for i, o in enumerate(outcomes) if isinstance(o, bytes)]
        # catch_all: a file that trips an unexpected error is reported with it; the job goes on.
        coded = self.work(self.codec, [outcomes[i] for i in readable], catch_all=True) if readable else []
        for i, result in zip(readable, coded):
            outcomes[i] = result
        data = np.empty(len(outcomes), dtype=object)  # object, not bytes_: numpy would drop trailing zero bytes
        data[:] = [o if isinstance(o, bytes) else b"" for o in outcomes]
        errors = np.array([str(o) if isinstance(o, HPCMError) else "" for o in outcomes], dtype=object)
        return {"path": np.array(paths, dtype=object), "data": data, "error": errors,
                "bytes_in": np.array(sizes, dtype=np.int64)}


#: How long the address of ``--address`` may take to accept a connection before the job is refused.
CONNECT_TIMEOUT_S = 5.0
#: Seconds of each of Ray Client's 3 attempts to reach a ``ray://`` cluster (Ray's own: 5, 10 and 15 s).
CLIENT_ATTEMPT_S = 5


def _start_ray(address: str | None, workers: int, cpus_per_worker: float, object_store_memory: int | None,
               verbose: bool) -> bool:
    """Connect to ``address`` or start a local Ray; True when this call started it (and must stop it)."""
    import ray

    if ray.is_initialized():
        return False
    if address:
        _probe(address)
        start = time.monotonic()
        try:
            with warnings.catch_warnings():
                if not verbose:  # Ray Client's own multi-line timeout warning; the error below says it in one
                    warnings.simplefilter("ignore")
                ray.init(address=address, log_to_driver=verbose)
        except Exception as exc:  # Ray raises ConnectionError, RuntimeError, grpc errors...
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise BackendError(f"cannot join the Ray cluster at {address} ({first}, after "
                               f"{time.monotonic() - start:.0f} s)") from None
        return True
    # Logical CPUs: one per worker and one for the read tasks, even on a smaller machine, so that the readers are
    # never starved by the actors (Ray only books CPUs, it does not pin them).
    num_cpus = max(os.cpu_count() or 1, int(np.ceil(workers * cpus_per_worker)) + 1)
    ray.init(num_cpus=num_cpus, include_dashboard=False, object_store_memory=object_store_memory,
             log_to_driver=verbose, configure_logging=verbose)
    return True


def _probe(address: str) -> None:
    """Refuse at once (within :data:`CONNECT_TIMEOUT_S`) a cluster address nothing answers on, instead of Ray's
    retries and traceback."""
    import socket

    hostport = address.split("://", 1)[-1].rstrip("/")
    host, sep, port = hostport.rpartition(":")
    if address == "auto" or not sep or not port.isdigit():
        return  # "auto" or a form Ray resolves itself
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=CONNECT_TIMEOUT_S):
            pass
    except OSError as exc:
        reason = (f"no answer within {CONNECT_TIMEOUT_S:.0f} s" if isinstance(exc, TimeoutError) else
                  (exc.strerror or type(exc).__name__).lower())
        raise BackendError(f"cannot reach the Ray cluster at {address} ({reason}); is it running, and is the address "
                           "right?") from None


def _check_gpus(ray, address: str | None, gpus_per_worker: float) -> None:
    """Ray waits forever for GPUs that do not exist: refuse ``gpus_per_worker`` the cluster cannot give."""
    if not gpus_per_worker:
        return
    have = float(ray.cluster_resources().get("GPU", 0))
    if have < gpus_per_worker:
        where = f"the Ray cluster at {address}" if address else "this machine"
        raise BackendError(f"--gpus-per-worker {gpus_per_worker:g}: {where} has {have:g} GPUs, so the workers "
                           "would wait for one forever")


def _check_arguments(workers: int, batch_size: int, gpus_per_worker: float, cpus_per_worker: float,
                     device: str) -> None:
    if workers < 1:
        raise ConfigError("--workers must be at least 1")
    if batch_size < 1:
        raise ConfigError("--batch-size must be at least 1")
    if gpus_per_worker < 0 or cpus_per_worker <= 0:
        raise ConfigError("--gpus-per-worker must be at least 0 and --cpus-per-worker more than 0")
    if gpus_per_worker == 0 and device != "cpu":
        raise ConfigError(f"--device {device} needs --gpus-per-worker > 0, so that Ray gives each worker a GPU")


@contextlib.contextmanager
def quiet_native_stderr(quiet: bool = True) -> Iterator[None]:
    """Ray's C++ core worker writes its notices (such as "constructor arguments in the object store and
    max_restarts > 0" for every actor pool) straight to file descriptor 2, which no Python setting reaches. While
    the block runs, descriptor 2 goes to /dev/null and Python's own stderr (the progress bar, the log, error
    lines) to a copy of the real one. Real failures still come back as Python exceptions."""
    if not quiet:
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    python_stderr = sys.stderr
    copy = open(saved, "w", buffering=1, encoding=getattr(python_stderr, "encoding", None) or "utf-8",
                errors="backslashreplace", closefd=False)
    handlers = [h for h in logging.getLogger().handlers
                if isinstance(h, logging.StreamHandler) and h.stream is python_stderr]
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    os.close(devnull)
    sys.stderr = copy
    for h in handlers:
        h.setStream(copy)
    try:
        yield
    finally:
        copy.flush()
        sys.stderr = python_stderr
        for h in handlers:
            h.setStream(python_stderr)
        os.dup2(saved, 2)
        os.close(saved)
        copy.close()


def check_job(backend: str, device: str, workers: int, batch_size: int, gpus_per_worker: float,
              cpus_per_worker: float, address: str | None) -> None:
    """Everything about a job that can be refused before Ray starts (and before the default export is made): the
    numbers, the backend's device, a cluster address nothing answers on, and GPUs asked of a local Ray on a machine
    without one (Ray would wait for them forever). A cluster's GPUs are counted once it is joined."""
    from ..backends import check_device

    _check_arguments(workers, batch_size, gpus_per_worker, cpus_per_worker, device)
    check_device(backend, device)
    if address is not None:
        _probe(address)
    if address is None and (gpus_per_worker or device != "cpu"):
        import torch

        if not torch.cuda.is_available():
            raise BackendError(f"--device {device} --gpus-per-worker {gpus_per_worker:g}: this machine has no CUDA "
                               "GPU (torch.cuda.is_available() is False), so a local Ray would wait for one forever")


def _import_ray(address: str | None, verbose: bool):
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # no usage reports to the outside
    if address and address.startswith("ray://") and "ray" not in sys.modules:
        # Ray Client tries 3 times, 5, 10 and 15 s (30 s in all); 5 s each bounds a cluster that does not answer to
        # 15 s (read when ray is imported)
        os.environ.setdefault("RAY_CLIENT_INITIAL_CONNECTION_TIMEOUT_S", str(CLIENT_ATTEMPT_S))
        os.environ.setdefault("RAY_CLIENT_MAX_CONNECTION_TIMEOUT_S", str(CLIENT_ATTEMPT_S))
    if address is None and "ray" not in sys.modules:
        # A local Ray binds every interface and advertises the machine's address unless it believes clusters are
        # off; this switch (read when ray is imported) keeps all of its servers on 127.0.0.1.
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    try:
        import ray
        import ray.data
    except ImportError as exc:
        raise BackendError(f"Ray Data is not installed ({exc}); install it with: pip install 'hpcm-deploy[ray]'") \
            from None
    if not verbose:
        # Ray Data sets up its own logger on import; its per-dataset notices would break up the caller's progress,
        # as would the token-authentication notice of every new local cluster.
        logging.getLogger("ray.data").setLevel(logging.ERROR)
        logging.getLogger("ray._private.authentication").setLevel(logging.ERROR)
        logging.getLogger("ray.client_builder").setLevel(logging.WARNING)
    return ray


def worker_options(backend: str, cpus_per_worker: float) -> dict[str, Any]:
    """Backend options of one worker: a backend with its own thread pool gets one thread per CPU Ray books
    for the worker, so that workers do not oversubscribe the machine."""
    from dataclasses import fields

    from ..backends import backend_kind

    has_threads = any(f.name == "threads" for f in fields(backend_kind(backend).options))
    return {"threads": max(1, int(cpus_per_worker))} if has_threads else {}


def iter_bulk(verb: str, jobs: Sequence[tuple[Path, Path]], export: str | os.PathLike, *,
              backend: str = "onnxruntime", device: str = "cpu", workers: int = 1, gpus_per_worker: float = 0,
              cpus_per_worker: float = 1, batch_size: int = 4, address: str | None = None,
              object_store_memory: int | None = None, verbose: bool = False,
              engines: str | os.PathLike | None = None) -> Iterator[BulkItem]:
    """Code ``jobs`` with Ray Data and yield each result (output bytes in ``BulkItem.data``) as it arrives.

    Nothing is written here; :func:`run_bulk` writes. The results come in completion order, not input order.
    """
    from ..artifacts.export import Manifest

    check_job(backend, device, workers, batch_size, gpus_per_worker, cpus_per_worker, address)
    options = worker_options(backend, cpus_per_worker)
    # actors do not share the driver's working directory: every folder they open is made absolute here
    export = str(Path(export).resolve())
    if engines is not None:
        options["engines"] = str(Path(engines).resolve())
    Manifest.load(export, verify_hashes=False)  # a missing export is the user's error, before Ray starts
    ray = _import_ray(address, verbose)
    outputs = {str(src): dst for src, dst in jobs}
    started = _start_ray(address, workers, cpus_per_worker, object_store_memory, verbose)
    try:
        _check_gpus(ray, address, gpus_per_worker)
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = False  # the caller shows one bar for the whole job
        ctx.print_on_execution_start = verbose
        # The paths, not their bytes: each actor reads its files, so that one that is gone or unreadable is that
        # file's error (a failed read task of read_binary_files would stop the whole job).
        ds = ray.data.from_items([{"path": path} for path in outputs],
                                 override_num_blocks=max(1, min(len(outputs) // batch_size, 200)))
        ds = ds.map_batches(CodecWorker, fn_constructor_args=(verb, export, backend, device, options),
                            batch_size=batch_size, batch_format="numpy",
                            compute=ray.data.ActorPoolStrategy(size=workers), num_cpus=cpus_per_worker,
                            num_gpus=gpus_per_worker or None)
        seen = set()
        for row in ds.iter_rows():
            path = str(row["path"])
            seen.add(path)
            dst = outputs.get(path)
            if dst is None:  # should not happen: Ray reports the paths it was given
                log.warning("Ray returned an unexpected path %s", path)
                continue
            yield BulkItem(Path(path), dst, row["error"] or None, int(row["bytes_in"]), data=bytes(row["data"]))
        for path, dst in outputs.items():
            if path not in seen:  # should not happen: every path comes back, coded or with its error
                yield BulkItem(Path(path), dst, "was not coded (Ray returned no result for it)")
    finally:
        if started:
            ray.shutdown()


def run_bulk(verb: str, jobs: Sequence[tuple[Path, Path]], export: str | os.PathLike,
             progress: Callable[[BulkItem], None] | None = None, **options: Any) -> BulkReport:
    """Code ``jobs`` (from :func:`plan`) with Ray Data and write every output atomically (a half-written output
    never remains). ``progress`` is called once per file, failed or not. Options as for :func:`iter_bulk`."""
    from ..files import write_atomic

    report, start = BulkReport(), time.perf_counter()
    for item in iter_bulk(verb, jobs, export, **options):
        if item.error is None:
            try:
                write_atomic(item.output, item.data)
                item.bytes_out = len(item.data)
            except OSError as exc:
                item.error = f"cannot write {item.output} ({exc.strerror or exc})"
        item.data = b""  # do not keep every output in memory
        if item.error is None:
            report.done += 1
        else:
            report.failed.append(item)
        if progress is not None:
            progress(item)
    report.seconds = time.perf_counter() - start
    return report


__all__ = ["BulkItem", "BulkReport", "CodecWorker", "check_job", "iter_bulk", "plan", "run_bulk"]
