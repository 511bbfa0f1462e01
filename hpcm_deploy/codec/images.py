"""What the codec accepts and returns, and how each kind maps to the model's ``[3, H, W]`` floats in [0, 1].

- PIL images: ``RGB``; ``L`` (greyscale, coded as RGB with equal channels and returned as ``L``);
  ``I;16``/``I`` 16-bit greyscale (returned as ``I;16``); ``P``, ``CMYK``, ``YCbCr`` are converted to RGB.
  Modes with alpha (``RGBA``, ``LA``, ``PA``, or ``P`` with transparency) are refused: alpha cannot be coded.
- NumPy arrays: ``uint8`` or ``uint16``, ``[H, W, 3]`` or ``[H, W]``; floats in [0, 1] likewise (returned as
  float32). ``[H, W, 4]`` is refused.
- torch tensors: float ``[3, H, W]`` or ``[1, H, W]`` in [0, 1], on any device; returned on the same device.

16-bit inputs are scaled by 1/65535 and decoded back to 16 bits; float inputs come back as float32 NumPy
arrays (or 8-bit PIL images); greyscale is returned as the mean of the decoded RGB channels. The container
records channels and sample format, so ``decompress`` returns the same channels and sample type.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import InputError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pnm"}


@dataclass(frozen=True)
class ImageInfo:
    """How to return a decoded image: the caller's kind, channels and bit depth."""

    kind: str  # "pil", "numpy", "torch"
    channels: int  # 1 or 3
    bit_depth: int  # 8 or 16 bits per integer sample, 32 for floats in [0, 1]
    device: str = "cpu"


def to_tensor(image: Any) -> tuple[torch.Tensor, ImageInfo]:
    """``([3, H, W] float32 in [0, 1] on the image's device, how to return it)``."""
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover - a core dependency
        Image = None  # type: ignore[assignment]
    if Image is not None and isinstance(image, Image.Image):
        return _from_pil(image)
    if isinstance(image, np.ndarray):
        return _from_numpy(image)
    if isinstance(image, torch.Tensor):
        return _from_torch(image)
    raise InputError(f"cannot code a {type(image).__name__}: pass a PIL image, a NumPy array or a torch tensor")


def _check_size(h: int, w: int) -> None:
    if h < 1 or w < 1:
        raise InputError(f"image of size {h}x{w} has no pixels")
    if h > 16384 or w > 16384:
        raise InputError(f"image of size {h}x{w} is larger than the 16384x16384 an export covers")


def _from_pil(img) -> tuple[torch.Tensor, ImageInfo]:
    mode = img.mode
    if mode in ("RGBA", "LA", "PA", "La", "RGBa") or (mode == "P" and "transparency" in img.info):
        raise InputError(f"image mode {mode} has an alpha channel, which cannot be coded; convert it to RGB first")
    if mode in ("I;16", "I;16B", "I;16L", "I"):
        a = np.asarray(img, dtype=np.float64)
        if a.max(initial=0) > 65535 or a.min(initial=0) < 0:
            raise InputError(f"32-bit image (mode {mode}) has values outside 0..65535")
        t, _ = _from_numpy(a.astype(np.uint16))
        return t, ImageInfo("pil", 1, 16)
    if mode == "L":
        t, _ = _from_numpy(np.asarray(img))
        return t, ImageInfo("pil", 1, 8)
    if mode == "1":
        img = img.convert("L")
        t, _ = _from_numpy(np.asarray(img))
        return t, ImageInfo("pil", 1, 8)
    if mode != "RGB":
        if mode not in ("P", "CMYK", "YCbCr", "LAB", "HSV", "RGBX"):
            raise InputError(f"image mode {mode} is not supported; convert it to RGB or L first")
        img = img.convert("RGB")
    t, _ = _from_numpy(np.asarray(img))
    return t, ImageInfo("pil", 3, 8)


