"""``hpcm-deploy serve`` (Triton through PyTriton) and ``hpcm-deploy bulk`` (Ray Data)."""

from __future__ import annotations

import json
import logging
import signal
import threading

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from . import main
from .options import (
    backend_option,
    check_runnable,
    device_option,
    engine_options,
    engines_option,
    export_option,
    resolve_export,
)


@main.command()
@export_option
@backend_option
@device_option
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on (HTTP and gRPC).")
@click.option("--http-port", type=int, default=8000, show_default=True)
@click.option("--grpc-port", type=int, default=8001, show_default=True)
@click.option("--max-batch", type=int, default=8, show_default=True, help="Most images coded in one batch (images "
              "of one padded size are coded together), and most requests each model takes in at once (one Triton "
              "model instance each, at most 8).")
@click.option("--max-queue-delay-ms", type=float, default=5.0, show_default=True, help="How long the batcher may "
              "hold a request to fill a batch.")
@engines_option
@click.option("--metrics-port", type=int, help="Serve Triton's Prometheus metrics on this port (default: off).")
def serve(export_dir, backend, device, host, http_port, grpc_port, max_batch, max_queue_delay_ms, engines,
          metrics_port) -> None:
    """Serve the codec with Triton: models `compress` (image file -> .hpcm) and `decompress` (.hpcm -> PNG)."""
    from ..codec import Codec
    from ..serving.triton import CodecServer

    check_runnable(backend, device)
    verbose = logging.getLogger().isEnabledFor(logging.INFO)
    if not verbose:
        # PyTriton logs every refused input with a full traceback; the server logs one line instead.
        logging.getLogger("pytriton").setLevel(logging.ERROR)
    stop = threading.Event()

    def on_signal(signum: int, _frame) -> None:
        stop.set()

    # SIGINT and SIGTERM both stop gracefully: set before the server starts so that no signal can be missed.
    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    console = Console(stderr=True)
    try:
        extra = engine_options(engines, backend)
        codec = Codec(resolve_export(export_dir), backend=backend, device=device, max_batch=max_batch, **extra)
        server = CodecServer(codec, host=host, http_port=http_port, grpc_port=grpc_port, max_batch=max_batch,
                             max_queue_delay_ms=max_queue_delay_ms, triton_log=verbose, metrics_port=metrics_port)
        if stop.is_set():
            return
        with server:
            console.print(f"serving compress and decompress on {server.http_url} (HTTP) and {server.grpc_url} "
                          "(gRPC); Ctrl-C or SIGTERM stops", markup=False, highlight=False, soft_wrap=True)
            server.wait(stop)
            console.print("stopping", markup=False, highlight=False)
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    console.print("stopped", markup=False, highlight=False)


@main.command()
@click.argument("verb", type=click.Choice(["compress", "decompress"]))
@click.argument("input_dir", type=click.Path(file_okay=False))
@click.argument("output_dir", type=click.Path(file_okay=False))
@export_option
@backend_option
@click.option("--device", default="cpu", show_default=True, help="cpu or cuda (each worker sees its own GPUs).")
@engines_option
@click.option("--workers", type=int, default=1, show_default=True, help="Actors, each with its own codec.")
@click.option("--gpus-per-worker", type=float, default=0, show_default=True)
@click.option("--cpus-per-worker", type=float, default=1, show_default=True, help="Also ONNX Runtime's threads.")
@click.option("--batch-size", type=int, default=4, show_default=True, help="Files per codec call.")
@click.option("--address", help="Ray cluster to join (default: start a local Ray on 127.0.0.1). Its workers must "
              "see INPUT_DIR.")
@click.option("--object-store-mb", type=int, help="Cap of the local Ray's object store (default: Ray's).")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON summary.")
def bulk(verb, input_dir, output_dir, export_dir, backend, device, engines, workers, gpus_per_worker, cpus_per_worker,
         batch_size, address, object_store_mb, as_json) -> None:
    """Compress (images -> .hpcm) or decompress (.hpcm -> PNG) a folder with Ray Data, keeping its structure."""
    from ..serving.bulk import check_job, plan, quiet_native_stderr, run_bulk

    verbose = logging.getLogger().isEnabledFor(logging.INFO)
    check_job(backend, device, workers, batch_size, gpus_per_worker, cpus_per_worker, address)
    extra = engine_options(engines, backend)
    jobs = plan(verb, input_dir, output_dir)
    export = resolve_export(export_dir)
    console = Console(stderr=True)
    with quiet_native_stderr(not verbose), \
            Progress(TextColumn(f"{verb} {{task.description}}"), BarColumn(), MofNCompleteColumn(),
                     TimeElapsedColumn(), console=console, transient=True, disable=not console.is_terminal) as bar:
        task = bar.add_task("(starting Ray)", total=len(jobs))

        def progress(item) -> None:
            if item.error is not None:
                bar.console.print(f"error: {item.source}: {item.error}", markup=False, highlight=False,
                                  soft_wrap=True)
            bar.update(task, advance=1, description=item.source.name)

        report = run_bulk(verb, jobs, export, progress, backend=backend, device=device, workers=workers,
                          gpus_per_worker=gpus_per_worker, cpus_per_worker=cpus_per_worker, batch_size=batch_size,
                          address=address, object_store_memory=object_store_mb * 1024**2 if object_store_mb else None,
                          verbose=verbose, **extra)
    if as_json:
        click.echo(json.dumps({"done": report.done, "failed": [{"input": str(i.source), "error": i.error}
                                                               for i in report.failed],
                               "seconds": report.seconds, "images_per_second": report.images_per_second}, indent=2))
    else:
        click.echo(f"{report.done} of {len(jobs)} files {verb}ed into {output_dir} in {report.seconds:.1f} s "
                   f"({report.images_per_second:.2f} files/s)" + (f", {len(report.failed)} failed"
                                                                   if report.failed else ""))
    if report.failed:
        raise SystemExit(1)
