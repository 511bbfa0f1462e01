"""Our strided-slicing lattice against index maps written by the official mask-based code."""

from pathlib import Path

import numpy as np
import pytest
import torch

from hpcm_deploy.models import lattice as L
from hpcm_deploy.models.hpcm import CODING_STEPS

GOLDEN = np.load(Path(__file__).parent / "data" / "official_lattice.npz")
SIZES = [(16, 32), (32, 16)]


def _ids(h: int, w: int) -> torch.Tensor:
    return torch.arange(16 * h * w, dtype=torch.float32).reshape(1, 16, h, w) + 1


@pytest.mark.parametrize("h,w", SIZES)
def test_scale_extraction_and_hyper_quirk_match_official(h, w):
    key = f"{h}x{w}"
    y = _ids(h, w)
    s2 = L.y_to_s2(y)
    assert np.array_equal(s2.int().numpy(), GOLDEN[f"y_to_s2_{key}"])
    assert np.array_equal(L.s2_to_s1(s2).int().numpy(), GOLDEN[f"s2_to_s1_{key}"])
    assert np.array_equal(L.s2_hyper(y).int().numpy(), GOLDEN[f"s2_hyper_{key}"])
    assert np.array_equal(L.s2_lattice_removed(y).int().numpy(), GOLDEN[f"s3_hyper_{key}"])


@pytest.mark.parametrize("h,w", SIZES)
def test_step_packing_matches_official(h, w):
    grids = {1: (h // 4, w // 4), 2: (h // 2, w // 2), 3: (h, w)}
    for scale, parts in ((1, range(2)), (2, range(4)), (3, range(8))):
        g = _ids(*grids[scale])
        for p in parts:
            packed = L.pack(g, L.step_masks(g, scale, p))
            assert np.array_equal(packed.int().numpy(), GOLDEN[f"pack_s{scale}_p{p}_{h}x{w}"]), (scale, p)


def test_quirk_is_really_off_for_six_groups():
    y = _ids(16, 16)
    off_s1 = L.s1_to_s2(torch.ones_like(L.s2_to_s1(L.y_to_s2(y)))) == 0  # s2 positions not on the s1 lattice
    honest, quirk = L.y_to_s2(y), L.s2_hyper(y)
    differs = []
    for g in range(8):
        sel = off_s1[:, 2 * g:2 * g + 2]
        differs.append(bool((honest[:, 2 * g:2 * g + 2][sel] != quirk[:, 2 * g:2 * g + 2][sel]).any()))
    assert differs == [False, False, True, True, True, True, True, True]
    assert (quirk[~off_s1] == 0).all()


def test_phases_are_inverse_and_steps_partition_every_scale():
    y = torch.randn(2, 16, 32, 48)
    assert torch.equal(L.s2_to_y(L.y_to_s2(y)) + L.s2_lattice_removed(y), y)
    s2 = L.y_to_s2(y)
    assert torch.equal(L.s2_to_s1(L.s1_to_s2(L.s2_to_s1(s2))), L.s2_to_s1(s2))
    # every y position is coded exactly once over the 11 steps
    cover = torch.zeros(1, 16, 32, 48)
    grids = {3: cover}
    for scale, p in CODING_STEPS:
        like = L.to_scale(cover, scale)
        ones = torch.ones(1, 16 // {1: 2, 2: 4, 3: 8}[scale], *like.shape[-2:])
        placed = L.unpack(ones, L.step_masks(like, scale, p))
        up = placed if scale == 3 else (L.s2_to_y(placed) if scale == 2 else L.s2_to_y(L.s1_to_s2(placed)))
        grids[3] = grids[3] + up
    assert torch.equal(grids[3], torch.ones_like(cover))
