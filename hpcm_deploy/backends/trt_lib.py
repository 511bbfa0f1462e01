"""TensorRT: engine building (``hpcm-deploy build-engine``) and what it needs around the TensorRT calls.

Everything that is not a TensorRT call (profiles, recipes, manifests, compatibility checks) lives in plain
Python modules here and is tested without TensorRT; ``build.py`` and ``backends/tensorrt.py`` hold the calls.
"""

from __future__ import annotations

from types import ModuleType

from ..errors import BackendError

MIN_VERSION = (10, 8)
INSTALL_HINT = ("install TensorRT 10.8+ or 11.x for your CUDA version, e.g. `pip install tensorrt-cu12` "
                "(or tensorrt-cu13), on a machine with an NVIDIA GPU and driver")


def version_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in version.split(".")[:3] if p.isdigit())


def import_tensorrt() -> ModuleType:
    """The ``tensorrt`` module, or a :class:`BackendError` that says what is missing and how to install it."""
    try:
        import tensorrt as trt
    except ImportError as exc:
        raise BackendError(f"TensorRT is not available ({exc}); {INSTALL_HINT}") from None
    if version_tuple(trt.__version__)[:2] < MIN_VERSION:
        raise BackendError(f"TensorRT {trt.__version__} is too old; {INSTALL_HINT}")
    return trt


def cuda_device(device: str = "cuda") -> tuple[str, tuple[int, int]]:
    """(GPU name, compute capability) of ``device``, or a :class:`BackendError` when there is no GPU."""
    import torch

    if not torch.cuda.is_available():
        raise BackendError("no CUDA GPU is visible (torch.cuda.is_available() is False); TensorRT engines need an "
                           "NVIDIA GPU and driver")
    index = int(device.split(":")[1]) if ":" in device else torch.cuda.current_device()
    return torch.cuda.get_device_name(index), tuple(torch.cuda.get_device_capability(index))  # type: ignore[return-value]
