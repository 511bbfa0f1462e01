"""The memory model of tiled ``g_a`` / ``g_s``: the peak bytes a stage needs whole or in tiles, estimated from
the configuration's layers, and the tile :func:`choose_tile` picks for a budget (:mod:`.limits` holds the budget
and the machine's memory; :mod:`.tiling` runs the tiles)."""

from __future__ import annotations

import math

from torch import nn

from ..config import HPCMConfig
from ..errors import ConfigError
from ..models.layers import PartialConv3x3
from .halo import _BRANCHED, _POINTWISE, _RESIDUAL, STAGES, _conv_axis, _transform, stage_halo
from .tiling import _axis_spans, _check_size

# Headroom choose_tile keeps over the estimates: measured peak RSS of eager torch on the CPU exceeded them by a
# roughly constant 10-25 MiB (7% at 1 MP, under 1% at 4 and 12 MP); other backends and the rest of the process
# (model, entropy state) are not in them. See estimate_peak_bytes.
HEADROOM = 1.1
# Tile sizes choose_tile prefers (export and engine profiles are built on multiples of 256), and the finest it
# falls back to (one latent position).
PREFERRED_STEP = 256
FINEST_STEP = 16

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


def choose_tile(config: HPCMConfig, height: int, width: int, memory_budget: int, batch: int = 1, *,
                stage: str | None = None, headroom: float = HEADROOM, itemsize: int = 4,
                uniform: bool = False, align: int = 1) -> int | None:
    """The tile size (pixels) to run ``stage`` (default: both ``g_a`` and ``g_s``) within ``memory_budget``, or
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
            if need * headroom > memory_budget:
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
                      f"{memory_budget / 2**30:.2f} GiB even in {finest}-pixel tiles (which need "
                      f"{least * headroom / 2**30:.2f} GiB with the whole input and output)")
