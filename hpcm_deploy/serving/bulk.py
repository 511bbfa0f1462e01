"""Bulk compression and decompression of folders with Ray Data (``pip install .[ray]``).

Ray Data reads the input files, a pool of actors (one :class:`~hpcm_deploy.Codec` each) codes them in batches, and
the driver writes each result atomically as it arrives. A file that cannot be coded is reported and the others go
on. By default a local Ray is started (and stopped) on 127.0.0.1; ``address`` joins an existing cluster, whose
workers must then see the input paths (a shared file system).
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import BackendError, ConfigError, HPCMError, InputError
from . import compress_files, decompress_files

log = logging.getLogger(__name__)

VERBS = ("compress", "decompress")
STREAM_SUFFIX = ".hpcm"


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
    ``input_dir``, keeping the folder structure; outputs are ``.hpcm`` streams or PNG files."""
    from ..codec.images import IMAGE_SUFFIXES, list_images

    if verb not in VERBS:
        raise ConfigError(f"unknown bulk job {verb!r}: choose compress or decompress")
    src = Path(input_dir)
    if not src.is_dir():
        raise InputError(f"no such folder: {src}")
    suffixes, new_suffix = (IMAGE_SUFFIXES, STREAM_SUFFIX) if verb == "compress" else ({STREAM_SUFFIX}, ".png")
    files = list_images([src], suffixes)
    if not files:
        raise InputError(f"no {'images' if verb == 'compress' else '.hpcm streams'} found in {src}")
    out = Path(output_dir)
    return [(f.resolve(), out / rel.with_suffix(new_suffix)) for f, rel in files]


class CodecWorker:
    """The ``map_batches`` callable: builds one codec per actor, then codes the batches it is given."""

    def __init__(self, verb: str, export: str, backend: str, device: str, threads: int) -> None:
        from ..codec import Codec

        options = {"threads": threads} if backend == "onnxruntime" and threads > 0 else {}
        self.work = compress_files if verb == "compress" else decompress_files
        self.codec = Codec(export, backend=backend, device=device, **options)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        # catch_all: a file that trips an unexpected error is reported with it; the job goes on.
        outcomes = self.work(self.codec, [bytes(b) for b in batch["bytes"]], catch_all=True)
        data = np.empty(len(outcomes), dtype=object)  # object, not bytes_: numpy would drop trailing zero bytes
        data[:] = [o if isinstance(o, bytes) else b"" for o in outcomes]
        errors = np.array([str(o) if isinstance(o, HPCMError) else "" for o in outcomes], dtype=object)
        sizes = np.array([len(b) for b in batch["bytes"]], dtype=np.int64)
        return {"path": batch["path"], "data": data, "error": errors, "bytes_in": sizes}


def _start_ray(address: str | None, workers: int, cpus_per_worker: float, object_store_memory: int | None,
               verbose: bool) -> bool:
    """Connect to ``address`` or start a local Ray; True when this call started it (and must stop it)."""
    import ray

    if ray.is_initialized():
        return False
    if address:
        ray.init(address=address, log_to_driver=verbose)
        return True
    # Logical CPUs: one per worker and one for the read tasks, even on a smaller machine, so that the readers are
    # never starved by the actors (Ray only books CPUs, it does not pin them).
    num_cpus = max(os.cpu_count() or 1, int(np.ceil(workers * cpus_per_worker)) + 1)
    ray.init(num_cpus=num_cpus, include_dashboard=False, object_store_memory=object_store_memory,
             log_to_driver=verbose, configure_logging=verbose)
    return True


def iter_bulk(verb: str, jobs: Sequence[tuple[Path, Path]], export: str | os.PathLike | None = None, *,
              backend: str = "onnxruntime", device: str = "cpu", workers: int = 1, gpus_per_worker: float = 0,
              cpus_per_worker: float = 1, batch_size: int = 4, address: str | None = None,
              object_store_memory: int | None = None, verbose: bool = False) -> Iterator[BulkItem]:
    """Code ``jobs`` with Ray Data and yield each result (output bytes in ``BulkItem.data``) as it arrives.

    Nothing is written here; :func:`run_bulk` writes. The results come in completion order, not input order.
    """
    if workers < 1:
        raise ConfigError("--workers must be at least 1")
    if batch_size < 1:
        raise ConfigError("--batch-size must be at least 1")
    if gpus_per_worker < 0 or cpus_per_worker <= 0:
        raise ConfigError("--gpus-per-worker must be at least 0 and --cpus-per-worker more than 0")
    if gpus_per_worker == 0 and device != "cpu":
        raise ConfigError(f"--device {device} needs --gpus-per-worker > 0, so that Ray gives each worker a GPU")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # no usage reports to the outside
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
        # Ray Data sets up its own logger on import; its per-dataset notices would break up the caller's progress.
        logging.getLogger("ray.data").setLevel(logging.ERROR)
    if export is None:
        from ..demo import default_export

        export = default_export()  # in the driver: actors do not share its working directory
    export = str(Path(export).resolve())
    from ..exporting.manifest import Manifest

    Manifest.load(export, verify_hashes=False)  # a missing export is the user's error, before Ray starts

    outputs = {str(src): dst for src, dst in jobs}
    started = _start_ray(address, workers, cpus_per_worker, object_store_memory, verbose)
    try:
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = False  # the caller shows one bar for the whole job
        ctx.print_on_execution_start = verbose
        ds = ray.data.read_binary_files(list(outputs), include_paths=True, ignore_missing_paths=True,
                                        override_num_blocks=min(len(outputs), 1000))
        threads = max(1, int(cpus_per_worker))
        ds = ds.map_batches(CodecWorker, fn_constructor_args=(verb, export, backend, device, threads),
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
            if path not in seen:
                yield BulkItem(Path(path), dst, "file vanished before it could be read")
    finally:
        if started:
            ray.shutdown()


def run_bulk(verb: str, jobs: Sequence[tuple[Path, Path]], export: str | os.PathLike | None = None,
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


__all__ = ["BulkItem", "BulkReport", "CodecWorker", "iter_bulk", "plan", "run_bulk"]
