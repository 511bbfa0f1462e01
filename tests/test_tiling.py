"""Tiled g_a / g_s: the derived halo is exact and tight, plans partition the output, the runner stitches NumPy and
torch stages alike, and the memory model picks tiles that fit."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from torch import nn

import hpcm_deploy as hd
from hpcm_deploy.config import get_config
from hpcm_deploy.errors import ConfigError
from hpcm_deploy.models import CODING_STEPS, HPCM
from hpcm_deploy.models.lattice import step_masks
from hpcm_deploy.models.layers import conv4x4_down, deconv4x4_up
from hpcm_deploy.runtime.tile_memory import choose_tile, estimate_peak_bytes, estimate_tiled_peak_bytes
from hpcm_deploy.runtime.tiling import (
    LATTICE_ALIGN,
    Halo,
    module_halo,
    plan_tiles,
    run_tiled,
    stage_halo,
    stage_plan,
)

from .helpers import images

TINY = get_config("tiny-phase2")


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """These tests run many small convolutions; on a loaded machine torch's thread team waits on descheduled
    workers for each of them (30x slower than one thread on a busy 2-core box)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ---------------------------------------------------------------------------------------------------- halo
def test_halo_of_the_transforms():
    for name in ("tiny-phase2", "hpcm-base"):  # the widths differ, the layer lists do not
        cfg = get_config(name)
        assert stage_halo(cfg, "g_a") == Halo(down=True, factor=16, before=45, after=45)
        assert stage_halo(cfg, "g_s") == Halo(down=False, factor=16, before=3, after=3)
        assert stage_halo(cfg, "g_a").latent == stage_halo(cfg, "g_s").latent == 3


def test_halo_follows_the_layers():
    assert module_halo(nn.Conv2d(1, 1, 3, padding=1)) == Halo(True, 1, 1, 1)
    assert module_halo(nn.Sequential(nn.Conv2d(1, 1, 5, padding=2), nn.ReLU())) == Halo(True, 1, 2, 2)
    assert module_halo(conv4x4_down(1, 1)) == Halo(True, 2, 1, 1)  # reads pixels 2i-1 .. 2i+2
    assert module_halo(deconv4x4_up(1, 1)) == Halo(False, 2, 1, 1)  # outputs 2i, 2i+1 read inputs i-1 .. i+1
    with pytest.raises(TypeError, match="no stride rule for MaxPool2d"):
        module_halo(nn.Sequential(nn.Conv2d(1, 1, 3), nn.MaxPool2d(2)))


@pytest.fixture(scope="module")
def model(tiny_phase2) -> hd.HPCM:
    return tiny_phase2  # tiny-phase2, seed 2, g_a's last layer x20 (tests/conftest.py)


def test_halo_is_the_receptive_field(model):
    """Autograd footprint of one latent position (g_a) and of one 16x16 output block (g_s): nonzero exactly
    within the derived halo. So the halo suffices, and any window with less context misses a real dependency."""
    x = torch.rand(1, 3, 160, 160, requires_grad=True)
    grad = torch.autograd.grad(model.g_a(x)[0, :, 4, 5].sum(), x)[0]  # (leaves the shared model's .grad alone)
    rows = torch.nonzero(grad.abs().sum(dim=(0, 1, 3))).flatten()
    cols = torch.nonzero(grad.abs().sum(dim=(0, 1, 2))).flatten()
    assert (rows.min().item(), rows.max().item()) == (4 * 16 - 45, 4 * 16 + 15 + 45)
    assert (cols.min().item(), cols.max().item()) == (5 * 16 - 45, 5 * 16 + 15 + 45)

    y = torch.rand(1, TINY.M, 10, 10, requires_grad=True)
    grad = torch.autograd.grad(model.g_s(y)[0, :, 5 * 16:6 * 16, 4 * 16:5 * 16].sum(), y)[0]
    rows = torch.nonzero(grad.abs().sum(dim=(0, 1, 3))).flatten()
    cols = torch.nonzero(grad.abs().sum(dim=(0, 1, 2))).flatten()
    assert (rows.min().item(), rows.max().item()) == (5 - 3, 5 + 3)
    assert (cols.min().item(), cols.max().item()) == (4 - 3, 4 + 3)


