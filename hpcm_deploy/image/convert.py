"""What the codec accepts and returns, and how each kind maps to the model's ``[3, H, W]`` floats in [0, 1].

- PIL images: ``RGB``; ``L`` (greyscale, coded as RGB with equal channels and returned as ``L``);
  ``I;16``/``I`` 16-bit greyscale (returned as ``I;16``); ``P``, ``CMYK``, ``YCbCr`` are converted to RGB.
  Modes with alpha (``RGBA``, ``LA``, ``PA``, ``RGBa``, ``La``, or ``P`` with transparency) are refused unless
  ``alpha`` says otherwise (below).
- NumPy arrays: ``uint8`` or ``uint16``, ``[H, W, 3]`` or ``[H, W]``; floats in [0, 1] likewise (returned as
  float32). ``[H, W, 4]`` (RGBA) is refused unless ``alpha`` says otherwise.
- torch tensors: float ``[3, H, W]`` or ``[1, H, W]`` in [0, 1], on any device; returned on the same device.

16-bit inputs are scaled by 1/65535 and decoded back to 16 bits; float inputs come back as float32 NumPy
arrays (or 8-bit PIL images); greyscale is returned as the mean of the decoded RGB channels. The container
records channels and sample format, so ``decompress`` returns the same channels and sample type.

Alpha cannot be coded. ``alpha`` (``to_tensor(img, alpha=...)``, ``Codec(..., alpha=...)``, ``hpcm-deploy
compress --alpha``) chooses what happens to an image that has it:

- ``"refuse"`` (the default): an :class:`~hpcm_deploy.errors.InputError` that names the other choices;
- ``"drop"``: the alpha channel is discarded and the colour kept as it is, also under transparent pixels
  (premultiplied ``RGBa``/``La`` are un-premultiplied first; ``P`` with transparency keeps its palette colours);
- a background colour (``"white"``, ``"black"``, ``"#rrggbb"``, ``"#rgb"``, any name or ``rgb(...)`` form that
  Pillow's ``ImageColor`` reads, or an ``(r, g, b)`` tuple of 0-255): the image is composited on it,
  ``colour * a + background * (1 - a)`` with ``a`` the alpha in [0, 1], rounded to the input's sample grid
  (8 or 16 bits; floats stay floats). A pixel of alpha 0 takes the background exactly, one of full alpha keeps
  its colour exactly, so the stream equals that of the same image composited beforehand. An ``RGB`` or ``L``
  image with a transparent colour key (PNG ``tRNS``) is composited too; ``refuse`` and ``drop`` code it as is.

Greyscale with alpha (``LA``) stays greyscale when dropped or composited on a grey colour (white, black, ...),
and becomes RGB on any other colour. The stream does not record the alpha or the choice.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..config import MAX_SIDE
from ..errors import InputError


@dataclass(frozen=True)
class ImageInfo:
    """How to return a decoded image: the caller's kind, channels and bit depth."""

    kind: str  # "pil", "numpy", "torch"
    channels: int  # 1 or 3
    bit_depth: int  # 8 or 16 bits per integer sample, 32 for floats in [0, 1]
    device: str = "cpu"
    pending: Any = field(default=None, compare=False, repr=False)  # to_tensor(check=False): out-of-range flag
    dtype: Any = None  # torch/dlpack outputs: torch.uint8 or a float dtype (default: float32 for torch, uint8 dlpack)
    layout: str | None = None  # torch/dlpack outputs: "CHW" or "HWC" (default: CHW for torch, HWC for dlpack)


#: The ``alpha`` choices, as error messages name them.
ALPHA_CHOICES = "refuse, drop or a background colour (white, black, #rrggbb)"

#: PIL modes with an alpha channel (``RGBa``/``La``: premultiplied).
ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")

Background = tuple[int, int, int]

OUT_OF_RANGE = "tensors must hold values in [0, 1]"


