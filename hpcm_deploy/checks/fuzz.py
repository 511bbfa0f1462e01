"""Structure-aware fuzzing of the decoder: streams whose fields are changed the way an attacker would, with the
checksum recomputed, so that the decoder itself (payload parsing, side information, rANS kernels, size
handling) faces the garbage, not just the CRC check.

A case takes a valid stream, mutates one part of it (a header field, the payload lengths, the z or y payload,
the side information, structurally or byte-wise), recomputes the CRC and decodes. It must end in a decoded image
of the announced size or a :class:`~hpcm_deploy.errors.BitstreamError`: any other exception, a crash of the
process, a hang or a memory blow-up is a bug.

Cases run in worker processes (``python -m hpcm_deploy.checks.fuzz worker ...``), a batch per process, each
reporting every case before it starts the next, so a crash is counted, and the run goes on, instead of ending
the run; a case that reports nothing within the time bound counts as a hang.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import struct
import subprocess
import sys
import time
import zlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

HEADER = struct.Struct(">4sBB8sIIBBIII")
KINDS = ("header", "lengths", "z", "y", "y-lanes", "side", "side-structure", "truncate", "swap")


@dataclass
class Layout:
    """A stream cut into its parts, as they are written (no checks: the point is to break them)."""

    fields: list[Any]  # magic, version, flags, fp, height, width, channels, depth, lz, ly, ls
    z: bytes
    y: bytes
    side: bytes

    @classmethod
    def of(cls, stream: bytes) -> Layout:
        fields = list(HEADER.unpack_from(stream))
        lz, ly, ls = fields[8:11]
        body = stream[HEADER.size:-4]
        if fields[1] == 3:  # z, side information, y
            return cls(fields, body[:lz], body[lz + ls:lz + ls + ly], body[lz:lz + ls])
        return cls(fields, body[:lz], body[lz:lz + ly], body[lz + ly:lz + ly + ls])

    def to_bytes(self, keep_lengths: bool = False) -> bytes:
        fields = list(self.fields)
        if not keep_lengths:
            fields[8:11] = [len(self.z), len(self.y), len(self.side)]
        parts = (self.z, self.side, self.y) if fields[1] == 3 else (self.z, self.y, self.side)
        body = HEADER.pack(*fields) + b"".join(parts)
        return body + struct.pack(">I", zlib.crc32(body))


def _bytes_mutation(data: bytes, rng: np.random.Generator) -> bytes:
    buf = bytearray(data)
    if not buf:
        return bytes(rng.integers(0, 256, int(rng.integers(1, 64)), dtype=np.uint8))
    op = int(rng.integers(0, 6))
    if op == 0:  # flip bits
        for _ in range(int(rng.integers(1, 6))):
            buf[int(rng.integers(len(buf)))] ^= 1 << int(rng.integers(8))
    elif op == 1:  # overwrite a run with random bytes or a constant
        at = int(rng.integers(len(buf)))
        n = int(rng.integers(1, 32))
        fill = rng.integers(0, 256, n, dtype=np.uint8).tobytes() if rng.random() < 0.5 else bytes([
            int(rng.choice([0, 0xFF, 0x7F, 0x80]))]) * n
        buf[at:at + n] = fill
    elif op == 2:  # delete
        at = int(rng.integers(len(buf)))
        del buf[at:at + int(rng.integers(1, 64))]
    elif op == 3:  # insert
        at = int(rng.integers(len(buf) + 1))
        buf[at:at] = rng.integers(0, 256, int(rng.integers(1, 64)), dtype=np.uint8).tobytes()
    elif op == 4:  # truncate or extend
        if rng.random() < 0.5:
            buf = buf[: int(rng.integers(len(buf)))]
        else:
            buf += (b"\xff" if rng.random() < 0.5 else b"\x00") * int(rng.integers(1, 5000))
    else:  # replace by garbage of a plausible length
        buf = bytearray(rng.integers(0, 256, int(rng.integers(1, 2 * len(buf) + 2)), dtype=np.uint8).tobytes())
    return bytes(buf)


def _side_structure(rng: np.random.Generator) -> bytes:
    """Side information that parses, with values an attacker picks: steps, positions, CDF indexes, slots."""
    from ..entropy.lanes import varint

    out = bytearray([1]) + struct.pack(">ff", float(rng.choice([2e-5, 0.0, -1.0, np.inf, np.nan])), 1e-4)
    steps = int(rng.integers(0, 4))
    out += varint(steps)
    for _ in range(steps):
        out.append(int(rng.choice([0, 1, 5, 10, 11, 200, 255])))
        n = int(rng.integers(0, 6))
        out += varint(n)
        for _ in range(n):
            out += varint(int(rng.choice([0, 1, 7, 100, 4095, 1 << 20, 1 << 35, (1 << 63) - 1])))
        out += bytes(int(rng.choice([0, 5, 58, 59, 60, 61, 127, 255])) for _ in range(n))
    choices = int(rng.integers(0, 3))
    out += varint(choices)
    for _ in range(choices):
        k = int(rng.choice([0, 1, 2, 3, 255]))
        out += bytes([int(rng.choice([0, 3, 4, 7, 10, 11, 255])), k])
        out += bytes(int(rng.choice([0, 1, 2, 3, 4, 5, 9, 255])) for _ in range(k))
    return bytes(out)


def mutate(stream: bytes, rng: np.random.Generator) -> tuple[str, bytes]:
    """One mutated copy of ``stream`` (its kind, its bytes), CRC recomputed (but for kind "truncate")."""
    layout = Layout.of(stream)
    kind = KINDS[int(rng.integers(len(KINDS)))]
    keep = False
    if kind == "header":
        i = int(rng.choice([1, 2, 4, 5, 6, 7]))
        layout.fields[i] = int(rng.choice({1: [0, 1, 2, 3, 4, 255], 2: [0, 1, 2, 3, 4, 0x80, 0xFF],
                                           6: [0, 1, 2, 3, 4, 255], 7: [0, 1, 7, 8, 16, 32, 64, 255]}.get(
            i, [0, 1, 255, 256, 16383, 16384, 16385, 65536, 1 << 31, (1 << 32) - 1])))
    elif kind == "lengths":  # lengths that disagree with the parts, the total unchanged or not
        keep = True
        i = int(rng.integers(8, 11))
        layout.fields[i] = max(0, int(layout.fields[i]) + int(rng.choice([-64, -5, -1, 1, 3, 64, 1 << 20])))
    elif kind == "z":
        layout.z = _bytes_mutation(layout.z, rng)
    elif kind == "y":
        layout.y = _bytes_mutation(layout.y, rng)
    elif kind == "y-lanes" and layout.y:  # the lane count, or the lanes' states
        buf = bytearray(layout.y)
        if rng.random() < 0.5:
            buf[0] = int(rng.choice([0, 1, 2, 3, 7, 8, 9, 63, 64, 65, 0x80, 0xFF]))
        else:
            at = 1 + 4 * int(rng.integers(0, 4))
            buf[at:at + 4] = struct.pack("<I", int(rng.choice([0, 1, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF])))
        layout.y = bytes(buf)
    elif kind == "side":
        layout.side = _bytes_mutation(layout.side, rng) if layout.side else _side_structure(rng)
        layout.fields[2] |= 1
    elif kind == "side-structure":
        layout.side = _side_structure(rng)
        layout.fields[2] |= 1
    elif kind == "swap":
        layout.z, layout.y = layout.y, layout.z
    if kind == "truncate":
        return kind, stream[: int(rng.integers(0, len(stream)))]
    return kind, layout.to_bytes(keep_lengths=keep)


# ------------------------------------------------------------------------------------------------ the worker
def _worker(export: str, streams: list[str], seed: int, first: int, count: int, partial: bool) -> None:
    """Run cases ``first .. first + count - 1`` (case ``i`` mutates stream ``i % len(streams)`` with the RNG
    seeded by ``(seed, i)``) and print one JSON line per case, flushed, a "start" line before each."""
    import hpcm_deploy as hd
    from hpcm_deploy.errors import BitstreamError

    codec = hd.Codec(export, margins=None)
    originals = [Path(s).read_bytes() for s in streams]
    for i in range(first, first + count):
        rng = np.random.default_rng([seed, i])
        source = originals[i % len(originals)]
        kind, data = mutate(source, rng)
        print(json.dumps({"start": i, "kind": kind}), flush=True)
        t0 = time.perf_counter()
        outcome, detail = "decoded", ""
        try:
            use_partial = partial and i % 5 == 0
            result = codec.decompress_detailed([data], kind="numpy", partial=use_partial)[0]
            shape = result.image.shape[:2]
            if shape != (result.height, result.width):
                outcome, detail = "wrong size", f"{shape} for {result.height}x{result.width}"
        except BitstreamError as exc:
            outcome, detail = "BitstreamError", str(exc).split("(")[0][:80]
            if "\n" in str(exc):
                outcome = "multi-line error"
        except Exception as exc:  # the point of fuzzing: anything else is a bug, reported, not fatal
            outcome, detail = f"other: {type(exc).__name__}", str(exc).splitlines()[0][:200] if str(exc) else ""
        seconds = time.perf_counter() - t0
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(json.dumps({"case": i, "kind": kind, "outcome": outcome, "detail": detail, "seconds": seconds,
                          "bytes": len(data), "peak_mb": peak_mb}), flush=True)


@dataclass
class FuzzReport:
    cases: int = 0
    outcomes: Counter = field(default_factory=Counter)
    kinds: Counter = field(default_factory=Counter)
    errors: Counter = field(default_factory=Counter)  # BitstreamError messages (their first words)
    bugs: list[dict] = field(default_factory=list)  # every case that did not end well
    slowest: dict = field(default_factory=dict)
    peak_mb: float = 0.0
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {"cases": self.cases, "outcomes": dict(self.outcomes), "kinds": dict(self.kinds),
                "errors": dict(self.errors.most_common(25)), "bugs": self.bugs, "slowest": self.slowest,
                "peak_mb": self.peak_mb, "seconds": self.seconds}

    @property
    def ok(self) -> bool:
        return not self.bugs


def fuzz(export: str | os.PathLike, streams: list[str | os.PathLike], cases: int, seed: int = 0,
         batch: int = 250, case_timeout: float = 60.0, partial: bool = True) -> FuzzReport:
    """Run ``cases`` mutated streams through worker processes of ``batch`` cases each; a worker that dies or
    stays silent longer than ``case_timeout`` seconds has its current case counted (crash, hang) and the run
    continues with the next case."""
    report = FuzzReport()
    start = time.perf_counter()
    next_case = 0
    while next_case < cases:
        count = min(batch, cases - next_case)
        cmd = [sys.executable, "-m", "hpcm_deploy.checks.fuzz", "worker", str(export), *map(str, streams),
               "--seed", str(seed), "--first", str(next_case), "--count", str(count)] + (
            ["--partial"] if partial else [])
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        current, last_done = None, next_case - 1
        deadline = time.monotonic() + 600 + case_timeout  # start-up and the first case
        import selectors

        sel = selectors.DefaultSelector()
        sel.register(proc.stdout, selectors.EVENT_READ)
        hung = False
        while True:
            if not sel.select(timeout=max(0.0, deadline - time.monotonic())):
                hung = True
                proc.kill()
                break
            line = proc.stdout.readline()
            if not line:
                break
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if "start" in rec:
                current = rec
                deadline = time.monotonic() + case_timeout
                continue
            last_done = rec["case"]
            _count(report, rec)
        proc.wait()
        if last_done < next_case + count - 1:  # the worker stopped early: its current case crashed or hung
            what = "hang" if hung else f"crash (exit {proc.returncode})"
            case = current["start"] if current else last_done + 1
            kind = current["kind"] if current else "?"
            tail = (proc.stderr.read() or "").strip().splitlines()[-1:] if not hung else []
            _count(report, {"case": case, "kind": kind, "outcome": what, "detail": " ".join(tail)[:200],
                            "seconds": case_timeout if hung else 0.0, "bytes": 0, "peak_mb": 0.0})
            last_done = case
        next_case = last_done + 1
    report.seconds = time.perf_counter() - start
    return report


def _count(report: FuzzReport, rec: dict) -> None:
    report.cases += 1
    outcome = rec["outcome"]
    report.outcomes[outcome] += 1
    report.kinds[rec["kind"]] += 1
    if outcome == "BitstreamError":
        report.errors[rec["detail"]] += 1
    elif outcome != "decoded":
        report.bugs.append(rec)
    if rec["seconds"] > report.slowest.get("seconds", -1.0):
        report.slowest = rec
    report.peak_mb = max(report.peak_mb, rec["peak_mb"])


def _main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hpcm_deploy.checks.fuzz")
    sub = parser.add_subparsers(dest="cmd", required=True)
    w = sub.add_parser("worker")
    w.add_argument("export")
    w.add_argument("streams", nargs="+")
    w.add_argument("--seed", type=int, default=0)
    w.add_argument("--first", type=int, default=0)
    w.add_argument("--count", type=int, default=100)
    w.add_argument("--partial", action="store_true")
    args = parser.parse_args(argv)
    _worker(args.export, args.streams, args.seed, args.first, args.count, args.partial)
    return 0


if __name__ == "__main__":
    sys.exit(_main())
