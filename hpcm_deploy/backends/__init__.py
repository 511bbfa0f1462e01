"""Backends that run the stages of an export: ``torch``, ``onnxruntime``, ``tensorrt``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..errors import BackendError
from .base import Backend

if TYPE_CHECKING:
    from ..exporting.manifest import Manifest

BACKENDS = ("torch", "onnxruntime", "tensorrt")


def open_backend(name: str, manifest: Manifest, device: str = "cpu", **options) -> Backend:
    """The backend ``name`` for the stages of ``manifest`` on ``device``."""
    if name == "torch":
        from ..models.api import load_model
        from .torch_backend import TorchBackend

        model = load_model(checkpoint=manifest.path("weights"), seed=None, device=device)
        return TorchBackend(model, manifest.program(), device)
    if name == "onnxruntime":
        from .onnxrt import OnnxRuntimeBackend

        return OnnxRuntimeBackend(manifest, device, **options)
    if name == "tensorrt":
        from .tensorrt import TensorRTBackend

        return TensorRTBackend.from_export(manifest, device, **options)
    raise BackendError(f"unknown backend {name!r}; choose one of: {', '.join(BACKENDS)}")


__all__ = ["BACKENDS", "Backend", "open_backend"]
