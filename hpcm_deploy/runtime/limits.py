"""How big an image a codec takes on, and how much memory coding it needs, known before anything is allocated.

A stream of a few hundred bytes can announce a 16384 x 16384 image; decoding it would allocate tens of GB. So
both sides check the size first: against ``max_pixels`` (like Pillow's ``MAX_IMAGE_PIXELS``), then the memory
estimated from the configuration against the memory this machine has. ``g_a``/``g_s`` run in tiles within a
budget (:mod:`.tiling`), so what grows with the image is the context model's state on the latent.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from ..config import HPCMConfig
from .tile_memory import estimate_peak_bytes, estimate_tiled_peak_bytes

DEFAULT_TILE_BUDGET = 1 << 30  # g_a/g_s above 1 GiB run in tiles (a 12 MP photo of the demo model: 2.3 GiB)
# Peak bytes the context model needs per latent position and context channel (float32), measured on the
# phase2 and tiny presets at several sizes (docs/evaluation.md): contexts, y_hat, parameters, attention windows
# and bank values of one step alive at once, plus the encoder's packed latent.
CONTEXT_BYTES_PER_ELEMENT = 4 * 24


def total_memory() -> int:
    """Physical memory of this machine (bytes)."""
    try:
        import psutil

        return int(psutil.virtual_memory().total)
    except ImportError:  # pragma: no cover - psutil is a dependency
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))


def available_memory() -> int:
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except ImportError:  # pragma: no cover
        return total_memory() // 2


def available_device_memory(device: str) -> int | None:
    """Free memory of a CUDA ``device`` (what the driver reports, plus what PyTorch's caching allocator holds
    unused and would hand out again); None for the CPU or where it cannot be asked."""
    if not str(device).startswith("cuda"):
        return None
    try:
        import torch

        free, _ = torch.cuda.mem_get_info(torch.device(device))
        dev = torch.device(device)
        cached = torch.cuda.memory_reserved(dev) - torch.cuda.memory_allocated(dev)
        return int(free + max(cached, 0))
    except (ImportError, RuntimeError, AssertionError, ValueError):
        return None


def default_memory_budget() -> int:
    """The default budget of ``g_a``/``g_s`` working memory: 1 GiB, or a quarter of a smaller machine."""
    return min(DEFAULT_TILE_BUDGET, total_memory() // 4)


@dataclass(frozen=True)
class Estimate:
    transforms: int  # g_a or g_s at their peak (tiled within the budget, or whole)
    context: int  # the context model's working state on the latent
    images: int  # the padded input or output image, and its host copy

    @property
    def total(self) -> int:
        return self.transforms + self.context + self.images


def estimate_coding_bytes(config: HPCMConfig, height: int, width: int, batch: int = 1,
                          memory_budget: int | None = None) -> Estimate:
    """Peak working memory to code a batch of padded ``height`` x ``width`` images (weights not included)."""
    from .tile_memory import choose_tile

    transforms = 0
    for stage in ("g_a", "g_s"):
        tile = None
        if memory_budget is not None:
            try:
                tile = choose_tile(config, height, width, memory_budget, batch, stage=stage, uniform=True,
                                   align=4 if stage == "g_s" else 1)
            except Exception:  # not even the finest tile fits the budget: count the image untiled
                tile = None
        need = (estimate_peak_bytes(config, stage, height, width, batch) if tile is None else
                estimate_tiled_peak_bytes(config, stage, height, width, tile, batch, uniform=True,
                                          align=4 if stage == "g_s" else 1))
        transforms = max(transforms, need)
    latent = (height // 16) * (width // 16) * batch
    context = CONTEXT_BYTES_PER_ELEMENT * 2 * config.M * latent
    images = 2 * 3 * height * width * 4 * batch
    return Estimate(transforms, context, images)


def size_problem(height: int, width: int, max_pixels: int | None, what: str) -> str | None:
    """Why an image of this size is refused (None: it is not). ``what``: "image" or "stream"."""
    if max_pixels and height * width > max_pixels:
        size = f"{width}x{height}"
        subject = (f"the stream announces a {size} image" if what == "stream" else f"the image is {size}") + \
            f" ({_mp(height * width)})"
        return (f"{subject}, more than the limit of {_mp(max_pixels)}; raise it with --max-pixels "
                "(Codec(max_pixels=...))")
    return None


def _mp(pixels: int) -> str:
    """Megapixels, with a decimal where rounding would hide that a size is over a limit (64.1 MP > 64 MP)."""
    mp = pixels / 1e6
    return f"{mp:.0f} MP" if mp >= 100 or mp == round(mp) else f"{mp:.1f} MP" if mp >= 10 else f"{mp:.3g} MP"


def memory_problem(config: HPCMConfig, height: int, width: int, batch: int, memory_budget: int | None,
                   what: str, available: int | None = None) -> str | None:
    """Why coding this padded size would not fit this machine's memory (None: it fits)."""
    need = estimate_coding_bytes(config, height, width, batch, memory_budget).total
    available = available_memory() if available is None else available
    if need > available:
        return (f"coding a {width}x{height} {what} needs about {need / 2**30:.1f} GiB, more than the "
                f"{available / 2**30:.1f} GiB available; use a machine with more memory or a smaller image")
    return None
