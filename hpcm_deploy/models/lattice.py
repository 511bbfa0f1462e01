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


def _phase_index(channels: int, groups: int, phases: tuple[tuple[int, int], ...], factor: int) -> list[int]:
    """For each channel, the index of its group's phase among the ``factor**2`` phases of a tile."""
    per = channels // groups
    return [phases[(c // per) % len(phases)][0] * factor + phases[(c // per) % len(phases)][1]
            for c in range(channels)]


def take_phases(t: Tensor, groups: int, phases: tuple[tuple[int, int], ...], factor: int = 2) -> Tensor:
    """Channel group ``g`` (of ``groups``) keeps phase ``phases[g % len(phases)]``: one gather after a
    space-to-depth, equal to per-group strided slicing."""
    b, c, h, w = t.shape
    index = _phase_index(c, groups, phases, factor)
    flat = torch.tensor([i * factor * factor + p for i, p in enumerate(index)], device=t.device)
    return torch.index_select(F.pixel_unshuffle(t, factor), 1, flat)


def put_phases(t: Tensor, groups: int, phases: tuple[tuple[int, int], ...], factor: int = 2) -> Tensor:
    """Inverse of :func:`take_phases`, zeros elsewhere (a one-hot product, then depth-to-space)."""
    b, c, h, w = t.shape
    index = _phase_index(c, groups, phases, factor)
    onehot = torch.tensor([[1.0 if j == p else 0.0 for j in range(factor * factor)] for p in index],
                          dtype=t.dtype, device=t.device)
    spread = t.unsqueeze(2) * onehot.reshape(1, c, factor * factor, 1, 1)
    return F.pixel_shuffle(spread.reshape(b, c * factor * factor, h, w), factor)


# The functions below take ``[B, k*M, ...]``: ``k`` stacked tensors with the M-channel group structure
# (k = 2 for a context or the hyperprior parameters: scales then means), handled in one pass.

def y_to_s2(t: Tensor, k: int = 1) -> Tensor:
    """``[B, M, h, w]`` -> ``[B, M, h/2, w/2]``: each channel group keeps its s2 phase."""
    return take_phases(t, 8 * k, S2_PHASE)


def s2_to_y(t: Tensor, k: int = 1) -> Tensor:
    """Inverse of :func:`y_to_s2`, zeros at the positions each group does not keep."""
    return put_phases(t, 8 * k, S2_PHASE)


def s2_to_s1(t: Tensor, k: int = 1) -> Tensor:
    """``[B, M, h/2, w/2]`` -> ``[B, M, h/4, w/4]``: each channel quarter keeps its s1 phase."""
    return take_phases(t, 4 * k, S1_PHASE)


def s1_to_s2(t: Tensor, k: int = 1) -> Tensor:
    """Inverse of :func:`s2_to_s1`, zeros elsewhere."""
    return put_phases(t, 4 * k, S1_PHASE)


def to_scale(t: Tensor, scale: int, k: int = 1) -> Tensor:
    """A y-grid tensor on the grid of ``scale`` (3 = y itself)."""
    if scale == 3:
        return t
    t2 = y_to_s2(t, k)
    return t2 if scale == 2 else s2_to_s1(t2, k)


def from_scale(t: Tensor, scale: int, k: int = 1) -> Tensor:
    """Inverse of :func:`to_scale`: a tensor on the grid of ``scale`` back on the y grid, zeros at the positions
    the scale does not hold."""
    if scale == 3:
        return t
    t2 = t if scale == 2 else s1_to_s2(t, k)
    return s2_to_y(t2, k)


def s2_lattice_removed(t: Tensor, k: int = 1) -> Tensor:
    """``t`` with zeros on each group's s2 lattice (the hyperprior parameters that s3 adds)."""
    keep = s2_to_y(torch.ones_like(y_to_s2(t, k)), k) > 0.5
    return torch.where(keep, torch.zeros_like(t), t)


def _s2_hyper_sources(g: int) -> list[tuple[int, int]]:
    """Row-major positions (in a 4x4 tile of y) the official code reads group ``g``'s s2 parameters from."""
    dy, dx = S2_PHASE[g]
    lattice = {(dy + 2 * a, dx + 2 * e) for a in (0, 1) for e in (0, 1)}
    return sorted(lattice - {_S2_HYPER_HOLE[g]})


# every group reads one position in one row of the tile and two in a later row (s2_hyper relies on it)
_S2_SOURCES = [_s2_hyper_sources(g) for g in range(8)]
assert all(src[0][0] < src[1][0] == src[2][0] for src in _S2_SOURCES)


def s2_hyper(t: Tensor, k: int = 1) -> Tensor:
    """Hyperprior parameters for the s2 positions not on the s1 lattice (zeros on it), read from the
    positions the official code reads (the S2HYPER quirk). ``[B, M, h, w]`` -> ``[B, M, h/2, w/2]``.

    The official code enumerates, per channel, its 3 source positions per 4x4 tile of y in row-major order
    and fills the 3 free positions per 2x2 tile of s2, also in row-major order. A tile row of y therefore
    feeds a tile row of s2 as a sequence of ``3 w/4`` values: one value per tile from the first source row,
    then a pair per tile from the second. The s2 side splits that sequence as 1-then-2 per tile (channel
    quarters whose s1 phase is in row 0: aligned) or 2-then-1 (phase in row 1: shifted by half a row, which
    is where the quirk comes from). Written as gathers and reshapes only, so it is exact and exportable.
    """
    b, c, h, w = t.shape
    per, tiles = c // (8 * k), w // 4
    group = [(i // per) % 8 for i in range(c)]
    cells = F.pixel_unshuffle(t, 4)  # channel i * 16 + 4 * row + col holds that tile position

    def source(slot: int) -> Tensor:
        index = [i * 16 + 4 * _S2_SOURCES[g][slot][0] + _S2_SOURCES[g][slot][1] for i, g in enumerate(group)]
        return torch.index_select(cells, 1, torch.tensor(index, device=t.device))

    pair = torch.stack((source(1), source(2)), dim=-1).reshape(b, c, h // 4, 2 * tiles)
    seq = torch.cat((source(0), pair), dim=-1)  # [B, c, h/4, 3 w/4]
    head_pair = seq[..., : 2 * tiles].reshape(b, c, h // 4, tiles, 2)
    tail_pair = seq[..., tiles:].reshape(b, c, h // 4, tiles, 2)
    last = seq[..., 2 * tiles:]
    candidates = torch.stack((seq[..., :tiles], tail_pair[..., 0], tail_pair[..., 1], head_pair[..., 0],
                              head_pair[..., 1], last, torch.zeros_like(last)), dim=2)
    zero = 6
    index = []
    for i, g in enumerate(group):
        hole_row, hole_col = S1_PHASE[g // 2]
        if hole_row == 0:  # s2 row 0 takes one value per tile, row 1 the pair
            slots = {(0, 1 - hole_col): 0, (0, hole_col): zero, (1, 0): 1, (1, 1): 2}
        else:  # s2 row 0 takes the pair, row 1 one value per tile
            slots = {(0, 0): 3, (0, 1): 4, (1, 1 - hole_col): 5, (1, hole_col): zero}
        index += [i * 7 + slots[(r, col)] for r in (0, 1) for col in (0, 1)]
    phases = torch.index_select(candidates.reshape(b, c * 7, h // 4, tiles), 1,
                                torch.tensor(index, device=t.device))
    return F.pixel_shuffle(phases, 2)


def step_masks(like: Tensor, scale: int, partition: int) -> Tensor:
    """``[n, 1, h, w]`` 0/1 masks, one per channel chunk, of the positions coded at ``partition`` of
    ``scale`` (h, w from ``like``). Built by tiling a constant, so it follows any input size."""
    period, patterns, steps = SCALE_GEOMETRY[scale]
    tiles = [[[1.0 if (r, c) in patterns[p] else 0.0 for c in range(period)] for r in range(period)]
             for p in steps[partition]]
    h, w = like.shape[-2:]
    tile = torch.tensor(tiles, dtype=like.dtype, device=like.device)
    return tile.repeat(1, h // period, w // period).unsqueeze(1)


def pack(t: Tensor, masks: Tensor) -> Tensor:
    """``[B, M, h, w]`` -> ``[B, M/n, h, w]``: the values of one coding step, one per position (the sum
    has exactly one non-zero term per position, so it is exact in any order)."""
    b, m, h, w = t.shape
    n = masks.shape[0]
    return (t.reshape(b, n, m // n, h, w) * masks).sum(dim=1)


def unpack(packed: Tensor, masks: Tensor) -> Tensor:
    """Inverse of :func:`pack`: ``[B, M/n, h, w]`` -> ``[B, M, h, w]``, zeros at positions not of this step."""
    b, c, h, w = packed.shape
    return (packed.unsqueeze(1) * masks).reshape(b, masks.shape[0] * c, h, w)
