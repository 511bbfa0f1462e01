"""The small interface every backend offers: run a stage on named, device-resident tensors.

Like Polygraphy's runners, a backend has a short life cycle and one verb (``run``); the codec drives any
backend through it without knowing which it is. Tensors stay in the backend's own type (torch tensors,
NumPy arrays, ONNX Runtime values); only ``to_host``/``from_host``/``fetch`` cross to NumPy.

Run-time helpers (``fetch``, ``quantize``, ``bucket``, ``zeros_like``, ``wait``) have defaults that work on the
tensors every backend here produces: torch tensors (the torch and TensorRT backends) are computed on their
device, NumPy arrays (ONNX Runtime on the CPU) in place, and anything else (ONNX Runtime's CUDA ``OrtValue``) goes
through the host, one blocking copy per tensor. A backend with device arithmetic of its own may override them.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from contextlib import AbstractContextManager, nullcontext
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from ..artifacts.export import OpenedExport


def _is_torch(t: Any) -> bool:
    return type(t).__module__.split(".")[0] == "torch"


class Backend(ABC):
    """Runs the stages of one coding program."""

    name: str = "?"
    device: str = "cpu"
    torch_native: bool = False  # its tensors are torch tensors (a caller may hand over torch tensors directly)
    max_batch: int | None = None  # the most images one run may hold (TensorRT: its profiles' range); None: any
    precision: str | None = None  # the precision it computes in, where it is not the export's own (TensorRT's plans)
    tf32: bool = False  # whether it may compute float32 work in TF32 (engines built with ``--tf32``)
    concurrent: bool = False  # two threads may run stages at once, sharing its weights (batches in flight)

    @classmethod
    @abstractmethod
    def open(cls, export: OpenedExport, device: str, options: Any) -> Backend:
        """This backend for the stages of ``export`` on ``device``, with its typed ``options`` (checked by
        :func:`hpcm_deploy.backends.open_backend`, the one way in)."""

    @abstractmethod
    def run(self, stage: str, inputs: Sequence[Any]) -> list[Any]:
        """Run ``stage`` on its inputs (in the stage's input order); outputs in the stage's output order."""

    @abstractmethod
    def from_host(self, array: np.ndarray) -> Any:
        """A host array as this backend's tensor (on its device)."""

    @abstractmethod
    def to_host(self, tensor: Any) -> np.ndarray:
        """A tensor of this backend as a host array."""

    def stream_context(self) -> AbstractContextManager:
        """A context in which host code queues device work in order with this backend's (its CUDA stream on
        a GPU); nothing on the CPU."""
        return nullcontext()

    def synchronize(self) -> None:  # noqa: B027 - optional hook, a no-op on the CPU
        """Wait for queued device work (timing); a no-op on the CPU."""

    # ------------------------------------------------------------------ run-time helpers (with defaults)
    def fetch(self, tensors: Sequence[Any]) -> list[np.ndarray]:
        """Several tensors as host arrays, with one blocking wait: CUDA torch tensors are copied asynchronously
        into pinned staging buffers (kept and reused per shape) on the current stream, which is then waited for
        once; the arrays returned are the caller's own (copied out of the staging buffers)."""
        cuda = [t for t in tensors if _is_torch(t) and t.is_cuda]
        if not cuda:
            return [self._host_now(t) for t in tensors]
        import torch

        staged: dict[int, Any] = {}
        for n, t in enumerate(tensors):
            if _is_torch(t) and t.is_cuda:
                buf = self._staging(n, tuple(t.shape), t.dtype)
                buf.copy_(t, non_blocking=True)
                staged[n] = buf
        torch.cuda.current_stream(cuda[0].device).synchronize()  # the one wait: every copy above is done
        return [staged[n].numpy().copy() if n in staged else self._host_now(t) for n, t in enumerate(tensors)]

    def _staging(self, slot: int, shape: tuple[int, ...], dtype: Any) -> Any:
        import torch

        pool = self.__dict__.setdefault("_staging_buffers", {})
        key = (slot, shape, dtype)
        if key not in pool:
            pool[key] = torch.empty(shape, dtype=dtype, pin_memory=True)
        return pool[key]

    def _host_now(self, t: Any) -> np.ndarray:
        if isinstance(t, np.ndarray):
            return t
        if _is_torch(t) and not t.is_cuda:
            return t.detach().numpy()
        return self.to_host(t)

    def quantize(self, y: Any, means: Any) -> Any:
        """``round(y - means)`` (half to even, in the tensors' own precision) as a tensor of this backend."""
        if _is_torch(y):
            import torch

            return torch.round(y - means)
        if isinstance(y, np.ndarray) and isinstance(means, np.ndarray):
            return np.round(y - means)
        return self.from_host(np.round(self.to_host(y) - self.to_host(means)))

    def bucket(self, scales: Any, edges: np.ndarray) -> Any:
        """The CDF index of every scale (the number of ``edges`` strictly below it; NaN: ``len(edges)``) as an
        int16 tensor of this backend, so that only two bytes per symbol cross to the host."""
        if _is_torch(scales):
            import torch

            key = (str(scales.device), scales.dtype)
            cache = self.__dict__.setdefault("_edges", {})
            if key not in cache:
                cache[key] = torch.as_tensor(np.asarray(edges), dtype=scales.dtype, device=scales.device)
            bounds = cache[key]
            idx = torch.bucketize(scales, bounds, right=False)
            idx = torch.where(torch.isnan(scales), torch.full_like(idx, bounds.numel()), idx)
            return idx.to(torch.int16)
        from ..entropy.lanes import scale_indexes

        if isinstance(scales, np.ndarray):
            return scale_indexes(scales, edges).astype(np.int16)
        return self.from_host(scale_indexes(self.to_host(scales), edges).astype(np.int16))

    def zeros_like(self, tensor: Any) -> Any:
        """A tensor of zeros of ``tensor``'s shape and type, made on the device."""
        if _is_torch(tensor):
            import torch

            return torch.zeros_like(tensor)
        if isinstance(tensor, np.ndarray):
            return np.zeros_like(tensor)
        return self.from_host(np.zeros_like(self.to_host(tensor)))

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release sessions and device memory."""

    def __enter__(self) -> Backend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
