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
from ..models.hpcm import CODING_STEPS
from .metrics import anchor_psnr_at, bd_rate, ms_ssim, ms_ssim_db, psnr

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
    anchors: dict[str, float | None] = field(default_factory=dict)  # JPEG/WebP/AVIF PSNR at the same bpp

    @property
    def jpeg_psnr(self) -> float | None:
        return self.anchors.get("jpeg")


def evaluate_image(codec: Codec, name: str, image: np.ndarray, anchors: tuple[str, ...] = ()) -> ImageResult:
    """Compress and decompress one uint8 RGB image with ``codec``; bits from the container it wrote, split per
    coding step exactly where the decoder reads them (the y payload's words come in decoding order)."""
    start = time.perf_counter()
    stream = codec.compress(image)
    enc_s = time.perf_counter() - start
    start = time.perf_counter()
    decoded = codec.decompress_detailed([stream], kind="numpy", symbols=True)[0]
    dec_s = time.perf_counter() - start
    box = parse(stream)
    h, w = image.shape[:2]
    px = h * w
    assert decoded.offsets is not None
    ends = [0, *decoded.offsets]
    per_step = [8 * (b - a) / px for a, b in zip(ends[:-1], ends[1:])]
    per_scale = {f"s{s}": sum(b for b, sc in zip(per_step, SCALE_OF_STEP) if sc == s) for s in (1, 2, 3)}
    per_scale["z"] = 8 * len(box.z) / px
    value = ms_ssim(image, decoded.image)
    bpp = 8 * len(stream) / px
    return ImageResult(
        image=name, height=h, width=w, bpp=bpp, bpp_z=8 * len(box.z) / px,
        bpp_y=8 * len(box.y) / px, bpp_side=8 * len(box.side) / px, bpp_header=8 * (HEADER_SIZE + 4) / px,
        psnr=psnr(image, decoded.image), ms_ssim=value, ms_ssim_db=ms_ssim_db(value), bpp_per_step=per_step,
        bpp_per_scale=per_scale, encode_seconds=enc_s, decode_seconds=dec_s,
        anchors={a: anchor_psnr_at(image, bpp, a) for a in anchors})


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
                "decode_seconds")
        steps = np.mean([r.bpp_per_step for r in self.images], axis=0).tolist() if self.images else []
        scales = {k: float(np.mean([r.bpp_per_scale[k] for r in self.images])) for k in ("s1", "s2", "s3", "z")}
        mean = {k: self.mean(k) for k in keys}
        for name in dict.fromkeys(a for r in self.images for a in r.anchors):  # over the images it could code
            values = [r.anchors[name] for r in self.images if r.anchors.get(name) is not None]
            mean[f"{name}_psnr"] = float(np.mean(values)) if values else float("nan")
        return {"export": self.export, "label": self.label, "mean": mean, "mean_bpp_per_step": steps,
                "mean_bpp_per_scale": scales, "images": [vars(r) for r in self.images]}


def load_images(paths: list[str | os.PathLike], heldout: bool = False) -> dict[str, np.ndarray]:
    """``{name: uint8 RGB}`` from files/folders, plus the bundled held-out images when asked."""
    from ..image import IMAGE_SUFFIXES, list_images, read_image

    out: dict[str, np.ndarray] = {}
    for path, rel in list_images(list(paths), IMAGE_SUFFIXES) if paths else []:
        out[str(rel)] = np.asarray(read_image(path).convert("RGB"))
    if heldout:
        from ..training.data import bundled_images

        out.update(bundled_images("heldout"))
    return out


def evaluate(exports: list[tuple[str, str]], images: dict[str, np.ndarray], backend: str = "onnxruntime",
             device: str | None = None, anchors: tuple[str, ...] = (), progress=None) -> list[ExportResult]:
    """Every export (path, label) on every image; ``anchors``: Pillow codecs (jpeg, webp, avif) whose PSNR at
    each image's bits per pixel is reported beside it."""
    results = []
    for path, label in exports:
        codec = Codec(path, backend=backend, device=device)
        rows = []
        for name, img in images.items():
            rows.append(evaluate_image(codec, name, img, anchors))
            if progress:
                progress(label, name)
        results.append(ExportResult(str(path), label, rows))
        codec.close()
    return results


