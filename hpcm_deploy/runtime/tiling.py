"""Tiled ``g_a`` / ``g_s``: run the analysis and synthesis transforms window by window to bound their memory.

Why: at 12 MP almost all of a codec run's memory is in ``g_a`` and ``g_s`` at full and half resolution (their
residual blocks hold a 4x-wide MLP activation twice), while everything else works on the 16x smaller latent.
Both transforms are purely convolutional, so a region of their output depends only on a bounded neighbourhood of
the input, the *halo*. A window that adds the halo around a tile's *core* therefore gives that core exactly as
the whole image does (to float rounding), and only one window's activations are alive at a time.

The pieces are independent of each other and of any backend:

* the halo, derived by walking the layers of the config's transforms (:mod:`.halo`);
* the tile plan (:func:`plan_tiles`): input windows and the output cores they fill, all in whole latent positions
  so the strided layers see the same phase as in the untiled run;
* the runner (:func:`run_tiled`): slices the windows, calls any stage function (a torch module, an ONNX Runtime
  session on NumPy arrays, a TensorRT backend on CUDA tensors) and stitches the cores into one output;
* the memory model (:mod:`.tile_memory`, beside :mod:`.limits`): whether, and how finely, to tile.

Sizes: ``height``/``width`` are always the padded *image* size in pixels (for ``g_s`` that is its output), and a
tile is the side of a square core in image pixels, a multiple of 16 (one latent position).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from itertools import product
from typing import Any

import numpy as np
import torch

from ..config import HPCMConfig
from .halo import LATTICE_ALIGN, STAGES, Halo, module_halo, stage_halo

__all__ = ["LATTICE_ALIGN", "STAGES", "Halo", "Tile", "TilePlan", "module_halo", "plan_tiles", "run_tiled",
           "stage_halo", "stage_plan"]

Box = tuple[int, int, int, int]  # top, bottom, left, right; bottom and right exclusive


def _slices(box: Box) -> tuple[slice, slice]:
    return slice(box[0], box[1]), slice(box[2], box[3])


@dataclass(frozen=True)
class Tile:
    """One call of the stage: ``window`` of the input (with its halo, clipped at the image), the ``core`` of the
    output it fills, and where that core lies in the window's own output (``crop``). Boxes are
    ``(top, bottom, left, right)``, in the units of the tensor they index (pixels or latent positions)."""

    window: Box
    core: Box
    crop: Box


@dataclass(frozen=True)
class TilePlan:
    """The tiles of one stage on one padded image size; their cores cover the output exactly once."""

    stage: str
    image_size: tuple[int, int]  # padded image (H, W), pixels
    tile: int  # core side in image pixels
    halo: int  # context around each core, latent positions
    factor: int  # image pixels per latent position
    tiles: tuple[Tile, ...]
    align: int = 1  # windows and cores start on multiples of this many latent positions

    @property
    def input_size(self) -> tuple[int, int]:
        h, w = self.image_size
        return (h, w) if self.stage == "g_a" else (h // self.factor, w // self.factor)

    @property
    def output_size(self) -> tuple[int, int]:
        h, w = self.image_size
        return (h // self.factor, w // self.factor) if self.stage == "g_a" else (h, w)

    @property
    def window_shapes(self) -> set[tuple[int, int]]:
        """The distinct window sizes (input units): what an engine profile or a CUDA graph must cover."""
        return {(t.window[1] - t.window[0], t.window[3] - t.window[2]) for t in self.tiles}

    def __len__(self) -> int:
        return len(self.tiles)


def _axis_spans(n: int, core: int, halo: int, uniform: bool) -> list[tuple[tuple[int, int], tuple[int, int]]]:
    """Along one axis of ``n`` latent positions: ``((window start, stop), (core start, stop))`` per tile.

    Cores are consecutive runs of ``core`` positions (the last may be shorter). A window is its core plus ``halo``
    on each side, clipped at the borders (where the transform zero-pads exactly as on the whole image). With
    ``uniform``, windows are all ``min(n, core + 2*halo)`` long, shifted inwards at the borders (more context
    than the halo changes nothing): one input shape for a static engine or one CUDA graph.
    """
    length = min(n, core + 2 * halo)
    spans = []
    for c0 in range(0, n, core):
        c1 = min(c0 + core, n)
        if uniform:
            w0 = min(max(c0 - halo, 0), n - length)
            w1 = w0 + length
        else:
            w0, w1 = max(c0 - halo, 0), min(c1 + halo, n)
        spans.append(((w0, w1), (c0, c1)))
    return spans


def _check_size(stage: str, height: int, width: int, tile: int, halo: int, factor: int, align: int = 1) -> None:
    if stage not in STAGES:
        raise ValueError(f"stage must be one of {STAGES}, got {stage!r}")
    unit = factor * align
    if height <= 0 or width <= 0 or height % unit or width % unit:
        raise ValueError(f"image size {height}x{width} must be positive multiples of {unit}")
    if tile <= 0 or tile % unit:
        raise ValueError(f"tile {tile} must be a positive multiple of {unit} pixels ({align} latent positions)")
    if halo < 0:
        raise ValueError(f"halo {halo} must be >= 0")


def plan_tiles(stage: str, height: int, width: int, tile: int, halo: Halo | int, *, uniform: bool = False,
               factor: int = 16, align: int = 1) -> TilePlan:
    """The tiles of ``stage`` (``"g_a"`` or ``"g_s"``) on a padded ``height`` x ``width`` image.

    ``tile``: core side in image pixels (a multiple of ``factor * align``). ``halo``: a :class:`Halo` (its whole
    latent positions and factor are used) or a number of latent positions. Windows and cores start on whole
    latent positions: for ``g_a`` windows are in pixels (multiples of 16) and cores in latent positions; for
    ``g_s`` windows are in latent positions and cores in pixels (16 per position). Tiles are in row-major order.

    ``align``: windows start, and have lengths, on multiples of ``align`` latent positions (the halo is rounded up
    to one). :data:`LATTICE_ALIGN` lets the decoder's synthesis stage, which first places the last coding step
    with lattice masks built from its input's size (periods 2 and 4), run on windows unchanged.
    """
    if isinstance(halo, Halo):
        if halo.down != (stage == "g_a"):
            raise ValueError(f"a {'down' if halo.down else 'up'}sampling halo does not fit stage {stage}")
        halo, factor = halo.latent, halo.factor
    if align < 1:
        raise ValueError(f"align {align} must be >= 1")
    halo = -(-halo // align) * align
    _check_size(stage, height, width, tile, halo, factor, align)
    core = tile // factor
    rows = _axis_spans(height // factor, core, halo, uniform)
    cols = _axis_spans(width // factor, core, halo, uniform)
    f_in, f_out = (factor, 1) if stage == "g_a" else (1, factor)
    tiles = []
    for ((wr0, wr1), (cr0, cr1)), ((wc0, wc1), (cc0, cc1)) in product(rows, cols):
        tiles.append(Tile(
            window=(wr0 * f_in, wr1 * f_in, wc0 * f_in, wc1 * f_in),
            core=(cr0 * f_out, cr1 * f_out, cc0 * f_out, cc1 * f_out),
            crop=((cr0 - wr0) * f_out, (cr1 - wr0) * f_out, (cc0 - wc0) * f_out, (cc1 - wc0) * f_out),
        ))
    return TilePlan(stage, (height, width), tile, halo, factor, tuple(tiles), align)


def stage_plan(config: HPCMConfig, stage: str, height: int, width: int, tile: int, *,
               uniform: bool = False, align: int = 1) -> TilePlan:
    """:func:`plan_tiles` with the halo of ``config``'s transform."""
    return plan_tiles(stage, height, width, tile, stage_halo(config, stage), uniform=uniform, align=align)


