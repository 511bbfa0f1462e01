"""Runs a coding program over a backend, with rANS coding on the host.

The state (contexts, ``y_hat``, memory banks) stays in the backend's tensors; per coding step only the packed
scales and means (and, when encoding, the packed latent) come to the host, and the symbols go back.

Entropy coding: lane payloads by default (:mod:`hpcm_deploy.entropy.lanes`: interleaved rANS lanes, the
``.hpcm`` version 3 layout), or CompressAI's single stream (``legacy=True``: versions 1 and 2, and the official
HPCM code's strings). Both are decoded by bounds-checked kernels: a hostile stream ends in a
:class:`~hpcm_deploy.errors.BitstreamError`, never in a crash.

``g_a`` and ``g_s`` run in overlapping tiles when a ``memory_budget`` is set and the whole image would not fit
it (:mod:`.tiling`); everything else runs on the whole latent.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..backends.base import Backend
from ..entropy import lanes
from ..entropy.coder import StreamWriter
from ..entropy.tables import EntropyTables
from ..errors import BitstreamError
from ..stages.program import CodingProgram, Op
from .decisions import Margins, SideInfo, near_edges
from .preview import FILLS, PreviewFill
from .tile_memory import choose_tile
from .tiling import LATTICE_ALIGN, run_tiled, stage_plan

log = logging.getLogger(__name__)


@dataclass
class Timings:
    """Seconds spent per stage and per host phase."""

    stages: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    network: float = 0.0  # backend work (stages)
    entropy: float = 0.0  # rANS coding, CDF indexes included
    transfer: float = 0.0  # device <-> host copies
    host: float = 0.0  # other host work per step (quantisation, signalled decisions)
    timed: bool = False  # stages were waited for one by one (network times are device times)

    def as_dict(self) -> dict[str, Any]:
        return {"network": self.network, "entropy": self.entropy, "transfer": self.transfer, "host": self.host,
                "stages": dict(self.stages)}


@dataclass
class Encoded:
    y_strings: list[bytes]
    z_strings: list[bytes]
    z_shape: tuple[int, int]
    symbols: list[np.ndarray]  # per coding step, [B, ...] int32
    z_symbols: np.ndarray
    timings: Timings
    indexes: list[np.ndarray] = field(default_factory=list)  # per coding step: the CDF index of each symbol
    state: dict[str, Any] | None = None  # every named tensor, when captured
    side: list[SideInfo] = field(default_factory=list)  # per image, when decisions are signalled
    choices: dict[int, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)  # step -> (slots, gaps)
    checks: list[np.ndarray] = field(default_factory=list)  # the ``checks`` flags handed to encode, fetched


@dataclass
class Decoded:
    x_hat: Any  # backend tensor [B, 3, H, W] in [0, 1]
    symbols: list[np.ndarray]  # per coding step decoded from the stream
    timings: Timings
    state: dict[str, Any] | None = None
    indexes: list[np.ndarray] = field(default_factory=list)  # the CDF indexes used, per coding step
    choices: dict[int, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)  # step -> (slots, gaps)
    steps: list[int] = field(default_factory=list)  # per image: coding steps decoded from its stream (11: all)
    offsets: list[list[int]] = field(default_factory=list)  # per step, per image: y payload bytes read after it


class ProgramRunner:
    """Executes ``program.encode`` / ``program.decode`` on ``backend``. ``memory_budget`` (bytes): tile
    ``g_a``/``g_s`` when running them whole would need more (None: never tile)."""

    def __init__(self, program: CodingProgram, backend: Backend, tables: EntropyTables,
                 memory_budget: int | None = None) -> None:
        self.program, self.backend, self.tables = program, backend, tables
        self.memory_budget = memory_budget
        self._lanes_y, self._lanes_z = tables.lane_tables()
        self._indexes = lanes.ScaleIndexer(tables.scale_edges)
        self._free_enc = program.last_use(program.encode, encoding=True)
        self._free_dec = program.last_use(program.decode, encoding=False)
        self._free_preview = program.last_use(program.decode, encoding=False, keep=frozenset({"params"}))
        self._fill = PreviewFill(backend, program.config.M)
        self._placing = {spec.places: spec for spec in program.stages.values() if spec.places}
        self._z_channel = np.arange(program.config.N, dtype=np.int32)[:, None, None]
        self._tiles: dict[tuple, Any] = {}
        self._unforced: dict[tuple, Any] = {}  # (stage, batch) -> device tensor of -1: the stage decides
        self._untileable_warned = False

    # ------------------------------------------------------------------ stages
    def _tile_plan(self, name: str, inputs: list[Any]) -> Any:
        """The tile plan of ``g_a``/``g_s`` for these inputs, or None to run them whole."""
        if self.memory_budget is None or name not in ("g_a", "g_s"):
            return None
        first = inputs[0]
        if not hasattr(first, "shape") or type(first).__module__.split(".")[0] not in ("numpy", "torch"):
            if not self._untileable_warned:
                log.warning("%s tensors cannot be tiled; g_a/g_s run whole", type(first).__name__)
                self._untileable_warned = True
            return None
        batch, h, w = int(first.shape[0]), int(first.shape[-2]), int(first.shape[-1])
        size = (h, w) if name == "g_a" else (16 * h, 16 * w)
        key = (name, size, batch)
        if key not in self._tiles:
            align = LATTICE_ALIGN if name == "g_s" else 1  # g_s first places the last step: keep its lattice phase
            tile = choose_tile(self.program.config, *size, self.memory_budget, batch, stage=name, uniform=True,
                               align=align)
            self._tiles[key] = None if tile is None else stage_plan(self.program.config, name, *size, tile,
                                                                    uniform=True, align=align)
            if tile is not None:
                log.info("%s at %dx%d (batch %d): %d tiles of %d pixels", name, *size, batch,
                         len(self._tiles[key].tiles), tile)
        return self._tiles[key]

    def tile_plans(self) -> dict[tuple[str, tuple[int, int], int], Any]:
        """The tile plans in use: ``{(stage, padded size, batch): TilePlan}`` for each ``g_a``/``g_s`` run so far
        that ran in tiles (what a caller may report or check; a run that went whole is not listed)."""
        return {key: plan for key, plan in self._tiles.items() if plan is not None}

    def _run_stage(self, name: str, state: dict[str, Any], t: Timings) -> None:
        """Queue one stage. Only with ``t.timed`` does the host wait for it (to time it); otherwise the stage
        runs on while the host goes on queueing or coding."""
        spec = self.program.stages[name]
        inputs = [state[k] for k in spec.inputs]
        plan = self._tile_plan(name, inputs)
        start = time.perf_counter()
        if plan is None:
            outputs = self.backend.run(name, inputs)
        else:
            with self.backend.stream_context():
                outputs = [run_tiled(lambda *w: self.backend.run(name, list(w))[0],
                                     tuple(inputs) if len(inputs) > 1 else inputs[0], plan)]
        if t.timed:
            self.backend.synchronize()
        elapsed = time.perf_counter() - start
        t.stages[name] += elapsed
        t.network += elapsed
        state.update(zip(spec.outputs, outputs))

    def _host(self, tensor: Any, t: Timings) -> np.ndarray:
        return self._fetch([tensor], t)[0]

    def _fetch(self, tensors: list[Any], t: Timings) -> list[np.ndarray]:
        """Tensors to the host with one wait (the only place the host waits for the device, timings aside)."""
        start = time.perf_counter()
        out = self.backend.fetch(tensors)
        t.transfer += time.perf_counter() - start
        return out

    def _device(self, array: np.ndarray, t: Timings) -> Any:
        start = time.perf_counter()
        out = self.backend.from_host(array)
        t.transfer += time.perf_counter() - start
        return out

    @staticmethod
    def _free(state: dict[str, Any], names: list[str] | None, capture: bool) -> None:
        if names and not capture:
            for n in names:
                state.pop(n, None)

    def _force(self, stage: str, batch: int, forced: list[np.ndarray | None], t: Timings) -> Any:
        """The ``topk_force`` input of a stage: given slots per image, -1 where the stage decides itself. Slots
        from a stream are checked: distinct, and among the slots the stage's query can choose. Without any given
        slot, a device tensor of -1 made once per (stage, batch) is reused: nothing crosses."""
        spec = self.program.stages[stage]
        k = self.program.tensors[f"topk_force.{stage}"].shape[1]
        if all(slots is None for slots in forced):
            key = (stage, batch)
            if key not in self._unforced:
                self._unforced[key] = self._device(np.full((batch, k), -1, dtype=np.int64), t)
            return self._unforced[key]
        valid = self.program.query_valid(spec)
        array = np.full((batch, k), -1, dtype=np.int64)
        for b, slots in enumerate(forced):
            if slots is not None:
                slots = np.asarray(slots, dtype=np.int64).reshape(-1)
                if slots.size != k or slots.min() < 0 or slots.max() >= valid or np.unique(slots).size != k:
                    raise BitstreamError(f"corrupted stream: signalled bank choice {slots.tolist()} for step "
                                         f"{spec.code_step} is not {k} distinct slots of 0..{valid - 1}")
                array[b] = slots
        return self._device(array, t)

    def _choose(self, spec, state: dict[str, Any], batch: int, side: list[SideInfo | None], t: Timings) -> None:
        """Set a choosing stage's ``topk_force`` input from the signalled choices (else -1: decide)."""
        forced = [s.topk.get(spec.code_step) if s else None for s in side] if side else [None] * batch
        state[f"topk_force.{spec.name}"] = self._force(spec.name, batch, forced, t)

    # ------------------------------------------------------------------ encode
    def encode(self, x: Any, capture: bool = False, margins: Margins | None = None, legacy: bool = False,
               timings: bool = False, choices: bool = True, checks: tuple[Any, ...] = ()) -> Encoded:
        """Encode a padded batch ``x`` (a backend tensor ``[B, 3, H, W]``). With ``margins``, decisions near their
        discontinuity are collected per image (``Encoded.side``). ``legacy=True`` writes CompressAI streams.

        The encoder knows ``y``: every step's symbols are quantised on the device, so all stages are queued
        without the host waiting once, and everything the host codes (z and y symbols, CDF indexes, and the
        top-k choices where ``margins`` or ``choices`` records them) comes back in one fetch at the end.
        ``timings``: wait after each stage to time it. ``checks``: device flags fetched with the rest; a true
        one means the input was out of range (``Encoded.checks``, for the caller to act on)."""
        t = Timings(timed=timings)
        state: dict[str, Any] = {"x": x}
        batch = int(x.shape[0])
        side = [SideInfo(margins) for _ in range(batch)] if margins is not None else []
        steps: list[tuple[Any, Any]] = []  # per coding step: (q, scales or CDF indexes)
        decided: list[tuple[Any, Any, Any]] = []  # (spec, slots, gaps) of every recorded choice
        z_q = None
        for i, op in enumerate(self.program.encode):
            if op.kind == "stage":
                spec = self.program.stages[str(op.ref)]
                if spec.choice:
                    self._choose(spec, state, batch, [], t)
                self._run_stage(spec.name, state, t)
                if spec.choice and (side or choices):
                    decided.append((spec, state[spec.choice], state[f"topk_gap.{spec.name}"]))
            elif op.kind == "code_z":
                z_q = state["z_q"]
            else:
                step = self.program.code_steps[int(op.ref)]
                q = self.backend.quantize(state[step.y], state[step.means])
                state[step.q] = q
                # with margins the host needs the scales themselves (closeness to a bucket edge): it buckets them
                # exactly as the decoder's host fallback; without, the device buckets them into int16
                scales = state[step.scales]
                steps.append((q, scales if side else self.backend.bucket(scales, self.tables.scale_edges)))
            self._free(state, self._free_enc.get(i), capture)
        assert z_q is not None
        wanted = [z_q, *(q for q, _ in steps), *(s for _, s in steps),
                  *(x for _, a, b in decided for x in (a, b)), *checks]
        host = self._fetch(wanted, t)
        z_sym = host[0].astype(np.int32)
        n = len(steps)
        symbols = [h.astype(np.int32) for h in host[1:1 + n]]
        indexes = []
        start = time.perf_counter()
        for s, h in enumerate(host[1 + n:1 + 2 * n]):
            indexes.append(self._indexes(h) if side else h.astype(np.int32))
            if side:
                self._signal_scales(self.program.code_steps[s], h, indexes[-1], side)
        t.host += time.perf_counter() - start
        found: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        rest = host[1 + 2 * n:]
        for j, (spec, _, _) in enumerate(decided):
            self._record_choice(spec, rest[2 * j], rest[2 * j + 1], side, found)
        start = time.perf_counter()
        z_strings, y_strings = self._write(z_sym, symbols, indexes, legacy)
        t.entropy += time.perf_counter() - start
        return Encoded(y_strings, z_strings, (int(z_sym.shape[-2]), int(z_sym.shape[-1])), symbols, z_sym, t,
                       indexes, state if capture else None, side, found, rest[2 * len(decided):])

    @staticmethod
    def _record_choice(spec, slots: np.ndarray, gaps: np.ndarray, side: list[SideInfo],
                       choices: dict[int, tuple[np.ndarray, np.ndarray]]) -> None:
        choices[spec.code_step] = (slots, gaps)
        for b, info in enumerate(side):
            if gaps[b] < info.margins.topk:
                info.topk[spec.code_step] = slots[b].copy()

    def _signal_scales(self, step, scales: np.ndarray, idx: np.ndarray, side: list[SideInfo]) -> None:
        """Collect, per image, the CDF decisions of one step whose scale lies near a bucket edge."""
        for b, info in enumerate(side):
            flat = np.flatnonzero(near_edges(scales[b], self.tables.scale_edges, info.margins.scale))
            if flat.size:
                info.cdf[step.index] = (flat, idx[b].reshape(-1)[flat].copy())

    def _write(self, z_sym: np.ndarray, symbols: list[np.ndarray], indexes: list[np.ndarray],
               legacy: bool) -> tuple[list[bytes], list[bytes]]:
        """One z and one y payload per image."""
        z_idx = np.broadcast_to(self._z_channel, z_sym.shape[1:])
        z_strings, y_strings = [], []
        for b in range(z_sym.shape[0]):
            if not legacy:
                z_strings.append(lanes.encode(z_sym[b], z_idx, self._lanes_z))
                writer = lanes.LaneEncoder(self._lanes_y)
                for sym, idx in zip(symbols, indexes):
                    writer.write(sym[b], idx[b])
            else:
                zw = StreamWriter()
                zw.write(z_sym[b], z_idx, self.tables.z)
                z_strings.append(zw.finish())
                writer = StreamWriter()
                for sym, idx in zip(symbols, indexes):
                    writer.write(sym[b], idx[b], self.tables.y)
            y_strings.append(writer.finish())
        return z_strings, y_strings

    # ------------------------------------------------------------------ decode
    def _readers(self, y_strings: list[bytes], z_strings: list[bytes], z_shape: tuple[int, int], legacy: bool,
                 partial: bool, t: Timings) -> tuple[np.ndarray, list[Any]]:
        """The z symbols of every image, and a y reader per image."""
        start = time.perf_counter()
        z_idx = np.broadcast_to(self._z_channel, (self.program.config.N, *z_shape))
        y_total = self.program.config.M * (z_shape[0] * 4) * (z_shape[1] * 4)
        if not legacy:
            z_readers = [lanes.LaneDecoder(s, self._lanes_z, z_idx.size) for s in z_strings]
            readers = [lanes.LaneDecoder(s, self._lanes_y, y_total, partial=partial) for s in y_strings]
        else:
            z_readers = [lanes.LegacyDecoder(s, self._lanes_z, z_idx.size) for s in z_strings]
            readers = [lanes.LegacyDecoder(s, self._lanes_y, y_total) for s in y_strings]
        z = lanes.decode_batch(z_readers, np.broadcast_to(z_idx, (len(z_readers), *z_idx.shape)))
        t.entropy += time.perf_counter() - start
        return z, readers

    def decode(self, y_strings: list[bytes], z_strings: list[bytes], z_shape: tuple[int, int],
               capture: bool = False, side: list[SideInfo | None] | None = None,
               replay: tuple[np.ndarray, list[np.ndarray]] | None = None, legacy: bool = False,
               partial: bool = False, timings: bool = False, choices: bool = True) -> Decoded:
        """Decode one stream pair per image; all images share the padded size (``z_shape``). ``side`` holds
        each image's signalled decisions, which take precedence over the ones computed here.

        ``replay=(z symbols, y symbols per step)`` runs the decoder on known symbols instead of streams
        (teacher forcing): the decisions it makes (``indexes``, ``choices``) can then be compared with an
        encoder's even where they differ, without the desynchronisation a real decode would suffer.

        ``partial``: the y payloads may be truncated (version 3 only): each image's steps are decoded as far as
        its payload goes, the positions of the steps after that get the means the context model predicts for
        them (``Decoded.steps`` says how many steps each image decoded).

        The host waits once per coding step (for its CDF indexes, bucketed on the device) and not at all for
        the rest; ``timings``: also after each stage, to time it. ``choices``: fetch the top-k choices the
        stages took (``Decoded.choices``); without, they stay on the device.
        """
        return next(self._decode(y_strings, z_strings, z_shape, capture, side, replay, legacy, partial, (),
                                 timings, choices))

    def decode_previews(self, y_strings: list[bytes], z_strings: list[bytes], z_shape: tuple[int, int],
                        after: tuple[int, ...], side: list[SideInfo | None] | None = None, legacy: bool = False,
                        partial: bool = False, timings: bool = False, choices: bool = True,
                        fill: str = "context") -> Iterator[Decoded]:
        """Progressive decoding: a preview after each of the step counts ``after`` (1 ... 10; e.g. (2, 5) for
        the ends of scales 1 and 2), then the full decode, in one pass over the stream. ``fill``: how a preview
        is drawn: ``"thumbnail"`` (the last complete scale's grid drawn small and enlarged; no later step runs,
        :mod:`.preview`) or ``"context"`` (the positions not yet decoded take the means the context model
        predicts: every remaining stage runs on a fork of the state without reading, nearly a full decode's
        network time)."""
        if fill not in FILLS:
            raise ValueError(f"fill must be one of {', '.join(FILLS)}, not {fill!r}")
        yield from self._decode(y_strings, z_strings, z_shape, False, side, None, legacy, partial, after, timings,
                                choices, fill)

    def _decode(self, y_strings, z_strings, z_shape, capture, side, replay, legacy, partial,
                after, timings=False, choices=True, fill="context") -> Iterator[Decoded]:
        t = Timings(timed=timings)
        state: dict[str, Any] = {}
        batch = len(y_strings) if replay is None else int(replay[0].shape[0])
        side = side or [None] * batch
        self._check_side(side)
        readers: list[Any] = []
        run = _DecodeRun(batch, record=choices)
        ops = self.program.decode
        for i, op in enumerate(ops):
            if op.kind == "code_z":
                if replay is not None:
                    state["z_q"] = self._device(replay[0].astype(np.float32), t)
                else:
                    z, readers = self._readers(y_strings, z_strings, z_shape, legacy, partial, t)
                    state["z_q"] = self._device(z.astype(np.float32), t)
            else:
                self._decode_op(op, state, readers, t, side, run, replay)
                if op.kind == "code_y" and int(op.ref) + 1 in after:
                    if fill == "thumbnail":
                        yield self._synthesise(state, int(op.ref) + 1, t, run)
                    else:
                        fork = dict(state)  # tensors are single-assignment: a shallow copy is a snapshot
                        yield self._fill_rest(fork, i + 1, t, side, run)
            self._free(state, (self._free_preview if after else self._free_dec).get(i), capture)
        yield Decoded(state["x_hat"], run.symbols, t, state if capture else None, run.indexes, run.choices,
                      run.steps(), run.offsets)

    def _synthesise(self, state: dict[str, Any], steps: int, t: Timings, run: _DecodeRun) -> Decoded:
        """A preview after ``steps`` coding steps: the last complete scale's grid drawn by ``g_s`` at its size,
        enlarged to the image's (:mod:`.preview`)."""
        code = self.program.code_steps[steps - 1]
        placer = self._placing[(code.scale, code.partition)]
        y_hat = state[placer.inputs[placer.roles.index("y_hat")]]
        start = time.perf_counter()
        grid, zeros, real, size = self._fill.latent(steps, y_hat, state[code.q], state[code.means],
                                                    state["params"])
        t.host += time.perf_counter() - start
        g_s = self.program.stages["g_s"]
        scratch = dict(zip(g_s.inputs, (grid, zeros, zeros)))
        self._run_stage("g_s", scratch, t)
        start = time.perf_counter()
        x_hat = self._fill.enlarge(scratch["x_hat"], real, size)
        t.host += time.perf_counter() - start
        counts = [min(n, steps) for n in run.steps()]
        return Decoded(x_hat, run.symbols[:steps], t, None, run.indexes[:], {}, counts, run.offsets[:])

    def _fill_rest(self, state: dict[str, Any], start: int, t: Timings, side, run: _DecodeRun) -> Decoded:
        """Run the decode ops from ``start`` on without reading: every later step's symbols are zero, i.e. its
        positions take the predicted means."""
        preview = _DecodeRun(run.batch, filled_from=len(run.symbols), record=False)
        for i, op in enumerate(self.program.decode[start:], start):
            self._decode_op(op, state, [], t, side, preview, None)
            self._free(state, self._free_dec.get(i), False)
        steps = [min(n, preview.filled_from) for n in run.steps()]
        return Decoded(state["x_hat"], run.symbols[: preview.filled_from], t, None, run.indexes[:], {}, steps,
                       run.offsets[:])

    def _decode_op(self, op: Op, state: dict[str, Any], readers: list[Any], t: Timings, side, run: _DecodeRun,
                   replay) -> None:
        if op.kind == "stage":
            spec = self.program.stages[str(op.ref)]
            if spec.choice:
                self._choose(spec, state, run.batch, side, t)
            self._run_stage(spec.name, state, t)
            if spec.choice and run.record:
                slots, gaps = self._fetch([state[spec.choice], state[f"topk_gap.{spec.name}"]], t)
                run.choices[spec.code_step] = (slots, gaps)
            return
        step = self.program.code_steps[int(op.ref)]
        if run.filled_from is not None and step.index >= run.filled_from:
            state[step.q] = self.backend.zeros_like(state[step.means])
            return
        known = replay[1][step.index] if replay is not None else None
        sym, idx = self._decode_step(step, state, readers, t, side, known, run)
        run.symbols.append(sym)
        run.indexes.append(idx)
        run.offsets.append([r.bytes_read for r in readers])

    def _check_side(self, side: list[SideInfo | None]) -> None:
        """Signalled decisions name steps this program has, and choices only where a step chooses."""
        choosing = {spec.code_step: spec for spec in self.program.stages.values() if spec.choice}
        steps = len(self.program.code_steps)
        for info in side:
            if info is None:
                continue
            if any(not 0 <= s < steps for s in info.cdf):
                raise BitstreamError("corrupted stream: signalled decisions for a coding step that does not exist")
            if any(s not in choosing for s in info.topk):
                raise BitstreamError("corrupted stream: a signalled bank choice for a step that makes none")

    def _decode_step(self, step, state: dict[str, Any], readers: list[Any], t: Timings,
                     side: list[SideInfo | None], known: np.ndarray | None, run: _DecodeRun) -> tuple[np.ndarray,
                                                                                                       np.ndarray]:
        idx = self._host(self.backend.bucket(state[step.scales], self.tables.scale_edges), t).astype(np.int32)
        start = time.perf_counter()
        for b, info in enumerate(side):
            if info is not None and step.index in info.cdf:
                positions, values = info.cdf[step.index]
                size = idx[b].size
                if positions.size and (positions[0] < 0 or positions[-1] >= size):
                    raise BitstreamError("corrupted stream: signalled position outside the coded step")
                idx[b].reshape(-1)[positions] = values
        if known is not None:
            sym = known
        elif run.partial_readers(readers):
            sym = run.read_partial(readers, idx, step.index)
        else:
            sym = lanes.decode_batch(readers, idx)
        t.entropy += time.perf_counter() - start
        state[step.q] = self._device(sym.astype(np.float32), t)
        return sym, idx


@dataclass
class _DecodeRun:
    """What one decode pass collects, and where each image's stream ran out (partial decoding)."""

    batch: int
    filled_from: int | None = None  # steps from here on are filled with the means instead of read
    record: bool = True  # fetch the top-k choices the stages take
    symbols: list[np.ndarray] = field(default_factory=list)
    indexes: list[np.ndarray] = field(default_factory=list)
    choices: dict[int, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    offsets: list[list[int]] = field(default_factory=list)
    ended: dict[int, int] = field(default_factory=dict)  # image -> steps decoded before its payload ran out

    def steps(self) -> list[int]:
        return [self.ended.get(b, len(self.symbols)) for b in range(self.batch)]

    @staticmethod
    def partial_readers(readers: list[Any]) -> bool:
        return any(getattr(r, "partial", False) for r in readers)

    def read_partial(self, readers: list[Any], idx: np.ndarray, step: int) -> np.ndarray:
        """One step image by image: an image whose payload ends here (or ended before) gets zeros."""
        out = np.zeros(idx.shape, dtype=np.int32)
        for b, reader in enumerate(readers):
            if b in self.ended:
                continue
            try:
                out[b] = reader.read(idx[b])
            except BitstreamError:
                self.ended[b] = step
        return out
