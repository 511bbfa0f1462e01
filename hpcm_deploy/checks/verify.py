"""``hpcm-deploy verify``: an export against the PyTorch stages it came from.

Four checks: (1) every stage, at sizes other than the export size, within tolerance of the PyTorch stage on
the same inputs (Polygraphy's comparator decides); (2) whole images: the backend's encoder writes the same
symbols and streams as the PyTorch stages, and where not, the first step and position that differ; its decoder
reads its own streams back exactly, and signalled streams decode exactly across backends both ways; (3) the
static TensorRT compatibility report of every graph; (4) ``polygraphy check lint`` of every graph.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from ..artifacts.export import Manifest
from ..backends.base import Backend
from ..backends.torch_backend import TorchBackend
from ..entropy.tables import EntropyTables
from ..errors import ConfigError
from ..exporting.onnx_export import sample_state
from ..image import random_image
from ..models.hpcm import HPCM
from ..runtime.decisions import DEFAULT_MARGINS, Margins
from ..runtime.runner import Encoded, ProgramRunner
from ..stages import CodingProgram
from .lint import polygraphy_lint
from .trt_compat import GraphReport, check_file

DEFAULT_SIZES = ((256, 256), (256, 512), (768, 512))
ATOL = RTOL = 1e-4
# the fp16 recipe's own tolerance: 4x the largest difference it shows in ONNX Runtime against the PyTorch stages
# (2.5e-3, g_a's y of tiny-phase2 with random weights x20 at 256x256 and 256x512; every other output within 1e-3)
FP16_ATOL = FP16_RTOL = 1e-2
FP16_MARGINS = Margins(4e-3, 4e-3)  # the signalling margin fp16 streams interoperate with (docs/bitstream.md)


@dataclass(frozen=True)
class Tolerance:
    """How closely a backend of one precision must follow the PyTorch stages."""

    name: str
    atol: float
    rtol: float
    margins: Margins  # the signalled decisions whole-image streams are cross-decoded with
    same_streams: bool  # streams must equal the PyTorch stages' byte for byte, scales stay within the margin


TOLERANCES = {
    "fp32": Tolerance("fp32", ATOL, RTOL, DEFAULT_MARGINS, True),
    "fp16": Tolerance("fp16", FP16_ATOL, FP16_RTOL, FP16_MARGINS, False),
}


def tolerance_for(precision: str, tf32: bool = False) -> Tolerance:
    """fp32: within 1e-4 of the PyTorch stages and the same streams. fp16, and fp32 engines built with TF32 (whose
    10-bit mantissa is fp16's): within the fp16 recipe's tolerance, and every stream decodes exactly on the
    other side both ways with signalled decisions at the fp16 margin; its own streams need not equal fp32's."""
    if precision not in TOLERANCES:
        raise ConfigError(f"no verify tolerance for precision {precision!r}; known: {', '.join(TOLERANCES)}")
    return TOLERANCES["fp16" if tf32 else precision]


@dataclass
class StageResult:
    stage: str
    size: tuple[int, int]
    output: str
    max_abs: float
    max_rel: float
    ok: bool
    flips: int = 0  # rounding or top-k decisions taken the other way, each within tolerance of its boundary


@dataclass
class StreamResult:
    size: tuple[int, int]
    same_streams: bool
    # (what differs: "z", "symbol" or "cdf index"; coding step; position in its packed tensor)
    first_difference: tuple[str, int, tuple[int, ...]] | None
    decode_exact: bool
    differing_symbols: int = 0
    largest_scale_error: float = 0.0  # |ln scale| difference to the PyTorch stages, worst position
    margin: float = 0.0  # the scale margin of signalled decisions
    cross_exact: bool = True  # signalled streams decode exactly across (PyTorch <-> backend), both ways


@dataclass
class VerifyReport:
    backend: str
    stages: list[StageResult] = field(default_factory=list)
    streams: list[StreamResult] = field(default_factory=list)
    compatibility: list[GraphReport] = field(default_factory=list)
    lint: dict[str, bool] = field(default_factory=dict)
    random: dict[str, Any] = field(default_factory=dict)  # a measurement: never fails the report
    tolerance: Tolerance = TOLERANCES["fp32"]

    @property
    def ok(self) -> bool:
        strict = self.tolerance.same_streams
        streams_ok = all(s.decode_exact and s.cross_exact
                         and (not strict or (s.same_streams and s.largest_scale_error < s.margin))
                         for s in self.streams)
        return (all(r.ok for r in self.stages) and streams_ok and all(g.ok for g in self.compatibility)
                and all(self.lint.values()))

    def as_dict(self) -> dict[str, Any]:
        return {
            "backend": self.backend, "ok": self.ok, "tolerance": asdict(self.tolerance),
            "stages": [vars(r) for r in self.stages],
            "streams": [vars(s) for s in self.streams],
            "compatibility": [{"graph": g.graph, "opset": g.opset, "nodes": g.nodes, "ok": g.ok,
                               "findings": [vars(f) for f in g.findings]} for g in self.compatibility],
            "lint": self.lint,
            "random": self.random,
        }


@contextlib.contextmanager
def _quiet_polygraphy() -> Iterator[None]:
    from polygraphy.logger import G_LOGGER

    old = G_LOGGER.module_severity
    G_LOGGER.module_severity = G_LOGGER.CRITICAL  # a mismatch is reported in our table, not as Polygraphy's log
    try:
        yield
    finally:
        G_LOGGER.module_severity = old


def compare_outputs(reference: dict[str, np.ndarray], candidate: dict[str, np.ndarray],
                    atol: float = ATOL, rtol: float = RTOL) -> dict[str, tuple[bool, float, float]]:
    """Per output: (within tolerance, max abs difference, max relative difference)."""
    from polygraphy.comparator import SimpleCompareFunc
    from polygraphy.comparator.struct import IterationResult

    with _quiet_polygraphy(), np.errstate(divide="ignore", invalid="ignore"):  # 0/0 relative errors of exact zeros
        result = SimpleCompareFunc(atol=atol, rtol=rtol, check_shapes=True)(
            IterationResult(outputs=reference, runner_name="torch"),
            IterationResult(outputs=candidate, runner_name="backend"))
    return {k: (bool(v), float(v.max_absdiff), float(v.max_reldiff)) for k, v in result.items()}


def check_stages(model: HPCM, program: CodingProgram, backend: Backend, sizes=DEFAULT_SIZES, batch: int = 1,
                 seed: int = 1, atol: float = ATOL, rtol: float = RTOL) -> list[StageResult]:
    """Every stage of ``backend`` against the PyTorch stage on identical inputs, at each size.

    Outputs that are decisions are compared as decisions: a rounded output (``z_q``) may differ by one where
    the PyTorch value before rounding lies within tolerance of the rounding boundary, and a top-k choice may
    differ where its score gap is within tolerance; such flips are counted, anything else fails.
    """
    torch_backend = TorchBackend(model, program)
    results = []
    for size in sizes:
        state = sample_state(model, program, batch, size, seed=seed)
        for name, spec in program.stages.items():
            inputs = [state[n] for n in spec.inputs]
            ref = {n: r.numpy() for n, r in zip(spec.outputs, torch_backend.run(name, inputs))}
            out = backend.run(name, [backend.from_host(t.numpy()) for t in inputs])
            got = {n: backend.to_host(o) for n, o in zip(spec.outputs, out)}
            compared = compare_outputs(ref, got, atol, rtol)
            for n, (ok, abs_err, rel_err) in compared.items():
                flips = 0
                if not ok and n == "z_q":
                    with torch.inference_mode():
                        before = (model.h_a(inputs[0]) - model.means_hyper).numpy()
                    ok, flips = rounding_flips(ref[n], got[n], before, atol, rtol)
                elif not ok and n.startswith("topk.") and f"topk_gap.{name}" in ref:
                    ok, flips = choice_flips(ref[n], got[n], ref[f"topk_gap.{name}"], atol)
                results.append(StageResult(name, tuple(size), n, abs_err, rel_err, ok, flips))
    return results


def rounding_flips(ref: np.ndarray, got: np.ndarray, before: np.ndarray, atol: float = ATOL,
                   rtol: float = RTOL) -> tuple[bool, int]:
    """(all differences are legitimate rounding flips, how many): ``ref = round(before)`` and ``got`` may
    differ by exactly one where ``before`` lies within tolerance of a half-integer."""
    differ = ref != got
    if not differ.any():
        return True, 0
    boundary = np.abs(np.abs(before - np.floor(before)) - 0.5)
    legit = (np.abs(ref - got) == 1) & (boundary <= atol + rtol * np.abs(before))
    return bool(legit[differ].all()), int(differ.sum())


def choice_flips(ref: np.ndarray, got: np.ndarray, gaps: np.ndarray, atol: float = ATOL) -> tuple[bool, int]:
    """(all differing top-k choices had a score gap within tolerance, how many images differ)."""
    differ = np.any(np.sort(ref, axis=-1) != np.sort(got, axis=-1), axis=-1)
    return bool((gaps.reshape(differ.shape)[differ] <= atol).all()), int(differ.sum())


@dataclass
class ExportCheck:
    """The check ``hpcm-deploy export`` runs on a new export: every graph in ONNX Runtime against the PyTorch
    stage at sizes other than the export size."""

    results: list[StageResult]

    @property
    def ok(self) -> bool:
        return all(r.ok for r in self.results)

    @property
    def flips(self) -> int:
        return sum(r.flips for r in self.results)

    @property
    def worst(self) -> StageResult:
        return max(self.results, key=lambda r: r.max_abs if not r.flips else 0.0)

    def summary(self) -> str:
        bad = [r for r in self.results if not r.ok]
        worst = self.worst
        text = (f"checked {len(self.results)} outputs at {len({r.size for r in self.results})} sizes other than the "
                f"export size: {'all within tolerance' if not bad else f'{len(bad)} OUT OF TOLERANCE'} (largest "
                f"difference {worst.max_abs:.2e} in {worst.stage}/{worst.output})")
        if self.flips:
            text += (f"; {self.flips} rounding/top-k decisions within float error of their boundary went the other "
                     "way (allowed: the decoder reads them from the stream)")
        if bad:
            first = bad[0]
            text += f"; first failure: {first.stage}/{first.output} at {first.size[0]}x{first.size[1]}"
        return text


def check_export(model: HPCM, manifest: Manifest) -> ExportCheck:
    """Run every graph of ``manifest`` in ONNX Runtime against the PyTorch stages of ``model``."""
    from ..backends.onnxrt import OnnxRuntimeBackend

    backend = OnnxRuntimeBackend(manifest)
    try:
        return ExportCheck(check_stages(model, manifest.program(), backend))
    finally:
        backend.close()


def first_difference(a: Encoded, b: Encoded) -> tuple[tuple[str, int, tuple[int, ...]] | None, int]:
    """Where two encodes of the same image first part (z symbols, then step by step: symbol, then CDF
    index), and how many y symbols differ in all."""
    if not np.array_equal(a.z_symbols, b.z_symbols):
        where = tuple(int(i) for i in np.argwhere(a.z_symbols != b.z_symbols)[0])
        return ("z", -1, where), sum(int((x != y).sum()) for x, y in zip(a.symbols, b.symbols))
    first, count = None, 0
    for step, (xs, ys, xi, yi) in enumerate(zip(a.symbols, b.symbols, a.indexes, b.indexes)):
        sym, idx = xs != ys, xi != yi
        count += int(sym.sum())
        if first is None and (sym.any() or idx.any()):
            kind, mask = ("symbol", sym) if sym.any() else ("cdf index", idx)
            if sym.any() and idx.any() and np.flatnonzero(idx)[0] < np.flatnonzero(sym)[0]:
                kind, mask = "cdf index", idx
            first = (kind, step, tuple(int(i) for i in np.argwhere(mask)[0]))
    return first, count


def check_streams(model: HPCM, program: CodingProgram, backend: Backend, tables: EntropyTables, sizes=DEFAULT_SIZES,
                  batch: int = 1, seed: int = 2, margins: Margins = DEFAULT_MARGINS) -> list[StreamResult]:
    """Whole-image encode on ``backend`` against the PyTorch stages; ``backend``'s own round trip; the largest
    scale difference against the signalling margin; signalled streams decoded across, both ways."""
    reference = ProgramRunner(program, TorchBackend(model, program), tables)
    candidate = ProgramRunner(program, backend, tables)
    results = []
    for n, size in enumerate(sizes):
        x = random_image(batch, size, seed * 7919 + n)
        ref = _hosted(reference.encode(x, capture=True), reference)
        enc = _hosted(candidate.encode(backend.from_host(x.numpy()), capture=True), candidate)
        first, count = first_difference(ref, enc)
        exact = _decodes(candidate, enc, None)
        same = enc.y_strings == ref.y_strings and enc.z_strings == ref.z_strings
        sa = reference.encode(x, margins=margins)
        sb = candidate.encode(backend.from_host(x.numpy()), margins=margins)
        cross = _decodes(candidate, sa, sa.side) and _decodes(reference, sb, sb.side)
        results.append(StreamResult(tuple(size), same, first, exact, count,
                                    scale_error(ref, enc, float(tables.scale_edges[0])), margins.scale, cross))
    return results


def random_sizes(count: int, seed: int = 0, max_tiles: int = 3) -> list[tuple[int, int]]:
    """``count`` padded sizes with sides drawn from 256 .. 256 * max_tiles."""
    g = np.random.default_rng(seed)
    return [(256 * int(g.integers(1, max_tiles + 1)), 256 * int(g.integers(1, max_tiles + 1))) for _ in range(count)]


def _decodes(runner: ProgramRunner, enc: Encoded, side) -> bool:
    """Whether ``runner`` reads back exactly the symbols of ``enc`` (False also when decoding fails)."""
    try:
        dec = runner.decode(enc.y_strings, enc.z_strings, enc.z_shape, side=side)
    except Exception:  # a desynchronised decoder may fail in any way; the measurement counts it as a failure
        return False
    return all(bool((a == b).all()) for a, b in zip(dec.symbols, enc.symbols))


def scale_error(a: Encoded, b: Encoded, first_edge: float) -> float:
    """Largest |ln(scale_a) - ln(scale_b)| over every coded position (both encodes captured). Scales below
    the first bucket edge all fall in bucket 0, so both are clamped just below it: only differences that
    could move a scale across an edge count."""
    assert a.state is not None and b.state is not None
    floor = 0.9 * first_edge
    worst = 0.0
    for name in (k for k in a.state if k.startswith("scales.")):
        x = np.maximum(np.asarray(a.state[name], dtype=np.float64), floor)
        y = np.maximum(np.asarray(b.state[name], dtype=np.float64), floor)
        worst = max(worst, float(np.abs(np.log(x) - np.log(y)).max()))
    return worst


def compare_random_images(model: HPCM, program: CodingProgram, backend: Backend, tables: EntropyTables,
                          sizes: list[tuple[int, int]], margins: Margins = DEFAULT_MARGINS,
                          seed: int = 100) -> dict[str, Any]:
    """Encode one random image per size with the PyTorch stages and with ``backend``, and decode each stream
    on the other side, without and with signalled decisions. A measurement, not a pass/fail criterion."""
    torch_runner = ProgramRunner(program, TorchBackend(model, program), tables)
    other = ProgramRunner(program, backend, tables)
    first_steps: dict[str, int] = {}
    counts = {f"{d}/{mode}": 0 for d in ("torch->other", "other->torch") for mode in ("plain", "signalled")}
    differing, side_bytes, stream_bytes, pixels, worst, compared = 0, 0, 0, 0, 0.0, 0
    for n, size in enumerate(sizes):
        x = random_image(1, size, seed + n)
        a, b = torch_runner.encode(x, capture=True), other.encode(backend.from_host(x.numpy()), capture=True)
        first, _ = first_difference(a, b)
        same_symbols = np.array_equal(a.z_symbols, b.z_symbols) and all(
            np.array_equal(u, v) for u, v in zip(a.symbols, b.symbols))
        if same_symbols:
            # after a differing symbol the two encoders legitimately predict different scales: only encodes
            # that agree on every symbol (CDF indexes may differ) measure the arithmetic difference
            worst = max(worst, scale_error(_hosted(a, torch_runner), _hosted(b, other), float(tables.scale_edges[0])))
            compared += 1
        if a.y_strings != b.y_strings or a.z_strings != b.z_strings:
            differing += 1
            key = f"{first[0]}@{first[1]}" if first else "bytes only"
            first_steps[key] = first_steps.get(key, 0) + 1
        counts["torch->other/plain"] += not _decodes(other, a, None)
        counts["other->torch/plain"] += not _decodes(torch_runner, b, None)
        sa, sb = torch_runner.encode(x, margins=margins), other.encode(backend.from_host(x.numpy()), margins=margins)
        counts["torch->other/signalled"] += not _decodes(other, sa, sa.side)
        counts["other->torch/signalled"] += not _decodes(torch_runner, sb, sb.side)
        side_bytes += len(sa.side[0].to_bytes()) if sa.side[0] else 0
        stream_bytes += len(sa.y_strings[0]) + len(sa.z_strings[0])
        pixels += size[0] * size[1]
    return {"images": len(sizes), "differing_streams": differing, "first_steps": dict(sorted(first_steps.items())),
            "decode_failures": counts, "margins": {"scale": margins.scale, "topk": margins.topk},
            "largest_scale_error": worst, "scale_error_images": compared, "side_bytes": side_bytes,
            "stream_bytes": stream_bytes,
            "side_bpp": 8 * side_bytes / max(pixels, 1), "stream_bpp": 8 * stream_bytes / max(pixels, 1)}


def _hosted(enc: Encoded, runner: ProgramRunner) -> Encoded:
    """``enc`` with its captured scales as host arrays."""
    assert enc.state is not None
    enc.state = {k: runner.backend.to_host(v) if k.startswith("scales.") else v for k, v in enc.state.items()}
    return enc


def verify_export(manifest: Manifest, backend: Backend, sizes=DEFAULT_SIZES, batch: int = 1,
                  model: HPCM | None = None, lint: bool = True,
                  random_sizes: list[tuple[int, int]] | None = None,
                  margins: Margins | None = None, tolerance: Tolerance | None = None) -> VerifyReport:
    """The checks of ``manifest`` run on ``backend`` (lint optional; ``random_sizes``: the interoperability
    measurement, which never fails the report). ``tolerance`` defaults to the one of the backend's precision
    (TensorRT engines: the engines' precision and TF32; otherwise the export's); ``margins`` to its margins."""
    sizes = [tuple(s) for s in sizes]
    tol = tolerance or tolerance_for(backend.precision or manifest.precision, backend.tf32)
    margins = margins or tol.margins
    model = model or manifest.load_model()
    program = manifest.program()
    tables = EntropyTables.load(manifest.path("tables"))
    report = VerifyReport(backend.name, tolerance=tol)
    report.stages = check_stages(model, program, backend, sizes, batch, atol=tol.atol, rtol=tol.rtol)
    report.streams = check_streams(model, program, backend, tables, sizes, batch, margins=margins)
    report.compatibility = [check_file(manifest.stage_path(s)) for s in manifest.stages]
    if lint:
        report.lint = {s: polygraphy_lint(manifest, s, sizes[0], batch)[0] for s in manifest.stages}
    if random_sizes:
        report.random = compare_random_images(model, program, backend, tables, random_sizes, margins)
    return report
