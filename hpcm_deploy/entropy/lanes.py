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

import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import numba
import numpy as np
from llvmlite import ir
from numba.core import types
from numba.extending import intrinsic

from ..errors import BitstreamError

_T = TypeVar("_T")

PRECISION = 16
RANS_L = 1 << 31
MAX_LANES = 64
LUT_BITS = 10
_MASK32 = 0xFFFFFFFF
_X_MAX_SHIFT = 63 - PRECISION  # the encoder renormalises when x >= freq << 47
_SHORT_BITS, _SHORT_LEN, _LONG_BITS = 3, 7, 5  # an escape's bit length: 3 bits, 7 meaning 7 + 5 more bits
_MAX_ESCAPE_BITS = 33
_VARINT_MAX_BYTES = 5

# kernel error codes (0: success)
_ERR_EOF = 1
_ERR_INDEX = 2
_ERR_ESCAPE = 3
_ERR_VALUE = 4
_ERRORS = {
    _ERR_EOF: "corrupted stream: a rANS lane ran out of data",
    _ERR_INDEX: "CDF index outside the table",
    _ERR_ESCAPE: "corrupted stream: invalid escape length",
    _ERR_VALUE: "corrupted stream: escaped value outside the int32 range",
}


def _kernel(fn):
    """A numba kernel: compiled on first use, cached on disk (next to this file, else in numba's user cache
    directory or ``NUMBA_CACHE_DIR``), and releasing the GIL."""
    try:
        return numba.njit(cache=True, nogil=True, error_model="numpy")(fn)
    except RuntimeError:  # no writable cache location: compile once per process instead
        return numba.njit(nogil=True, error_model="numpy")(fn)


def _inline(fn):
    """A helper of the kernels, inlined into them by numba (LLVM does not always inline across functions)."""
    return numba.njit(inline="always", error_model="numpy")(fn)


# ----------------------------------------------------------------------------------------------- kernels
@intrinsic
def _mulhi(typingctx, a, b):
    """High 64 bits of the 128-bit product of two uint64 (one ``mul`` instruction)."""
    def codegen(context, builder, signature, args):
        wide = ir.IntType(128)
        product = builder.mul(builder.zext(args[0], wide), builder.zext(args[1], wide))
        return builder.trunc(builder.lshr(product, ir.Constant(wide, 64)), ir.IntType(64))
    return types.uint64(types.uint64, types.uint64), codegen


@_inline
def _put(x, p, buf, start, freq):
    """Encode one symbol ``(start, freq)`` into state ``x``; renormalisation words go to ``buf[p - 1]``."""
    if x >= (freq << _X_MAX_SHIFT):
        p -= 1
        buf[p] = x & _MASK32
        x >>= 32
    ux, uf = np.uint64(x), np.uint64(freq)  # unsigned: numba's signed // adds floor-rounding work
    q = ux // uf
    return np.int64((q << np.uint64(PRECISION)) + (ux - q * uf) + np.uint64(start)), p


@_kernel
def _escape_fields(v, nvals, esc_start, esc_freq, starts, freqs):
    """The ``(start, freq)`` of the symbols coding an out-of-table value ``v`` (relative to the row's offset),
    in encoding order (bypass fields last to first, then the escape). Returns how many (at most 5)."""
    z = ((-v - 1) << 1) | 1 if v < 0 else (v - nvals) << 1
    m = 0
    t = z
    while t > 0:
        m += 1
        t >>= 1
    low = max(m - 1, 0)  # bits of z under its leading 1
    k = 0
    c = (low + 15) // 16 - 1
    while c >= 0:  # last field first: rANS is last in, first out
        bits = min(16, low - 16 * c)
        starts[k] = ((z >> (16 * c)) & ((1 << bits) - 1)) << (PRECISION - bits)
        freqs[k] = np.int64(1) << (PRECISION - bits)
        k += 1
        c -= 1
    if m >= _SHORT_LEN:
        starts[k] = np.int64(m - _SHORT_LEN) << (PRECISION - _LONG_BITS)
        freqs[k] = np.int64(1) << (PRECISION - _LONG_BITS)
        k += 1
    starts[k] = np.int64(min(m, _SHORT_LEN)) << (PRECISION - _SHORT_BITS)
    freqs[k] = np.int64(1) << (PRECISION - _SHORT_BITS)
    starts[k + 1] = esc_start
    freqs[k + 1] = esc_freq
    return k + 2


