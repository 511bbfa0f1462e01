"""The embedded default model and the main-job demo (``hpcm-deploy demo``)."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .errors import ExportError
from .evaluation.metrics import psnr
from .exporting.manifest import Manifest, sha256_file

log = logging.getLogger(__name__)

DEMO_WEIGHTS = "demo_tiny_phase2.pt"
DEMO_BASE_WEIGHTS = "demo_tiny_base.pt"
SAMPLE = "sample.png"
DEFAULT_EXPORT = Path("export") / "demo"


def data_path(name: str) -> Path:
    """A file shipped in ``hpcm_deploy/data``."""
    return Path(str(resources.files("hpcm_deploy") / "data" / name))


def demo_weights(base: bool = False) -> Path:
    path = data_path(DEMO_BASE_WEIGHTS if base else DEMO_WEIGHTS)
    if not path.is_file():
        raise ExportError(f"the embedded demo weights are missing ({path}); reinstall hpcm-deploy")
    return path


def default_export(root: str | os.PathLike | None = None, progress: Callable[[str, float], None] | None = None,
                   jobs: int | None = None, base: bool = False) -> Path:
    """The export of the embedded demo model (``base``: of the matching tiny HPCM-Base), created (once) if
    missing or stale. The Base export lives beside the Phase 2 one, in ``<root>-base``."""
    if root is None:
        root = Path(os.environ.get("HPCM_DEPLOY_DEFAULT_EXPORT", DEFAULT_EXPORT))
        root = root.with_name(root.name + "-base") if base else root
    root = Path(root)
    weights = demo_weights(base)
    digest = sha256_file(weights)
    try:
        if Manifest.load(root, verify_hashes=False).data.get("source_sha256") == digest:
            return root
    except ExportError:
        pass
    from .exporting.onnx_export import export_model
    from .models.api import load_model

    log.warning("exporting the embedded demo model to %s (once; about a minute and a half on 2 cores)", root)
    model = load_model(checkpoint=weights, seed=None)
    export_model(model, root, "demo-base" if base else "demo", jobs=jobs, progress=progress,
                 source=f"embedded {weights.name}", extra={"source_sha256": digest})
    return root


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

    @property
    def ok(self) -> bool:
        return self.round_trip_exact and self.matches_pytorch

    def as_dict(self) -> dict[str, Any]:
        return {**vars(self), "ok": self.ok}


def run_demo(export: str | os.PathLike | None = None, image: str | os.PathLike | None = None,
             progress: Callable[[str, float], None] | None = None) -> DemoReport:
    """Compress and decompress the sample image with ONNX Runtime; check the round trip and the stream."""
    from .codec import Codec
    from .codec.container import parse
    from .codec.images import read_image, to_tensor
    from .image import pad_image

    root = Path(export) if export else default_export(progress=progress)
    path = Path(image) if image else data_path(SAMPLE)
    img = read_image(path).convert("RGB")
    original = np.asarray(img)
    codec = Codec(root, backend="onnxruntime")
    start = time.perf_counter()
    result = codec.compress_detailed([img])[0]
    encode_seconds = time.perf_counter() - start
    start = time.perf_counter()
    decoded = codec.decompress_detailed([result.stream], kind="numpy")[0]
    decode_seconds = time.perf_counter() - start
    # exactness: the decoder must read back exactly the symbols the encoder wrote
    x, _ = pad_image(to_tensor(img)[0].unsqueeze(0))
    enc = codec.runner.encode(x.numpy())
    dec = codec.runner.decode(enc.y_strings, enc.z_strings, enc.z_shape)
    exact = all(bool((a == b).all()) for a, b in zip(enc.symbols, dec.symbols))
    with torch.inference_mode():
        reference = Codec(root, backend="torch").compress(img)
    # the coded payload must be the reference's; the side information (signalled decisions) is a hint that
    # depends on each backend's own rounding near the margin, so it is not compared
    same_payload = (lambda a, b: (a.z, a.y) == (b.z, b.y))(parse(reference), parse(result.stream))
    return DemoReport(
        export=str(root), image=str(path), height=result.height, width=result.width, bytes=len(result.stream),
        bpp=result.bpp, psnr=psnr(original, decoded.image), round_trip_exact=exact,
        matches_pytorch=same_payload, encode_seconds=encode_seconds, decode_seconds=decode_seconds,
        encode_stages=dict(result.timings["stages"]), decode_stages=dict(decoded.timings["stages"]),
        encode_phases={k: v for k, v in result.timings.items() if isinstance(v, float)},
        decode_phases={k: v for k, v in decoded.timings.items() if isinstance(v, float)},
    )
