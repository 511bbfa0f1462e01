"""``hpcm-deploy eval``: rate and quality of exports on images, measured from the real streams."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..codec import Codec
from ..codec.container import HEADER_SIZE, parse
from ..codec.images import to_tensor
from ..entropy.coder import StreamWriter
from ..image import pad_image
from ..models.hpcm import CODING_STEPS
from .metrics import jpeg_psnr_at, ms_ssim, ms_ssim_db, psnr

SCALE_OF_STEP = [s for s, _ in CODING_STEPS]


@dataclass
class ImageResult:
    image: str
    height: int
    width: int
    bpp: float  # the whole container
    bpp_z: float
    bpp_y: float
    bpp_side: float
    bpp_header: float
    psnr: float
    ms_ssim: float
    ms_ssim_db: float
    bpp_per_step: list[float] = field(default_factory=list)
    bpp_per_scale: dict[str, float] = field(default_factory=dict)
    encode_seconds: float = 0.0
    decode_seconds: float = 0.0
    jpeg_psnr: float | None = None  # JPEG (4:2:0, optimised) at the same bits per pixel


def step_bytes(symbols: list[np.ndarray], indexes: list[np.ndarray], codec: Codec) -> list[int]:
    """Bytes each coding step adds to the y stream: the stream of steps 0..k, flushed, minus that of
    steps 0..k-1 (rANS has no per-step boundary; these prefixes are real streams of the same coder)."""
    sizes, prev = [], 0
    for k in range(len(symbols)):
        w = StreamWriter()
        for s, i in zip(symbols[: k + 1], indexes[: k + 1]):
            w.write(s, i, codec.tables.y)
        n = len(w.finish())
        sizes.append(n - prev)
        prev = n
    return sizes


def evaluate_image(codec: Codec, name: str, image: np.ndarray, jpeg: bool = False) -> ImageResult:
    """Compress and decompress one uint8 RGB image with ``codec``; bits from the container it wrote."""
    start = time.perf_counter()
    stream = codec.compress(image)
    enc_s = time.perf_counter() - start
    start = time.perf_counter()
    decoded = codec.decompress(stream, kind="numpy")
    dec_s = time.perf_counter() - start
    box = parse(stream)
    h, w = image.shape[:2]
    px = h * w
    # per-step bytes from the same symbols the encoder coded
    x, _ = pad_image(to_tensor(image)[0].unsqueeze(0))
    enc = codec.runner.encode(codec._to_backend(x))
    per_step = [8 * b / px for b in step_bytes([s[0] for s in enc.symbols], [i[0] for i in enc.indexes], codec)]
    per_scale = {f"s{s}": sum(b for b, sc in zip(per_step, SCALE_OF_STEP) if sc == s) for s in (1, 2, 3)}
    per_scale["z"] = 8 * len(box.z) / px
    value = ms_ssim(image, decoded)
    return ImageResult(
        image=name, height=h, width=w, bpp=8 * len(stream) / px, bpp_z=8 * len(box.z) / px,
        bpp_y=8 * len(box.y) / px, bpp_side=8 * len(box.side) / px, bpp_header=8 * (HEADER_SIZE + 4) / px,
        psnr=psnr(image, decoded), ms_ssim=value, ms_ssim_db=ms_ssim_db(value), bpp_per_step=per_step,
        bpp_per_scale=per_scale, encode_seconds=enc_s, decode_seconds=dec_s,
        jpeg_psnr=jpeg_psnr_at(image, 8 * len(stream) / px) if jpeg else None)


@dataclass
class ExportResult:
    export: str
    label: str
    images: list[ImageResult]

    def mean(self, key: str) -> float:
        values = [getattr(r, key) for r in self.images if getattr(r, key) is not None]
        return float(np.mean(values)) if values else float("nan")

    def as_dict(self) -> dict[str, Any]:
        keys = ("bpp", "bpp_y", "bpp_z", "bpp_side", "psnr", "ms_ssim", "ms_ssim_db", "encode_seconds",
                "decode_seconds", "jpeg_psnr")
        steps = np.mean([r.bpp_per_step for r in self.images], axis=0).tolist() if self.images else []
        scales = {k: float(np.mean([r.bpp_per_scale[k] for r in self.images])) for k in ("s1", "s2", "s3", "z")}
        return {"export": self.export, "label": self.label, "mean": {k: self.mean(k) for k in keys},
                "mean_bpp_per_step": steps, "mean_bpp_per_scale": scales, "images": [vars(r) for r in self.images]}


def load_images(paths: list[str | os.PathLike], heldout: bool = False) -> dict[str, np.ndarray]:
    """``{name: uint8 RGB}`` from files/folders, plus the bundled held-out images when asked."""
    from ..codec.images import IMAGE_SUFFIXES, list_images, read_image

    out: dict[str, np.ndarray] = {}
    for path, rel in list_images(list(paths), IMAGE_SUFFIXES) if paths else []:
        out[str(rel)] = np.asarray(read_image(path).convert("RGB"))
    if heldout:
        from ..training.data import bundled_images

        out.update(bundled_images("heldout"))
    return out


def evaluate(exports: list[tuple[str, str]], images: dict[str, np.ndarray], backend: str = "onnxruntime",
             device: str = "cpu", jpeg: bool = False, progress=None) -> list[ExportResult]:
    """Every export (path, label) on every image."""
    results = []
    for path, label in exports:
        codec = Codec(path, backend=backend, device=device)
        rows = []
        for name, img in images.items():
            rows.append(evaluate_image(codec, name, img, jpeg))
            if progress:
                progress(label, name)
        results.append(ExportResult(str(path), label, rows))
        codec.close()
    return results


def plot_rd(results: list[ExportResult], path: str | Path,
            jpeg_points: list[tuple[float, float]] | None = None) -> None:
    """Mean bits per pixel against mean PSNR, one curve per label (points sorted by rate)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4.5))
    curves: dict[str, list[tuple[float, float]]] = {}
    for r in results:
        curves.setdefault(r.label, []).append((r.mean("bpp"), r.mean("psnr")))
    for label, pts in curves.items():
        pts.sort()
        ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-", label=label)
    if jpeg_points:
        pts = sorted(jpeg_points)
        ax.plot([p[0] for p in pts], [p[1] for p in pts], "s--", color="gray", label="JPEG (Pillow, 4:2:0, optimised)")
    ax.set_xlabel("bits per pixel")
    ax.set_ylabel("PSNR (dB)")
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def mean_jpeg_curve(images: dict[str, np.ndarray],
                    qualities=(2, 5, 10, 15, 20, 30, 40, 50, 60, 75, 90)) -> list[tuple[float, float]]:
    """JPEG's mean (bpp, PSNR) over the images at each quality."""
    from .metrics import jpeg_curve

    per_q: dict[int, list[tuple[float, float]]] = {}
    for img in images.values():
        for p in jpeg_curve(img, qualities):
            per_q.setdefault(p.quality, []).append((p.bpp, p.psnr))
    return [(float(np.mean([a for a, _ in v])), float(np.mean([b for _, b in v]))) for v in per_q.values()]