def _from_numpy(a: np.ndarray) -> tuple[torch.Tensor, ImageInfo]:
    if a.ndim == 3 and a.shape[2] == 4:
        raise InputError("array has 4 channels (alpha?); alpha cannot be coded, pass [H, W, 3]")
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[..., 0]
    if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[2] != 3):
        raise InputError(f"array of shape {a.shape} is not an image: expected [H, W, 3] or [H, W]")
    _check_size(a.shape[0], a.shape[1])
    channels = 1 if a.ndim == 2 else 3
    if a.dtype == np.uint8:
        x, depth = a.astype(np.float32) / 255.0, 8
    elif a.dtype == np.uint16:
        x, depth = a.astype(np.float32) / 65535.0, 16
    elif np.issubdtype(a.dtype, np.floating):
        if not np.isfinite(a).all() or a.min(initial=0) < 0 or a.max(initial=0) > 1:
            raise InputError("float arrays must hold values in [0, 1]")
        x, depth = a.astype(np.float32), 32
    else:
        raise InputError(f"array dtype {a.dtype} is not supported: use uint8, uint16 or floats in [0, 1]")
    if channels == 1:
        x = np.repeat(x[..., None], 3, axis=2)
    return torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1))), ImageInfo("numpy", channels, depth)


def _from_torch(t: torch.Tensor) -> tuple[torch.Tensor, ImageInfo]:
    if t.dim() == 4 and t.shape[0] == 1:
        t = t[0]
    if t.dim() != 3 or t.shape[0] not in (1, 3):
        raise InputError(f"tensor of shape {tuple(t.shape)} is not an image: expected [3, H, W] or [1, H, W]")
    if not t.is_floating_point():
        raise InputError(f"tensor dtype {t.dtype} is not supported: use floats in [0, 1]")
    _check_size(t.shape[1], t.shape[2])
    t = t.detach().float()
    if not torch.isfinite(t).all() or t.min() < 0 or t.max() > 1:
        raise InputError("tensors must hold values in [0, 1]")
    channels = t.shape[0]
    return (t.expand(3, -1, -1) if channels == 1 else t).contiguous(), ImageInfo("torch", channels, 32,
                                                                                  device=str(t.device))


def from_tensor(x: torch.Tensor, info: ImageInfo) -> Any:
    """A decoded ``[3, H, W]`` in [0, 1] as the kind described by ``info``."""
    if info.kind == "torch":
        out = x.mean(0, keepdim=True) if info.channels == 1 else x
        return out.to(info.device)
    a = x.detach().cpu().numpy().transpose(1, 2, 0)
    if info.channels == 1:
        a = a.mean(axis=2)
    if info.kind == "numpy" and info.bit_depth == 32:
        return np.ascontiguousarray(a, dtype=np.float32)
    scale, dtype = (65535.0, np.uint16) if info.bit_depth == 16 else (255.0, np.uint8)
    q = np.clip(np.round(a * scale), 0, scale).astype(dtype)
    if info.kind == "numpy":
        return q
    from PIL import Image

    return Image.fromarray(q)  # uint16 [H, W] becomes mode I;16


def read_image(path: str | Path):
    """A PIL image from a file; a clear :class:`InputError` when it is missing or not an image."""
    from PIL import Image, UnidentifiedImageError

    p = Path(path)
    if not p.is_file():
        raise InputError(f"no such file: {p}")
    try:
        with Image.open(p) as img:
            img.load()
            return img.copy()
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise InputError(f"{p} is not a readable image ({str(exc).splitlines()[0]})") from None


def list_images(paths: list[str | Path], suffixes: set[str]) -> list[tuple[Path, Path]]:
    """``(file, path relative to its input root)`` for files and (recursively) folders."""
    out: list[tuple[Path, Path]] = []
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            files = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in suffixes)
            out += [(f, f.relative_to(p)) for f in files]
        elif p.exists():
            out.append((p, Path(p.name)))
        else:
            raise InputError(f"no such file or folder: {p}")
    return out
