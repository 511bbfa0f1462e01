"""The main-job demo (``hpcm-deploy demo``): code the sample image with the embedded model and check it."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..evaluation.metrics import anchor_psnr_at, available_anchors, psnr
from .bundled import SAMPLE, data_path, default_export


@dataclass
class DemoReport:
    export: str
    image: str
    height: int
    width: int
    bytes: int
    bpp: float
    psnr: float
    round_trip_exact: bool
    matches_pytorch: bool
    encode_seconds: float
    decode_seconds: float
    encode_stages: dict[str, float] = field(default_factory=dict)
    decode_stages: dict[str, float] = field(default_factory=dict)
    encode_phases: dict[str, float] = field(default_factory=dict)
    decode_phases: dict[str, float] = field(default_factory=dict)
    anchors: dict[str, float | None] = field(default_factory=dict)  # PSNR of JPEG/WebP/AVIF at the same bpp

    @property
    def ok(self) -> bool:
        return self.round_trip_exact and self.matches_pytorch

    def as_dict(self) -> dict[str, Any]:
        return {**vars(self), "ok": self.ok}


def run_demo(export: str | os.PathLike | None = None, image: str | os.PathLike | None = None,
             progress: Callable[[str, float], None] | None = None, anchors: bool = True) -> DemoReport:
    """Compress and decompress the sample image with ONNX Runtime; check the round trip and the stream; and,
    with ``anchors``, code the image with Pillow's JPEG (optimised), WebP and AVIF (where Pillow has them) at
    the same bits per pixel, so that the model's quality is seen beside theirs."""
    from ..artifacts.export import OpenedExport
    from ..codec import Codec
    from ..codec.container import parse
    from ..image import read_image

    root = Path(export) if export else default_export(progress=progress)
    path = Path(image) if image else data_path(SAMPLE)
    img = read_image(path).convert("RGB")
    original = np.asarray(img)
    opened = OpenedExport.open(root)  # read once, run on two backends
    codec = Codec.from_export(opened, "onnxruntime")
    start = time.perf_counter()
    result = codec.compress_detailed([img], symbols=True)[0]
    encode_seconds = time.perf_counter() - start
    start = time.perf_counter()
    decoded = codec.decompress_detailed([result.stream], kind="numpy", symbols=True)[0]
    decode_seconds = time.perf_counter() - start
    # exactness: the decoder must read back exactly the symbols the encoder wrote
    assert result.symbols is not None and decoded.symbols is not None
    exact = all(np.array_equal(a, b) for a, b in zip(result.symbols, decoded.symbols))
    with torch.inference_mode():
        reference = Codec.from_export(opened, "torch").compress(img)
    # the coded payload must be the reference's; the side information (signalled decisions) is a hint that
    # depends on each backend's own rounding near the margin, so it is not compared
    same_payload = (lambda a, b: (a.z, a.y) == (b.z, b.y))(parse(reference), parse(result.stream))
    # at most 5 encodes per anchor: AVIF takes seconds per encode; a wider bracket costs < 0.05 dB of accuracy
    compared = {name: anchor_psnr_at(original, result.bpp, name, max_encodes=5)
                for name in (available_anchors() if anchors else [])}
    return DemoReport(
        anchors=compared,
        export=str(root), image=str(path), height=result.height, width=result.width, bytes=len(result.stream),
        bpp=result.bpp, psnr=psnr(original, decoded.image), round_trip_exact=exact,
        matches_pytorch=same_payload, encode_seconds=encode_seconds, decode_seconds=decode_seconds,
        encode_stages=dict(result.timings["stages"]), decode_stages=dict(decoded.timings["stages"]),
        encode_phases={k: v for k, v in result.timings.items() if isinstance(v, float)},
        decode_phases={k: v for k, v in decoded.timings.items() if isinstance(v, float)},
    )


def write_comparison(image: str | os.PathLike, out: str | os.PathLike, **options: Any) -> dict[str, Any]:
    """``demo --compare``: one crop of ``image`` as the embedded Phase 2 and Base models, JPEG, WebP and AVIF
    decode it at the same bits per pixel, written to ``out`` (:func:`~hpcm_deploy.evaluation.compare
    .compare_picture`; the models run as PyTorch stages, which write the same streams as their exports)."""
    from ..codec import Codec
    from ..evaluation.compare import compare_picture
    from ..image import read_image
    from ..models.api import load_model
    from .bundled import demo_weights

    codecs = {label: Codec.from_model(load_model(checkpoint=demo_weights(base=base), seed=None))
              for label, base in (("Phase 2", False), ("Base", True))}
    return compare_picture(np.asarray(read_image(image).convert("RGB")), out, codecs, **options)