def parse_alpha(alpha: Any) -> None | str | Background:
    """What ``alpha`` asks for: None (refuse), ``"drop"``, or the background colour as ``(r, g, b)`` in 0-255.
    An :class:`InputError` for anything else."""
    if alpha is None:
        return None
    if isinstance(alpha, str):
        text = alpha.strip()
        if text.lower() == "refuse":
            return None
        if text.lower() == "drop":
            return "drop"
        from PIL import ImageColor

        try:
            rgb = ImageColor.getrgb(text)
        except ValueError:
            raise InputError(f"alpha must be {ALPHA_CHOICES}, not {alpha!r}") from None
        if len(rgb) == 4 and rgb[3] != 255:
            raise InputError(f"the background colour {alpha!r} is not opaque: give it without an alpha part")
        return int(rgb[0]), int(rgb[1]), int(rgb[2])
    if (isinstance(alpha, (tuple, list)) and len(alpha) == 3
            and all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) and 0 <= v <= 255 for v in alpha)):
        return int(alpha[0]), int(alpha[1]), int(alpha[2])
    raise InputError(f"alpha must be {ALPHA_CHOICES}, or an (r, g, b) tuple of 0-255, not {alpha!r}")


def to_tensor(image: Any, alpha: Any = "refuse", check: bool = True) -> tuple[torch.Tensor, ImageInfo]:
    """``([3, H, W] float32 in [0, 1] on the image's device, how to return it)``. ``alpha``: what to do with an
    alpha channel (``"refuse"``, ``"drop"`` or a background colour; see the module docstring).

    ``check=False`` leaves the range check of a torch tensor to the caller: instead of three host round trips
    now, ``info.pending`` holds a device flag (true: a value is not finite or outside [0, 1]) to fetch later
    with other results."""
    choice = parse_alpha(alpha)
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover - a core dependency
        Image = None  # type: ignore[assignment]
    if Image is not None and isinstance(image, Image.Image):
        return _from_pil(image, choice)
    if isinstance(image, np.ndarray):
        return _from_numpy(image, choice)
    if isinstance(image, torch.Tensor):
        return _from_torch(image, check)
    device_array = as_torch(image)
    if device_array is not None:
        return _from_torch(device_array, check)
    raise InputError(f"cannot code a {type(image).__name__}: pass a PIL image, a NumPy array, a torch tensor or "
                     "an array with __dlpack__ (CuPy, JAX, nvImageCodec)")


def as_torch(image: Any) -> torch.Tensor | None:
    """A torch view of any other array with ``__dlpack__`` or ``__cuda_array_interface__`` (same memory, same
    device: no copy), or None."""
    if isinstance(image, (torch.Tensor, np.ndarray)):
        return None
    try:
        if hasattr(image, "__dlpack__"):
            return torch.from_dlpack(image)
        if hasattr(image, "__cuda_array_interface__"):
            return torch.as_tensor(image, device="cuda")
    except (RuntimeError, TypeError, BufferError) as exc:
        raise InputError(f"cannot read a {type(image).__name__} through DLPack ({str(exc).splitlines()[0]})") from None
    return None


def split_batch(image: Any) -> list[Any] | None:
    """The images of a 4-D batch (``[N, C, H, W]`` or ``[N, H, W, C]``; tensors, arrays, DLPack objects) as
    views, or None when ``image`` is not a batch. A batch of one is a batch too."""
    if isinstance(image, np.ndarray) or isinstance(image, torch.Tensor):
        array = image
    else:
        array = as_torch(image) if hasattr(image, "__dlpack__") or hasattr(image, "__cuda_array_interface__") else None
    if array is None or array.ndim != 4:
        return None
    return [array[i] for i in range(array.shape[0])]


