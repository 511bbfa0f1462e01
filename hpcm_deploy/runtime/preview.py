"""Previews that cost a fraction of a full decode: the latest complete scale drawn small, then enlarged.

After scale 1 the decoder holds every channel of the latent on the s1 grid (a quarter of ``y``'s height and
width, each channel group at its own lattice phase), after scale 2 on the s2 grid (half). Those grids are
sub-sampled latents, so the synthesis transform draws them as a picture at 1/4 (1/2) of the size, in 1/16
(1/4) of its full-size time; the preview is that picture enlarged (bilinear) to the full size. None of the
later steps' context networks run, nor a full-size synthesis: measured on the demo model at 768x512, a preview
after scale 1 costs about 5 % of a full decode (the ``context`` fill, which runs every later step with zero
residuals and the full-size synthesis, costs 97 %) and is 3-5 dB blurrier (docs/bitstream.md).

Filling the undecoded positions of the full-size latent instead (with the hyperprior's means, or interpolated
from decoded neighbours) was measured and rejected: learned latents are spatially decorrelated, so those
fills gave 11-14 dB, worse than the small picture, for the full synthesis' cost.

A preview in the middle of a scale draws the last complete scale (scale 1's first step alone: its missing
half from the hyperprior). The arithmetic is a few torch operations on the backend's tensors: torch tensors
(torch and TensorRT backends) stay on their device, NumPy arrays (ONNX Runtime on the CPU) are viewed in place;
other tensors (ONNX Runtime's CUDA values) take a host round trip.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..models import lattice
from ..models.hpcm import HPCM
from ..schedule import CHUNKS, CODING_STEPS

FILLS = ("thumbnail", "context")
NAMED_PREVIEWS = {"s1": 2, "s2": 5, "s3": 11}  # the ends of scales 1, 2 and 3 in coding steps
TILE = 4  # the s3 step pattern's period: g_s's placement masks tile the grid by it


def parse_preview(value: Any) -> int | None:
    """Coding steps of a preview asked as ``s1``/``s2``/``s3`` or a step count 1-11 (a string or an int);
    ``None`` for none (the full image). One line (``InputError``) for anything else: the CLI's ``--preview``
    and a server request's ``preview`` parameter read it alike."""
    from ..errors import InputError

    if value is None:
        return None
    text = str(value).strip().lower()
    if text in NAMED_PREVIEWS:
        return NAMED_PREVIEWS[text]
    if text.isdigit() and 1 <= int(text) <= len(CODING_STEPS):
        return int(text)
    raise InputError(f"preview must be s1, s2, s3 or a step count 1-{len(CODING_STEPS)}, not {value!r}")


def decoded_mask(steps: int, like: torch.Tensor, M: int) -> torch.Tensor:
    """``[1, M, h, w]`` 0/1 on the y grid of ``like``: the positions the first ``steps`` coding steps hold."""
    h, w = like.shape[-2:]
    mask: torch.Tensor | None = None
    current = 0
    for scale, partition in CODING_STEPS[:steps]:
        if mask is None:
            mask = torch.zeros(1, M, h // 4, w // 4)
        elif scale != current:
            mask = (lattice.s1_to_s2 if scale == 2 else lattice.s2_to_y)(mask)
        current = scale
        ones = torch.ones(1, M // CHUNKS[scale], *mask.shape[-2:])
        mask = HPCM.place(scale, partition, mask, ones, torch.zeros_like(ones))
    assert mask is not None
    return lattice.from_scale(mask, current)


# coding steps done at the end of each scale (2, 5, 11)
SCALE_ENDS = {scale: max(i for i, (s, _) in enumerate(CODING_STEPS) if s == scale) + 1 for scale in (1, 2, 3)}


def thumbnail_scale(steps: int) -> int:
    """The scale whose grid a preview after ``steps`` coding steps draws: the last complete one (1 for a
    preview inside scale 1)."""
    return max((scale for scale, end in SCALE_ENDS.items() if steps >= end), default=1)


class PreviewFill:
    """Builds a preview's small latent from a decoder's state, and enlarges the picture ``g_s`` draws of it."""

    def __init__(self, backend: Any, M: int) -> None:
        self.backend, self.M = backend, M

    def _torch(self, t: Any) -> torch.Tensor:
        if isinstance(t, torch.Tensor):
            return t
        if isinstance(t, np.ndarray):
            return torch.from_numpy(t)
        return torch.from_numpy(np.ascontiguousarray(self.backend.to_host(t)))

    def _back(self, t: torch.Tensor, like: Any) -> Any:
        if isinstance(like, torch.Tensor):
            return t
        if isinstance(like, np.ndarray):
            return t.numpy()
        return self.backend.from_host(t.cpu().numpy())

    def latent(self, steps: int, y_hat: Any, q: Any, means: Any,
               params: Any) -> tuple[Any, Any, tuple[int, int], tuple[int, int]]:
        """The grid of the last complete scale after ``steps`` coding steps (``y_hat`` on the grid of step
        ``steps - 1``'s scale, that step not yet placed), padded to whole ``TILE``s; zeros shaped as the last
        coding step on it (what ``g_s`` places: nothing); the grid's real size; the padded image's size."""
        scale, partition = CODING_STEPS[steps - 1]
        with torch.inference_mode():
            yt, qt, mt = (self._torch(t) for t in (y_hat, q, means))
            placed = HPCM.place(scale, partition, yt, qt, mt)
            target = thumbnail_scale(steps)
            if scale == 1 and steps == 1:  # half of scale 1: the other half from the hyperprior's means
                pt = self._torch(params)
                hyper = lattice.to_scale(pt[:, self.M:], 1)
                mask = lattice.to_scale(decoded_mask(1, pt, self.M), 1).to(device=pt.device, dtype=pt.dtype)
                grid = placed + (1 - mask) * hyper
            else:
                grid = placed if scale == target else (lattice.s2_to_s1 if scale == 2 else lattice.y_to_s2)(placed)
            h, w = grid.shape[-2:]
            per_y = {1: 4, 2: 2, 3: 1}[scale]  # the y grid is this many times the current scale's grid
            image = (16 * per_y * yt.shape[-2], 16 * per_y * yt.shape[-1])
            grid = F.pad(grid, (0, -w % TILE, 0, -h % TILE), mode="replicate")
            zeros = torch.zeros(grid.shape[0], self.M // CHUNKS[3], *grid.shape[-2:], dtype=grid.dtype,
                                device=grid.device)
        return self._back(grid.contiguous(), y_hat), self._back(zeros, y_hat), (h, w), image

    def enlarge(self, picture: Any, grid: tuple[int, int], size: tuple[int, int]) -> Any:
        """``g_s``'s picture of a padded grid whose real size is ``grid``, cropped to it and enlarged to the
        full padded image ``size`` (bilinear, clamped to [0, 1]), as a tensor of the backend's kind."""
        with torch.inference_mode():
            pt = self._torch(picture)
            factor = pt.shape[-2] // (grid[0] + -grid[0] % TILE)  # pixels per grid position (16)
            pt = pt[..., : grid[0] * factor, : grid[1] * factor]
            big = F.interpolate(pt.float(), size=size, mode="bilinear", align_corners=False).clamp_(0, 1)
        return self._back(big.to(pt.dtype), picture)
