"""Tiled ``g_a`` / ``g_s``: run the analysis and synthesis transforms window by window to bound their memory.

Why: at 12 MP almost all of a codec run's memory is in ``g_a`` and ``g_s`` at full and half resolution (their
residual blocks hold a 4x-wide MLP activation twice), while everything else works on the 16x smaller latent.
Both transforms are purely convolutional, so a region of their output depends only on a bounded neighbourhood of
the input, the *halo*. A window that adds the halo around a tile's *core* therefore gives that core exactly as
the whole image does (to float rounding), and only one window's activations are alive at a time.

The pieces are independent of each other and of any backend:

* the halo, derived by walking the layers of the config's transforms (:func:`stage_halo`, :func:`module_halo`);
* the tile plan (:func:`plan_tiles`): input windows and the output cores they fill, all in whole latent positions
  so the strided layers see the same phase as in the untiled run;
* the runner (:func:`run_tiled`): slices the windows, calls any stage function (a torch module, an ONNX Runtime
  session on NumPy arrays, a TensorRT backend on CUDA tensors) and stitches the cores into one output;
* the memory model (:func:`estimate_peak_bytes`, :func:`choose_tile`): whether, and how finely, to tile.

Sizes: ``height``/``width`` are always the padded *image* size in pixels (for ``g_s`` that is its output), and a
tile is the side of a square core in image pixels, a multiple of 16 (one latent position).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from functools import lru_cache
from itertools import product
from typing import Any

import numpy as np
import torch
from torch import nn

from ..config import HPCMConfig
from ..errors import ConfigError
from ..models.layers import DWConvRB, PartialConv3x3, PConvRB
from ..models.transforms import AnalysisTransform, HyperAnalysis, HyperSynthesis, SynthesisTransform

STAGES = ("g_a", "g_s")
# The lattice masks of the coding steps repeat every 2 (scales 1, 2) or 4 (scale 3) latent positions.
LATTICE_ALIGN = 4
# Headroom choose_tile keeps over the estimates: measured peak RSS of eager torch on the CPU exceeded them by a
# roughly constant 10-25 MiB (7% at 1 MP, under 1% at 4 and 12 MP); other backends and the rest of the process
# (model, entropy state) are not in them. See estimate_peak_bytes.
HEADROOM = 1.1
# Tile sizes choose_tile prefers (export and engine profiles are built on multiples of 256), and the finest it
# falls back to (one latent position).
PREFERRED_STEP = 256
FINEST_STEP = 16

_POINTWISE = (nn.LeakyReLU, nn.ReLU, nn.GELU, nn.Sigmoid, nn.Identity)
_BRANCHED = (AnalysisTransform, SynthesisTransform, HyperAnalysis, HyperSynthesis)
_RESIDUAL = (PConvRB, DWConvRB)


# ---------------------------------------------------------------------------------------------------- halo
@dataclass(frozen=True)
class Halo:
    """How far a transform looks beyond the input block of one latent position, per side (both axes alike).

    ``before``/``after``: the exact context before (top/left) and after (bottom/right) that block, in the
    transform's *input* units: image pixels for a downsampling transform (``g_a``), latent positions for an
    upsampling one (``g_s``). ``factor``: image pixels per latent position.
    """

    down: bool
    factor: int
    before: int
    after: int

    @property
    def latent(self) -> int:
        """The context in whole latent positions: what tile windows add on each side of their cores. Windows
        start on whole latent positions, so the strided layers see the same phase as on the whole image."""
        unit = self.factor if self.down else 1
        return -(-max(self.before, self.after) // unit)


def _conv_axis(conv: nn.Conv2d | nn.ConvTranspose2d, axis: int) -> tuple[int, int, int, int]:
    """Kernel, stride, padding and dilation of ``conv`` along ``axis`` (0: rows, 1: columns)."""
    if isinstance(conv.padding, str):
        raise TypeError(f"{type(conv).__name__} with padding={conv.padding!r}: give numeric padding")
    return conv.kernel_size[axis], conv.stride[axis], conv.padding[axis], conv.dilation[axis]


def _footprint(module: nn.Module, lo: int, hi: int, axis: int) -> tuple[int, int]:
    """The input positions ``lo'..hi'`` (inclusive, along ``axis``) that outputs ``lo..hi`` of ``module`` read,
    ignoring the map's borders. One rule per layer type; anything else is refused rather than guessed."""
    if isinstance(module, nn.ConvTranspose2d):
        k, s, p, d = _conv_axis(module, axis)
        # input i feeds outputs i*s - p + d*t for taps t = 0..k-1
        return -((-(lo + p - d * (k - 1))) // s), (hi + p) // s
    if isinstance(module, nn.Conv2d):
        k, s, p, d = _conv_axis(module, axis)
        return lo * s - p, hi * s - p + d * (k - 1)
    if isinstance(module, _RESIDUAL):  # x + branch(x)
        a, b = _footprint(module.branch, lo, hi, axis)
        return min(a, lo), max(b, hi)
    if isinstance(module, PartialConv3x3):  # conv on the head channels, the tail passes through
        a, b = _footprint(module.pconv, lo, hi, axis)
        return min(a, lo), max(b, hi)
    if isinstance(module, _BRANCHED):
        return _footprint(module.branch, lo, hi, axis)
    if isinstance(module, nn.Sequential):
        for layer in reversed(module):
            lo, hi = _footprint(layer, lo, hi, axis)
        return lo, hi
    if isinstance(module, _POINTWISE):
        return lo, hi
    raise TypeError(f"no receptive-field rule for {type(module).__name__}")


def _ratio(module: nn.Module, axis: int) -> Fraction:
    """Input positions per output position along ``axis`` (16 for ``g_a``, 1/16 for ``g_s``)."""
    if isinstance(module, nn.ConvTranspose2d):
        return Fraction(1, module.stride[axis])
    if isinstance(module, nn.Conv2d):
        return Fraction(module.stride[axis])
    if isinstance(module, _RESIDUAL + (PartialConv3x3,) + _POINTWISE):
        return Fraction(1)
    if isinstance(module, _BRANCHED):
        return _ratio(module.branch, axis)
    if isinstance(module, nn.Sequential):
        return math.prod((_ratio(layer, axis) for layer in module), start=Fraction(1))
    raise TypeError(f"no stride rule for {type(module).__name__}")


def module_halo(module: nn.Module) -> Halo:
    """The halo of a convolutional ``module``, from the kernel, stride and padding of each of its layers.

    The footprint of one latent position's block is walked back through the layers (``Conv2d``: outputs
    ``lo..hi`` read ``lo*s-p .. hi*s-p+k-1``; ``ConvTranspose2d``: the inverse; residual blocks: the union with
    the identity; pointwise layers: unchanged), on both axes. For a downsampling module the block is one output
    position (its input block is ``factor`` pixels); for an upsampling one it is ``factor`` output pixels (its
    input block is one position).
    """
    halos = []
    for axis in (0, 1):
        ratio = _ratio(module, axis)
        down = ratio >= 1
        factor = ratio if down else 1 / ratio
        if factor.denominator != 1:
            raise TypeError(f"{type(module).__name__} has a non-integer scale factor {factor}")
        f = int(factor)
        out_block, in_block = ((0, 0), (0, f - 1)) if down else ((0, f - 1), (0, 0))
        lo, hi = _footprint(module, *out_block, axis)
        halos.append(Halo(down, f, in_block[0] - lo, hi - in_block[1]))
    if halos[0].factor != halos[1].factor or halos[0].down != halos[1].down:
        raise TypeError(f"{type(module).__name__} scales its two axes differently")
    return Halo(halos[0].down, halos[0].factor, max(h.before for h in halos), max(h.after for h in halos))


@lru_cache(maxsize=16)
def _transform(stage: str, widths: tuple[int, int, int], M: int) -> nn.Module:
    """The stage's transform on the meta device: its layer list and shapes, no memory."""
    if stage not in STAGES:
        raise ValueError(f"stage must be one of {STAGES}, got {stage!r}")
    with torch.device("meta"):
        return (AnalysisTransform if stage == "g_a" else SynthesisTransform)(widths, M)


def stage_halo(config: HPCMConfig, stage: str) -> Halo:
    """The halo of ``g_a`` or ``g_s`` as built for ``config`` (the widths do not change it, the layers do).

    For the HPCM transforms: ``g_a`` reads 45 pixels beyond a latent position's 16x16 block on each side (3 whole
    latent positions); each 16x16 output block of ``g_s`` reads 3 latent positions on each side.
    """
    return module_halo(_transform(stage, tuple(config.transform_widths), config.M))


# ---------------------------------------------------------------------------------------------------- plan
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


# ---------------------------------------------------------------------------------------------------- runner
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


# ---------------------------------------------------------------------------------------------------- memory
Shape = tuple[int, int, int]  # channels, height, width


def _conv_out(conv: nn.Conv2d | nn.ConvTranspose2d, shape: Shape) -> Shape:
    size = []
    for axis, n in enumerate(shape[1:]):
        k, s, p, d = _conv_axis(conv, axis)
        if isinstance(conv, nn.ConvTranspose2d):
            size.append((n - 1) * s - 2 * p + d * (k - 1) + conv.output_padding[axis] + 1)
        else:
            size.append((n + 2 * p - d * (k - 1) - 1) // s + 1)
    return conv.out_channels, size[0], size[1]


def _peak(module: nn.Module, shape: Shape) -> tuple[Shape, int]:
    """``module``'s output shape and the most elements alive while it runs in eager PyTorch without autograd,
    counting its input (held by the caller) and its output.

    Rules: a layer holds its input and output, and a convolution also a scratch copy of the larger of the two
    (measured: eager torch on the CPU reorders into and out of oneDNN's blocked layout; a 1x1 conv C -> 4C peaks
    at 9C beyond its input, 4C -> C at 5C); ``nn.Sequential`` frees each intermediate when the next layer has
    produced its output, but its own input stays alive (the caller holds it); a residual block holds ``x``
    through its branch and ends with ``x``, ``branch(x)`` and their sum. In a ``PConvRB`` of ``C`` channels the
    peak is at its 1x1 convs: ``x`` + ``C`` + ``4C`` + a ``4C`` scratch = 10C.
    """
    n = math.prod(shape)
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
        out = _conv_out(module, shape)
        o = math.prod(out)
        return out, n + o + max(n, o)  # + oneDNN's copy of the larger side in its blocked layout
    if isinstance(module, _POINTWISE):
        return shape, n if getattr(module, "inplace", False) else 2 * n
    if isinstance(module, PartialConv3x3):  # the head is a view; conv(head) and the concatenation are new
        return shape, 2 * n + module.n_conv * shape[1] * shape[2]
    if isinstance(module, _RESIDUAL):
        _, branch = _peak(module.branch, shape)
        return shape, max(branch, 3 * n)
    if isinstance(module, _BRANCHED):
        return _peak(module.branch, shape)
    if isinstance(module, nn.Sequential):
        peak, current = 0, shape
        for i, layer in enumerate(module):
            current, layer_peak = _peak(layer, current)
            peak = max(peak, layer_peak + (n if i else 0))
        return current, peak
    raise TypeError(f"no memory rule for {type(module).__name__}")


def _stage_input(config: HPCMConfig, stage: str, height: int, width: int) -> Shape:
    return (3, height, width) if stage == "g_a" else (config.M, height // 16, width // 16)


def estimate_peak_bytes(config: HPCMConfig, stage: str, height: int, width: int, batch: int = 1, *,
                        itemsize: int = 4) -> int:
    """Peak bytes of running ``stage`` (``g_a`` or ``g_s``) untiled on a ``height`` x ``width`` image (pixels),
    input and output included, from ``config``'s widths (see :func:`_peak` for the rules).

    The peak is the residual block at half resolution: 10 x ``transform_widths[0]`` x H/2 x W/2 elements, e.g.
    3.76 GiB for ``g_s`` of the tiny preset at 4096x3072 in float32. It models eager torch on the CPU, whose
    measured peak RSS it matches to about 1% at 4 and 12 MP (plus a constant 10-25 MiB of allocator scratch).
    Runtimes that need no layout copies and fuse the LeakyReLU into the conv (TensorRT, ONNX Runtime) need less,
    so for them it errs on the safe side; on CUDA, convolution workspaces depend on the algorithms chosen.
    """
    module = _transform(stage, tuple(config.transform_widths), config.M)
    _, peak = _peak(module, _stage_input(config, stage, height, width))
    return peak * batch * itemsize


def _max_window(n: int, core: int, halo: int) -> int:
    """The longest window along an axis of ``n`` latent positions (input units of whole latent positions)."""
    return max(w1 - w0 for (w0, w1), _ in _axis_spans(n, core, halo, uniform=False))


def estimate_tiled_peak_bytes(config: HPCMConfig, stage: str, height: int, width: int, tile: int, batch: int = 1,
                              *, itemsize: int = 4, uniform: bool = False, align: int = 1) -> int:
    """Peak bytes of :func:`run_tiled` with ``tile``: the whole input and the whole output, plus the largest
    window's own peak (its contiguous copy is the input that estimate counts, its output the tile output)."""
    halo = -(-stage_halo(config, stage).latent // align) * align
    _check_size(stage, height, width, tile, halo, 16, align)
    core = tile // 16
    if uniform:
        rows, cols = min(height // 16, core + 2 * halo), min(width // 16, core + 2 * halo)
    else:
        rows, cols = _max_window(height // 16, core, halo), _max_window(width // 16, core, halo)
    c_in, h_in, w_in = _stage_input(config, stage, height, width)
    out = config.M * (height // 16) * (width // 16) if stage == "g_a" else 3 * height * width
    whole = (c_in * h_in * w_in + out) * batch * itemsize
    return whole + estimate_peak_bytes(config, stage, rows * 16, cols * 16, batch, itemsize=itemsize)


def choose_tile(config: HPCMConfig, height: int, width: int, budget_bytes: int, batch: int = 1, *,
                stage: str | None = None, headroom: float = HEADROOM, itemsize: int = 4,
                uniform: bool = False, align: int = 1) -> int | None:
    """The tile size (pixels) to run ``stage`` (default: both ``g_a`` and ``g_s``) within ``budget_bytes``, or
    None when the whole image fits (run untiled, as without tiling). Estimates are multiplied by ``headroom``.

    Tries multiples of 256 (what export and engine profiles are built on) from the largest below the image
    down, then multiples of ``16 * align`` below 256. The first that fits is then balanced: the smallest tile of
    the same step giving no more tiles per axis, which lowers the peak (smaller windows) at the same total work
    (each interior border costs the same halo wherever it lies). ``uniform`` and ``align`` as in
    :func:`plan_tiles`. Raises :class:`ConfigError` when not even the finest tile fits (the whole input and
    output alone may exceed the budget).
    """
    stages = STAGES if stage is None else (stage,)

    def fits(tile: int | None) -> bool:
        for s in stages:
            if tile is None:
                need = estimate_peak_bytes(config, s, height, width, batch, itemsize=itemsize)
            else:
                need = estimate_tiled_peak_bytes(config, s, height, width, tile, batch, itemsize=itemsize,
                                                 uniform=uniform, align=align)
            if need * headroom > budget_bytes:
                return False
        return True

    if fits(None):
        return None
    side, finest = max(height, width), FINEST_STEP * align
    for step, top in ((PREFERRED_STEP, side - 1), (finest, PREFERRED_STEP - 1)):
        for tile in range(top // step * step, 0, -step):
            if fits(tile):
                count_h, count_w = -(-height // tile), -(-width // tile)
                balanced = max(-(-height // count_h), -(-width // count_w))
                balanced = -(-balanced // step) * step
                return balanced if fits(balanced) else tile
    least = max(estimate_tiled_peak_bytes(config, s, height, width, finest, batch, itemsize=itemsize,
                                          uniform=uniform, align=align) for s in stages)
    raise ConfigError(f"{'/'.join(stages)} of a {height}x{width} image (batch {batch}) do not fit "
                      f"{budget_bytes / 2**30:.2f} GiB even in {finest}-pixel tiles (which need "
                      f"{least * headroom / 2**30:.2f} GiB with the whole input and output)")
