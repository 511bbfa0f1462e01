"""Previews that cost less than a full decode: fill the latent from what is known, then only the synthesis.

After the first ``k`` coding steps the decoder holds ``y_hat`` on the grid of the current scale (every earlier
scale's positions in place, the current scale's steps so far), the last decoded step (not placed yet) and the
hyperprior's parameters ``params = [scales | means]`` on the whole y grid. The preview places the last step,
moves ``y_hat`` onto the y grid (the lattice's own inverse, :func:`~hpcm_deploy.models.lattice.from_scale`),
fills every position not yet decoded with the hyperprior's mean there and runs ``g_s``: none of the later
steps' context networks run (today's other preview, ``fill="context"``, runs all of them with zero residuals).

The arithmetic is a few element-wise torch operations on the backend's tensors: torch tensors (torch and
TensorRT backends) stay on their device, NumPy arrays (ONNX Runtime on the CPU) are viewed in place; other
tensors (ONNX Runtime's CUDA values) take a host round trip.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..models import lattice
from ..models.hpcm import HPCM
from ..schedule import CHUNKS, CODING_STEPS

FILLS = ("hyperprior", "context")


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


class PreviewFill:
    """Builds the y-grid latent of a preview from a decoder's state, on the backend's tensors."""

    def __init__(self, backend: Any, M: int) -> None:
        self.backend, self.M = backend, M
        self._masks: dict[tuple, torch.Tensor] = {}

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

    def latent(self, steps: int, y_hat: Any, q: Any, means: Any, params: Any) -> tuple[Any, Any]:
        """``y_hat`` (on the grid of step ``steps - 1``'s scale, that step not yet placed) completed on the y grid:
        decoded values where decoded, the hyperprior's means elsewhere; and zeros shaped as the last coding step
        (what ``g_s`` would place: nothing)."""
        scale, partition = CODING_STEPS[steps - 1]
        with torch.inference_mode():
            yt, qt, mt, pt = (self._torch(t) for t in (y_hat, q, means, params))
            placed = lattice.from_scale(HPCM.place(scale, partition, yt, qt, mt), scale)
            key = (steps, tuple(pt.shape[-2:]), str(pt.device), pt.dtype)
            if key not in self._masks:
                self._masks[key] = decoded_mask(steps, pt, self.M).to(device=pt.device, dtype=pt.dtype)
            mask = self._masks[key]
            full = placed + (1 - mask) * pt[:, self.M:]
            zeros = torch.zeros(full.shape[0], self.M // CHUNKS[3], *full.shape[-2:], dtype=full.dtype,
                                device=full.device)
        return self._back(full, y_hat), self._back(zeros, y_hat)
