"""The small interface every backend offers: run a stage on named, device-resident tensors.

Like Polygraphy's runners, a backend has a short life cycle and one verb (``run``); the codec drives any
backend through it without knowing which it is. Tensors stay in the backend's own type (torch tensors,
NumPy arrays, ONNX Runtime values); only ``to_host``/``from_host`` cross to NumPy.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from contextlib import AbstractContextManager, nullcontext
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from ..artifacts.export import OpenedExport


class Backend(ABC):
    """Runs the stages of one coding program."""

    name: str = "?"
    device: str = "cpu"
    torch_native: bool = False  # its tensors are torch tensors (a caller may hand over torch tensors directly)
    max_batch: int | None = None  # the most images one run may hold (TensorRT: its profiles' range); None: any
    precision: str | None = None  # the precision it computes in, where it is not the export's own (TensorRT's plans)
    tf32: bool = False  # whether it may compute float32 work in TF32 (engines built with ``--tf32``)

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

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release sessions and device memory."""

    def __enter__(self) -> Backend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
