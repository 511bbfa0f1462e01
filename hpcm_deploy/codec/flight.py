"""Batches in flight and the caller's CUDA stream: how :class:`~hpcm_deploy.Codec` overlaps one batch's host
entropy coding with the next batch's device work (``compress_many``/``decompress_many``), and queues its device
work on a stream it is given (``stream=``)."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import torch

from ..backends.base import Backend
from ..errors import InputError


def on_stream(backend: Backend, stream: Any) -> AbstractContextManager:
    """Queue ``backend``'s device work on the caller's CUDA ``stream``: a ``torch.cuda.Stream``, an object with a
    ``cuda_stream`` or ``ptr`` handle (CuPy), or a raw ``cudaStream_t`` as an int. None: the current stream,
    which the torch and TensorRT backends use anyway (the host then waits on that stream only, never on the
    whole device). ONNX Runtime's CUDA provider runs on the stream its sessions were opened with."""
    if stream is None:
        return nullcontext()
    if not str(backend.device).startswith("cuda") or not backend.torch_native:
        raise InputError(f"stream= needs a CUDA device on the torch or tensorrt backend, not {backend.name} "
                         f"on {backend.device}")
    if not isinstance(stream, torch.cuda.Stream):
        handle = stream if isinstance(stream, int) else getattr(stream, "cuda_stream", None)
        handle = getattr(stream, "ptr", None) if handle is None else handle
        if not isinstance(handle, int):
            raise InputError(f"stream must be a torch.cuda.Stream, a CUDA stream handle or an object with "
                             f"one (cuda_stream, ptr), not {type(stream).__name__}")
        stream = torch.cuda.ExternalStream(handle, device=backend.device)
    return torch.cuda.stream(stream)


def run_in_flight(items: Iterable[Any], work: Callable[[list[Any]], list[Any]], in_flight: int, size: Any
                  ) -> Iterator[Any]:
    """``work`` over consecutive chunks of ``size`` items on ``in_flight`` threads; results in order. An error
    stops the iteration at its chunk (the chunks before it have been yielded)."""
    if not isinstance(in_flight, int) or in_flight < 1:
        raise InputError(f"in_flight must be a positive number of batches, not {in_flight!r}")
    if not isinstance(size, int) or size < 1:
        raise InputError(f"batch must be a positive number of images, not {size!r}")
    source = iter(items)

    def chunks() -> Iterator[list[Any]]:
        while True:
            chunk = [item for _, item in zip(range(size), source)]
            if not chunk:
                return
            yield chunk

    with ThreadPoolExecutor(max_workers=in_flight, thread_name_prefix="hpcm-flight") as pool:
        pending: deque = deque()
        for chunk in chunks():
            pending.append(pool.submit(work, chunk))
            if len(pending) >= in_flight:
                yield from pending.popleft().result()
        while pending:
            yield from pending.popleft().result()
