"""Quality metrics on 8-bit RGB images, and the Bjontegaard delta (from the maintained ``bjontegaard``)."""

from __future__ import annotations

import io
import math
from dataclasses import dataclass

import numpy as np
import torch


def psnr(a: np.ndarray, b: np.ndarray, peak: float = 255.0) -> float:
    """PSNR in dB of two uint8 images (the official test's convention: on 0..255 integer values)."""
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * math.log10(peak * peak / mse)


def ms_ssim(a: np.ndarray, b: np.ndarray) -> float:
    """MS-SSIM (pytorch-msssim, data range 1) of two uint8 RGB images; images smaller than the metric's
    161-pixel minimum side are padded by edge replication."""
    from pytorch_msssim import ms_ssim as _ms_ssim

    x = torch.from_numpy(a.copy()).permute(2, 0, 1)[None].float() / 255
    y = torch.from_numpy(b.copy()).permute(2, 0, 1)[None].float() / 255
    h, w = x.shape[-2:]
    ph, pw = max(0, 161 - h), max(0, 161 - w)
    if ph or pw:
        pad = (0, pw, 0, ph)
        x = torch.nn.functional.pad(x, pad, mode="replicate")
        y = torch.nn.functional.pad(y, pad, mode="replicate")
    return float(_ms_ssim(x, y, data_range=1.0))


def ms_ssim_db(value: float) -> float:
    return float("inf") if value >= 1 else -10 * math.log10(1 - value)


def psnr_overlap(a: list[tuple[float, float]], b: list[tuple[float, float]]) -> bool:
    """Whether two (bpp, PSNR) curves share a PSNR interval (a BD-rate integrates over it)."""
    return max(min(p for _, p in a), min(p for _, p in b)) < min(max(p for _, p in a), max(p for _, p in b))


def bd_rate(anchor: list[tuple[float, float]], test: list[tuple[float, float]]) -> float | None:
    """BD-rate (%) of ``test`` against ``anchor``, each a list of (bpp, PSNR) points (>= 2 each; pchip).
    None when their PSNR ranges do not overlap (no rate can be compared at equal quality)."""
    import bjontegaard

    if not psnr_overlap(anchor, test):
        return None
    (ra, da), (rt, dt) = zip(*sorted(anchor)), zip(*sorted(test))
    return float(bjontegaard.bd_rate(list(ra), list(da), list(rt), list(dt), method="pchip",
                                     require_matching_points=False))


def bd_psnr(anchor: list[tuple[float, float]], test: list[tuple[float, float]]) -> float:
    import bjontegaard

    (ra, da), (rt, dt) = zip(*sorted(anchor)), zip(*sorted(test))
    return float(bjontegaard.bd_psnr(list(ra), list(da), list(rt), list(dt), method="pchip",
                                     require_matching_points=False))


@dataclass(frozen=True)
class AnchorPoint:
    quality: int
    bpp: float
    psnr: float


JpegPoint = AnchorPoint  # the name before WebP and AVIF joined

# Pillow's encoders as anchors, each with the settings that make it strong (Pillow's defaults waste bytes):
# JPEG 4:2:0 with optimised Huffman tables; WebP at its slowest, best method; AVIF at speed 4 (4:2:0).
ANCHORS = {
    "jpeg": ("JPEG", {"optimize": True, "subsampling": 2}, range(1, 96)),
    "webp": ("WEBP", {"method": 6}, range(0, 101)),
    "avif": ("AVIF", {"speed": 4, "subsampling": "4:2:0"}, range(0, 101)),
}


def available_anchors() -> list[str]:
    """The anchors this Pillow can encode (AVIF and WebP depend on how Pillow was built)."""
    from PIL import features

    return [name for name in ANCHORS if name == "jpeg" or features.check(name)]


def anchor_point(image: np.ndarray, codec: str, quality: int) -> AnchorPoint:
    """``image`` (uint8 RGB) through Pillow's ``codec`` at ``quality``: bits per pixel and PSNR."""
    from PIL import Image

    fmt, options, _ = ANCHORS[codec]
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format=fmt, quality=int(quality), **options)
    dec = np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))
    return AnchorPoint(int(quality), 8 * buf.tell() / (image.shape[0] * image.shape[1]), psnr(image, dec))


def anchor_curve(image: np.ndarray, codec: str = "jpeg", qualities=None) -> list[AnchorPoint]:
    """Rate-distortion points of an anchor codec (default qualities: its whole range, coarsely)."""
    low_high = ANCHORS[codec][2]
    qualities = qualities if qualities is not None else range(low_high[0], low_high[-1] + 1, 2)
    return [anchor_point(image, codec, q) for q in qualities]


def jpeg_curve(image: np.ndarray, qualities=range(1, 96, 2)) -> list[AnchorPoint]:
    """Pillow JPEG (4:2:0, optimize=True: Pillow's default settings waste bytes) at several qualities."""
    return anchor_curve(image, "jpeg", qualities)


def anchor_psnr_at(image: np.ndarray, bpp: float, codec: str = "jpeg", max_encodes: int = 9) -> float | None:
    """The anchor's PSNR at exactly ``bpp``, interpolated linearly in rate between the two qualities around it.

    The bracket is searched for, not swept (an AVIF encode takes seconds): a probe in the middle of the range,
    steps outwards until ``bpp`` is bracketed, then interpolation steps on log rate until the two qualities are
    neighbours or ``max_encodes`` encodes were made. None when ``bpp`` is below what the codec reaches at its
    lowest quality.
    """
    qualities = ANCHORS[codec][2]
    q_min, q_max = qualities[0], qualities[-1]
    seen: dict[int, AnchorPoint] = {}

    def probe(q: int) -> AnchorPoint:
        if q not in seen:
            seen[q] = anchor_point(image, codec, q)
        return seen[q]

    lo: AnchorPoint | None = None
    hi: AnchorPoint | None = None
    q = (q_min + q_max) // 3
    while lo is None or hi is None:  # bracket: lo.bpp <= bpp < hi.bpp
        p = probe(q)
        if p.bpp <= bpp:
            lo = p
            if q == q_max:
                return p.psnr
            q = q_max if hi is None and q + 2 * (q - q_min) + 1 > q_max else (
                (q + hi.quality) // 2 if hi is not None else q + 2 * (q - q_min) + 1)
        else:
            hi = p
            if q == q_min:
                return None
            q = q_min if lo is None and q // 2 <= q_min else ((lo.quality + q) // 2 if lo is not None else q // 2)
    while hi.quality - lo.quality > 1 and len(seen) < max_encodes:
        t = (np.log(bpp) - np.log(lo.bpp)) / (np.log(hi.bpp) - np.log(lo.bpp)) if lo.bpp > 0 else 0.5
        q = int(round(lo.quality + t * (hi.quality - lo.quality)))
        q = min(max(q, lo.quality + 1), hi.quality - 1)
        p = probe(q)
        if p.bpp <= bpp:
            lo = p
        else:
            hi = p
    t = (bpp - lo.bpp) / (hi.bpp - lo.bpp) if hi.bpp > lo.bpp else 0.0
    return lo.psnr + t * (hi.psnr - lo.psnr)


def jpeg_psnr_at(image: np.ndarray, bpp: float) -> float | None:
    """JPEG's PSNR at exactly ``bpp`` (see :func:`anchor_psnr_at`)."""
    return anchor_psnr_at(image, bpp, "jpeg")
