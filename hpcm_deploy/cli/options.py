"""Options shared by several verbs."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import click

from ..backends import BACKENDS
from ..config import HPCMConfig
from ..errors import BackendError, ConfigError, InputError


def parse_overrides(items: tuple[str, ...]) -> dict[str, Any]:
    """``("M=64", "enable_multiref=true")`` -> typed config overrides."""
    fields = {f.name: f for f in dataclasses.fields(HPCMConfig)}
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or key not in fields:
            raise ConfigError(f"bad --set {item!r}: expected FIELD=VALUE with FIELD one of {', '.join(fields)}")
        default = getattr(HPCMConfig(), key)
        try:
            if isinstance(default, bool):
                if raw.lower() not in ("1", "0", "true", "false", "yes", "no", "on", "off"):
                    raise ValueError(raw)
                value: Any = raw.lower() in ("1", "true", "yes", "on")
            elif isinstance(default, tuple):
                value = tuple(int(v) for v in raw.split(","))
            else:
                value = type(default)(raw)
        except ValueError:
            raise ConfigError(f"bad --set {item!r}: {raw!r} is not a valid {type(default).__name__}") from None
        out[key] = value
    return out


set_option = click.option("--set", "overrides", multiple=True, metavar="FIELD=VALUE",
                          help="Override a configuration field (repeatable), e.g. --set max_refs_s1=0.")


def parse_size(text: str, padded: bool = False) -> tuple[int, int]:
    """``"512x768"`` -> (512, 768); ``padded``: the size must be one the model codes (multiples of 256)."""
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise ConfigError(f"bad size {text!r}: expected HxW, e.g. 512x768") from None
    if h < 1 or w < 1:
        raise ConfigError(f"bad size {text!r}: height and width must be at least 1")
    if padded:
        from ..artifacts.shapes import check_padded

        check_padded((h, w), f"size {text!r}")
    return h, w


def parse_bytes(text: str, what: str, examples: str = "512M or 4G") -> int:
    """A byte size as a user writes it: ``512M``, ``4G``, ``1.5g``, ``4GiB``, ``1073741824`` (K, M, G, T in powers
    of 1024) -> bytes, positive; anything else is one :class:`ConfigError` naming ``what`` it was for."""
    units = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
    t = text.strip().lower().removesuffix("ib").removesuffix("b")
    try:
        value = float(t[:-1]) * units[t[-1]] if t and t[-1] in units else float(t)
    except (ValueError, KeyError):
        raise ConfigError(f"bad {what} size {text!r}: use e.g. {examples}") from None
    if not value > 0 or value == float("inf"):
        raise ConfigError(f"bad {what} size {text!r}: it must be positive")
    return int(value)


def parse_memory(text: str) -> int | None | str:
    """``"auto"`` (the default budget), ``"none"`` (never tile), or a size such as ``512M``, ``4G``, ``1073741824``."""
    t = text.strip().lower()
    if t in ("auto", "none"):
        return "auto" if t == "auto" else None
    return parse_bytes(text, "memory", "512M, 4G, auto or none")


def parse_workspace(text: str) -> int:
    """The TensorRT builder's workspace: ``"4G"``, ``"512M"``, ``"1073741824"`` -> bytes."""
    return parse_bytes(text, "workspace")


def check_runnable(backend: str, device: str | None) -> str:
    """The device ``backend`` runs on, refused in one line before any work when this machine cannot run it: a
    CUDA device without a visible GPU (torch would fail deep inside with a long traceback), a GPU index it does
    not have, or TensorRT that is not installed."""
    from ..backends import check_device

    resolved = check_device(backend, device)
    base, sep, index = resolved.partition(":")
    if base in ("cuda", "tensorrt"):  # onnxruntime's "tensorrt" device runs on a GPU too
        import torch

        if not torch.cuda.is_available():
            raise BackendError(f"--device {resolved}: no CUDA GPU is visible on this machine "
                               "(torch.cuda.is_available() is False); use --device cpu")
        if sep:
            from ..backends.trt_lib import check_device_index

            check_device_index(int(index), torch.cuda.device_count())
    if backend == "tensorrt":
        from ..backends.trt_lib import import_tensorrt

        import_tensorrt()
    return resolved


def resolve_export(export_dir: str | None) -> str:
    """The export a verb runs: the given folder, or the embedded demo model's (exported on first use)."""
    if export_dir:
        return export_dir
    from .progress import demo_export

    return str(demo_export())


def engine_options(engines: str | None, backend: str) -> dict[str, str]:
    """The codec keyword for ``--engines``: the folder made absolute (so that a server or a bulk worker in another
    working directory finds it), refused for a backend other than TensorRT."""
    if engines is None:
        return {}
    if backend != "tensorrt":
        raise InputError("--engines is for --backend tensorrt")
    return {"engines": str(Path(engines).resolve())}


export_option = click.option("--export", "export_dir", type=click.Path(file_okay=False), help="Export directory "
                             "(default: the embedded demo model, exported once into the user's cache folder).")
backend_option = click.option("--backend", type=click.Choice(list(BACKENDS)), default="onnxruntime",
                              show_default=True)
device_option = click.option("--device", help="cpu, cuda or cuda:N (default: cpu; cuda for tensorrt).")
engines_option = click.option("--engines", type=click.Path(file_okay=False), help="TensorRT engine directory made "
                              "by build-engine (with --backend tensorrt; default: engines/<export>/<gpu-arch>-"
                              "trt<version>-<export precision>).")