@pytest.mark.parametrize("stage,uniform", [("g_a", False), ("g_s", True)])
def test_derived_halo_is_exact_and_one_less_is_not(model, stage, uniform):
    """In float64 the tiled result equals the untiled one to the last bits with the derived halo; one latent
    position less leaves differences (~1e-6 with these weights: the outermost taps weigh little, which is why
    this runs in float64, where rounding noise is ~1e-15)."""
    net = copy.deepcopy(model.g_a if stage == "g_a" else model.g_s).double()
    x = images(1, 192, 192, seed=3).double()
    if stage == "g_s":
        with torch.inference_mode():
            x = torch.round(copy.deepcopy(model.g_a).double()(x))
    halo = stage_halo(TINY, stage)
    with torch.inference_mode():
        whole = net(x)
        plan = plan_tiles(stage, 192, 192, 64, halo, uniform=uniform)  # 3x3 tiles: the centre one is interior
        assert len(plan) == 9 and (len(plan.window_shapes) == 1) == uniform
        assert (run_tiled(net, x, plan) - whole).abs().max().item() < 1e-10
        short = plan_tiles(stage, 192, 192, 64, halo.latent - 1, uniform=uniform)
        assert (run_tiled(net, x, short) - whole).abs().max().item() > 1e-9


# ---------------------------------------------------------------------------------------------------- runs
@pytest.fixture(scope="module")
def batch() -> torch.Tensor:
    return images(2, 512, 768, seed=1)


@pytest.fixture(scope="module")
def latents(model, batch) -> torch.Tensor:
    with torch.inference_mode():
        return model.g_a(batch)


def test_tiled_g_a_matches_torch_batch(model, batch, latents):
    plan = stage_plan(TINY, "g_a", 512, 768, 256)  # 2x3 tiles
    assert len(plan) == 6
    with torch.inference_mode():
        tiled = run_tiled(model.g_a, batch, plan)
        assert latents.abs().mean() > 0.5  # realistic magnitudes (the x20 on g_a's last layer)
        assert tiled.shape == latents.shape and tiled.dtype == latents.dtype
        assert (tiled - latents).abs().max().item() < 1e-4
        # two latent positions less context: far outside the tolerance
        short = run_tiled(model.g_a, batch, plan_tiles("g_a", 512, 768, 256, 1))
        assert (short - latents).abs().max().item() > 1e-3


def test_tiled_g_s_matches_numpy_batch(model, latents):
    """g_s through a NumPy stage (as ONNX Runtime on the CPU runs it), odd and smaller edge tiles."""
    y_hat = torch.round(latents)
    with torch.inference_mode():
        whole = model.g_s(y_hat).numpy()

        def stage(window: np.ndarray) -> np.ndarray:
            assert isinstance(window, np.ndarray) and window.flags.c_contiguous
            return model.g_s(torch.from_numpy(window)).numpy()

        plan = stage_plan(TINY, "g_s", 512, 768, 208)  # 13 latent positions: 3x4 tiles, the last ones smaller
        assert len(plan) == 12
        tiled = run_tiled(stage, y_hat.numpy(), plan)
    assert isinstance(tiled, np.ndarray) and tiled.shape == whole.shape == (2, 3, 512, 768)
    assert np.abs(tiled - whole).max() < 1e-4

    def pixels(a: np.ndarray) -> np.ndarray:
        return np.round(np.clip(a, 0, 1) * 255)

    assert np.abs(pixels(tiled) - pixels(whole)).max() <= 1