def image_size(image: Any) -> tuple[int, int]:
    """``(height, width)`` of an image the codec accepts, without converting it (so a size limit can refuse it
    before anything is allocated); ``(0, 0)`` for something that is not an image (conversion refuses it)."""
    if not isinstance(image, (np.ndarray, torch.Tensor)) and (hasattr(image, "__dlpack__")
                                                             or hasattr(image, "__cuda_array_interface__")):
        image = as_torch(image)
    if isinstance(image, (np.ndarray, torch.Tensor)):
        shape = tuple(int(v) for v in image.shape)
        if len(shape) == 4 and shape[0] == 1:
            shape = shape[1:]
        if len(shape) == 2:
            return shape
        if len(shape) == 3:  # [H, W, C] arrays, [C, H, W] tensors, and the other layout where unambiguous
            hwc = shape[0] not in (1, 3) and shape[2] in (1, 3, 4) if isinstance(image, torch.Tensor) else not (
                shape[0] in (1, 3) and shape[2] not in (1, 3, 4))
            return (shape[0], shape[1]) if hwc else (shape[1], shape[2])
        return 0, 0
    size = getattr(image, "size", None)  # PIL: (width, height)
    if isinstance(size, tuple) and len(size) == 2:
        return int(size[1]), int(size[0])
    return 0, 0


def _check_size(h: int, w: int) -> None:
    if h < 1 or w < 1:
        raise InputError(f"image of size {h}x{w} has no pixels")
    if h > MAX_SIDE or w > MAX_SIDE:
        raise InputError(f"image of size {h}x{w} is larger than the {MAX_SIDE}x{MAX_SIDE} an export covers")


def _refuse_alpha(what: str) -> InputError:
    return InputError(f"{what} has an alpha channel, which cannot be coded; choose what to do with it: alpha='drop' "
                      "or a background colour such as alpha='white' (compress --alpha), or convert it to RGB first")


def _from_pil(img, alpha: None | str | Background = None) -> tuple[torch.Tensor, ImageInfo]:
    mode = img.mode
    keyed = mode in ("L", "RGB") and "transparency" in img.info  # a transparent colour key (PNG tRNS)
    if mode in ALPHA_MODES or (mode == "P" and "transparency" in img.info) or (keyed and isinstance(alpha, tuple)):
        if alpha is None:
            raise _refuse_alpha(f"image mode {mode}")
        grey = mode in ("LA", "La", "L")
        a = _apply_alpha(np.asarray(img.convert("LA" if grey else "RGBA")), alpha)
        t, _ = _from_numpy(a)
        return t, ImageInfo("pil", 1 if a.ndim == 2 else 3, 8)
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


def _from_numpy(a: np.ndarray, alpha: None | str | Background = None) -> tuple[torch.Tensor, ImageInfo]:
    if a.ndim == 3 and a.shape[0] in (1, 3) and a.shape[2] not in (1, 3, 4):
        a = a.transpose(1, 2, 0)  # [C, H, W]
    if a.ndim == 3 and a.shape[2] == 4:
        if alpha is None:
            raise _refuse_alpha("array of shape [H, W, 4]")
        a = _apply_alpha(a, alpha)
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


def _apply_alpha(a: np.ndarray, alpha: str | Background) -> np.ndarray:
    """``[H, W, 2]`` (grey + alpha) or ``[H, W, 4]`` (RGB + alpha) samples without their alpha: dropped, or
    composited on the background colour and rounded to the sample grid; same dtype. A grey image stays grey unless
    the colour is not grey."""
    colour = a[..., :-1]
    if alpha == "drop":
        return np.ascontiguousarray(colour[..., 0] if colour.shape[2] == 1 else colour)
    assert isinstance(alpha, tuple)
    if a.dtype == np.uint8:
        top = 255.0
    elif a.dtype == np.uint16:
        top = 65535.0
    elif np.issubdtype(a.dtype, np.floating):
        if not np.isfinite(a).all() or a.min(initial=0) < 0 or a.max(initial=0) > 1:
            raise InputError("float arrays must hold values in [0, 1]")
        top = 1.0
    else:
        raise InputError(f"array dtype {a.dtype} is not supported: use uint8, uint16 or floats in [0, 1]")
    background = np.array(alpha, dtype=np.float64) * (top / 255.0)
    if colour.shape[2] == 1 and len(set(alpha)) == 1:
        background = background[:1]  # grey on grey stays grey
    elif colour.shape[2] == 1:
        colour = np.repeat(colour, 3, axis=2)
    weight = a[..., -1:].astype(np.float64) / top
    out = colour.astype(np.float64) * weight + background * (1.0 - weight)
    if top != 1.0:
        out = np.clip(np.round(out), 0, top)
    out = out.astype(a.dtype)
    return np.ascontiguousarray(out[..., 0] if out.shape[2] == 1 else out)


