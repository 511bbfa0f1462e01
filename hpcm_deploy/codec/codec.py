"""``hpcm_deploy.Codec``: compress and decompress images with an export (or a model) on any backend."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..artifacts.export import Manifest, OpenedExport
from ..artifacts.shapes import size_of_z_grid, z_grid
from ..backends.base import Backend
from ..config import DEFAULT_MAX_PIXELS
from ..errors import BitstreamError, InputError
from ..image import (
    OUT_OF_RANGE,
    ImageInfo,
    check_output_kind,
    crop_image,
    from_tensor,
    image_size,
    pad_image,
    padded_size,
    split_batch,
    to_tensor,
)
from ..models.hpcm import HPCM
from ..runtime.decisions import DEFAULT_MARGINS, Margins, SideInfo
from ..runtime.limits import available_device_memory, default_memory_budget, memory_problem, size_problem
from ..runtime.preview import FILLS
from ..runtime.runner import Decoded, ProgramRunner
from . import container
from .flight import on_stream, run_in_flight
from .opening import Opened, Settings, open_export, open_model

DEFAULT_MAX_BATCH = 8


@dataclass
class CompressResult:
    """One compressed image and what it cost. With ``compress_detailed(..., symbols=True)`` also what the
    encoder decided: the y symbols and CDF indexes of each coding step, the z symbols and the top-k choices."""

    stream: bytes
    height: int
    width: int
    timings: dict[str, Any] = field(default_factory=dict)
    symbols: list[np.ndarray] | None = None  # per coding step, this image's packed y symbols (int32)
    indexes: list[np.ndarray] | None = None  # per coding step, the CDF index of each symbol
    z_symbols: np.ndarray | None = None  # [N, H/64, W/64] int32
    choices: dict[int, np.ndarray] | None = None  # coding step -> chosen bank slots (Phase 2)

    @property
    def bpp(self) -> float:
        return 8 * len(self.stream) / (self.height * self.width)


@dataclass
class DecompressResult:
    """One decoded image; with ``symbols=True`` also the symbols and CDF indexes the decoder read."""

    image: Any
    height: int
    width: int
    timings: dict[str, Any] = field(default_factory=dict)
    symbols: list[np.ndarray] | None = None
    indexes: list[np.ndarray] | None = None
    choices: dict[int, np.ndarray] | None = None
    steps: int = 11  # coding steps decoded from the stream (fewer: a preview, or a truncated stream)
    offsets: list[int] | None = None  # with symbols=True: bytes of the y payload read after each decoded step


@dataclass
class Decisions:
    """The discontinuous decisions a decoder takes: CDF indexes per coding step and top-k choices."""

    indexes: list[np.ndarray]
    choices: dict[int, np.ndarray]


class Codec:
    """Compresses and decompresses images with a coding program on a backend.

    ``Codec("export/tiny-phase2")`` runs the export's graphs in ONNX Runtime (the default backend) on the CPU;
    ``backend="torch"`` runs the reference stages from the export's weights; ``backend="tensorrt"`` runs engines
    built by ``hpcm-deploy build-engine`` (``engines=DIR``). ``device`` defaults to the backend's own (the CPU;
    the GPU for TensorRT). ``Codec(model)`` (or :meth:`from_model`) runs a reference model's stages in PyTorch
    without an export. Backend options are keyword arguments (or ``options=``) and are checked against the
    backend's own options (:mod:`hpcm_deploy.backends`).

    Images of different sizes are grouped by padded size and each group runs as a batch of at most
    ``max_batch`` (and at most what the backend accepts).

    Size and memory: ``g_a``/``g_s`` run in overlapping tiles when running them whole would need more than
    ``memory_budget`` bytes (default: 1 GiB, or a quarter of a smaller machine; None: never tile), which keeps large
    photos within bounded memory. Images and streams of more than ``max_pixels`` pixels (default 64 MP; None:
    no limit) are refused before anything is allocated, and so is anything whose estimated working memory
    exceeds what the machine has available.

    Streams: version 3 (interleaved rANS lanes, fast to decode, decodable from a prefix) by default;
    ``legacy_streams=True`` writes versions 1 and 2 (CompressAI payloads, readable by older hpcm-deploy). Every
    version is read.

    Alpha: an image with an alpha channel is refused (``alpha="refuse"``) unless ``alpha="drop"`` discards it or
    a background colour (``"white"``, ``"black"``, ``"#rrggbb"``) composites the image on it before coding
    (:mod:`hpcm_deploy.image`).

    Threads: a codec may be shared between threads. Its calls are serialised (one batch runs at a time on its
    backend); for batches in flight on one copy of the weights use :meth:`compress_many` /
    :meth:`decompress_many`, or open one codec per thread or worker.
    """

    def __init__(self, source: str | os.PathLike | Manifest | OpenedExport | HPCM, backend: str | None = None,
                 device: str | None = None, *, options: Mapping[str, Any] | object | None = None,
                 max_batch: int | None = None, margins: Margins | None = DEFAULT_MARGINS,
                 memory_budget: int | None | str = "auto", max_pixels: int | None = DEFAULT_MAX_PIXELS,
                 legacy_streams: bool = False, alpha: Any = "refuse", **backend_options: Any) -> None:
        """The short form: ``Codec(export)`` is :meth:`from_export` (backend options may also be given as
        keywords, merged into ``options``), ``Codec(model)`` is :meth:`from_model`."""
        budget = {"memory_budget": memory_budget} if memory_budget != "auto" else {}
        if "memory" in backend_options:  # the deprecated name, read by Settings.of
            budget["memory"] = backend_options.pop("memory")
        settings = Settings.of(max_batch=max_batch, margins=margins, max_pixels=max_pixels,
                               legacy_streams=legacy_streams, alpha=alpha, **budget)
        if isinstance(source, HPCM):
            if backend not in (None, "torch") or options or backend_options:
                raise InputError("a model without an export runs on the torch backend, without backend options")
            self._start(open_model(source, device), settings)
            return
        if backend_options:
            options = {**(dict(options) if isinstance(options, Mapping) else {}), **backend_options}
        self._start(open_export(source, backend, device, options), settings)

    @classmethod
    def from_export(cls, export: str | os.PathLike | Manifest | OpenedExport, backend: str | None = None,
                    device: str | None = None, options: Mapping[str, Any] | object | None = None,
                    **settings: Any) -> Codec:
        """A codec running the stages of ``export`` (a directory, or one already opened) on ``backend``
        (default ``onnxruntime``) with its typed ``options``; ``settings`` as for the constructor (``max_batch``,
        ``margins``, ``memory_budget``, ``max_pixels``, ``legacy_streams``, ``alpha``)."""
        chosen = Settings.of(**settings)
        codec = cls.__new__(cls)
        codec._start(open_export(export, backend, device, options), chosen)
        return codec

    @classmethod
    def from_model(cls, model: HPCM, device: str | None = None, **settings: Any) -> Codec:
        """A codec running the reference model's stages in PyTorch, without an export (``settings`` as for the
        constructor)."""
        chosen = Settings.of(**settings)
        codec = cls.__new__(cls)
        codec._start(open_model(model, device), chosen)
        return codec

    def _start(self, opened: Opened, settings: Settings) -> None:
        self.manifest = opened.manifest
        self.program = opened.program
        self.tables = opened.tables
        self.fingerprint = opened.fingerprint
        self.backend: Backend = opened.backend
        self.margins = settings.margins
        budget = settings.memory_budget
        self.memory_budget = default_memory_budget() if budget == "auto" else budget
        self.max_pixels = settings.max_pixels
        self.legacy_streams = settings.legacy_streams
        self.alpha = settings.alpha
        self.fixed_batch = opened.fixed_batch
        limit = self.backend.max_batch  # e.g. the batch range TensorRT engines were built for
        self.max_batch = self.fixed_batch or min(settings.max_batch or DEFAULT_MAX_BATCH, limit or DEFAULT_MAX_BATCH)
        self._fp = container.fingerprint_bytes(self.fingerprint)
        self._runner = ProgramRunner(self.program, self.backend, self.tables, self.memory_budget)
        self._lock = threading.RLock()

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

    def _encode(self, x: torch.Tensor, flags: list[Any], timings: bool, choices: bool) -> Any:
        """Encode one padded batch; the range flags of tensor inputs are fetched with the encoder's results
        (no wait of their own) and refuse the batch if one is set."""
        if self.backend.torch_native:
            enc = self._runner.encode(self._to_backend(x), margins=self.margins, legacy=self.legacy_streams,
                                      timings=timings, choices=choices, checks=tuple(flags))
            bad = any(bool(np.asarray(c).any()) for c in enc.checks)
        else:
            host = x.detach().cpu().numpy()  # the one copy to the host these backends need anyway
            bad = any(bool(f) for f in flags)
            if not bad:
                enc = self._runner.encode(self.backend.from_host(host), margins=self.margins,
                                          legacy=self.legacy_streams, timings=timings, choices=choices)
        if bad:
            raise InputError(OUT_OF_RANGE)
        return enc

    def _to_backend(self, x: torch.Tensor) -> Any:
        if self.backend.torch_native:  # stays on the device: no host round trip for CUDA inputs
            return x.to(self.backend.device)
        return self.backend.from_host(x.detach().cpu().numpy())

    def _check_size(self, sizes: list[tuple[int, int]], what: str) -> None:
        """Refuse, before anything is allocated, images over ``max_pixels`` or over this machine's memory."""
        error = BitstreamError if what == "stream" else InputError
        for h, w in sizes:
            problem = size_problem(h, w, self.max_pixels, what)
            if problem:
                raise error(problem)
        for members in self._batches(sizes):
            ph, pw = padded_size(*sizes[members[0]])
            # on a CUDA device the stages' tensors live in device memory: admit against what it has free
            problem = memory_problem(self.program.config, ph, pw, len(members), self.memory_budget, what,
                                     available_device_memory(self.backend.device))
            if problem:
                raise error(problem)

    def _fill(self, x: torch.Tensor) -> tuple[torch.Tensor, int]:
        """Repeat the last image up to a fixed export batch; returns the batch and how many are real."""
        n = x.shape[0]
        if self.fixed_batch and n < self.fixed_batch:
            x = torch.cat([x, x[-1:].expand(self.fixed_batch - n, -1, -1, -1)])
        return x, n

    # ------------------------------------------------------------------ API
    def compress(self, images: Any, *, stream: Any = None) -> bytes | list[bytes]:
        """One image -> its stream; a list of images, or a 4-D batch (``[N, C, H, W]``/``[N, H, W, C]``, N > 1)
        -> a list of streams. Images: PIL, NumPy or torch, uint8/uint16 or floats in [0, 1], ``[H, W, C]`` or
        ``[C, H, W]``, or any array with ``__dlpack__`` (read in place on its device). ``stream``: the CUDA
        stream to queue the work on (see :meth:`_on_stream`; default the caller's current stream)."""
        batch = split_batch(images)
        single = not isinstance(images, (list, tuple)) and (batch is None or len(batch) == 1)
        items = list(batch) if batch is not None else ([images] if single else list(images))
        results = self.compress_detailed(items, stream=stream)
        return results[0].stream if single else [r.stream for r in results]

    def compress_detailed(self, images: Sequence[Any], symbols: bool = False,
                          timings: bool = False, *, stream: Any = None) -> list[CompressResult]:
        """Compress a list of images; each result carries its stream, bits per pixel and timings (and, with
        ``symbols``, the encoder's symbols, CDF indexes and choices). ``timings``: wait for each stage to time
        it (on a GPU the per-stage times are otherwise only the time to queue them; the host waits once per
        batch)."""
        with self._on_stream(stream):
            return self._compress(images, symbols, timings, self._lock)

    def _compress(self, images: Sequence[Any], symbols: bool, timings: bool,
                  lock: AbstractContextManager) -> list[CompressResult]:
        self._check_size([image_size(img) for img in images], "image")
        converted = [to_tensor(img, alpha=self.alpha, check=False) for img in images]
        results: list[CompressResult | None] = [None] * len(converted)
        for members in self._batches([(t.shape[1], t.shape[2]) for t, _ in converted]):
            x, real = self._fill(torch.cat([pad_image(converted[i][0].unsqueeze(0))[0] for i in members]))
            flags = [converted[i][1].pending for i in members if converted[i][1].pending is not None]
            start = time.perf_counter()
            with lock:
                enc = self._encode(x, flags, timings, symbols)
            total = time.perf_counter() - start
            stats = {**enc.timings.as_dict(), "total": total, "batch": real}
            for j, i in enumerate(members):
                t, info = converted[i]
                side = enc.side[j].to_bytes() if enc.side and enc.side[j] else b""
                timings_j = {**stats, "signalled": enc.side[j].count if enc.side else 0, "side_bytes": len(side)}
                box = container.Container(self._fp, t.shape[1], t.shape[2], info.channels, info.bit_depth,
                                          enc.z_strings[j], enc.y_strings[j], side, lanes=not self.legacy_streams)
                result = CompressResult(box.to_bytes(), t.shape[1], t.shape[2], timings_j)
                if symbols:
                    result.symbols = [s[j] for s in enc.symbols]
                    result.indexes = [s[j] for s in enc.indexes]
                    result.z_symbols = enc.z_symbols[j]
                    result.choices = {k: slots[j] for k, (slots, _) in enc.choices.items()}
                results[i] = result
        return [r for r in results if r is not None]

    def decompress(self, streams: bytes | Sequence[bytes], kind: str = "pil", device: str | None = None,
                   partial: bool = False, *, stream: Any = None, dtype: Any = None, layout: str | None = None) -> Any:
        """One stream -> one image; a list -> a list. ``kind``: ``"pil"``, ``"numpy"``, ``"torch"`` or
        ``"dlpack"`` (the last two stay on ``device``, default the backend's: no host copy). Greyscale and 16-bit
        originals come back as such. ``dtype`` (``torch.uint8`` or a float dtype) and ``layout`` (``"CHW"`` or
        ``"HWC"``) shape torch and dlpack outputs: torch defaults to float32 CHW, dlpack (a contiguous tensor any
        ``from_dlpack`` reads in place) to uint8 HWC. ``partial``: a stream may be truncated (the first bytes of
        a version 3 file): it decodes as far as it goes, the rest of the image predicted from what was decoded
        (see :meth:`decompress_progressive`). ``stream``: as for :meth:`compress`."""
        single = isinstance(streams, (bytes, bytearray, memoryview))
        items = [bytes(streams)] if single else [bytes(s) for s in streams]
        results = self.decompress_detailed(items, kind, device, partial=partial, stream=stream, dtype=dtype,
                                           layout=layout)
        return results[0].image if single else [r.image for r in results]

    def decompress_detailed(self, streams: Sequence[bytes], kind: str = "pil", device: str | None = None,
                            symbols: bool = False, partial: bool = False,
                            timings: bool = False, *, stream: Any = None, dtype: Any = None,
                            layout: str | None = None) -> list[DecompressResult]:
        """Decompress a list of streams; each result carries its image, timings and ``steps`` (the coding steps
        decoded from the stream: 11 unless ``partial`` and truncated); with ``symbols``, also the symbols, CDF
        indexes and choices the decoder read and took. ``timings``: wait for each stage to time it."""
        with self._on_stream(stream):
            return self._decompress(streams, kind, device, symbols, partial, timings, self._lock, dtype, layout)

    def _decompress(self, streams: Sequence[bytes], kind: str, device: str | None, symbols: bool, partial: bool,
                    timings: bool, lock: AbstractContextManager, dtype: Any = None,
                    layout: str | None = None) -> list[DecompressResult]:
        check_output_kind(kind, dtype, layout)
        boxes = [container.parse(s, self._fp, partial=partial) for s in streams]
        self._check_size([(b.height, b.width) for b in boxes], "stream")
        results: list[DecompressResult | None] = [None] * len(boxes)
        for members in self._batches([(b.height, b.width) for b in boxes]):
            group = [boxes[i] for i in members]
            start = time.perf_counter()
            with lock:
                dec = next(self._decode(group, partial=partial, timings=timings, choices=symbols))
            self._finish(dec, group, members, results, kind, device, symbols, time.perf_counter() - start,
                         dtype, layout)
        return [r for r in results if r is not None]

    @staticmethod
    def _check_fill(fill: str) -> None:
        if fill not in FILLS:
            raise InputError(f"fill must be {' or '.join(repr(f) for f in FILLS)}, not {fill!r}")

    # ------------------------------------------------------------------ batches in flight
    def compress_many(self, images: Iterable[Any], in_flight: int = 2, batch: int | None = None, *,
                      stream: Any = None) -> Iterator[bytes]:
        """Streams of ``images`` (any iterable, read as it goes), in order, with up to ``in_flight`` batches of
        ``batch`` images (default ``max_batch``) in progress at once on this codec's one backend (one copy of
        the weights), so that one batch's host entropy coding overlaps the next one's network. Each batch is
        coded as ``compress(list)`` codes it: the streams are those of ``compress`` on the same batches.

        Every backend here runs batches at once (``backend.concurrent``): torch shares its modules, ONNX Runtime
        its sessions, TensorRT its engines with an execution context, scratch buffer and stream per thread (CUDA
        graphs on the first thread only). A backend that could not would still pipeline them, one at a time."""
        def work(chunk: list[Any]) -> list[bytes]:
            with self._on_stream(stream):  # the current stream is per thread: set it in the worker
                return [r.stream for r in self._compress(chunk, False, False, self._flight_lock())]

        yield from self._in_flight(images, work, in_flight, batch)

    def decompress_many(self, streams: Iterable[bytes], in_flight: int = 2, kind: str = "pil",
                        device: str | None = None, batch: int | None = None, *, stream: Any = None,
                        dtype: Any = None, layout: str | None = None) -> Iterator[Any]:
        """Images of ``streams``, in order, with up to ``in_flight`` batches in progress at once (see
        :meth:`compress_many`); each as ``decompress(stream, kind=kind, device=device, dtype=dtype,
        layout=layout)`` returns it."""
        check_output_kind(kind, dtype, layout)
        def work(chunk: list[bytes]) -> list[Any]:
            with self._on_stream(stream):
                results = self._decompress([bytes(s) for s in chunk], kind, device, False, False, False,
                                           self._flight_lock(), dtype, layout)
            return [r.image for r in results]

        yield from self._in_flight(streams, work, in_flight, batch)

    def _on_stream(self, stream: Any) -> AbstractContextManager:
        return on_stream(self.backend, stream)

    def _flight_lock(self) -> AbstractContextManager:
        return nullcontext() if self.backend.concurrent else self._lock

    def _in_flight(self, items: Iterable[Any], work, in_flight: int, batch: int | None) -> Iterator[Any]:
        return run_in_flight(items, work, in_flight, batch or self.max_batch)

    def decompress_progressive(self, stream: bytes, every: str = "scale", kind: str = "pil",
                               device: str | None = None, partial: bool = True, fill: str = "thumbnail") -> Any:
        """Progressive decoding: yields :class:`DecompressResult` previews, coarse to fine, then the full image.

        ``every="scale"``: after scales 1 and 2 (2 and 5 of the 11 coding steps); ``"step"``: after each step.
        Each preview decodes the steps so far exactly; ``fill="thumbnail"`` (the default) draws the last
        complete scale's grid at 1/4 (scale 1) or 1/2 (scale 2) of the size and enlarges it: 7 % (18 %) of a full
        decode's time on the demo model at 768x512; ``fill="context"`` gives the positions not yet decoded the
        means the context model predicts, running every later step's network and the full-size synthesis (about a
        full decode's time), 4-5 dB sharper (docs/bitstream.md, scripts/bench_pipeline.py). ``result.steps``
        says how many steps a preview holds. A truncated stream (``partial``, the default here) yields the previews its
        bytes reach and then its best image."""
        if every not in ("scale", "step"):
            raise InputError(f"every must be 'scale' or 'step', not {every!r}")
        self._check_fill(fill)
        box = container.parse(bytes(stream), self._fp, partial=partial)
        self._check_size([(box.height, box.width)], "stream")
        after = (2, 5) if every == "scale" else tuple(range(1, 11))
        start = time.perf_counter()
        with self._lock:
            decodes = list(self._decode([box], after=after, partial=partial, fill=fill))
        seconds = time.perf_counter() - start
        # a truncated stream makes the previews past its end the same image: keep one per step count
        last = {dec.steps[0]: n for n, dec in enumerate(decodes)}
        for n, dec in enumerate(decodes):
            if last[dec.steps[0]] != n:
                continue
            out: list[DecompressResult | None] = [None]
            self._finish(dec, [box], [0], out, kind, device, False, seconds)
            assert out[0] is not None
            yield out[0]

    def preview(self, stream: bytes, steps: int, kind: str = "pil", device: str | None = None,
                partial: bool = True, fill: str = "thumbnail") -> DecompressResult:
        """The image after the first ``steps`` of the 11 coding steps (2: end of scale 1, 5: end of scale 2),
        decoding only as far as that; the positions not yet decoded take their predicted means. A truncated
        stream gives what its bytes reach (``result.steps``). ``fill``: as for :meth:`decompress_progressive`."""
        self._check_fill(fill)
        total = len(self.program.code_steps)
        if not 1 <= steps <= total:
            raise InputError(f"a preview holds 1 ... {total} coding steps, not {steps}")
        box = container.parse(bytes(stream), self._fp, partial=partial)
        self._check_size([(box.height, box.width)], "stream")
        start = time.perf_counter()
        with self._lock:
            decodes = self._decode([box], after=(steps,) if steps < total else (), partial=partial, fill=fill)
            dec = next(decodes)
            decodes.close()  # the rest of the stream is not decoded
        out: list[DecompressResult | None] = [None]
        self._finish(dec, [box], [0], out, kind, device, False, time.perf_counter() - start)
        assert out[0] is not None
        return out[0]

    def _decode(self, group: list[container.Container], after: tuple[int, ...] = (),
                partial: bool = False, timings: bool = False, choices: bool = False, fill: str = "context") -> Any:
        """Run the decoder on streams of one padded size (filled up to a fixed export batch)."""
        size = padded_size(group[0].height, group[0].width)
        y_strings, z_strings = [b.y for b in group], [b.z for b in group]
        side = [SideInfo.from_bytes(b.side) if b.side else None for b in group]
        while self.fixed_batch and len(y_strings) < self.fixed_batch:
            y_strings.append(y_strings[-1])
            z_strings.append(z_strings[-1])
            side.append(side[-1])
        legacy = not group[0].lanes
        if any(b.lanes == legacy for b in group):  # cannot happen through decompress: groups share a version
            raise BitstreamError("streams of different versions cannot be decoded as one batch")
        try:
            yield from self._runner.decode_previews(y_strings, z_strings, z_grid(size), after, side=side,
                                                    legacy=legacy, partial=partial, timings=timings,
                                                    choices=choices, fill=fill)
        except (RuntimeError, ValueError, IndexError) as exc:
            raise BitstreamError(f"stream could not be decoded ({str(exc).splitlines()[0]})") from None

    def _finish(self, dec: Decoded, group: list[container.Container], members: list[int], results: list,
                kind: str, device: str | None, symbols: bool, seconds: float, dtype: Any = None,
                layout: str | None = None) -> None:
        """Crop and convert the decoded batch into one result per image."""
        if kind in ("torch", "dlpack") and isinstance(dec.x_hat, torch.Tensor):
            x_hat = dec.x_hat  # stays where it is
        else:  # the batch crosses to the host in one wait
            x_hat = torch.from_numpy(np.asarray(self.backend.fetch([dec.x_hat])[0]))
        timings = {**dec.timings.as_dict(), "total": seconds, "batch": len(members)}
        for j, i in enumerate(members):
            box = group[j]
            img = crop_image(x_hat[j:j + 1], (box.height, box.width))[0]
            info = ImageInfo(kind, box.channels, box.bit_depth, device=device or self.backend.device, dtype=dtype,
                             layout=layout)
            result = DecompressResult(from_tensor(img, info), box.height, box.width, timings, steps=dec.steps[j])
            if symbols:
                result.symbols = [s[j] for s in dec.symbols]
                result.indexes = [s[j] for s in dec.indexes]
                result.choices = {k: slots[j] for k, (slots, _) in dec.choices.items()}
                result.offsets = [o[j] for o in dec.offsets][: result.steps]
            results[i] = result

    def replay(self, result: CompressResult) -> Decisions:
        """The decisions this codec's decoder takes when it is handed the encoder's symbols (teacher forcing),
        so that one differing decision does not desynchronise the rest. ``result`` comes from
        ``compress_detailed(..., symbols=True)``, possibly of another codec of the same model (e.g. fp32 encoder,
        fp16 decoder)."""
        if result.symbols is None or result.z_symbols is None:
            raise InputError("replay needs a result of compress_detailed(..., symbols=True)")
        size = padded_size(result.height, result.width)
        if size_of_z_grid(tuple(result.z_symbols.shape[-2:])) != size:
            raise InputError("the result's symbols do not match its image size")
        forced = (result.z_symbols[None], [s[None] for s in result.symbols])
        with self._lock:
            dec = self._runner.decode([], [], z_grid(size), replay=forced)
        return Decisions([i[0] for i in dec.indexes], {k: slots[0] for k, (slots, _) in dec.choices.items()})

    def tile_plans(self) -> dict[tuple[str, tuple[int, int], int], Any]:
        """How ``g_a``/``g_s`` were tiled so far: ``{(stage, padded size, batch): TilePlan}`` (see
        ``memory_budget``)."""
        return self._runner.tile_plans()

    def close(self) -> None:
        self.backend.close()

    def __enter__(self) -> Codec:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
