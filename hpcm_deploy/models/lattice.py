"""The fixed polyphase geometry of HPCM's three scales, written as strided slices and reshapes.

The latent ``y`` (grid ``h x w``, both multiples of 16) is split into 8 channel groups of ``M/8``. Each group
takes its own phase of the 2x2 lattice to form scale s2 (``h/2 x w/2``), and s1 (``h/4 x w/4``) is again a
per-quarter phase of s2. Inside each scale, the coding steps are fixed per-chunk position patterns.

The official code expresses all of this with boolean masks and ``masked_select``; every function here is
exactly equal to it (pure data movement, checked against the official functions) and has no data-dependent
shape, so it exports to ONNX with dynamic height and width.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

# phase (row, col) of the 2x2 lattice that channel group g (of 8) keeps when going from y to s2
S2_PHASE: tuple[tuple[int, int], ...] = ((0, 0), (1, 1), (0, 1), (1, 0), (0, 0), (1, 1), (0, 1), (1, 0))
# phase of the s2 grid that channel quarter q (of 4) keeps when going from s2 to s1
S1_PHASE: tuple[tuple[int, int], ...] = ((0, 0), (0, 1), (1, 0), (1, 1))

# Coding steps inside a scale. A step gives each channel chunk one position pattern of a periodic tile;
# the chunks' patterns at one step partition the tile, so packing a step (summing its masked chunks) keeps
# exactly one value per position.
#   s1: 2 chunks, 2x2 tile, patterns: 0 = the (0,0)/(1,1) diagonal, 1 = the other one.
#   s2: 4 chunks, 2x2 tile, pattern p = the single position S1_PHASE[p].
#   s3: 8 chunks, 4x4 tile, two positions per pattern.
_S1_PATTERNS = (((0, 0), (1, 1)), ((0, 1), (1, 0)))
_S2_PATTERNS = tuple((p,) for p in S1_PHASE)
_S3_PATTERNS = (
    ((0, 0), (2, 2)), ((0, 2), (2, 0)), ((1, 1), (3, 3)), ((1, 3), (3, 1)),
    ((0, 1), (2, 3)), ((0, 3), (2, 1)), ((1, 0), (3, 2)), ((1, 2), (3, 0)),
)
# pattern index of chunk j at partition k
_S1_STEPS = ((0, 1), (1, 0))
_S2_STEPS = ((0, 1, 2, 3), (3, 2, 1, 0), (2, 3, 0, 1), (1, 0, 3, 2))
_S3_STEPS = (
    (0, 2, 4, 6, 1, 3, 5, 7), (1, 3, 5, 7, 0, 2, 4, 6), (2, 4, 6, 0, 3, 5, 7, 1), (3, 5, 7, 1, 2, 4, 6, 0),
    (4, 6, 0, 2, 5, 7, 1, 3), (5, 7, 1, 3, 4, 6, 0, 2), (6, 0, 2, 4, 7, 1, 3, 5), (7, 1, 3, 5, 6, 0, 2, 4),
)
SCALE_GEOMETRY = {
    1: (2, _S1_PATTERNS, _S1_STEPS),
    2: (2, _S2_PATTERNS, _S2_STEPS),
    3: (4, _S3_PATTERNS, _S3_STEPS),
}
# Where the official code reads the s2 hyperprior parameters of group g from: it removes this 4x4-tile
# position (instead of the group's real s1 position) from the group's s2 lattice. Off for 6 of 8 groups;
# released weights were trained with it, so it is kept (the "S2HYPER quirk").
_S2_HYPER_HOLE: tuple[tuple[int, int], ...] = ((0, 0), (1, 1), (0, 1), (1, 0), (0, 2), (1, 3), (0, 3), (1, 2))


def take_phase(x: Tensor, factor: int, phase: tuple[int, int]) -> Tensor:
    """The sub-grid ``x[..., py::factor, px::factor]``."""
    return x[:, :, phase[0]::factor, phase[1]::factor]


def put_phase(x: Tensor, factor: int, phase: tuple[int, int]) -> Tensor:
    """Inverse of :func:`take_phase`: ``x`` placed at ``phase`` of a grid ``factor`` times larger, zeros elsewhere."""
    b, c, h, w = x.shape
    zero = torch.zeros_like(x)
    parts = [x if (i, j) == tuple(phase) else zero for i in range(factor) for j in range(factor)]
    stacked = torch.stack(parts, dim=2).reshape(b, c * factor * factor, h, w)
    return F.pixel_shuffle(stacked, factor)


def y_to_s2(t: Tensor) -> Tensor:
    """``[B, M, h, w]`` -> ``[B, M, h/2, w/2]``: each channel group keeps its s2 phase."""
    return torch.cat([take_phase(g, 2, S2_PHASE[i]) for i, g in enumerate(t.chunk(8, 1))], dim=1)


def s2_to_y(t: Tensor) -> Tensor:
    """Inverse of :func:`y_to_s2`, zeros at the positions each group does not keep."""
    return torch.cat([put_phase(g, 2, S2_PHASE[i]) for i, g in enumerate(t.chunk(8, 1))], dim=1)


def s2_to_s1(t: Tensor) -> Tensor:
    """``[B, M, h/2, w/2]`` -> ``[B, M, h/4, w/4]``: each channel quarter keeps its s1 phase."""
    return torch.cat([take_phase(q, 2, S1_PHASE[i]) for i, q in enumerate(t.chunk(4, 1))], dim=1)


def s1_to_s2(t: Tensor) -> Tensor:
    """Inverse of :func:`s2_to_s1`, zeros elsewhere."""
    return torch.cat([put_phase(q, 2, S1_PHASE[i]) for i, q in enumerate(t.chunk(4, 1))], dim=1)


def to_scale(t: Tensor, scale: int) -> Tensor:
    """A y-grid tensor on the grid of ``scale`` (3 = y itself)."""
    if scale == 3:
        return t
    t2 = y_to_s2(t)
    return t2 if scale == 2 else s2_to_s1(t2)


def s2_lattice_removed(t: Tensor) -> Tensor:
    """``t`` with zeros on each group's s2 lattice (the hyperprior parameters that s3 adds)."""
    keep = s2_to_y(torch.ones_like(y_to_s2(t))) > 0.5
    return torch.where(keep, torch.zeros_like(t), t)


