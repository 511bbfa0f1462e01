"""Multi-lane (interleaved) rANS: an exact, fast, hostile-input-safe entropy coder for the HPCM tables.

Same probability model as ``compressai.ans`` (the 16-bit CDF rows of a :class:`~.ggm.CDFTable`, CompressAI's
value/escape convention), but a different stream layout built for speed: the symbols of one stream are dealt
round-robin to ``L`` independent rANS coders ("lanes"), which decode in parallel threads and, inside a
thread, overlap each other's latency. The kernels are numba functions (``cache=True``: compiled on first use,
then loaded from numba's cache; nothing is compiled at install time).

Lane layout
-----------
A stream is a sequence of ``n`` symbols, each with a CDF index (a table row); for the y latent it is the
concatenation of the 11 coding steps in coding order, each step's tensor in C order. Symbol ``i`` of the
sequence is coded by lane ``i % L``, and all lanes share one stream of 32-bit words, in the order the decoder
reads them: the decoder walks ``i = 0, 1, 2, ...`` and each lane takes its renormalisation words from the
shared stream when it needs them (the encoder walks the sequence backwards and writes the words backwards, so
the two orders mirror each other). The lanes' dependency chains are independent, so one thread decodes ``L``
symbols at a time in its pipeline; and because the words come in decoding order, any prefix of a payload
decodes exactly as far as it goes (a progressive decoder stops at the first step whose words are missing).
The decoder may be fed the indexes step by step (any split of the sequence into contiguous runs): the lanes
keep their state between calls.

Symbol coding (per lane)
------------------------
Row ``r`` of the table has ``cdf_length[r] = k + 2`` entries ``cdf[r, 0..k+1]`` (0 ... 65536, strictly
increasing): ``k + 1`` coded symbols, the last of which (``k``) is the escape. A symbol value ``s`` with
``v = s - offset[r]`` in ``[0, k)`` is coded as symbol ``v``. Any other int32 value is coded as the escape
symbol followed by bypass fields (uniform symbols of ``b`` bits, i.e. frequency ``2**(16 - b)``):

- ``z = 2 * (-v - 1) + 1`` if ``v < 0``, else ``z = 2 * (v - k)`` (so ``0 <= z < 2**33``), ``m`` its bit
  length (0 for ``z = 0``);
- a 3-bit field: ``m`` if ``m < 7``, else 7 followed by a 5-bit field ``m - 7`` (a decoder refuses ``m > 33``);
- the ``m - 1`` bits of ``z`` below its leading 1 (none if ``m <= 1``), in fields of 16 bits, least
  significant first, the last holding the remaining ``m - 1 - 16 j`` bits.

So the values just outside the row cost the escape plus 3 bits, and an escape is at most 4 bypass fields:
decoding work per symbol is bounded.

The coder is rANS with a 64-bit state ``x`` in ``[2**31, 2**63)``, 16-bit probabilities and 32-bit
renormalisation words (ryg_rans' ``rans64`` parameters, also CompressAI's): decoding a symbol with
``(start, freq)`` is ``x = freq * (x >> 16) + (x & 0xffff) - start``, followed, when ``x < 2**31``, by
``x = (x << 32) | next_word``. An encoder starts every lane at ``x = 2**31``, so a decoder that has read all
symbols must find every lane back at ``x = 2**31`` and every word consumed; it checks this after the last
symbol.

Byte format
-----------
::

    varint L                      lane count, 1 ... 64
    2 L words                     the initial decoder state of lane 0, 1, ..., L-1 (low word first)
    words                         the renormalisation words, in decoding order

Varints are unsigned LEB128 (7 bits per byte, least significant group first, high bit = more bytes follow),
at most 5 bytes, minimal. Words are little-endian uint32; the payload after the varint is a whole number of
words.

CompressAI streams
------------------
:class:`LegacyDecoder` reads the streams of ``compressai.ans`` (the official HPCM code's and this project's
version 1 and 2 containers) with the same bounds-checked kernels: one lane, CompressAI's escape (the escape
symbol, then 4-bit raw fields: a count, extended while it is 15, then the value's nibbles).

Safety
------
The decoder never trusts the payload: the header is validated in Python, every word read in the kernels is
bounds-checked against the payload's end, escape fields are range-checked, CDF indexes are checked against the
table, and running out of words, an impossible escape, or a payload that does not end where the last symbol
ends raise :class:`~hpcm_deploy.errors.BitstreamError` (never garbage, a crash or a hang). A valid-looking
payload of the wrong content still decodes to wrong symbols with high probability of an end-of-stream error,
but like any entropy coder this is no checksum.

Threads
-------
Kernels release the GIL. A batch call spreads its images over at most :func:`get_threads` threads: its own and
a module-level pool shared by all callers, so the number of coding threads stays bounded however many threads
call in. The default is ``HPCM_ENTROPY_THREADS``, else half the usable CPUs (1 ... 8; 1 on a 2-CPU machine,
where a second coding thread competes with the model and measured slower under load); change it with
:func:`set_threads`. numba's own ``parallel=True`` is deliberately not used: its default threading layer
aborts the process on concurrent launches from several Python threads.
"""