def _from_torch(t: torch.Tensor, check: bool = True) -> tuple[torch.Tensor, ImageInfo]:
    if t.dim() == 4 and t.shape[0] == 1:
        t = t[0]
    if t.dim() == 2:
        t = t[None]
    if t.dim() == 3 and t.shape[0] not in (1, 3) and t.shape[2] in (1, 3):
        t = t.permute(2, 0, 1)  # [H, W, C] (channels last): a view
    if t.dim() != 3 or t.shape[0] not in (1, 3):
        raise InputError(f"tensor of shape {tuple(t.shape)} is not an image: expected [3, H, W], [1, H, W], "
                         "[H, W, 3] or [H, W]")
    _check_size(t.shape[1], t.shape[2])
    channels = t.shape[0]
    if t.dtype == torch.uint8:  # whole samples: always in range, nothing to check
        x = t.detach().float().div_(255.0)
        return (x.expand(3, -1, -1) if channels == 1 else x).contiguous(), ImageInfo("torch", channels, 8,
                                                                                      device=str(t.device))
    if not t.is_floating_point():
        raise InputError(f"tensor dtype {t.dtype} is not supported: use uint8 or floats in [0, 1]")
    t = t.detach().float()
    pending = None
    if check:
        if not torch.isfinite(t).all() or t.min() < 0 or t.max() > 1:
            raise InputError(OUT_OF_RANGE)
    else:
        pending = (~torch.isfinite(t) | (t < 0) | (t > 1)).any()  # stays on the device: no wait here
    channels = t.shape[0]
    return (t.expand(3, -1, -1) if channels == 1 else t).contiguous(), ImageInfo("torch", channels, 32,
                                                                                  device=str(t.device),
                                                                                  pending=pending)


def from_tensor(x: torch.Tensor, info: ImageInfo) -> Any:
    """A decoded ``[3, H, W]`` in [0, 1] as the kind described by ``info``. ``"torch"`` and ``"dlpack"`` stay
    on the device (a ``"dlpack"`` result is a contiguous torch tensor, which any ``from_dlpack`` reads in place);
    uint8 samples are rounded as the NumPy and PIL outputs round them."""
    if info.kind in ("torch", "dlpack"):
        out = (x.mean(0, keepdim=True) if info.channels == 1 else x).to(info.device)
        dtype = info.dtype if info.dtype is not None else (torch.uint8 if info.kind == "dlpack" else None)
        if dtype == torch.uint8:
            out = torch.clamp(torch.round(out * 255.0), 0, 255).to(torch.uint8)
        elif dtype is not None:
            out = out.to(dtype)
        layout = info.layout or ("HWC" if info.kind == "dlpack" else "CHW")
        if layout == "HWC":
            out = out.permute(1, 2, 0)
        return out.contiguous() if info.kind == "dlpack" else out
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


def check_output_kind(kind: str, dtype: Any = None, layout: str | None = None) -> None:
    """Refuse, in one line, an output ``kind`` (pil, numpy, torch, dlpack), ``dtype`` or ``layout`` that
    :func:`from_tensor` cannot give."""
    if kind not in ("pil", "numpy", "torch", "dlpack"):
        raise InputError(f"kind must be pil, numpy, torch or dlpack, not {kind!r}")
    if (dtype is not None or layout is not None) and kind not in ("torch", "dlpack"):
        raise InputError("dtype and layout choose torch and dlpack outputs; numpy and pil keep the original's")
    if dtype is not None and not (dtype == torch.uint8 or (isinstance(dtype, torch.dtype)
                                                           and dtype.is_floating_point)):
        raise InputError(f"dtype must be torch.uint8 or a torch float dtype, not {dtype!r}")
    if layout not in (None, "CHW", "HWC"):
        raise InputError(f"layout must be 'CHW' or 'HWC', not {layout!r}")
