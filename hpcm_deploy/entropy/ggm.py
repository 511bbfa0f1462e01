"""The generalized Gaussian entropy model of HPCM (beta = 1.5) and its CDF tables.

The tables are what the rANS coder reads; they are built with the same float operations, in the same order,
as the official code, so streams are byte-identical to it. Build them once and ship them as data (the export
does): recomputing them on another platform is a determinism risk.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import scipy.stats
import torch
from torch import Tensor

from .._compat import pmf_to_quantized_cdf

BETA = 1.5
SCALE_BOUND = 0.12
LIKELIHOOD_BOUND = 1e-9
TAIL_MASS = 1e-6
CDF_PRECISION = 16
SCALE_TABLE_MIN, SCALE_TABLE_MAX, SCALE_TABLE_LEVELS = 0.12, 64.0, 60


def scale_table() -> Tensor:
    """The 60 log-spaced scales (0.12 ... 64) whose buckets index the y CDF tables (float32)."""
    return torch.exp(torch.linspace(math.log(SCALE_TABLE_MIN), math.log(SCALE_TABLE_MAX), SCALE_TABLE_LEVELS))


class _LowerBound(torch.autograd.Function):
    """``max(x, bound)`` whose gradient passes where x is above the bound or is pushed upwards."""

    @staticmethod
    def forward(ctx, x: Tensor, bound: float) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(x)
        ctx.bound = bound
        return torch.clamp_min(x, bound)

    @staticmethod
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        (x,) = ctx.saved_tensors
        return grad * ((x >= ctx.bound) | (grad < 0)).to(grad.dtype), None


def lower_bound(x: Tensor, bound: float) -> Tensor:
    if torch.is_grad_enabled() and x.requires_grad:
        return _LowerBound.apply(x, bound)
    return torch.clamp_min(x, bound)


class _GenNormCDF(torch.autograd.Function):
    """CDF of the standard generalized normal; its gradient is the density (torch has no gradient of
    ``gammainc`` in ``x``)."""

    @staticmethod
    def forward(ctx, x: Tensor, beta: Tensor) -> Tensor:  # type: ignore[override]
        abs_pow = torch.pow(torch.abs(x), beta)
        ctx.save_for_backward(abs_pow, beta)
        return (1 + torch.sign(x) * torch.special.gammainc(1 / beta, abs_pow)) / 2

    @staticmethod
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        abs_pow, beta = ctx.saved_tensors
        density = torch.exp(-abs_pow - torch.special.gammaln(1 / beta)) * beta / 2
        return grad * density, None


def gennorm_cdf(x: Tensor, beta: float = BETA) -> Tensor:
    """``P(X <= x)`` for the unit-scale generalized normal of shape ``beta``."""
    return _GenNormCDF.apply(x, torch.tensor([beta], dtype=x.dtype, device=x.device))


def likelihood(values: Tensor, scales: Tensor) -> Tensor:
    """Probability mass of the unit interval around ``values`` (already mean-removed) under GGM(scales)."""
    scales = lower_bound(scales, SCALE_BOUND)
    upper = gennorm_cdf((values + 0.5) / scales)
    lower = gennorm_cdf((values - 0.5) / scales)
    return lower_bound(upper - lower, LIKELIHOOD_BOUND)


@dataclass(frozen=True)
class CDFTable:
    """Quantized CDFs for the rANS coder: one row per distribution."""

    cdf: np.ndarray  # int32 [rows, max_length + 2], zero padded
    cdf_length: np.ndarray  # int32 [rows]
    offset: np.ndarray  # int32 [rows]

    def __post_init__(self) -> None:
        # the coder takes Python lists; convert once, not per call
        object.__setattr__(self, "_lists", (
            [row[:n].tolist() for row, n in zip(self.cdf, self.cdf_length)],
            self.cdf_length.tolist(),
            self.offset.tolist(),
        ))

    @property
    def coder_args(self) -> tuple[list[list[int]], list[int], list[int]]:
        return self._lists  # type: ignore[attr-defined]

    def equals(self, other: CDFTable) -> bool:
        return (np.array_equal(self.cdf, other.cdf) and np.array_equal(self.cdf_length, other.cdf_length)
                and np.array_equal(self.offset, other.offset))


def build_cdf_table(scales: Tensor) -> CDFTable:
    """CDF tables for GGM at each of ``scales`` (the official construction: tail mass 1e-6, 16-bit).

    Every operation and dtype mirrors the official ``get_quantized_cdf`` so the tables, and therefore the
    streams, are identical to the official implementation's.
    """
    with torch.no_grad():
        beta = torch.tensor([BETA])
        scales = torch.clamp_min(scales.detach().float().cpu().reshape(-1), SCALE_BOUND)
        multiplier = -float(scipy.stats.gennorm.ppf(TAIL_MASS / 2, BETA))
        pmf_center = torch.ceil(scales.double() * multiplier).int()
        pmf_length = 2 * pmf_center + 1
        max_length = int(pmf_length.max())
        samples = (torch.arange(max_length).int() - pmf_center[:, None]).float()
        s = scales.unsqueeze(1)
        upper = _GenNormCDF.apply((samples + 0.5) / s, beta)
        lower = _GenNormCDF.apply((samples - 0.5) / s, beta)
        pmf = upper - lower
        tail = lower[:, :1] + (1 - upper[:, -1:])
        cdf = np.zeros((len(scales), max_length + 2), dtype=np.int32)
        for i in range(len(scales)):
            n = int(pmf_length[i])
            prob = torch.cat((pmf[i, :n], tail[i]), dim=0)
            row = pmf_to_quantized_cdf(prob.tolist(), CDF_PRECISION)
            cdf[i, : len(row)] = row
    return CDFTable(cdf=cdf, cdf_length=(pmf_length + 2).numpy().astype(np.int32),
                    offset=(-pmf_center).numpy().astype(np.int32))


def scale_indexes(scales: np.ndarray, table_edges: np.ndarray) -> np.ndarray:
    """Bucket of each scale: the number of ``table_edges`` strictly below it (CompressAI's rule over
    ``scale_table[:-1]``). Vectorised; equal to the official ``(scales > table).sum(-1)``."""
    return np.searchsorted(table_edges, scales, side="left").astype(np.int32)
