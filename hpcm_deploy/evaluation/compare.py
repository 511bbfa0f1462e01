"""What the codecs look like side by side: one crop of an image decoded by learned codecs (the demo models:
Phase 2 and its Base twin) and by JPEG, WebP and AVIF at (at most) the same bits per pixel, in one PNG."""

from __future__ import annotations

import io
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from .metrics import ANCHORS, available_anchors, psnr


def anchor_at_most(image: np.ndarray, codec: str, bpp: float) -> tuple[np.ndarray, float, int] | None:
    """``image`` through Pillow's ``codec`` at the highest quality whose stream is at most ``bpp``:
    ``(decoded, bpp, quality)``; None when even its lowest quality is larger. Binary search over quality
    (its rate grows with quality)."""
    from PIL import Image

    fmt, options, qualities = ANCHORS[codec]
    px = image.shape[0] * image.shape[1]

    def code(q: int) -> tuple[bytes, float]:
        buf = io.BytesIO()
        Image.fromarray(image).save(buf, format=fmt, quality=int(q), **options)
        return buf.getvalue(), 8 * buf.tell() / px

    lo, hi, best = qualities[0], qualities[-1], None
    while lo <= hi:
        q = (lo + hi) // 2
        data, rate = code(q)
        if rate <= bpp:
            best, lo = (data, rate, q), q + 1
        else:
            hi = q - 1
    if best is None:
        return None
    data, rate, q = best
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB")), rate, q


def _crop_box(shape: tuple[int, ...], crop: tuple[int, int, int, int] | None, size: int) -> tuple[int, int, int, int]:
    h, w = shape[:2]
    if crop is not None:
        top, left, ch, cw = crop
    else:
        ch, cw = min(size, h), min(size, w)
        top, left = (h - ch) // 2, (w - cw) // 2
    if not (0 <= top and 0 <= left and ch > 0 and cw > 0 and top + ch <= h and left + cw <= w):
        raise ValueError(f"crop {crop} does not fit a {w}x{h} image")
    return top, left, ch, cw


def compare_picture(image: np.ndarray, out: str | os.PathLike, codecs: Mapping[str, Any],
                    crop: tuple[int, int, int, int] | str | None = None, size: int = 192, zoom: int = 2,
                    anchors: tuple[str, ...] | None = None) -> dict[str, Any]:
    """Write ``out`` (PNG): the original crop, then each of ``codecs`` (label -> :class:`~hpcm_deploy.Codec`, e.g.
    the demo models Phase 2 and Base) and JPEG, WebP and AVIF (those Pillow has), each decoded from a
    full-image stream, the anchors at the highest quality within the first codec's rate; each crop magnified
    ``zoom`` times (nearest neighbour) and labelled with its bpp and full-image PSNR.
    ``anchors``: which of Pillow's codecs (default: every one it has). Returns the figures shown."""
    from PIL import Image, ImageDraw

    if isinstance(crop, str):
        crop = tuple(int(v) for v in crop.split(","))  # type: ignore[assignment]
    top, left, ch, cw = _crop_box(image.shape, crop, size)  # type: ignore[arg-type]
    panels: list[tuple[str, np.ndarray]] = [("original", image)]
    figures: dict[str, Any] = {"psnr": {}, "bpp_of": {}}
    target = None
    for name, codec in codecs.items():
        stream = codec.compress(image)
        decoded = codec.decompress(stream, kind="numpy")
        rate = 8 * len(stream) / (image.shape[0] * image.shape[1])
        target = rate if target is None else target
        panels.append((f"{name} {rate:.3f} bpp {psnr(image, decoded):.2f} dB", decoded))
        figures["psnr"][name], figures["bpp_of"][name] = psnr(image, decoded), rate
    for codec_name in available_anchors() if anchors is None else anchors:
        found = anchor_at_most(image, codec_name, target)
        label = ANCHORS[codec_name][0].replace("WEBP", "WebP")
        if found is None:
            continue
        decoded, rate, q = found
        panels.append((f"{label} q{q} {rate:.3f} bpp {psnr(image, decoded):.2f} dB", decoded))
        figures["psnr"][label], figures["bpp_of"][label] = psnr(image, decoded), rate
    band, cols = 18, 3
    tile_w, tile_h = cw * zoom, ch * zoom + band
    rows = -(-len(panels) // cols)
    sheet = Image.new("RGB", (tile_w * cols, tile_h * rows), "white")
    draw = ImageDraw.Draw(sheet)
    for i, (label, img) in enumerate(panels):
        x, y = (i % cols) * tile_w, (i // cols) * tile_h
        part = Image.fromarray(np.ascontiguousarray(img[top:top + ch, left:left + cw]))
        sheet.paste(part.resize((tile_w, ch * zoom), Image.NEAREST), (x, y + band))
        draw.text((x + 3, y + 3), label, fill="black")
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(out).with_name(Path(out).name + ".part")
    sheet.save(tmp, format="PNG")
    os.replace(tmp, out)
    return {"bpp": target, "crop": [top, left, ch, cw], **figures}
