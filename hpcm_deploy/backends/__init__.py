"""Backends that run the stages of an export, from one registry: ``torch``, ``onnxruntime``, ``tensorrt``.

Each backend has a typed options object; :func:`open_backend` validates the options and the device before
anything heavy is imported, so a wrong option or device is one clear line, not a ``TypeError`` from deep inside.
"""

from __future__ import annotations

import dataclasses
import importlib
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..errors import BackendError
from .base import Backend

if TYPE_CHECKING:
    from ..artifacts.export import Manifest, OpenedExport


@dataclass(frozen=True)
class TorchOptions:
    # fp32, bf16 (stream-exact: transforms in bfloat16), bf16-full or auto (bf16 where the CPU has native bfloat16,
    # else fp32); backends/lowp.py. fp32 by default: then every machine draws the same pixels from a stream
    precision: str = "fp32"
    layout: str = "auto"  # the transforms' memory layout: auto (channels-last for bf16 on the CPU), nchw, channels_last
    emulate_bf16: bool = False  # run bf16 on a CPU without AMX/AVX-512 BF16 (slower than fp32: correctness checks)

    def check(self) -> None:
        from .lowp import LAYOUTS, PRECISIONS

        if self.precision not in PRECISIONS:
            raise BackendError(f"torch option precision must be one of {', '.join(PRECISIONS)}, not {self.precision!r}")
        if self.layout not in LAYOUTS:
            raise BackendError(f"torch option layout must be one of {', '.join(LAYOUTS)}, not {self.layout!r}")


@dataclass(frozen=True)
class OnnxRuntimeOptions:
    threads: int = 0  # intra-op threads per session; 0 lets ONNX Runtime choose (one per core)
    # graph optimisation level: all (the default: its streams equal the PyTorch stages' byte for byte on the checked
    # images), extended (no NCHWc weight copies per session: 7 MB instead of 928 MB for an open hpcm-base and 0.1 s
    # instead of 1.1 s to open, 7-9 % slower, streams differ from the PyTorch stages' in a few roundings but
    # cross-decode with the default margins; docs/stages.md) or basic
    optimization: str = "all"

    def check(self) -> None:
        if not isinstance(self.threads, int) or self.threads < 0:
            raise BackendError(f"onnxruntime option threads must be a whole number >= 0, not {self.threads!r}")
        if self.optimization not in ("all", "extended", "basic"):
            raise BackendError(f"onnxruntime option optimization must be all, extended or basic, "
                               f"not {self.optimization!r}")


@dataclass(frozen=True)
class TensorRTOptions:
    engines: str | None = None  # engine directory (default: engines/<export>/<arch>-trt<version>-<precision>)
    precision: str | None = None  # the engine set to use: fp32 or fp16 (default: the export's own precision)
    cuda_graphs: bool = True  # capture each (stage, shapes) into a CUDA graph and replay it
    # CUDA graphs kept at most, in whole size buckets of every stage (max_graphs // stages sizes; the least used
    # dropped first): 144 keeps 8 padded sizes of an 18-stage program, for servers that see varied sizes
    max_graphs: int = 144

    def check(self) -> None:
        if self.precision not in (None, "fp32", "fp16"):
            raise BackendError(f"tensorrt option precision must be fp32 or fp16, not {self.precision!r}")
        if not isinstance(self.max_graphs, int) or isinstance(self.max_graphs, bool) or self.max_graphs < 0:
            raise BackendError(f"tensorrt option max_graphs must be a whole number >= 0, not {self.max_graphs!r}")


@dataclass(frozen=True)
class BackendKind:
    """A backend as the registry knows it before anything heavy is imported: its options, the devices it runs on
    and where its class lives (whose ``open(export, device, options)`` makes it)."""

    name: str
    options: type
    devices: tuple[str, ...]  # device kinds it runs on ("cpu", "cuda", ...), each optionally ":N"
    module: str  # the module of its class, relative to this package
    cls: str

    def backend_class(self) -> type[Backend]:
        return getattr(importlib.import_module(self.module, __name__), self.cls)

    def open(self, export: OpenedExport, device: str, options: Any) -> Backend:
        return self.backend_class().open(export, device, options)


REGISTRY: dict[str, BackendKind] = {
    "onnxruntime": BackendKind("onnxruntime", OnnxRuntimeOptions, ("cpu", "cuda", "tensorrt"), ".onnxrt",
                               "OnnxRuntimeBackend"),
    "torch": BackendKind("torch", TorchOptions, ("cpu", "cuda"), ".torch_backend", "TorchBackend"),
    "tensorrt": BackendKind("tensorrt", TensorRTOptions, ("cuda",), ".tensorrt", "TensorRTBackend"),
}
BACKENDS = tuple(REGISTRY)


