"""What a precision recipe costs: rate and quality against fp32, and how often the decoder's discontinuous
decisions (CDF indexes, top-k choices) differ when an fp32 encoder's stream is decoded with the recipe."""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from ..codec import Codec
from .metrics import psnr


def decision_flips(encoder: Codec, decoder: Codec, image: np.ndarray) -> dict[str, int]:
    """Encode with ``encoder``; replay the encoder's symbols through ``decoder`` (teacher forcing, so one
    flip does not desynchronise the rest) and count the decisions it takes differently."""
    enc = encoder.compress_detailed([image], symbols=True)[0]
    dec = decoder.replay(enc)
    assert enc.indexes is not None and enc.choices is not None
    idx_flips = sum(int((a != b).sum()) for a, b in zip(enc.indexes, dec.indexes))
    total = sum(a.size for a in enc.indexes)
    topk_flips = sum(set(slots.tolist()) != set(dec.choices[step].tolist()) for step, slots in enc.choices.items())
    topk_total = len(enc.choices)
    return {"cdf_flips": idx_flips, "symbols": total, "topk_flips": topk_flips, "topk_choices": topk_total}


def precision_cost(export32: str | os.PathLike, export16: str | os.PathLike, images: dict[str, np.ndarray],
                   backend: str = "onnxruntime") -> dict[str, Any]:
    """Per image and in total: bpp and PSNR of the fp32 and the recipe export (each coding its own streams),
    and the decision flips of fp32-encoded streams decoded with the recipe."""
    c32 = Codec(export32, backend=backend, margins=None)
    c16 = Codec(export16, backend=backend, margins=None)
    rows = []
    for name, img in images.items():
        row: dict[str, Any] = {"image": name}
        for tag, codec in (("fp32", c32), ("fp16", c16)):
            stream = codec.compress(img)
            row[f"bpp_{tag}"] = 8 * len(stream) / (img.shape[0] * img.shape[1])
            row[f"psnr_{tag}"] = psnr(img, codec.decompress(stream, kind="numpy"))
        row.update(decision_flips(c32, c16, img))
        rows.append(row)
    total = {k: int(sum(r[k] for r in rows)) for k in ("cdf_flips", "symbols", "topk_flips", "topk_choices")}
    mean = {k: float(np.mean([r[k] for r in rows])) for k in ("bpp_fp32", "bpp_fp16", "psnr_fp32", "psnr_fp16")}
    return {"images": rows, "mean": mean, "total": total,
            "delta_bpp_percent": 100 * (mean["bpp_fp16"] / mean["bpp_fp32"] - 1),
            "delta_psnr_db": mean["psnr_fp16"] - mean["psnr_fp32"],
            "cdf_flip_rate": total["cdf_flips"] / max(total["symbols"], 1),
            "topk_flip_rate": total["topk_flips"] / max(total["topk_choices"], 1)}

