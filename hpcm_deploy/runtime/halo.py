"""The halo of ``g_a`` / ``g_s``: how far a region of their output reaches into their input, derived by walking
the layers of the configuration's transforms. A window that adds the halo around a tile's core gives that core
exactly as the whole image does (:mod:`.tiling`)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from functools import lru_cache

import torch
from torch import nn

from ..config import HPCMConfig
from ..models.layers import DWConvRB, PartialConv3x3, PConvRB
from ..models.transforms import AnalysisTransform, HyperAnalysis, HyperSynthesis, SynthesisTransform

STAGES = ("g_a", "g_s")
# The lattice masks of the coding steps repeat every 2 (scales 1, 2) or 4 (scale 3) latent positions.
LATTICE_ALIGN = 4


_POINTWISE = (nn.LeakyReLU, nn.ReLU, nn.GELU, nn.Sigmoid, nn.Identity)
_BRANCHED = (AnalysisTransform, SynthesisTransform, HyperAnalysis, HyperSynthesis)
_RESIDUAL = (PConvRB, DWConvRB)


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
