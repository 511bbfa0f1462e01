"""What a precision recipe costs: rate and quality against fp32, and how often the decoder's discontinuous
decisions (CDF indexes, top-k choices) differ when an fp32 encoder's stream is decoded with the recipe."""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from ..codec import Codec
from ..runtime.decisions import Margins
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


def _symbols_equal(a: list[np.ndarray] | None, b: list[np.ndarray] | None) -> bool:
    return a is not None and b is not None and len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b))


def cross_decodes(encoder: Codec, decoder: Codec, image: np.ndarray) -> bool:
    """Whether ``decoder`` reads exactly the symbols ``encoder`` wrote into its stream for ``image`` (a real decode,
    no teacher forcing: one flipped decision desynchronises it or is refused as corrupted)."""
    from ..errors import BitstreamError

    enc = encoder.compress_detailed([image], symbols=True)[0]
    try:
        dec = decoder.decompress_detailed([enc.stream], symbols=True)[0]
    except BitstreamError:
        return False
    return _symbols_equal(enc.symbols, dec.symbols)


def compare_codecs(c32: Codec, low: Codec, images: dict[str, np.ndarray], tag: str) -> dict[str, Any]:
    """Per image and in total: bpp and PSNR of the fp32 codec and the ``tag`` codec (each coding its own
    streams), the decision flips of fp32-encoded streams decoded with ``low``, and whether streams cross-decode
    exactly both ways (with the codecs' margins)."""
    rows = []
    for name, img in images.items():
        row: dict[str, Any] = {"image": name}
        for key, codec in (("fp32", c32), (tag, low)):
            stream = codec.compress(img)
            row[f"bpp_{key}"] = 8 * len(stream) / (img.shape[0] * img.shape[1])
            row[f"psnr_{key}"] = psnr(img, codec.decompress(stream, kind="numpy"))
        row.update(decision_flips(c32, low, img))
        row[f"cross_fp32_to_{tag}"] = cross_decodes(c32, low, img)
        row[f"cross_{tag}_to_fp32"] = cross_decodes(low, c32, img)
        rows.append(row)
    total = {k: int(sum(r[k] for r in rows)) for k in ("cdf_flips", "symbols", "topk_flips", "topk_choices")}
    mean = {k: float(np.mean([r[k] for r in rows])) for k in ("bpp_fp32", f"bpp_{tag}", "psnr_fp32", f"psnr_{tag}")}
    return {"precision": tag, "images": rows, "mean": mean, "total": total,
            "delta_bpp_percent": 100 * (mean[f"bpp_{tag}"] / mean["bpp_fp32"] - 1),
            "delta_psnr_db": mean[f"psnr_{tag}"] - mean["psnr_fp32"],
            "cdf_flip_rate": total["cdf_flips"] / max(total["symbols"], 1),
            "topk_flip_rate": total["topk_flips"] / max(total["topk_choices"], 1),
            "cross_exact": {f"fp32_to_{tag}": all(r[f"cross_fp32_to_{tag}"] for r in rows),
                            f"{tag}_to_fp32": all(r[f"cross_{tag}_to_fp32"] for r in rows)}}


def precision_cost(export32: str | os.PathLike, export16: str | os.PathLike, images: dict[str, np.ndarray],
                   backend: str = "onnxruntime", margins: Margins | None = None) -> dict[str, Any]:
    """The fp16 recipe export against the fp32 export (:func:`compare_codecs`), both on ``backend``; both codecs
    signal decisions within ``margins`` (None: nothing signalled, the strictest test)."""
    c32 = Codec(export32, backend=backend, margins=margins)
    c16 = Codec(export16, backend=backend, margins=margins)
    return compare_codecs(c32, c16, images, "fp16")


def bf16_cost(export: str | os.PathLike, images: dict[str, np.ndarray], precision: str = "bf16",
              device: str | None = None, margins: Margins | None = None) -> dict[str, Any]:
    """A bf16 recipe of the PyTorch stages against their fp32 (:func:`compare_codecs`), on one export, both codecs
    signalling within ``margins``."""
    c32 = Codec(export, backend="torch", device=device, margins=margins)
    low = Codec(export, backend="torch", device=device, margins=margins, precision=precision)
    return compare_codecs(c32, low, images, precision)