@_kernel
def _scan(symbols, indexes, cdf_length, offset, cost, n_lanes, escapes):
    """``escapes[l]``: the number of escaped symbols of lane ``l``. Returns the estimated size of the symbols in
    1/256 bits."""
    for lane in range(n_lanes):
        escapes[lane] = 0
    total = np.int64(0)
    for i in range(symbols.shape[0]):
        idx = indexes[i]
        v = np.int64(symbols[i]) - offset[idx]
        nvals = np.int64(cdf_length[idx]) - 2
        if 0 <= v < nvals:
            total += cost[idx, v]
        else:
            escapes[i % n_lanes] += 1
            total += cost[idx, nvals] + 24 * 256
    return total


@_kernel
def _encode_interleaved(symbols, indexes, cdf, cdf_length, offset, rcp, rcp_shift, n_lanes, buf):
    """Encode the whole sequence into the end of ``buf``, walking it backwards (symbol ``i`` by lane
    ``i % n_lanes``), then put the lanes' final states in front. Returns the index of the payload's first word.
    """
    n = symbols.shape[0]
    state = np.empty(n_lanes, np.int64)
    for lane in range(n_lanes):
        state[lane] = RANS_L
    starts = np.empty(5, np.int64)
    freqs = np.empty(5, np.int64)
    p = buf.shape[0]
    lane = (n - 1) % n_lanes if n else 0
    for i in range(n - 1, -1, -1):
        x = state[lane]
        idx = indexes[i]
        v = np.int64(symbols[i]) - offset[idx]
        nvals = np.int64(cdf_length[idx]) - 2
        if 0 <= v < nvals:  # _put with floor(x / freq) = mulhi(x, rcp) >> shift (written out: faster)
            start = np.int64(cdf[idx, v])
            freq = np.int64(cdf[idx, v + 1]) - start
            if x >= (freq << _X_MAX_SHIFT):
                p -= 1
                buf[p] = x & _MASK32
                x >>= 32
            ux = np.uint64(x)
            q = _mulhi(ux, rcp[idx, v]) >> np.uint64(rcp_shift[idx, v])
            if freq == 1:
                q = ux
            x = np.int64((q << np.uint64(PRECISION)) + (ux - q * np.uint64(freq)) + np.uint64(start))
        else:
            start = np.int64(cdf[idx, nvals])
            count = _escape_fields(v, nvals, start, np.int64(cdf[idx, nvals + 1]) - start, starts, freqs)
            for k in range(count):
                x, p = _put(x, p, buf, starts[k], freqs[k])
        state[lane] = x
        lane = lane - 1 if lane else n_lanes - 1
    p -= 2 * n_lanes
    for lane in range(n_lanes):
        buf[p + 2 * lane] = state[lane] & _MASK32
        buf[p + 2 * lane + 1] = state[lane] >> 32
    return p


@_inline
def _refill(x, p, end, words):
    """Renormalise a decoder state: below ``RANS_L`` it takes the next 32-bit word. Returns ``(x, p, ok)``,
    ``ok`` False where a word was needed past ``end``.

    Only CompressAI's raw-bit reads use it. The decode kernel writes the same lines out in its per-symbol
    paths: through this (or any) inlined helper returning a tuple, numba's code decoded 2.4x slower (measured
    with scripts/bench_entropy.py: 12 ms against 5 ms for HPCM-Base's 491,520 symbols)."""
    if x < RANS_L:
        if p >= end:
            return x, p, False
        x = (x << 32) | np.int64(words[p])
        p += 1
    return x, p, True