def _contiguous(array: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
    """A C-contiguous copy of a window view: backends bind raw buffers (TensorRT reads ``data_ptr()``)."""
    return array.contiguous() if isinstance(array, torch.Tensor) else np.ascontiguousarray(array)


def _is_array(a: Any) -> bool:
    return isinstance(a, (np.ndarray, torch.Tensor))


def _empty(like: np.ndarray | torch.Tensor, shape: tuple[int, ...]) -> np.ndarray | torch.Tensor:
    """An uninitialised array of ``like``'s kind, dtype and device."""
    if isinstance(like, torch.Tensor):
        return torch.empty(shape, dtype=like.dtype, device=like.device)
    return np.empty(shape, dtype=like.dtype)


def run_tiled(fn: Callable[..., Any], x: Any, plan: TilePlan, *, out: Any | None = None) -> Any:
    """``fn(x)`` computed tile by tile: ``fn`` runs on each window of ``x [..., H_in, W_in]`` (a contiguous
    copy) and the window's core is copied into one output, allocated at the first tile like ``fn``'s output
    (NumPy or torch, same dtype and device) unless ``out`` is given. Leading (batch, channel) dimensions pass
    through. ``x`` may be a tuple of arrays of the same ``H_in x W_in`` (``y_hat, q, means`` of the synthesis
    stage): each is windowed alike and ``fn(*windows)`` is called.

    Each output is copied and dropped before ``fn`` runs again, so a backend may reuse its output buffers, and
    only one window's activations are alive at a time. The copies run on the caller's current CUDA stream; a
    backend that computes on its own stream (TensorRT) orders itself after that stream before it reads a window
    and makes that stream wait for its outputs, so window copy, stage and core copy stay in order with no stream
    context around ``fn``. With torch modules, call this under
    ``torch.inference_mode()`` (or ``no_grad``): autograd would keep every tile's activations.
    """
    inputs = tuple(x) if isinstance(x, (tuple, list)) else (x,)
    for a in inputs:
        if not _is_array(a):
            raise TypeError(f"run_tiled takes NumPy arrays or torch tensors, got {type(a).__name__}")
        if tuple(a.shape[-2:]) != plan.input_size:
            raise ValueError(f"input is {tuple(a.shape[-2:])}, the {plan.stage} plan expects {plan.input_size}")
    f = plan.factor
    for tile in plan.tiles:
        rows, cols = _slices(tile.window)
        windows = [_contiguous(a[..., rows, cols]) for a in inputs]
        y = fn(*windows)
        if not _is_array(y):
            raise TypeError(f"the stage returned {type(y).__name__}; run_tiled takes NumPy arrays or torch tensors")
        h, w = windows[0].shape[-2:]
        expected = (h * f, w * f) if plan.stage == "g_s" else (h // f, w // f)
        if tuple(y.shape[-2:]) != expected:
            raise ValueError(f"the stage turned a {(h, w)} window into {tuple(y.shape[-2:])}, expected {expected}: "
                             f"is fn the {plan.stage} transform?")
        if out is None:
            out = _empty(y, (*y.shape[:-2], *plan.output_size))
        out[(..., *_slices(tile.core))] = y[(..., *_slices(tile.crop))]
        del windows, y  # free this tile before the next call allocates its own
    return out
