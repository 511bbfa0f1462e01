"""``hpcm_deploy.Codec``: compress and decompress images with an export on any backend."""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..backends import open_backend
from ..backends.base import Backend
from ..backends.torch_backend import TorchBackend
from ..entropy.tables import EntropyTables
from ..errors import BitstreamError, InputError
from ..exporting.manifest import Manifest, model_fingerprint
from ..image import crop_image, pad_image, padded_size
from ..models.hpcm import HPCM
from ..runtime.decisions import DEFAULT_MARGINS, Margins, SideInfo
from ..runtime.runner import ProgramRunner
from ..stages import CodingProgram, build_program
from . import container
from .images import ImageInfo, from_tensor, to_tensor


@dataclass
class CompressResult:
    """One compressed image and what it cost."""

    stream: bytes
    height: int
    width: int
    timings: dict[str, Any] = field(default_factory=dict)

    @property
    def bpp(self) -> float:
        return 8 * len(self.stream) / (self.height * self.width)


@dataclass
class DecompressResult:
    image: Any
    height: int
    width: int
    timings: dict[str, Any] = field(default_factory=dict)


class Codec:
    """Compresses and decompresses images with a coding program on a backend.

    ``Codec("export/tiny-phase2")`` runs ONNX Runtime on the CPU; ``backend="torch"`` runs the reference
    stages; ``backend="tensorrt"`` runs engines built by ``hpcm-deploy build-engine`` (``engines=DIR``).
    Images of different sizes are grouped by padded size and each group runs as a batch.
    """

    def __init__(self, export: str | os.PathLike | None = None, backend: str = "onnxruntime", device: str = "cpu",
                 *, engines: str | os.PathLike | None = None, max_batch: int = 8,
                 margins: Margins | None = DEFAULT_MARGINS,
                 **backend_options: Any) -> None:
        if export is None:
            from ..demo import default_export

            export = default_export()
        self.manifest = Manifest.load(export)
        options = dict(backend_options)
        if engines is not None:
            options["engines"] = engines
        self.margins = margins
        self._setup(self.manifest.program(), open_backend(backend, self.manifest, device, **options),
                    EntropyTables.load(self.manifest.path("tables")), self.manifest.fingerprint,
                    self.manifest.batch, max_batch)

    @classmethod
    def from_model(cls, model: HPCM, device: str = "cpu", max_batch: int = 8,
                   margins: Margins | None = DEFAULT_MARGINS) -> Codec:
        """A codec running the reference model's stages in PyTorch, without an export."""
        self = cls.__new__(cls)
        self.manifest = None
        self.margins = margins
        model = model.eval()
        tables = EntropyTables.from_model(model)
        program = build_program(model.config)
        fp = model_fingerprint(model.config, model.state_dict(), tables.digest())
        self._setup(program, TorchBackend(model, program, device), tables, fp, None, max_batch)
        return self

    def _setup(self, program: CodingProgram, backend: Backend, tables: EntropyTables, fingerprint: str,
               fixed_batch: int | None, max_batch: int) -> None:
        self.program, self.backend, self.tables = program, backend, tables
        self.fingerprint = fingerprint
        self._fp = container.fingerprint_bytes(fingerprint)
        self.runner = ProgramRunner(program, backend, tables)
        self.fixed_batch = fixed_batch
        self.max_batch = fixed_batch or max_batch

    # ------------------------------------------------------------------ helpers
    def _batches(self, sizes: list[tuple[int, int]]) -> list[list[int]]:
        """Indexes of images grouped by padded size, in chunks the backend accepts."""
        groups: dict[tuple[int, int], list[int]] = {}
        for i, (h, w) in enumerate(sizes):
            groups.setdefault(padded_size(h, w), []).append(i)
        out = []
        for members in groups.values():
            out += [members[i:i + self.max_batch] for i in range(0, len(members), self.max_batch)]
        return out

    def _to_backend(self, x: torch.Tensor) -> Any:
        if self.backend.torch_native:  # stays on the device: no host round trip for CUDA inputs
            return x.to(self.backend.device)
        return self.backend.from_host(x.detach().cpu().numpy())

    def _fill(self, x: torch.Tensor) -> tuple[torch.Tensor, int]:
        """Repeat the last image up to a fixed export batch; returns the batch and how many are real."""
        n = x.shape[0]
        if self.fixed_batch and n < self.fixed_batch:
            x = torch.cat([x, x[-1:].expand(self.fixed_batch - n, -1, -1, -1)])
        return x, n

    # ------------------------------------------------------------------ API
    def compress(self, images: Any) -> bytes | list[bytes]:
        """One image -> its stream; a list of images -> a list of streams."""
        single = not isinstance(images, (list, tuple))
        results = self.compress_detailed([images] if single else list(images))
        return results[0].stream if single else [r.stream for r in results]

    def compress_detailed(self, images: Sequence[Any]) -> list[CompressResult]:
        """Compress a list of images; each result carries its stream, bits per pixel and timings."""
        converted = [to_tensor(img) for img in images]
        results: list[CompressResult | None] = [None] * len(converted)
        for members in self._batches([(t.shape[1], t.shape[2]) for t, _ in converted]):
            padded = []
            for i in members:
                p, _ = pad_image(converted[i][0].unsqueeze(0))
                padded.append(p)
            x, real = self._fill(torch.cat(padded))
            start = time.perf_counter()
            enc = self.runner.encode(self._to_backend(x), margins=self.margins)
            total = time.perf_counter() - start
            timings = {**enc.timings.as_dict(), "total": total, "batch": real}
            for j, i in enumerate(members):
                t, info = converted[i]
                side = enc.side[j].to_bytes() if enc.side and enc.side[j] else b""
                timings_j = {**timings, "signalled": enc.side[j].count if enc.side else 0, "side_bytes": len(side)}
                box = container.Container(self._fp, t.shape[1], t.shape[2], info.channels, info.bit_depth,
                                          enc.z_strings[j], enc.y_strings[j], side)
                results[i] = CompressResult(box.to_bytes(), t.shape[1], t.shape[2], timings_j)
        return [r for r in results if r is not None]

    def decompress(self, streams: bytes | Sequence[bytes], kind: str = "pil", device: str | None = None) -> Any:
        """One stream -> one image; a list -> a list. ``kind``: ``"pil"``, ``"numpy"`` or ``"torch"`` (on
        ``device``, default the backend's). Greyscale and 16-bit originals come back as such."""
        single = isinstance(streams, (bytes, bytearray, memoryview))
        results = self.decompress_detailed([bytes(streams)] if single else [bytes(s) for s in streams], kind, device)
        return results[0].image if single else [r.image for r in results]

    def decompress_detailed(self, streams: Sequence[bytes], kind: str = "pil",
                            device: str | None = None) -> list[DecompressResult]:
        if kind not in ("pil", "numpy", "torch"):
            raise InputError(f"kind must be pil, numpy or torch, not {kind!r}")
        boxes = [container.parse(s, self._fp) for s in streams]
        results: list[DecompressResult | None] = [None] * len(boxes)
        for members in self._batches([(b.height, b.width) for b in boxes]):
            h, w = padded_size(boxes[members[0]].height, boxes[members[0]].width)
            y_strings = [boxes[i].y for i in members]
            z_strings = [boxes[i].z for i in members]
            side = [SideInfo.from_bytes(boxes[i].side) if boxes[i].side else None for i in members]
            while self.fixed_batch and len(y_strings) < self.fixed_batch:
                y_strings.append(y_strings[-1])
                z_strings.append(z_strings[-1])
                side.append(side[-1])
            start = time.perf_counter()
            try:
                dec = self.runner.decode(y_strings, z_strings, (h // 64, w // 64), side=side)
            except (RuntimeError, ValueError, IndexError) as exc:
                raise BitstreamError(f"stream could not be decoded ({str(exc).splitlines()[0]})") from None
            total = time.perf_counter() - start
            x_hat = dec.x_hat if isinstance(dec.x_hat, torch.Tensor) else torch.from_numpy(
                np.asarray(self.backend.to_host(dec.x_hat)))
            timings = {**dec.timings.as_dict(), "total": total, "batch": len(members)}
            for j, i in enumerate(members):
                box = boxes[i]
                img = crop_image(x_hat[j:j + 1], (box.height, box.width))[0]
                info = ImageInfo(kind, box.channels, box.bit_depth, device=device or self.backend.device)
                results[i] = DecompressResult(from_tensor(img, info), box.height, box.width, timings)
        return [r for r in results if r is not None]

    def close(self) -> None:
        self.backend.close()

    def __enter__(self) -> Codec:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