@_kernel
def _decode_interleaved(words, state, cursor, n_lanes, first, indexes, out, cdf, cdf_length, offset, lut,
                        lut_shift, compressai):
    """Decode symbols ``first .. first + len(indexes) - 1`` of the sequence into ``out`` (``indexes[i]``,
    ``out[i]``: symbol ``first + i``, coded by lane ``(first + i) % n_lanes``). ``compressai``: a
    ``compressai.ans`` stream (one lane; its escapes: the escape symbol, then 4-bit raw fields) instead of a lane
    payload.

    ``state``: the lanes' rANS states; ``cursor[0]``: the next word of ``words`` (the shared stream). Returns 0
    or an error code, after updating ``state`` and ``cursor`` to where decoding stopped (on an error: the lanes
    of the symbols before the failing one are exact, so a truncated payload decodes exactly up to its end).
    """
    n = indexes.shape[0]
    rows = cdf.shape[0]
    end = words.shape[0]
    p = cursor[0]
    lane = first % n_lanes
    err = 0
    done = 0
    for i in range(n):
        idx = indexes[i]
        if idx < 0 or idx >= rows:
            err = _ERR_INDEX
            break
        # the symbol: the lookup table gives a lower bound of its position in the row, the row ends in 65536
        # (checked by LaneTable), so the search stops; then the state update and its renormalisation
        x = state[lane]
        slot = x & 0xFFFF
        s = np.int64(lut[idx, slot >> lut_shift])
        while cdf[idx, s + 1] <= slot:
            s += 1
        start = np.int64(cdf[idx, s])
        x = (np.int64(cdf[idx, s + 1]) - start) * (x >> PRECISION) + slot - start
        if x < RANS_L:
            if p >= end:
                err = _ERR_EOF
                break
            x = (x << 32) | np.int64(words[p])
            p += 1
        nvals = np.int64(cdf_length[idx]) - 2
        if s < nvals:
            out[i] = s + offset[idx]
        elif compressai:
            x, p, value, err = _compressai_escape(x, p, end, words, nvals)
            if err:
                break
            out[i] = ((value + offset[idx] + (1 << 31)) & 0xFFFFFFFF) - (1 << 31)  # int32 arithmetic, as CompressAI
        else:
            # an escape: its bypass fields, in order the 3-bit length m, its 5-bit extension where the length
            # field says 7, then the bits of z under its leading 1 in fields of at most 16 bits (written out here,
            # not called: this is the path of every out-of-table value, 1.35x faster inline)
            m = -1
            extended = False
            z = np.int64(0)
            low = 0
            c = 0
            bits = _SHORT_BITS
            while bits > 0:
                slot = x & 0xFFFF
                field = slot >> (PRECISION - bits)
                x = ((x >> PRECISION) << (PRECISION - bits)) + (slot & ((np.int64(1) << (PRECISION - bits)) - 1))
                if x < RANS_L:
                    if p >= end:
                        err = _ERR_EOF
                        break
                    x = (x << 32) | np.int64(words[p])
                    p += 1
                if m >= 0:  # a field of z
                    z |= field << (16 * c)
                    c += 1
                elif field == _SHORT_LEN and not extended:
                    extended = True
                    bits = _LONG_BITS
                    continue
                else:  # the length
                    m = field + _SHORT_LEN if extended else field
                    if m > _MAX_ESCAPE_BITS:
                        err = _ERR_ESCAPE
                        break
                    low = max(m - 1, 0)
                    z = np.int64(1) << low if m > 0 else np.int64(0)
                bits = min(16, low - 16 * c)
            if err:
                break
            value = (-(z >> 1) - 1 if z & 1 else nvals + (z >> 1)) + offset[idx]
            if value < -(1 << 31) or value >= (1 << 31):
                err = _ERR_VALUE
                break
            out[i] = value
        state[lane] = x
        lane = lane + 1 if lane + 1 < n_lanes else 0
        done += 1
    cursor[0] = p
    cursor[1] = first + done  # symbols decoded exactly
    return err