def rd_curves(results: list[ExportResult]) -> dict[str, list[tuple[float, float]]]:
    """Mean (bpp, PSNR) per label: exports that share a label form one rate-distortion curve."""
    curves: dict[str, list[tuple[float, float]]] = {}
    for r in results:
        curves.setdefault(r.label, []).append((r.mean("bpp"), r.mean("psnr")))
    return curves


def bd_rates(results: list[ExportResult], anchors: dict[str, list[tuple[float, float]]] | None = None
             ) -> dict[str, float | None]:
    """BD-rate (%) of every curve against every other, for curves of two or more points:
    ``{"B vs A": rate of B relative to A}`` (None where their PSNR ranges do not overlap); ``anchors``: more
    curves to compare against (mean anchor curves)."""
    curves = rd_curves(results)
    out = {f"{b} vs {a}": bd_rate(curves[a], curves[b]) for a in curves for b in curves
           if a != b and len(curves[a]) >= 2 and len(curves[b]) >= 2}
    for name, points in (anchors or {}).items():
        for label, pts in curves.items():
            if len(pts) >= 2 and len(points) >= 2:
                out[f"{label} vs {name}"] = bd_rate(points, pts)
    return out


def plot_rd(results: list[ExportResult], path: str | Path,
            anchors: dict[str, list[tuple[float, float]]] | None = None) -> None:
    """Mean bits per pixel against mean PSNR, one curve per label (points sorted by rate)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4.5))
    for label, pts in rd_curves(results).items():
        pts.sort()
        ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-", label=label)
    names = {"jpeg": "JPEG (Pillow, 4:2:0, optimised)", "webp": "WebP (Pillow, method 6)",
             "avif": "AVIF (Pillow, speed 4)"}
    for name, points in (anchors or {}).items():
        pts = sorted(points)
        ax.plot([p[0] for p in pts], [p[1] for p in pts], "s--", label=names.get(name, name))
    ax.set_xlabel("bits per pixel")
    ax.set_ylabel("PSNR (dB)")
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def mean_anchor_curve(images: dict[str, np.ndarray], codec: str = "jpeg", qualities=None
                      ) -> list[tuple[float, float]]:
    """An anchor codec's mean (bpp, PSNR) over the images at each of its qualities (default: a dozen spread
    over its range)."""
    from .metrics import ANCHORS, anchor_curve

    if qualities is None:
        q = ANCHORS[codec][2]
        qualities = sorted({int(q[0] + (q[-1] - q[0]) * f) for f in (0, .02, .05, .1, .15, .2, .3, .4, .5, .6, .75,
                                                                     .9)})
    per_q: dict[int, list[tuple[float, float]]] = {}
    for img in images.values():
        for p in anchor_curve(img, codec, qualities):
            per_q.setdefault(p.quality, []).append((p.bpp, p.psnr))
    return [(float(np.mean([a for a, _ in v])), float(np.mean([b for _, b in v]))) for v in per_q.values()]


@dataclass
class PreviewPoint:
    steps: int  # coding steps decoded exactly (11: the full image)
    bytes: int  # bytes of the stream a decoder needs for them: header, z, side information, y up to there
    bpp: float
    psnr: float
    seconds: float  # decoding a preview of this many steps alone (Codec.preview)


def progressive_points(codec: Codec, image: np.ndarray, every: str = "step",
                       fill: str = "context") -> list[PreviewPoint]:
    """What a progressive decoder shows of ``image`` after each coding step (or scale): the bytes it needs, the
    PSNR of its preview, and how long decoding just that preview takes. ``fill``: the preview's
    (``Codec.preview``); ``"context"``, the one the documented figures were measured with."""
    stream = codec.compress(image)
    box = parse(stream)
    full = codec.decompress_detailed([stream], kind="numpy", symbols=True)[0]
    assert full.offsets is not None
    before_y = len(stream) - len(box.y) - 4 if box.lanes else HEADER_SIZE + len(box.z)  # v3: z, side, then y
    px = image.shape[0] * image.shape[1]
    points = []
    wanted = range(1, 12) if every == "step" else (2, 5, 11)
    for steps in wanted:
        start = time.perf_counter()
        preview = codec.preview(stream, steps, kind="numpy", fill=fill)
        seconds = time.perf_counter() - start
        needed = before_y + full.offsets[steps - 1]
        points.append(PreviewPoint(steps, needed, 8 * needed / px, psnr(image, preview.image), seconds))
    return points