def backend_kind(name: str) -> BackendKind:
    try:
        return REGISTRY[name]
    except KeyError:
        raise BackendError(f"unknown backend {name!r}; choose one of: {', '.join(BACKENDS)}") from None


def backend_options(name: str, options: Mapping[str, Any] | object | None = None) -> Any:
    """The typed options of backend ``name`` from a mapping (or an options object, passed through), checked."""
    kind = backend_kind(name)
    if isinstance(options, kind.options):
        result = options
    elif options is None or isinstance(options, Mapping):
        given = dict(options or {})
        fields = [f.name for f in dataclasses.fields(kind.options)]
        unknown = sorted(set(given) - set(fields))
        if unknown:
            allowed = f"its options: {', '.join(fields)}" if fields else "it takes none"
            raise BackendError(f"backend {name} has no option {', '.join(unknown)} ({allowed})")
        result = kind.options(**given)
    else:
        raise BackendError(f"backend {name} takes {kind.options.__name__} options, not {type(options).__name__}")
    check = getattr(result, "check", None)
    if check is not None:
        check()
    return result


def check_device(name: str, device: str | None) -> str:
    """``device`` if backend ``name`` runs there (``cpu``, ``cuda``, ``cuda:N``...), else a one-line error;
    ``None`` is the backend's own default (the CPU, or the GPU for TensorRT)."""
    kind = backend_kind(name)
    if device is None:
        return kind.devices[0]
    base, sep, index = str(device).partition(":")
    if base not in kind.devices or (sep and not index.isdigit()):
        raise BackendError(f"backend {name} cannot run on device {device!r}; it runs on: "
                           f"{', '.join(d + '[:N]' if d != 'cpu' else d for d in kind.devices)}")
    return str(device)


def open_backend(name: str, export: OpenedExport | Manifest | str | os.PathLike, device: str | None = None,
                 options: Mapping[str, Any] | object | None = None) -> Backend:
    """The backend ``name`` for the stages of ``export`` (opened once: pass an :class:`OpenedExport` to share it
    with a codec) on ``device``; options and device are checked before the export is read."""
    typed = backend_options(name, options)
    device = check_device(name, device)
    from ..artifacts.export import OpenedExport

    return backend_kind(name).open(OpenedExport.open(export), device, typed)


def _spec_value(name: str, key: str, text: str) -> Any:
    """``text`` as the type of option ``key``'s default (bool, int or str) of backend ``name``."""
    fields = {f.name: f for f in dataclasses.fields(backend_kind(name).options)}
    if key not in fields:
        raise BackendError(f"backend {name} has no option {key} (its options: {', '.join(fields)})")
    default = fields[key].default
    if isinstance(default, bool):
        if text.lower() not in ("1", "0", "true", "false", "yes", "no", "on", "off"):
            raise BackendError(f"backend {name} option {key} is true or false, not {text!r}")
        return text.lower() in ("1", "true", "yes", "on")
    if isinstance(default, int):
        try:
            return int(text)
        except ValueError:
            raise BackendError(f"backend {name} option {key} is a whole number, not {text!r}") from None
    return text


def parse_backend_spec(spec: str, device: str | None = None) -> tuple[str, str, dict[str, Any]]:
    """``name[:precision][,key=value...][@device]`` (e.g. ``tensorrt:fp16``, ``onnxruntime@cpu``,
    ``torch,layout=channels_last``, ``onnxruntime,optimization=extended``) -> (name, device, options), validated
    against the registry."""
    head, _, dev = spec.partition("@")
    head, *pairs = head.split(",")
    name, _, precision = head.partition(":")
    options: dict[str, Any] = {"precision": precision} if precision else {}
    for pair in pairs:
        key, eq, text = pair.partition("=")
        if not eq or not key:
            raise BackendError(f"backend spec {spec!r}: options are key=value, not {pair!r}")
        options[key.strip()] = _spec_value(name, key.strip(), text.strip())
    backend_options(name, options)
    return name, check_device(name, dev or device), options


__all__ = ["BACKENDS", "REGISTRY", "Backend", "BackendKind", "OnnxRuntimeOptions", "TensorRTOptions", "TorchOptions",
           "backend_options", "check_device", "open_backend", "parse_backend_spec"]