@_kernel
def _raw_bits(x, p, end, words, bits):
    """CompressAI's bypass read: the state's low ``bits`` bits. Returns ``(x, p, value)``, -1 past the end."""
    value = x & ((np.int64(1) << bits) - 1)
    x >>= bits
    x, p, ok = _refill(x, p, end, words)
    return x, p, value if ok else np.int64(-1)


@_kernel
def _compressai_escape(x, p, end, words, max_value):
    """CompressAI's escaped value: 4-bit raw fields, a count (continued while 15), then the value's nibbles,
    least significant first. Returns ``(x, p, value, error)``."""
    x, p, field = _raw_bits(x, p, end, words, 4)
    count = field
    while field == 15 and count <= 8:
        x, p, field = _raw_bits(x, p, end, words, 4)
        count += field
    if field < 0:
        return x, p, 0, _ERR_EOF
    if count > 8:  # an int32 needs at most 8 nibbles: anything longer is not CompressAI's
        return x, p, 0, _ERR_ESCAPE
    raw = np.int64(0)
    for j in range(count):
        x, p, field = _raw_bits(x, p, end, words, 4)
        if field < 0:
            return x, p, 0, _ERR_EOF
        raw |= field << (4 * j)
    raw = ((raw + (1 << 31)) & 0xFFFFFFFF) - (1 << 31)  # CompressAI holds it in an int32
    value = raw >> 1
    return x, p, (-value - 1 if raw & 1 else value + max_value), 0


@_kernel
def _bucket_indexes(scales, bits, lut, edges, out):
    """``out[i]`` = number of ``edges`` strictly below ``scales[i]`` (NaN: ``len(edges)``). ``edges`` ends with
    a +inf sentinel; ``lut`` maps the top 13 bits of a float32 to a lower bound of the answer."""
    n = edges.shape[0] - 1
    for i in range(scales.shape[0]):
        x = scales[i]
        if x != x:
            out[i] = n
            continue
        k = np.int64(lut[(bits[i] >> 19) & 0x1FFF])
        k += edges[k] < x  # branch-free: a bucket holds at most one edge of a table as fine as HPCM's
        while edges[k] < x:  # any further edges of a finer table
            k += 1
        out[i] = k


