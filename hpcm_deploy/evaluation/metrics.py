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


def bd_rate(anchor: list[tuple[float, float]], test: list[tuple[float, float]]) -> float:
    """BD-rate (%) of ``test`` against ``anchor``, each a list of (bpp, PSNR) points (>= 2 each; pchip)."""
    import bjontegaard

    (ra, da), (rt, dt) = zip(*sorted(anchor)), zip(*sorted(test))
    return float(bjontegaard.bd_rate(list(ra), list(da), list(rt), list(dt), method="pchip",
                                     require_matching_points=False))


def bd_psnr(anchor: list[tuple[float, float]], test: list[tuple[float, float]]) -> float:
    import bjontegaard

    (ra, da), (rt, dt) = zip(*sorted(anchor)), zip(*sorted(test))
    return float(bjontegaard.bd_psnr(list(ra), list(da), list(rt), list(dt), method="pchip",
                                     require_matching_points=False))


@dataclass(frozen=True)
class JpegPoint:
    quality: int
    bpp: float
    psnr: float


def jpeg_curve(image: np.ndarray, qualities=range(1, 96, 2)) -> list[JpegPoint]:
    """Pillow JPEG (4:2:0, optimize=True: Pillow's default settings waste bytes) at several qualities."""
    from PIL import Image

    img = Image.fromarray(image)
    out = []
    for q in qualities:
        buf = io.BytesIO()
        img.save(buf, format="JPEG", quality=q, optimize=True, subsampling=2)
        dec = np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))
        out.append(JpegPoint(q, 8 * buf.tell() / (image.shape[0] * image.shape[1]), psnr(image, dec)))
    return out


def jpeg_psnr_at(image: np.ndarray, bpp: float) -> float | None:
    """JPEG's PSNR at exactly ``bpp``, interpolated between the two nearest qualities; None when ``bpp`` is
    below what JPEG reaches at quality 1 (JPEG cannot go that low)."""
    curve = sorted(jpeg_curve(image), key=lambda p: p.bpp)
    if bpp < curve[0].bpp:
        return None
    for lo, hi in zip(curve, curve[1:]):
        if lo.bpp <= bpp <= hi.bpp:
            t = (bpp - lo.bpp) / (hi.bpp - lo.bpp) if hi.bpp > lo.bpp else 0.0
            return lo.psnr + t * (hi.psnr - lo.psnr)
    return curve[-1].psnr
