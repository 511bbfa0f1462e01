"""Finding TensorRT and the GPU it runs on, for the TensorRT backend and the engine builder.

TensorRT calls live in two places only: ``backends/tensorrt.py`` (running engines) and ``exporting/engine_build.py``
(building them). Everything around them that is not a TensorRT call (profiles, manifests, compatibility checks)
is plain Python in ``artifacts/`` and is tested without TensorRT; so are the device checks here, which run
before TensorRT is imported.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from types import ModuleType

from ..artifacts.engine_manifest import version_tuple
from ..errors import BackendError

MIN_VERSION = (10, 8)
INSTALL_HINT = ("install TensorRT 10.8+ or 11.x for your CUDA version, e.g. `pip install tensorrt-cu12` "
                "(or tensorrt-cu13), on a machine with an NVIDIA GPU and driver")


def cuda_index(device: str | None) -> int | None:
    """The GPU index of ``"cuda:N"`` (``None`` for ``"cuda"``: the current device), or a :class:`BackendError` for
    a device TensorRT cannot run on."""
    text = "cuda" if device is None else str(device)
    base, sep, index = text.partition(":")
    if base != "cuda" or (sep and not index.isdigit()):
        raise BackendError(f"TensorRT runs on an NVIDIA GPU: device cuda or cuda:N, not {text!r}")
    return int(index) if sep else None


def check_device_index(index: int, count: int) -> None:
    """Refuse ``cuda:index`` on a machine with ``count`` GPUs."""
    if not 0 <= index < count:
        have = f"cuda:0 to cuda:{count - 1}" if count > 1 else "only cuda:0" if count == 1 else "none"
        raise BackendError(f"there is no GPU cuda:{index} on this machine ({count} visible: {have})")


def import_tensorrt() -> ModuleType:
    """The ``tensorrt`` module, or a :class:`BackendError` that says what is missing and how to install it."""
    try:
        import tensorrt as trt
    except Exception as exc:  # ImportError, or OSError/RuntimeError from placeholder wheels or missing libraries
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise BackendError(f"TensorRT is not available ({first}); {INSTALL_HINT}") from None
    version = getattr(trt, "__version__", "0")
    if version_tuple(version)[:2] < MIN_VERSION:
        raise BackendError(f"TensorRT {version} is too old; {INSTALL_HINT}")
    return trt


def resolve_cuda(device: str | None) -> int:
    """The index of the GPU ``device`` names, checked against the GPUs torch sees."""
    import torch

    index = cuda_index(device)
    if not torch.cuda.is_available():
        raise BackendError("no CUDA GPU is visible (torch.cuda.is_available() is False); TensorRT engines need an "
                           "NVIDIA GPU and driver")
    if index is None:
        return torch.cuda.current_device()
    check_device_index(index, torch.cuda.device_count())
    return index


def cuda_device(device: str | None = "cuda") -> tuple[str, tuple[int, int]]:
    """(GPU name, compute capability) of ``device``, or a :class:`BackendError` when there is no such GPU."""
    import torch

    index = resolve_cuda(device)
    return torch.cuda.get_device_name(index), tuple(torch.cuda.get_device_capability(index))  # type: ignore[return-value]


@contextlib.contextmanager
def on_gpu(index: int) -> Iterator[None]:
    """Make GPU ``index`` current: TensorRT builds, deserialises and runs on the current CUDA device."""
    import torch

    with torch.cuda.device(index):
        yield


def unavailable_reason(device: str | None = "cuda") -> str | None:
    """Why TensorRT cannot build engines on ``device`` here (not installed, a placeholder wheel, no GPU, or no
    builder), or ``None`` when it can. Creates (and drops) one builder on that GPU."""
    try:
        trt = import_tensorrt()
        index = resolve_cuda(device)
        with on_gpu(index):
            builder = trt.Builder(trt.Logger(trt.Logger.ERROR))
        if builder is None:
            return f"TensorRT {trt.__version__} cannot create a builder on cuda:{index}"
    except BackendError as exc:
        return str(exc)
    except Exception as exc:  # a driver or library problem surfaces here as whatever TensorRT raises
        return f"TensorRT cannot create a builder ({type(exc).__name__}: {exc})"
    return None
