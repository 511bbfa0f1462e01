"""Runs a coding program over a backend, with rANS coding on the host.

The state (contexts, ``y_hat``, memory banks) stays in the backend's tensors; per coding step only the packed
scales and means (and, when encoding, the packed latent) come to the host, and the symbols go back.
"""

from __future__ import annotations

import time
from collections import defaultdict
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..backends.base import Backend
from ..entropy.coder import StreamReader, StreamWriter
from ..entropy.ggm import scale_indexes
from ..entropy.tables import EntropyTables
from ..errors import BitstreamError
from ..stages.program import CodingProgram, Op
from .decisions import Margins, SideInfo, near_edges


@dataclass
class Timings:
    """Seconds spent per stage and per host phase."""

    stages: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    network: float = 0.0  # backend work (stages)
    entropy: float = 0.0  # rANS coding (on the helper thread when the encoder overlaps it)
    entropy_wait: float = 0.0  # time the encoder waited for rANS after the last stage
    transfer: float = 0.0  # device <-> host copies
    host: float = 0.0  # other host work per step (quantisation, CDF indexes)

    def as_dict(self) -> dict[str, Any]:
        return {"network": self.network, "entropy": self.entropy, "entropy_wait": self.entropy_wait,
                "transfer": self.transfer, "host": self.host, "stages": dict(self.stages)}


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


@dataclass
class Decoded:
    x_hat: Any  # backend tensor [B, 3, H, W] in [0, 1]
    symbols: list[np.ndarray]
    timings: Timings
    state: dict[str, Any] | None = None
    indexes: list[np.ndarray] = field(default_factory=list)  # the CDF indexes used, per coding step
    choices: dict[int, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)  # step -> (slots, gaps)