from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from ..errors import BitstreamError
from .coding_threads import _parallelism, _run, get_threads, set_threads
from .lane_table import LaneTable, ScaleIndexer, _reciprocals, scale_indexes
from .rans_kernels import (
    _ERRORS,
    MAX_LANES,
    PRECISION,
    RANS_L,
    _decode_interleaved,
    _encode_interleaved,
    _scan,
)
from .varint import read_varint, varint

__all__ = ["MAX_LANES", "PRECISION", "RANS_L", "LaneDecoder", "LaneEncoder", "LaneTable", "LegacyDecoder",
           "ScaleIndexer", "choose_lanes", "decode_batch", "encode", "get_threads", "read_varint", "scale_indexes",
           "set_threads", "varint", "warmup", "_reciprocals"]


# ----------------------------------------------------------------------------------------------- lanes
def choose_lanes(n_symbols: int, payload_bytes: int | None = None) -> int:
    """The lane count the encoder uses by default: a power of two, 1 ... 8.

    - At most one lane per 4096 symbols, 8 from 32768 symbols on: one thread decodes 4-8 interleaved lanes at
      about twice the speed of one lane (their dependency chains overlap), more lanes add nothing.
    - Each lane costs 8 bytes (its final state), so when the payload's size is known (``payload_bytes``, the
      encoder estimates it), at most ``1 + payload_bytes / 2000`` lanes: a multi-lane payload is at most
      0.4 % larger than a one-lane payload, also at low rates.
    """
    cap = max(1, min(8, int(n_symbols) // 4096))
    if payload_bytes is not None:
        cap = min(cap, 1 + max(0, int(payload_bytes)) // 2000)
    return 1 << (cap.bit_length() - 1)


def _int32(a: np.ndarray, name: str) -> np.ndarray:
    """``a`` flattened (C order) as a contiguous int32 array; a copy only where needed."""
    a = np.asarray(a)
    if a.dtype == np.int32 and a.flags.c_contiguous and a.flags.writeable:
        return a.reshape(-1)  # the codecs' case, taken first: a view, no NumPy passes over the data
    if a.dtype.kind not in "iu":
        raise ValueError(f"{name} must be an integer array, not {a.dtype}")
    if a.dtype != np.int32 and a.size and (int(a.min()) < -(1 << 31) or int(a.max()) >= 1 << 31):
        raise ValueError(f"{name} do not fit in int32")
    a = np.ascontiguousarray(a, dtype=np.int32).reshape(-1)
    return a if a.flags.writeable else a.copy()  # one kernel signature: numba types read-only arrays apart


def _check_rows(indexes: np.ndarray, table: LaneTable, error: type[Exception]) -> None:
    if indexes.size and (int(indexes.min()) < 0 or int(indexes.max()) >= table.rows):
        raise error(f"CDF index outside the table (0 ... {table.rows - 1})")


class LaneEncoder:
    """Collects ``(symbols, indexes)`` runs (any shape, C order) and encodes them as one lane payload.

    ``lanes`` fixes the lane count (1 ... 64); by default :func:`choose_lanes` picks it from the number of
    symbols and the estimated payload size. The coding itself happens in :meth:`finish` (rANS encodes
    backwards); call it once. Out-of-table indexes are a ValueError.
    """

    def __init__(self, table: LaneTable, lanes: int | None = None) -> None:
        if lanes is not None and not 1 <= lanes <= MAX_LANES:
            raise ValueError(f"lane count must be in 1 ... {MAX_LANES}, not {lanes}")
        self.table = table
        self.lanes = lanes
        self._symbols: list[np.ndarray] = []
        self._indexes: list[np.ndarray] = []

    def write(self, symbols: np.ndarray, indexes: np.ndarray) -> None:
        """Append a run (copied: the arrays may be reused afterwards)."""
        symbols, indexes = np.asarray(symbols), np.asarray(indexes)
        if symbols.shape != indexes.shape:
            raise ValueError(f"symbols {symbols.shape} and indexes {indexes.shape} differ in shape")
        flat_idx = _int32(indexes, "indexes")
        _check_rows(flat_idx, self.table, ValueError)
        self._symbols.append(np.array(_int32(symbols, "symbols")))
        self._indexes.append(np.array(flat_idx))

    def finish(self) -> bytes:
        symbols = np.concatenate(self._symbols) if self._symbols else np.zeros(0, np.int32)
        indexes = np.concatenate(self._indexes) if self._indexes else np.zeros(0, np.int32)
        self._symbols, self._indexes = [], []
        return encode(symbols, indexes, self.table, self.lanes)


def encode(symbols: np.ndarray, indexes: np.ndarray, table: LaneTable, lanes: int | None = None) -> bytes:
    """Encode a whole sequence (flattened in C order) as a lane payload; see :class:`LaneEncoder`."""
    symbols, indexes = np.asarray(symbols), np.asarray(indexes)
    if symbols.shape != indexes.shape:
        raise ValueError(f"symbols {symbols.shape} and indexes {indexes.shape} differ in shape")
    symbols, indexes = _int32(symbols, "symbols"), _int32(indexes, "indexes")
    _check_rows(indexes, table, ValueError)
    n = symbols.size
    escapes = np.empty(1, dtype=np.int64)
    cost = _scan(symbols, indexes, table.cdf_length, table.offset, table.cost, 1, escapes)
    n_lanes = choose_lanes(n, payload_bytes=int(cost) // 2048) if lanes is None else int(lanes)
    if not 1 <= n_lanes <= MAX_LANES:
        raise ValueError(f"lane count must be in 1 ... {MAX_LANES}, not {n_lanes}")
    # renormalisation words: at most 1 per symbol and 4 more per escape (its length and value fields)
    buf = np.empty(2 * n_lanes + n + 4 * int(escapes[0]), dtype=np.uint32)
    first = _encode_interleaved(symbols, indexes, table.cdf, table.cdf_length, table.offset, table.rcp,
                                table.rcp_shift, n_lanes, buf)
    return varint(n_lanes) + buf[first:].astype("<u4", copy=False).tobytes()


class _Decoder:
    """What both payload decoders share: the words, the lanes' states, the cursor, failure and end checks.

    :meth:`read` takes the CDF indexes of the next run (any shape) and returns its symbols (int32, same shape).
    ``total_symbols`` is the length of the whole sequence; after its last symbol the decoder checks that every
    lane ended exactly where the payload ends (else :class:`BitstreamError`). Any :class:`BitstreamError`
    leaves the decoder failed: later reads raise it again. Reading more than the remaining symbols is a
    ValueError. One decoder must not be used from two threads at once.
    """

    lanes = 1

    def __init__(self, words: np.ndarray, table: LaneTable, total_symbols: int, lanes: int) -> None:
        total_symbols = int(total_symbols)
        if total_symbols < 0:
            raise ValueError("total_symbols must be >= 0")
        self.table, self.total, self.lanes = table, total_symbols, lanes
        self._failed: str | None = None
        if words.size < 2 * lanes:
            raise BitstreamError("corrupted stream: an entropy-coded payload shorter than its coder state")
        self.words = words
        lo = words[0: 2 * lanes: 2].astype(np.int64)
        hi = words[1: 2 * lanes: 2].astype(np.int64)
        if (hi >= 1 << 31).any():
            raise BitstreamError("corrupted stream: invalid rANS state")
        self.state = (hi << 32) | lo
        if (self.state < RANS_L).any():
            raise BitstreamError("corrupted stream: invalid rANS state")
        self.cursor = np.array([2 * lanes, 0], dtype=np.int64)  # next word, symbols decoded
        if self.total == 0:
            self._check_end()

    @property
    def done(self) -> int:
        return int(self.cursor[1])

    header_bytes = 0

    @property
    def bytes_read(self) -> int:
        """Bytes of the payload the symbols decoded so far needed (the words come in decoding order)."""
        return self.header_bytes + 4 * int(self.cursor[0])

    @property
    def remaining(self) -> int:
        return self.total - self.done

    def read(self, indexes: np.ndarray) -> np.ndarray:
        indexes = np.asarray(indexes)
        return decode_batch([self], indexes.reshape(1, *indexes.shape))[0]

    def _check_end(self) -> None:
        if not (self.cursor[0] == self.words.size and (self.state == RANS_L).all()):
            self._failed = "corrupted stream: the entropy-coded payload does not end where its last symbol ends"
            raise BitstreamError(self._failed)

    def _decode(self, indexes: np.ndarray, out: np.ndarray) -> int:
        raise NotImplementedError


class LaneDecoder(_Decoder):
    """Decodes a lane payload (this module's format) run by run; see :class:`_Decoder`. The constructor
    validates the header (:class:`BitstreamError`). ``partial``: the payload may be a truncated prefix (its
    last incomplete word is dropped); a read then fails where the data ends, and every run before decoded
    exactly."""

    def __init__(self, data: bytes, table: LaneTable, total_symbols: int, partial: bool = False) -> None:
        data = bytes(data) if not isinstance(data, bytes) else data
        if not data:
            raise BitstreamError("empty lane payload")
        n_lanes, pos = read_varint(data, 0, "lane payload header")
        if not 1 <= n_lanes <= MAX_LANES:
            raise BitstreamError(f"corrupted lane payload header: {n_lanes} lanes (1 ... {MAX_LANES})")
        body = len(data) - pos
        if body % 4 and not partial:
            raise BitstreamError("corrupted lane payload: not a whole number of 32-bit words")
        words = np.frombuffer(data, dtype="<u4", count=body // 4, offset=pos).astype(np.uint32)
        self.partial = partial
        self.header_bytes = pos
        super().__init__(words, table, total_symbols, n_lanes)

    def _decode(self, indexes: np.ndarray, out: np.ndarray) -> int:
        t = self.table
        return int(_decode_interleaved(self.words, self.state, self.cursor, self.lanes, self.done, indexes, out,
                                       t.cdf, t.cdf_length, t.offset, t.lut, t.lut_shift, False))


class LegacyDecoder(_Decoder):
    """Decodes a ``compressai.ans`` stream (the official HPCM code's, this project's version 1 and 2
    containers) run by run, bounds-checked; see :class:`_Decoder`."""

    def __init__(self, data: bytes, table: LaneTable, total_symbols: int) -> None:
        data = bytes(data) if not isinstance(data, bytes) else data
        if len(data) % 4:
            raise BitstreamError("corrupted stream: a rANS stream is a whole number of 32-bit words")
        super().__init__(np.frombuffer(data, dtype="<u4").astype(np.uint32), table, total_symbols, 1)

    def _decode(self, indexes: np.ndarray, out: np.ndarray) -> int:
        t = self.table
        return int(_decode_interleaved(self.words, self.state, self.cursor, 1, self.done, indexes, out, t.cdf,
                                       t.cdf_length, t.offset, t.lut, t.lut_shift, True))


def decode_batch(decoders: Sequence[_Decoder], indexes: np.ndarray) -> np.ndarray:
    """The next run of every image: ``indexes[b]`` (any shape) are image ``b``'s CDF indexes. Returns int32
    symbols of the same shape ``[B, ...]``; the images are decoded in parallel (:func:`get_threads`).

    An index outside a decoder's table, or a corrupted payload, raises :class:`BitstreamError`; a decoder that
    failed keeps failing.
    """
    indexes = np.asarray(indexes)
    if indexes.ndim < 1 or indexes.shape[0] != len(decoders):
        raise ValueError(f"indexes {indexes.shape} do not hold one run for each of the {len(decoders)} decoders")
    batch = len(decoders)
    if len({id(dec) for dec in decoders}) != batch:
        raise ValueError("a decoder appears twice in the batch")
    if indexes.dtype != np.int32 and indexes.dtype.kind in "iu" and indexes.size:
        for dec in decoders:  # values int32 cannot hold are outside any table: a stream problem
            try:
                _check_rows(indexes, dec.table, BitstreamError)
            except BitstreamError as exc:
                dec._failed = str(exc)
                raise
    flat = _int32(indexes, "indexes").reshape(batch, -1) if batch else np.zeros((0, 0), np.int32)
    n = flat.shape[1]
    out = np.empty((batch, n), dtype=np.int32)
    for dec in decoders:
        if dec._failed is not None:
            raise BitstreamError(dec._failed)
        if n > dec.remaining:
            raise ValueError(f"reading {n} symbols, only {dec.remaining} of {dec.total} are left")
    if n:
        threads = _parallelism(batch * n, batch)
        groups = [list(range(k, batch, threads)) for k in range(threads)]

        def task(group: list[int]) -> Callable[[], list[tuple[int, int]]]:
            def run() -> list[tuple[int, int]]:
                return [(b, err) for b in group if (err := decoders[b]._decode(flat[b], out[b]))]
            return run

        failed = sorted(e for errors in _run([task(g) for g in groups]) for e in errors)
        for b, err in failed:
            decoders[b]._failed = _ERRORS[err] + (f" (image {b})" if batch > 1 else "")
        if failed:
            raise BitstreamError(decoders[failed[0][0]]._failed)
    ended = []
    for b, dec in enumerate(decoders):
        if n and dec.done == dec.total:
            try:
                dec._check_end()
            except BitstreamError:
                ended.append(b)
    if ended:
        raise BitstreamError(decoders[ended[0]]._failed + (f" (image {ended[0]})" if batch > 1 else ""))
    return out.reshape(indexes.shape)


def warmup() -> None:
    """Load (or, the first time, compile) every kernel now, e.g. on a background thread while models load.

    The first numba call of a process costs about 0.3-0.5 s (LLVM start-up) even with a warm cache, then
    a few ms per kernel; without a cache, compiling all kernels takes a few seconds (once: ``cache=True``).
    """
    table = LaneTable(np.array([[0, 1 << 15, 1 << PRECISION]], np.int32), np.array([3]), np.array([0]))
    symbols = np.array([0, 5, 1 << 20, -3], np.int32)  # with escapes
    indexes = np.zeros(symbols.size, np.int32)
    LaneDecoder(encode(symbols, indexes, table), table, symbols.size).read(indexes)
    try:
        LegacyDecoder(b"\0" * 8, table, 1).read(indexes[:1])
    except BitstreamError:
        pass
    scale_indexes(np.ones(2, np.float32), np.ones(2, np.float32))
