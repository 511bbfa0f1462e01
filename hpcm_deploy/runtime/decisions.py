"""Signalled decisions: what makes a stream decode exactly on a backend whose arithmetic differs slightly.

At the decoder, the only discontinuous decisions are the CDF index chosen from each predicted scale and the
memory banks' top-k choices; everything else moves continuously with small arithmetic differences. So the
encoder, which knows its own values, marks every decision within a margin of its discontinuity:

- a CDF index whose scale lies within ``margins.scale`` (in natural-log units, i.e. relative distance) of a
  bucket edge;
- a top-k choice whose score gap (k-th best minus the next, in cosine similarity) is below ``margins.topk``;

and writes those decisions into the stream. The decoder takes a written decision wherever one is given and
computes the rest. A decoder whose scales stay within ``margins.scale`` (relative) and whose similarity
scores stay within ``margins.topk / 2`` of the encoder's then reads exactly the encoder's symbols.

Side-information layout (all varints are unsigned LEB128)::

    u8        layout version (1)
    f32 BE    margins.scale          (what the encoder used; informative for the decoder)
    f32 BE    margins.topk
    varint    number of steps with CDF decisions, then per such step:
      u8        coding step (0..10)
      varint    count n
      n x       varint  position delta (flat index in the step's packed tensor of this image, ascending;
                        the first delta is from -1)
      n x       u8      CDF index
    varint    number of top-k decisions, then per decision:
      u8        coding step
      u8        k
      k x       u8 slot
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

import numpy as np

from ..entropy.varint import read_varint, varint
from ..errors import BitstreamError, ConfigError

LAYOUT = 1
_MAX_DELTA = 1 << 32  # no coded step holds this many positions (checked against the step when decoding)


@dataclass(frozen=True)
class Margins:
    """How close to a discontinuity a decision must be for the encoder to signal it."""

    scale: float = 2e-5
    topk: float = 1e-4


DEFAULT_MARGINS = Margins()


@dataclass
class SideInfo:
    """The signalled decisions of one image."""

    margins: Margins = field(default_factory=Margins)
    cdf: dict[int, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)  # step -> (positions, indexes)
    topk: dict[int, np.ndarray] = field(default_factory=dict)  # step -> chosen slots

    def __bool__(self) -> bool:
        return bool(self.cdf) or bool(self.topk)

    @property
    def count(self) -> int:
        return sum(len(p) for p, _ in self.cdf.values()) + len(self.topk)

    def to_bytes(self) -> bytes:
        out = bytearray([LAYOUT]) + struct.pack(">ff", self.margins.scale, self.margins.topk)
        out += varint(len(self.cdf))
        for step in sorted(self.cdf):
            positions, indexes = self.cdf[step]
            out.append(step)
            out += varint(len(positions))
            prev = -1
            for p in positions.tolist():
                out += varint(p - prev - 1)
                prev = p
            out += np.asarray(indexes, dtype=np.uint8).tobytes()
        out += varint(len(self.topk))
        for step in sorted(self.topk):
            slots = np.asarray(self.topk[step], dtype=np.uint8)
            out += bytes([step, len(slots)]) + slots.tobytes()
        return bytes(out)

    @classmethod
    def from_bytes(cls, data: bytes) -> SideInfo:
        try:
            reader = _Reader(data)
            if reader.u8() != LAYOUT:
                raise BitstreamError("side information has an unknown layout")
            scale, topk = struct.unpack(">ff", reader.take(8))
            info = cls(Margins(scale, topk))
            for _ in range(reader.varint()):
                step, n = reader.u8(), reader.varint()
                if n > len(data) or step in info.cdf:  # each position takes a byte at least; a step comes once
                    raise BitstreamError("corrupted stream: side information announces more than it holds")
                deltas = [reader.varint() for _ in range(n)]
                if any(d >= _MAX_DELTA for d in deltas):
                    raise BitstreamError("corrupted stream: a signalled position beyond any coded step")
                positions = np.cumsum(np.array(deltas, dtype=np.int64) + 1) - 1
                info.cdf[step] = (positions, np.frombuffer(reader.take(n), dtype=np.uint8).astype(np.int32))
            for _ in range(reader.varint()):
                step, k = reader.u8(), reader.u8()
                if step in info.topk:
                    raise BitstreamError("corrupted stream: a bank choice signalled twice")
                info.topk[step] = np.frombuffer(reader.take(k), dtype=np.uint8).astype(np.int64)
            if reader.pos != len(data):
                raise BitstreamError("side information has trailing bytes")
        except (IndexError, struct.error):
            raise BitstreamError("corrupted stream: side information is truncated") from None
        return info


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise IndexError
        chunk = self.data[self.pos:self.pos + n]
        self.pos += n
        return chunk

    def u8(self) -> int:
        return self.take(1)[0]

    def varint(self) -> int:
        try:
            value, self.pos = read_varint(self.data, self.pos, "side information", max_bytes=10, minimal=False)
        except BitstreamError:  # truncated or over-long: one message for every way side information is cut
            raise IndexError from None
        return value


def near_edges(scales: np.ndarray, edges: np.ndarray, margin: float) -> np.ndarray:
    """Boolean mask of scales within ``margin`` (natural-log distance) of a bucket edge."""
    s = scales.astype(np.float64)
    log_edges = np.log(edges.astype(np.float64))
    i = np.searchsorted(edges, scales, side="left")
    with np.errstate(divide="ignore", invalid="ignore"):
        ls = np.log(np.where(s > 0, s, np.nan))
        below = np.abs(ls - log_edges[np.clip(i - 1, 0, len(edges) - 1)])
        above = np.abs(ls - log_edges[np.clip(i, 0, len(edges) - 1)])
    near = np.minimum(below, above) < margin
    return np.nan_to_num(near, nan=False).astype(bool)


def margins_for(margin: float | None) -> Margins | None:
    """The margins of a single user-facing number (``compress --margin``): ``None`` keeps the defaults (fp32
    decoders), 0 signals nothing, a positive value is the scale margin (the top-k margin is never below its
    default). Negative margins are refused."""
    if margin is None:
        return DEFAULT_MARGINS
    if margin < 0:
        raise ConfigError("the signalling margin must be 0 (no signalled decisions) or positive")
    if margin == 0:
        return None
    return Margins(scale=margin, topk=max(margin, DEFAULT_MARGINS.topk))