class ProgramRunner:
    """Executes ``program.encode`` / ``program.decode`` on ``backend``."""

    def __init__(self, program: CodingProgram, backend: Backend, tables: EntropyTables) -> None:
        self.program, self.backend, self.tables = program, backend, tables
        self._free_enc = program.last_use(program.encode, encoding=True)
        self._free_dec = program.last_use(program.decode, encoding=False)
        n = program.config.N
        self._z_channel = np.arange(n, dtype=np.int32)[:, None, None]

    # ------------------------------------------------------------------ shared pieces
    def _run_stage(self, name: str, state: dict[str, Any], t: Timings) -> None:
        spec = self.program.stages[name]
        start = time.perf_counter()
        outputs = self.backend.run(name, [state[k] for k in spec.inputs])
        self.backend.synchronize()
        elapsed = time.perf_counter() - start
        t.stages[name] += elapsed
        t.network += elapsed
        state.update(zip(spec.outputs, outputs))

    def _host(self, tensor: Any, t: Timings) -> np.ndarray:
        start = time.perf_counter()
        out = self.backend.to_host(tensor)
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

    # ------------------------------------------------------------------ encode
    def encode(self, x: Any, capture: bool = False, overlap: bool = True, margins: Margins | None = None) -> Encoded:
        """Encode a padded batch ``x`` (a backend tensor ``[B, 3, H, W]``).

        With ``overlap``, the rANS coding of step k runs on a helper thread while the backend computes step
        k+1 (backends release the GIL while they compute); the symbols the next stage needs are ready first.
        With ``margins``, decisions near their discontinuity are collected per image (``Encoded.side``).
        """
        t = Timings()
        state: dict[str, Any] = {"x": x}
        batch = int(x.shape[0])
        side = [SideInfo(margins) for _ in range(batch)] if margins is not None else []
        choices: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        writers: list[StreamWriter] = []
        symbols: list[np.ndarray] = []
        indexes: list[np.ndarray] = []
        z_strings: list[bytes] = []
        z_sym = np.zeros(0, dtype=np.int32)
        pool = ThreadPoolExecutor(max_workers=1) if overlap else None
        jobs: list[Future] = []

        def code(fn, *args) -> None:  # rANS work, in order, on the helper thread (or inline)
            if pool is None:
                t.entropy += fn(*args)
            else:
                jobs.append(pool.submit(fn, *args))

        try:
            for i, op in enumerate(self.program.encode):
                if op.kind == "stage":
                    spec = self.program.stages[str(op.ref)]
                    if spec.choice:
                        state[f"topk_force.{spec.name}"] = self._force(spec.name, batch, [None] * batch, t)
                    self._run_stage(spec.name, state, t)
                    if spec.choice:
                        slots = self._host(state[spec.choice], t)
                        gaps = self._host(state[f"topk_gap.{spec.name}"], t)
                        choices[spec.code_step] = (slots, gaps)
                        for b, info in enumerate(side):
                            if gaps[b] < info.margins.topk:
                                info.topk[spec.code_step] = slots[b].copy()
                elif op.kind == "code_z":
                    z_sym = self._host(state["z_q"], t).astype(np.int32)
                    writers = [StreamWriter() for _ in range(z_sym.shape[0])]
                    z_strings = [b""] * z_sym.shape[0]
                    code(self._write_z, z_sym, z_strings)
                else:
                    sym, idx = self._quantize_step(op, state, t, side)
                    symbols.append(sym)
                    indexes.append(idx)
                    code(self._write_y, sym, idx, writers)
                self._free(state, self._free_enc.get(i), capture)
            start = time.perf_counter()
            t.entropy += sum(job.result() for job in jobs)
            t.entropy_wait = time.perf_counter() - start
            start = time.perf_counter()
            y_strings = [w.finish() for w in writers]
            t.entropy += time.perf_counter() - start
        finally:
            if pool is not None:
                pool.shutdown(wait=True)
        return Encoded(y_strings, z_strings, (int(z_sym.shape[-2]), int(z_sym.shape[-1])), symbols, z_sym, t,
                       indexes, state if capture else None, side, choices)

    def _force(self, stage: str, batch: int, forced: list[np.ndarray | None], t: Timings) -> Any:
        """The ``topk_force`` input of a stage: given slots per image, -1 where the stage decides itself."""
        k = self.program.tensors[f"topk_force.{stage}"].shape[1]
        array = np.full((batch, k), -1, dtype=np.int64)
        for b, slots in enumerate(forced):
            if slots is not None:
                array[b] = slots
        return self._device(array, t)

    def _write_z(self, z_sym: np.ndarray, out: list[bytes]) -> float:
        start = time.perf_counter()
        for b in range(z_sym.shape[0]):
            w = StreamWriter()
            w.write(z_sym[b], np.broadcast_to(self._z_channel, z_sym.shape[1:]), self.tables.z)
            out[b] = w.finish()
        return time.perf_counter() - start

    def _write_y(self, sym: np.ndarray, idx: np.ndarray, writers: list[StreamWriter]) -> float:
        start = time.perf_counter()
        for b, w in enumerate(writers):
            w.write(sym[b], idx[b], self.tables.y)
        return time.perf_counter() - start

    def _quantize_step(self, op: Op, state: dict[str, Any], t: Timings,
                       side: list[SideInfo]) -> tuple[np.ndarray, np.ndarray]:
        """Symbols and CDF indexes of one step; the symbols go back to the device for the next stage."""
        step = self.program.code_steps[int(op.ref)]
        scales = self._host(state[step.scales], t)
        means = self._host(state[step.means], t)
        y = self._host(state[step.y], t)
        start = time.perf_counter()
        q = np.round(y - means)  # float32 arithmetic and round-half-even, as torch.round on the device
        sym = q.astype(np.int32)
        idx = scale_indexes(scales, self.tables.scale_edges)
        for b, info in enumerate(side):
            flat = np.flatnonzero(near_edges(scales[b], self.tables.scale_edges, info.margins.scale))
            if flat.size:
                info.cdf[step.index] = (flat, idx[b].reshape(-1)[flat].copy())
        t.host += time.perf_counter() - start
        state[step.q] = self._device(q, t)
        return sym, idx

    # ------------------------------------------------------------------ decode
    def decode(self, y_strings: list[bytes], z_strings: list[bytes], z_shape: tuple[int, int],
               capture: bool = False, side: list[SideInfo | None] | None = None,
               replay: tuple[np.ndarray, list[np.ndarray]] | None = None) -> Decoded:
        """Decode one stream pair per image; all images share the padded size (``z_shape``). ``side`` holds
        each image's signalled decisions, which take precedence over the ones computed here.

        ``replay=(z symbols, y symbols per step)`` runs the decoder on known symbols instead of streams
        (teacher forcing): the decisions it makes (``indexes``, ``choices``) can then be compared with an
        encoder's even where they differ, without the desynchronisation a real decode would suffer.
        """
        t = Timings()
        state: dict[str, Any] = {}
        readers: list[StreamReader] = []
        symbols: list[np.ndarray] = []
        indexes: list[np.ndarray] = []
        choices: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        batch = len(y_strings) if replay is None else int(replay[0].shape[0])
        side = side or [None] * batch
        for i, op in enumerate(self.program.decode):
            if op.kind == "stage":
                spec = self.program.stages[str(op.ref)]
                if spec.choice:
                    forced = [s.topk.get(spec.code_step) if s else None for s in side]
                    state[f"topk_force.{spec.name}"] = self._force(spec.name, batch, forced, t)
                self._run_stage(spec.name, state, t)
                if spec.choice:
                    choices[spec.code_step] = (self._host(state[spec.choice], t),
                                               self._host(state[f"topk_gap.{spec.name}"], t))
            elif op.kind == "code_z":
                if replay is not None:
                    state["z_q"] = self._device(replay[0].astype(np.float32), t)
                    continue
                start = time.perf_counter()
                idx = np.broadcast_to(self._z_channel, (self.program.config.N, *z_shape))
                z = np.stack([StreamReader(s, idx.size).read(idx, self.tables.z) for s in z_strings])
                z = z.astype(np.float32)
                y_symbols = self.program.config.M * (z_shape[0] * 4) * (z_shape[1] * 4)
                readers = [StreamReader(s, y_symbols) for s in y_strings]
                t.entropy += time.perf_counter() - start
                state["z_q"] = self._device(z, t)
            else:
                known = replay[1][int(op.ref)] if replay is not None else None
                sym, idx = self._decode_step(op, state, readers, t, side, known)
                symbols.append(sym)
                indexes.append(idx)
            self._free(state, self._free_dec.get(i), capture)
        return Decoded(state["x_hat"], symbols, t, state if capture else None, indexes, choices)

    def _decode_step(self, op: Op, state: dict[str, Any], readers: list[StreamReader], t: Timings,
                     side: list[SideInfo | None], known: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        step = self.program.code_steps[int(op.ref)]
        scales = self._host(state[step.scales], t)
        start = time.perf_counter()
        idx = scale_indexes(scales, self.tables.scale_edges)
        for b, info in enumerate(side):
            if info is not None and step.index in info.cdf:
                positions, values = info.cdf[step.index]
                if positions.size and positions[-1] >= idx[b].size:
                    raise BitstreamError("corrupted stream: signalled position outside the coded step")
                idx[b].reshape(-1)[positions] = values
        if known is not None:
            sym = known
        else:
            sym = np.stack([r.read(idx[b], self.tables.y) for b, r in enumerate(readers)])
        t.entropy += time.perf_counter() - start
        state[step.q] = self._device(sym.astype(np.float32), t)
        return sym, idx