def _s2_hyper_group(t: Tensor, g: int) -> Tensor:
    """One group of :func:`s2_hyper`: re-enumerate the official code's source positions in row-major order
    into the s2 positions that are not on the s1 lattice, also in row-major order.

    Both enumerations cover 3 positions per 4x4 tile of y, so tile-row ``i`` of y feeds tile-row ``i`` of s2;
    within a tile row the order is: y row by row, each row tile by tile, positions left to right.
    """
    b, c, h, w = t.shape
    dy, dx = S2_PHASE[g]
    lattice = {(dy + 2 * a, dx + 2 * e) for a in (0, 1) for e in (0, 1)}
    sources = sorted(lattice - {_S2_HYPER_HOLE[g]})
    pieces = []
    for row in range(4):
        cols = [col for (r, col) in sources if r == row]
        if cols:
            parts = [t[:, :, row::4, col::4] for col in cols]
            pieces.append(torch.stack(parts, dim=-1).reshape(b, c, h // 4, (w // 4) * len(cols)))
    seq = torch.cat(pieces, dim=-1)  # [B, c, h/4, 3 w/4]
    hole = S1_PHASE[g // 2]
    tiles = w // 4
    rows, offset = [], 0
    for r in (0, 1):
        cols = [col for col in (0, 1) if (r, col) != hole]
        piece = seq.narrow(-1, offset * tiles, tiles * len(cols)).reshape(b, c, h // 4, tiles, len(cols))
        offset += len(cols)
        filled = iter(piece.unbind(-1))
        zero = torch.zeros_like(piece[..., 0])
        row_vals = [next(filled) if col in cols else zero for col in (0, 1)]
        rows.append(torch.stack(row_vals, dim=-1).reshape(b, c, h // 4, w // 2))
    return torch.stack(rows, dim=3).reshape(b, c, h // 2, w // 2)


def s2_hyper(t: Tensor) -> Tensor:
    """Hyperprior parameters for the s2 positions not on the s1 lattice (zeros on it), read from the
    positions the official code reads (the S2HYPER quirk). ``[B, M, h, w]`` -> ``[B, M, h/2, w/2]``."""
    return torch.cat([_s2_hyper_group(g, i) for i, g in enumerate(t.chunk(8, 1))], dim=1)


def _pattern_mask(like: Tensor, period: int, positions: tuple[tuple[int, int], ...]) -> Tensor:
    """``[1, 1, h, w]`` 0/1 mask, 1 where ``(row % period, col % period)`` is in ``positions``."""
    rows = [[1.0 if (r, c) in positions else 0.0 for c in range(period)] for r in range(period)]
    tile = torch.tensor(rows, dtype=like.dtype, device=like.device)
    h, w = like.shape[-2:]
    return tile.repeat(h // period, w // period).reshape(1, 1, h, w)


def step_masks(like: Tensor, scale: int, partition: int) -> list[Tensor]:
    """Per channel chunk, the ``[1, 1, h, w]`` mask of the positions coded at ``partition`` of ``scale``."""
    period, patterns, steps = SCALE_GEOMETRY[scale]
    return [_pattern_mask(like, period, patterns[p]) for p in steps[partition]]


def pack(t: Tensor, masks: list[Tensor]) -> Tensor:
    """``[B, M, h, w]`` -> ``[B, M/n, h, w]``: the values of one coding step, one per position."""
    chunks = t.chunk(len(masks), 1)
    out = chunks[0] * masks[0]
    for chunk, mask in zip(chunks[1:], masks[1:]):
        out = out + chunk * mask
    return out


def unpack(packed: Tensor, masks: list[Tensor]) -> Tensor:
    """Inverse of :func:`pack`: ``[B, M/n, h, w]`` -> ``[B, M, h, w]``, zeros at positions not of this step."""
    return torch.cat([packed * m for m in masks], dim=1)
