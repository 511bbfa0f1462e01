"""The numba kernels of the multi-lane rANS coder (:mod:`.lanes` describes the format they read and write):
interleaved encode and decode, the escape fields, CompressAI's raw bits, and the scale-bucket lookup."""

from __future__ import annotations

import numba
import numpy as np
from llvmlite import ir
from numba.core import types
from numba.extending import intrinsic

PRECISION = 16
RANS_L = 1 << 31
MAX_LANES = 64
LUT_BITS = 10
_MASK32 = 0xFFFFFFFF
_X_MAX_SHIFT = 63 - PRECISION  # the encoder renormalises when x >= freq << 47
_SHORT_BITS, _SHORT_LEN, _LONG_BITS = 3, 7, 5  # an escape's bit length: 3 bits, 7 meaning 7 + 5 more bits
_MAX_ESCAPE_BITS = 33

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