def test_synthesis_stage_with_placement_runs_on_aligned_windows(model):
    """The decoder's synthesis stage places the last step (lattice masks built from its input's size, period 4)
    before g_s: with windows aligned to the period it runs on (y_hat, q, means) windows unchanged."""
    scale, partition = CODING_STEPS[-1]
    g = torch.Generator().manual_seed(4)
    y_hat = torch.round(3 * torch.randn(1, TINY.M, 16, 32, generator=g))
    chunks = step_masks(y_hat, scale, partition).shape[0]
    q = torch.round(3 * torch.randn(1, TINY.M // chunks, 16, 32, generator=g))
    means = torch.randn(1, TINY.M // chunks, 16, 32, generator=g)

    def synthesis(y_hat: torch.Tensor, q: torch.Tensor, means: torch.Tensor) -> torch.Tensor:  # as the stage does
        return torch.clamp(model.g_s(HPCM.place(scale, partition, y_hat, q, means)), 0, 1)

    with torch.inference_mode():
        whole = synthesis(y_hat, q, means)
        plan = stage_plan(TINY, "g_s", 256, 512, 128, align=LATTICE_ALIGN)  # 2x4 tiles, halo 3 -> 4
        assert plan.halo == 4 and len(plan) == 8
        assert (run_tiled(synthesis, (y_hat, q, means), plan) - whole).abs().max().item() < 1e-4
        # windows starting 2 positions off the period (ample halo, lengths a multiple of 4) shift the lattice
        shifted = plan_tiles("g_s", 256, 512, 128, 6, uniform=True)
        assert {t.window[2] % LATTICE_ALIGN for t in shifted.tiles} == {0, 2}
        assert (run_tiled(synthesis, (y_hat, q, means), shifted) - whole).abs().max().item() > 1e-2


def test_run_tiled_checks_shapes(model):
    plan = stage_plan(TINY, "g_a", 256, 256, 128)
    with pytest.raises(ValueError, match="expects"):
        run_tiled(model.g_a, torch.zeros(1, 3, 256, 512), plan)
    with pytest.raises(ValueError, match="is fn the g_a transform"):
        run_tiled(lambda w: w, torch.zeros(1, 3, 256, 256), plan)
    with pytest.raises(TypeError, match="NumPy arrays or torch tensors"):
        run_tiled(lambda w: w, [[0.0] * 256] * 256, stage_plan(TINY, "g_s", 4096, 4096, 256))
    with pytest.raises(TypeError, match="the stage returned list"):
        run_tiled(lambda w: [model.g_a(w)], torch.zeros(1, 3, 256, 256), plan)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_tiled_g_s_on_cuda(model, latents):
    net = copy.deepcopy(model.g_s).cuda()
    y_hat = torch.round(latents).cuda()
    with torch.inference_mode(), torch.backends.cudnn.flags(enabled=True, allow_tf32=False):
        whole = net(y_hat)
        tiled = run_tiled(net, y_hat, stage_plan(TINY, "g_s", 512, 768, 256))
    assert tiled.device == whole.device
    assert (tiled - whole).abs().max().item() < 1e-4


# ---------------------------------------------------------------------------------------------------- plans
@pytest.mark.parametrize("stage", ["g_a", "g_s"])
@pytest.mark.parametrize("size,tile,halo,uniform,align", [
    ((512, 768), 256, 3, False, 1), ((512, 768), 160, 3, True, 1), ((256, 256), 512, 3, False, 1),
    ((3072, 4096), 2048, 3, False, 1), ((768, 256), 16, 0, False, 1), ((768, 512), 48, 5, True, 1),
    ((512, 768), 192, 3, False, 4), ((1024, 768), 320, 3, True, 4),
])
def test_plan_properties(stage, size, tile, halo, uniform, align):
    plan = plan_tiles(stage, *size, tile, halo, uniform=uniform, align=align)
    assert plan.halo % align == 0 and halo <= plan.halo < halo + align
    halo = plan.halo
    f = 16
    (h_in, w_in), (h_out, w_out) = plan.input_size, plan.output_size
    f_in, f_out = (f, 1) if stage == "g_a" else (1, f)  # units of the input and output per latent position
    cover = np.zeros((h_out, w_out), dtype=np.int32)
    for t in plan.tiles:
        r0, r1, c0, c1 = t.window
        assert 0 <= r0 < r1 <= h_in and 0 <= c0 < c1 <= w_in  # inside the image
        assert all(v % (f_in * align) == 0 for v in t.window)  # whole (aligned) latent positions
        assert all(v % (f_out * align) == 0 for v in t.core)
        cover[t.core[0]:t.core[1], t.core[2]:t.core[3]] += 1
        # the core's input block plus the halo (clipped) lies in the window, and the crop points at the core
        lat_w = [v // f_in for v in t.window]
        lat_c = [v // f_out for v in t.core]
        assert lat_w[0] <= max(lat_c[0] - halo, 0) and lat_w[1] >= min(lat_c[1] + halo, h_in // f_in)
        assert lat_w[2] <= max(lat_c[2] - halo, 0) and lat_w[3] >= min(lat_c[3] + halo, w_in // f_in)
        assert t.crop == ((lat_c[0] - lat_w[0]) * f_out, (lat_c[1] - lat_w[0]) * f_out,
                          (lat_c[2] - lat_w[2]) * f_out, (lat_c[3] - lat_w[2]) * f_out)
        assert t.core[1] - t.core[0] <= tile // f * f_out and t.core[3] - t.core[2] <= tile // f * f_out
    assert (cover == 1).all()  # the cores partition the output
    if uniform:
        assert len(plan.window_shapes) == 1


def test_plan_rejects_misaligned_sizes():
    with pytest.raises(ValueError, match="multiple of 16"):
        plan_tiles("g_a", 512, 512, 200, 3)
    with pytest.raises(ValueError, match="multiples of 16"):
        plan_tiles("g_s", 500, 512, 256, 3)
    with pytest.raises(ValueError, match="does not fit stage"):
        plan_tiles("g_s", 512, 512, 256, stage_halo(TINY, "g_a"))


# ---------------------------------------------------------------------------------------------------- memory
def test_estimate_scales_with_the_half_resolution_blocks():
    # the peak is a PConvRB at half resolution: 10 x widths[0] channels (x, its 4x MLP and a layout copy)
    g_s = estimate_peak_bytes(TINY, "g_s", 4096, 3072)
    assert g_s == 4 * (10 * 32 * 2048 * 1536 + TINY.M * 256 * 192)
    assert estimate_peak_bytes(TINY, "g_a", 4096, 3072, batch=2) == 2 * 4 * (10 * 32 * 2048 * 1536 + 3 * 4096 * 3072)
    assert estimate_peak_bytes(get_config("hpcm-base"), "g_s", 4096, 3072) > 2.5 * g_s  # widths[0] 96 vs 32
    tiled = estimate_tiled_peak_bytes(TINY, "g_s", 4096, 3072, 1024)
    assert tiled < g_s / 4


def test_choose_tile():
    h, w = 3072, 4096
    assert choose_tile(TINY, h, w, 10**11) is None  # fits: untiled, as without tiling
    previous = max(h, w)
    for budget in (3 * 10**9, 2 * 10**9, 10**9, 5 * 10**8, 2 * 10**8):
        tile = choose_tile(TINY, h, w, budget)
        assert tile is not None and tile <= previous
        assert tile % 256 == 0 or tile < 256
        for stage in ("g_a", "g_s"):
            assert 1.1 * estimate_tiled_peak_bytes(TINY, stage, h, w, tile) <= budget
        previous = tile
    assert previous < 256  # a small budget falls back to multiples of 16
    assert choose_tile(TINY, h, w, int(2.5e9), stage="g_s") == 2048  # balanced: 2x2 tiles of 2048x1536
    with pytest.raises(ConfigError, match="do not fit"):
        choose_tile(TINY, h, w, 10**8)


@pytest.mark.slow
def test_estimate_matches_measured_rss():
    """Peak RSS of eager torch on the CPU (a fresh process) within 15% of the estimate."""
    code = textwrap.dedent("""
        import sys, torch
        from hpcm_deploy.config import get_config
        from hpcm_deploy.models.transforms import AnalysisTransform, SynthesisTransform
        def vm(key):
            return next(int(l.split()[1]) * 1024 for l in open("/proc/self/status") if l.startswith(key))
        cfg, stage, size = get_config("tiny-phase2"), sys.argv[1], int(sys.argv[2])
        net = (AnalysisTransform if stage == "g_a" else SynthesisTransform)(cfg.transform_widths, cfg.M).eval()
        shape = (1, 3, size, size) if stage == "g_a" else (1, cfg.M, size // 16, size // 16)
        with torch.inference_mode():
            net(torch.zeros(shape[:2] + (32, 32)))
            base = vm("VmRSS")
            open("/proc/self/clear_refs", "w").write("5")
            net(torch.rand(shape))
        print(vm("VmHWM") - base)
    """)
    for stage in ("g_a", "g_s"):
        out = subprocess.run([sys.executable, "-c", code, stage, "2048"], capture_output=True, text=True,
                             check=True, env={**os.environ, "OMP_NUM_THREADS": "2"})
        measured = int(out.stdout.split()[-1])
        assert 0.85 < measured / estimate_peak_bytes(TINY, stage, 2048, 2048) < 1.15