# ----------------------------------------------------------------------------------------------- threads
def _default_threads() -> int:
    env = os.environ.get("HPCM_ENTROPY_THREADS")
    if env:
        try:
            return max(1, min(int(env), 64))
        except ValueError:
            pass
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cpus = os.cpu_count() or 1
    # half the CPUs: the model runs beside the coder (on 2 CPUs, 1 thread: see the module docstring)
    return max(1, min(cpus // 2, 8))


_threads = _default_threads()
_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()
_MIN_SYMBOLS_PER_THREAD = 8192  # below this a thread hand-off costs more than it saves


def get_threads() -> int:
    """How many threads the coders use at most (the calling thread included)."""
    return _threads


def set_threads(n: int) -> None:
    """Bound the coding threads (the calling thread included) for every later call; 1 disables the pool."""
    global _threads, _pool
    n = int(n)
    if not 1 <= n <= 64:
        raise ValueError(f"entropy coding threads must be in 1 ... 64, not {n}")
    with _pool_lock:
        if _pool is not None:
            _pool.shutdown(wait=False)
            _pool = None
        _threads = n


def _run(tasks: list[Callable[[], _T]]) -> list[_T]:
    """Run ``tasks``: the first on the calling thread, the others on the shared pool."""
    global _pool
    if len(tasks) == 1:
        return [tasks[0]()]
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(max_workers=max(1, _threads - 1), thread_name_prefix="hpcm-rans")
        pool = _pool
    try:
        futures = [pool.submit(t) for t in tasks[1:]]
    except RuntimeError:  # the pool was replaced by set_threads meanwhile: run inline
        return [t() for t in tasks]
    first = tasks[0]()
    return [first, *(f.result() for f in futures)]


def _parallelism(symbols: int, units: int) -> int:
    return max(1, min(_threads, units, symbols // _MIN_SYMBOLS_PER_THREAD))


# ----------------------------------------------------------------------------------------------- tables
def _reciprocals(freq: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(rcp, shift)`` with ``floor(x / f) = (x * rcp) >> (64 + shift)`` for all ``0 <= x < 2**63``, for each
    frequency ``f`` in ``[2, 2**16]`` (``f = 1``: the encoder uses ``x`` itself; ``f = 0``: unused, 0).

    Granlund and Montgomery's round-up method with ``N = 63``-bit dividends: ``l = ceil(log2 f)`` and
    ``rcp = floor(2**(63 + l) / f) + 1`` (under ``2**64``); then ``2**(63+l) < rcp * f <= 2**(63+l) + 2**l``,
    which makes ``floor(x * rcp / 2**(63 + l))`` exact, and ``shift = l - 1``.
    """
    values, inverse = np.unique(freq, return_inverse=True)
    bits = [(f - 1).bit_length() if f > 1 else 1 for f in values.tolist()]
    rcp = np.array([(1 << (63 + b)) // f + 1 if f > 1 else 0 for f, b in zip(values.tolist(), bits)], np.uint64)
    shift = np.array([b - 1 for b in bits], np.uint8)
    return rcp[inverse].reshape(freq.shape), shift[inverse].reshape(freq.shape)


class LaneTable:
    """A :class:`~.ggm.CDFTable` in the form the kernels read, validated once (build with :meth:`from_cdf_table`).

    ``lut[r, b]`` is the last symbol of row ``r`` whose CDF start is at or below ``b << (16 - LUT_BITS)``:
    the decoder starts its search there (on average within a step of the right symbol).
    """

    def __init__(self, cdf: np.ndarray, cdf_length: np.ndarray, offset: np.ndarray) -> None:
        cdf = np.ascontiguousarray(cdf, dtype=np.int32)
        cdf_length = np.ascontiguousarray(cdf_length, dtype=np.int32).reshape(-1)
        offset = np.ascontiguousarray(offset, dtype=np.int32).reshape(-1)
        if cdf.ndim != 2 or cdf.shape[0] < 1 or cdf_length.shape != (cdf.shape[0],) or offset.shape != (
                cdf.shape[0],):
            raise ValueError("CDF table: cdf must be [rows, width] with one cdf_length and offset per row")
        rows, width = cdf.shape
        if cdf_length.min() < 2 or cdf_length.max() > width:
            raise ValueError("CDF table: cdf_length outside 2 ... width")
        lut = np.empty((rows, 1 << LUT_BITS), dtype=np.uint16)
        buckets = np.arange(1 << LUT_BITS, dtype=np.int64) << (PRECISION - LUT_BITS)
        for r in range(rows):
            row = cdf[r, : cdf_length[r]].astype(np.int64)
            if row[0] != 0 or row[-1] != 1 << PRECISION or not (np.diff(row) > 0).all():
                raise ValueError(f"CDF table: row {r} is not a strictly increasing 0 ... {1 << PRECISION} CDF")
            lut[r] = np.searchsorted(row, buckets, side="right") - 1
        self.cdf, self.cdf_length, self.offset, self.lut = cdf, cdf_length, offset, lut
        self.lut_shift = PRECISION - LUT_BITS
        # per symbol (row, s < cdf_length - 1): the reciprocal of its frequency, for the encoder, and its cost
        freq = np.diff(cdf.astype(np.int64), axis=1)
        freq[np.arange(width - 1)[None, :] >= cdf_length[:, None] - 1] = 0
        self.rcp, self.rcp_shift = _reciprocals(freq)
        with np.errstate(divide="ignore"):
            self.cost = np.where(freq > 0, np.round(256 * (PRECISION - np.log2(np.maximum(freq, 1)))), 0).astype(
                np.int32)
        for a in (self.cdf, self.cdf_length, self.offset, self.lut, self.rcp, self.rcp_shift, self.cost):
            a.setflags(write=False)

    @classmethod
    def from_cdf_table(cls, table: Any) -> LaneTable:
        """From a :class:`~.ggm.CDFTable` (anything with ``cdf``, ``cdf_length`` and ``offset``)."""
        return cls(table.cdf, table.cdf_length, table.offset)

    @property
    def rows(self) -> int:
        return int(self.cdf.shape[0])


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


def varint(value: int) -> bytes:
    """``value`` (>= 0) as an unsigned LEB128 varint: 7 bits a byte, low first, high bit = more follow."""
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _read_varint(data: bytes, pos: int) -> tuple[int, int]:
    value = 0
    for k in range(_VARINT_MAX_BYTES):
        if pos >= len(data):
            raise BitstreamError("truncated lane payload header")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << (7 * k)
        if not byte & 0x80:
            if byte == 0 and k > 0:
                raise BitstreamError("corrupted lane payload header: non-minimal varint")
            return value, pos
    raise BitstreamError("corrupted lane payload header: varint longer than 5 bytes")


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
        n_lanes, pos = _read_varint(data, 0)
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


# ----------------------------------------------------------------------------------------------- scales
class ScaleIndexer:
    """:func:`scale_indexes` for one fixed table of edges, prepared once: the per-step path of a codec.

    Between two coding steps the network has evicted NumPy's and numba's dispatch code from the caches, so
    each NumPy call on the way to a kernel costs tens of microseconds there (checking the edges for NaN alone
    was 0.7 ms per HPCM-Base image); an indexer validates the edges and builds its lookup table once.
    """

    def __init__(self, edges: np.ndarray) -> None:
        edges = np.array(edges)  # a private copy: later changes to the caller's array must not matter
        self.edges = edges
        self._fast = edges.dtype == np.float32 and edges.ndim == 1 and not np.isnan(edges).any()
        if self._fast:
            top = np.arange(1 << 13, dtype=np.uint32) << np.uint32(19)
            lo = top.view(np.float32)
            hi = (top | np.uint32(0x7FFFF)).view(np.float32)
            least = np.where(np.arange(1 << 13) < (1 << 12), lo, hi)  # sign bit set: values fall as bits rise
            least = np.where(np.isnan(least), np.float32(-np.inf), least)
            self._lut = np.searchsorted(edges, least, side="left").astype(np.int32)
            self._padded = np.append(edges, np.float32(np.inf)).astype(np.float32)

    def __call__(self, scales: np.ndarray) -> np.ndarray:
        scales = np.asarray(scales)
        if not self._fast or scales.dtype != np.float32:
            return np.searchsorted(self.edges, scales, side="left").astype(np.int32)
        flat = scales.reshape(-1)  # a view where scales is contiguous (the backends' outputs are)
        if not (flat.flags.c_contiguous and flat.flags.writeable):
            flat = flat.copy()  # one kernel signature: numba types read-only and strided arrays apart
        out = np.empty(flat.shape, dtype=np.int32)
        _bucket_indexes(flat, flat.view(np.int32), self._lut, self._padded, out)
        return out.reshape(scales.shape)


_INDEXERS: dict[tuple, ScaleIndexer] = {}


def scale_indexes(scales: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Number of ``edges`` strictly below each scale: ``numpy.searchsorted(edges, scales, side="left")`` as
    int32 of the shape of ``scales`` (NaN sorts last: ``len(edges)``). ``edges`` must be sorted.

    float32 scales and edges (the codec's case) take a numba kernel: a 13-bit lookup on the float's bits, then
    at most a few comparisons; other dtypes fall back to numpy. A codec coding many steps with the same edges
    should hold a :class:`ScaleIndexer` instead.
    """
    edges = np.asarray(edges)
    key = (edges.dtype.str, edges.shape, edges.tobytes())
    indexer = _INDEXERS.get(key)
    if indexer is None:
        if len(_INDEXERS) >= 16:
            _INDEXERS.clear()
        indexer = _INDEXERS[key] = ScaleIndexer(edges)
    return indexer(scales)


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

