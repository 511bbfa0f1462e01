"""The multi-lane rANS coder: exact round trips, scale buckets, and decoding of hostile payloads."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import warnings

import numpy as np
import pytest
import torch

from hpcm_deploy.entropy import ggm, lanes
from hpcm_deploy.errors import BitstreamError

I32_MIN, I32_MAX = -(1 << 31), (1 << 31) - 1


@pytest.fixture(scope="module")
def y_table() -> lanes.LaneTable:
    return lanes.LaneTable.from_cdf_table(ggm.build_cdf_table(ggm.scale_table()))


@pytest.fixture(scope="module")
def z_table() -> lanes.LaneTable:
    torch.manual_seed(0)
    return lanes.LaneTable.from_cdf_table(ggm.build_cdf_table(torch.rand(64) * 10 + 0.2))


@pytest.fixture(scope="module")
def edges() -> np.ndarray:
    return ggm.scale_table()[:-1].numpy().astype(np.float32)


@pytest.fixture
def threads():
    """Restore the thread setting after a test that changes it."""
    before = lanes.get_threads()
    yield
    lanes.set_threads(before)


def symbols_for(table: lanes.LaneTable, indexes: np.ndarray, rng: np.random.Generator,
                extreme: float = 0.02) -> np.ndarray:
    """Symbols mostly inside each row's range, some just outside, some anywhere in int32."""
    low = table.offset[indexes].astype(np.int64)
    width = table.cdf_length[indexes].astype(np.int64) - 2
    sym = low + (rng.random(indexes.shape) * width).astype(np.int64)
    near = rng.random(indexes.shape) < extreme
    sym[near] = np.where(rng.random(near.sum()) < 0.5, low[near] - rng.integers(1, 40, near.sum()),
                         low[near] + width[near] + rng.integers(0, 40, near.sum()))
    wild = rng.random(indexes.shape) < extreme / 2
    sym[wild] = rng.choice(np.array([0, 1, -1, I32_MIN, I32_MAX, I32_MIN + 1, I32_MAX - 1, 1 << 30, -(1 << 30)]),
                           wild.sum())
    return sym.astype(np.int32)


def decode_steps(data: bytes, table: lanes.LaneTable, indexes: np.ndarray, sizes: list[int]) -> np.ndarray:
    dec = lanes.LaneDecoder(data, table, indexes.size)
    bounds = np.cumsum([0, *sizes])
    out = [dec.read(indexes[a:b]) for a, b in zip(bounds[:-1], bounds[1:])]
    assert dec.remaining == 0
    return np.concatenate(out)


# ------------------------------------------------------------------------------------------- round trips
@pytest.mark.parametrize("n_lanes", [1, 2, 7, 16])
def test_round_trip_every_row_and_extreme_values(y_table, z_table, n_lanes):
    rng = np.random.default_rng(n_lanes)
    for table in (y_table, z_table):
        indexes = rng.integers(0, table.rows, 5000).astype(np.int32)
        indexes[: table.rows] = np.arange(table.rows)  # every row at least once
        symbols = symbols_for(table, indexes, rng)
        symbols[-12:] = [0, 1, -1, I32_MIN, I32_MAX, I32_MIN, I32_MAX, 0, -1, 1, I32_MAX, I32_MIN]
        sizes = [0, 1, 999, 0, 17, 2500, 3, 0, 1480]  # uneven steps, empty ones included
        enc = lanes.LaneEncoder(table, lanes=n_lanes)
        start = 0
        for size in sizes:
            enc.write(symbols[start: start + size], indexes[start: start + size])
            start += size
        data = enc.finish()
        assert np.array_equal(decode_steps(data, table, indexes, sizes), symbols)
        # the run boundaries are the decoder's choice: one read, or other steps, give the same symbols
        assert np.array_equal(decode_steps(data, table, indexes, [5000]), symbols)
        assert np.array_equal(decode_steps(data, table, indexes, [1234, 0, 3766]), symbols)


def test_every_symbol_of_every_row(y_table):
    """Each row's full coded range, the escape's neighbours and far values, in every row."""
    rows, syms = [], []
    for r in range(y_table.rows):
        lo, k = int(y_table.offset[r]), int(y_table.cdf_length[r]) - 2
        values = np.arange(lo - 70000, lo + k + 70000, 997).tolist() + list(range(lo - 3, lo + k + 3))
        syms += values
        rows += [r] * len(values)
    indexes, symbols = np.array(rows, np.int32), np.array(syms, np.int32)
    data = lanes.encode(symbols, indexes, y_table, lanes=5)
    assert np.array_equal(lanes.LaneDecoder(data, y_table, symbols.size).read(indexes), symbols)


def test_shapes_dtypes_and_tiny_streams(y_table):
    rng = np.random.default_rng(1)
    idx = rng.integers(0, 60, (3, 4, 5)).astype(np.int64)  # other integer dtypes and any shape
    sym = symbols_for(y_table, idx.astype(np.int32), rng).astype(np.int64)
    data = lanes.encode(sym, idx, y_table)
    out = lanes.LaneDecoder(data, y_table, sym.size).read(idx)
    assert out.shape == idx.shape and out.dtype == np.int32 and np.array_equal(out, sym)
    for n_lanes in (1, 3):  # no symbol at all: the lane count and the lanes' initial states
        data = lanes.LaneEncoder(y_table, lanes=n_lanes).finish()
        assert len(data) == 1 + 8 * n_lanes
        dec = lanes.LaneDecoder(data, y_table, 0)
        assert dec.read(np.zeros(0, np.int32)).shape == (0,)
    # more lanes than symbols: the extra lanes are empty
    data = lanes.encode(np.array([5, -7], np.int32), np.array([3, 59], np.int32), y_table, lanes=16)
    assert lanes.LaneDecoder(data, y_table, 2).read(np.array([3, 59])).tolist() == [5, -7]


def test_batch_decode_equals_per_image_decode(y_table, threads):
    rng = np.random.default_rng(2)
    batch, n = 3, 40000
    indexes = rng.integers(0, 60, (batch, n)).astype(np.int32)
    symbols = np.stack([symbols_for(y_table, indexes[b], rng, 0.001) for b in range(batch)])
    payloads = [lanes.encode(symbols[b], indexes[b], y_table, lanes=(1, 4, 8)[b]) for b in range(batch)]
    sizes = [0, 10000, 1, 29999]
    for t in (1, 2, 3):
        lanes.set_threads(t)
        decoders = [lanes.LaneDecoder(p, y_table, n) for p in payloads]
        bounds = np.cumsum([0, *sizes])
        out = np.concatenate([lanes.decode_batch(decoders, indexes[:, a:b].reshape(batch, -1, 1))[..., 0]
                              for a, b in zip(bounds[:-1], bounds[1:])], axis=1)
        assert np.array_equal(out, symbols)
        single = [lanes.LaneDecoder(p, y_table, n).read(indexes[b]) for b, p in enumerate(payloads)]
        assert np.array_equal(np.stack(single), symbols)
        # the payload does not depend on the threads either
        assert lanes.encode(symbols[2], indexes[2], y_table, lanes=8) == payloads[2]


def test_size_matches_compressai(y_table):
    """Same model as CompressAI's coder: a one-lane payload is within a few bytes of its stream, and each
    further lane costs its 8-byte state."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        import compressai.ans as ans

    rng = np.random.default_rng(3)
    scales = np.exp(rng.uniform(np.log(0.12), np.log(8), 60000)).astype(np.float32)
    indexes = lanes.scale_indexes(scales, ggm.scale_table()[:-1].numpy())
    u = rng.random(scales.size)  # GGM(1.5) samples: sign * scale * Gamma(1 / beta) ** (1 / beta)
    mag = rng.gamma(1 / ggm.BETA, 1.0, scales.size) ** (1 / ggm.BETA)
    symbols = np.round(np.where(u < 0.5, -1, 1) * mag * scales).astype(np.int32)
    writer = ans.BufferedRansEncoder()
    writer.encode_with_indexes(symbols.tolist(), indexes.tolist(), *ggm.build_cdf_table(ggm.scale_table()).coder_args)
    reference = len(writer.flush())
    one = len(lanes.encode(symbols, indexes, y_table, lanes=1))
    eight = len(lanes.encode(symbols, indexes, y_table, lanes=8))
    assert abs(one - reference) <= 16
    assert 7 * 6 <= eight - one <= 7 * 10


def test_choose_lanes(y_table):
    counts = [0, 1, 4095, 4096, 8192, 16384, 32768, 98304, 491520, 10**7]
    chosen = [lanes.choose_lanes(n) for n in counts]
    assert chosen == [1, 1, 1, 1, 2, 4, 8, 8, 8, 8]
    # a small payload caps the lanes (each costs 8 bytes): 8 lanes need 14 kB
    sizes = (0, 1999, 2000, 6000, 13999, 14000, 10**6)
    assert [lanes.choose_lanes(491520, b) for b in sizes] == [1, 1, 2, 4, 4, 8, 8]
    # the encoder applies both rules: a low-rate stream of many symbols gets few lanes
    rng = np.random.default_rng(9)
    idx = np.zeros(300000, np.int32)  # the narrowest row: mostly zeros, ~0.06 bit per symbol
    sym = np.where(rng.random(idx.size) < 0.01, 1, 0).astype(np.int32)
    data = lanes.encode(sym, idx, y_table)
    assert data[0] == lanes.choose_lanes(idx.size, len(data)) < lanes.choose_lanes(idx.size) == 8
    assert np.array_equal(lanes.LaneDecoder(data, y_table, idx.size).read(idx), sym)


def test_reciprocals_divide_exactly():
    """The encoder's division by a frequency is a multiplication by its reciprocal: exact for every frequency
    and every state below 2**63 (checked at the edges: multiples of f and their neighbours, the top)."""
    freq = np.arange(2, (1 << 16) + 1, dtype=np.int64)
    rcp, shift = lanes._reciprocals(freq)
    rng = np.random.default_rng(10)
    top = (1 << 63) - 1
    for f, m, s, r in zip(freq.tolist(), rcp.tolist(), shift.tolist(), rng.integers(0, top, freq.size).tolist()):
        k = top // f
        for x in (top, k * f, k * f - 1, (k // 3) * f - 1, f - 1, f, r):
            assert (x * m) >> (64 + s) == x // f, (f, x)


def test_tables_are_validated(y_table):
    cdf = np.array([[0, 100, 65536, 0]], np.int32)
    lanes.LaneTable(cdf, np.array([3]), np.array([0]))
    for bad_cdf, length in [([[0, 100, 65535, 0]], 3), ([[0, 100, 100, 65536]], 4), ([[1, 100, 65536, 0]], 3),
                            ([[0, 100, 65536, 0]], 5), ([[0, 65536, 0, 0]], 1)]:
        with pytest.raises(ValueError):
            lanes.LaneTable(np.array(bad_cdf, np.int32), np.array([length]), np.array([0]))


def test_encoder_refuses_bad_input(y_table):
    enc = lanes.LaneEncoder(y_table)
    with pytest.raises(ValueError):
        enc.write(np.zeros(3, np.int32), np.zeros(4, np.int32))
    with pytest.raises(ValueError):
        enc.write(np.zeros(3, np.int32), np.array([0, 60, 1]))
    with pytest.raises(ValueError):
        enc.write(np.zeros(3, np.float32), np.zeros(3, np.int32))
    with pytest.raises(ValueError):
        enc.write(np.array([1 << 40]), np.zeros(1, np.int32))
    with pytest.raises(ValueError):
        lanes.LaneEncoder(y_table, lanes=65)


# ------------------------------------------------------------------------------------------- scale buckets
def test_scale_indexes_equal_searchsorted(edges):
    rng = np.random.default_rng(4)
    f32 = np.float32
    around = np.concatenate([np.nextafter(edges, f32(-np.inf)), edges, np.nextafter(edges, f32(np.inf))])
    special = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, -np.nan, 1e-45, -1e-45, 1e-38, 3e38, -3e38, 0.11, 64,
                        1e30], f32)
    bits = rng.integers(0, 1 << 32, 20000, dtype=np.uint64).astype(np.uint32).view(f32)  # any float, NaNs too
    scales = np.concatenate([around, special, bits, np.exp(rng.uniform(-3, 5, 5000)).astype(f32)])
    out = lanes.scale_indexes(scales, edges)
    assert out.dtype == np.int32 and np.array_equal(out, np.searchsorted(edges, scales, side="left"))
    assert (out[np.isnan(scales)] == len(edges)).all()
    shaped = scales[:4000].reshape(2, 20, 100)[:, ::2]  # any shape, non-contiguous
    assert np.array_equal(lanes.scale_indexes(shaped, edges), np.searchsorted(edges, shaped, side="left"))
    # other edges: coarse, dense (many edges per float bucket), with negative values and repeats
    for other in (np.array([1.0], f32), np.linspace(1, 1.01, 50, dtype=f32),
                  np.sort(rng.normal(size=300).astype(f32)), np.array([-2, 0, 0, 0, 5, 5], f32), np.zeros(0, f32)):
        assert np.array_equal(lanes.scale_indexes(scales, other), np.searchsorted(other, scales, side="left"))
    # float64 takes numpy's path, with numpy's float64 comparisons
    with np.errstate(invalid="ignore"):
        s64 = scales.astype(np.float64) * (1 + 1e-12)
    assert np.array_equal(lanes.scale_indexes(s64, edges), np.searchsorted(edges, s64, side="left"))


def test_scale_indexer_is_scale_indexes_prepared_once(edges):
    rng = np.random.default_rng(6)
    scales = np.exp(rng.uniform(-4, 6, (3, 40, 7, 5))).astype(np.float32)
    mine = edges.copy()
    indexer = lanes.ScaleIndexer(mine)
    expected = np.searchsorted(edges, scales, side="left")
    out = indexer(scales)
    assert out.dtype == np.int32 and out.shape == scales.shape and np.array_equal(out, expected)
    out[0] = -1  # a fresh array each call, which the codec patches with signalled indexes
    assert np.array_equal(indexer(scales), expected)
    mine[:] = 0  # the indexer holds its own copy of the edges
    assert np.array_equal(indexer(scales), expected)
    assert np.array_equal(indexer(scales[:, ::3]), expected[:, ::3])  # strided: copied, same answer
    # edges with NaN (unsorted in numpy's sense) or of another dtype take numpy's own search
    for other in (np.array([0.5, np.nan], np.float32), edges.astype(np.float64)):
        assert np.array_equal(lanes.ScaleIndexer(other)(scales), np.searchsorted(other, scales, side="left"))


# ------------------------------------------------------------------------------------------- hostile input
def small_payload(table: lanes.LaneTable, n_lanes: int = 3, n: int = 400, seed: int = 5):
    rng = np.random.default_rng(seed)
    indexes = rng.integers(0, table.rows, n).astype(np.int32)
    symbols = symbols_for(table, indexes, rng, 0.05)
    return lanes.encode(symbols, indexes, table, lanes=n_lanes), indexes, symbols


def try_decode(data: bytes, table: lanes.LaneTable, indexes: np.ndarray, steps=(100, 0, 250, 50)) -> np.ndarray | None:
    """Decode in steps: the symbols, or None after a BitstreamError; anything else fails the test."""
    try:
        dec = lanes.LaneDecoder(data, table, indexes.size)
        bounds = np.cumsum([0, *steps])
        return np.concatenate([dec.read(indexes[a:b]) for a, b in zip(bounds[:-1], bounds[1:])])
    except BitstreamError as exc:
        assert "\n" not in str(exc)
        return None


def test_truncated_and_extended_payloads(y_table):
    data, indexes, symbols = small_payload(y_table)
    assert np.array_equal(try_decode(data, y_table, indexes), symbols)
    for cut in range(len(data)):
        assert try_decode(data[:cut], y_table, indexes) is None
        with pytest.raises(BitstreamError):  # the same, read as a truncated stream on purpose
            dec = lanes.LaneDecoder(data[:cut], y_table, indexes.size, partial=True)
            dec.read(indexes)
    for extra in (b"\0", b"\0\0\0\0", b"\xff" * 8):
        assert try_decode(data + extra, y_table, indexes) is None


def test_header_lies(y_table):
    data, indexes, _ = small_payload(y_table, n_lanes=2)
    body = data[1:]
    cases = [
        bytes([3]) + body, bytes([1]) + body,  # another lane count: other states, words out of step
        bytes([0]) + body, bytes([65]) + body, bytes([0x80, 0x01]) + body,  # lane count 0, 65, 128
        bytes([0x82, 0x00]) + body,  # non-minimal varint
        bytes([0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x0F]) + body,  # varint over 5 bytes
        bytes([0x80]), b"\x80" * 100, b"", b"\xff" * 5000, b"\x00" * 5000,
        bytes([1]) + b"\xff" * 8, bytes([1]) + b"\0" * 8,  # impossible states
        bytes([1]) + b"\xff\xff\xff\x7f" * 3,
        bytes([2]) + body[:12],  # states, then almost nothing
    ]
    for case in cases:
        assert try_decode(case, y_table, indexes) is None, case[:8]


def test_a_truncated_payload_decodes_exactly_up_to_where_it_ends(y_table):
    """The words come in decoding order: a prefix decodes its first steps exactly (progressive decoding)."""
    rng = np.random.default_rng(11)
    indexes = rng.integers(0, 60, 6000).astype(np.int32)
    symbols = symbols_for(y_table, indexes, rng, 0.01)
    data = lanes.encode(symbols, indexes, y_table, lanes=4)
    steps = np.cumsum([0, 1000, 2000, 3000])
    for cut in (len(data) // 4, len(data) // 2, len(data) - 5):
        dec = lanes.LaneDecoder(data[:cut], y_table, indexes.size, partial=True)
        complete = 0
        for a, b in zip(steps[:-1], steps[1:]):
            try:
                out = dec.read(indexes[a:b])
            except BitstreamError:
                break
            assert np.array_equal(out, symbols[a:b])
            complete += 1
        assert complete < 3 and dec.done <= indexes.size
        assert complete >= (1 if cut > len(data) // 3 else 0)


def test_legacy_decoder_reads_compressai_streams_exactly_and_safely(y_table):
    """Version 1/2 containers and the official code's strings: CompressAI's format, decoded by a bounds-checked
    kernel; escapes (bypass nibbles) included, and hostile streams end in BitstreamError."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        import compressai.ans as ans

    rng = np.random.default_rng(12)
    indexes = rng.integers(0, 60, 5000).astype(np.int32)
    # CompressAI's encoder loops forever on values beyond about 2**28 (a shift by 32 bits), so none here
    symbols = np.clip(symbols_for(y_table, indexes, rng, 0.03), -(1 << 26), 1 << 26)
    symbols[:9] = [0, 1, -1, 1 << 20, -(1 << 20), 1 << 26, -(1 << 26), 77, -77]  # escapes of every length
    writer = ans.BufferedRansEncoder()
    writer.encode_with_indexes(symbols.tolist(), indexes.tolist(), *ggm.build_cdf_table(ggm.scale_table()).coder_args)
    stream = writer.flush()
    dec = lanes.LegacyDecoder(stream, y_table, indexes.size)
    out = np.concatenate([dec.read(indexes[:1234]), dec.read(indexes[1234:])])
    assert np.array_equal(out, symbols) and dec.remaining == 0
    caught = 0
    for trial in range(500):
        buf = bytearray(stream)
        if trial % 4 == 0:
            buf = buf[: rng.integers(len(buf))]
        else:
            for _ in range(rng.integers(1, 4)):
                buf[rng.integers(len(buf))] = rng.integers(256)
        try:
            dec = lanes.LegacyDecoder(bytes(buf), y_table, indexes.size)
            dec.read(indexes)
        except BitstreamError as exc:
            assert "\n" not in str(exc)
            caught += 1
    assert caught >= 450
    idx = indexes.copy()
    idx[3] = 200  # a signalled index beyond the table: refused, never reaches a table lookup
    with pytest.raises(BitstreamError, match="outside the table"):
        lanes.LegacyDecoder(stream, y_table, indexes.size).read(idx)
    for garbage in (b"", b"\xff" * 4, b"\xff" * 7, b"\xff" * 4000):
        with pytest.raises(BitstreamError):
            lanes.LegacyDecoder(garbage, y_table, indexes.size).read(indexes)


def test_indexes_outside_the_table(y_table):
    data, indexes, symbols = small_payload(y_table)
    for bad in (-1, 60, 1 << 20, I32_MIN, I32_MAX):
        idx = indexes.copy()
        idx[123] = bad
        assert try_decode(data, y_table, idx) is None
    for bad in (1 << 40, -(1 << 40)):  # beyond int32: still a stream problem, not a crash
        idx = indexes.astype(np.int64)
        idx[7] = bad
        assert try_decode(data, y_table, idx) is None
    dec = lanes.LaneDecoder(data, y_table, indexes.size)
    with pytest.raises(BitstreamError):
        dec.read(np.full(10, 60))
    with pytest.raises(BitstreamError):  # a failed decoder stays failed
        dec.read(indexes[10:20])
    dec = lanes.LaneDecoder(data, y_table, indexes.size)
    with pytest.raises(ValueError):  # more symbols than the stream holds: a caller's mistake
        dec.read(np.zeros(indexes.size + 1, np.int32))
    assert np.array_equal(dec.read(indexes), symbols)


def test_wrong_indexes_or_symbol_count_are_detected(y_table):
    data, indexes, _ = small_payload(y_table, n_lanes=1, n=3000)
    rng = np.random.default_rng(6)
    caught = 0
    for _ in range(50):
        other = rng.integers(0, 60, indexes.size).astype(np.int32)
        caught += try_decode(data, y_table, other, steps=(3000,)) is None
    assert caught >= 45  # desynchronised decoding ends in an error, almost always
    assert try_decode(data, y_table, indexes[:-1], steps=(2999,)) is None
    with pytest.raises(BitstreamError):
        lanes.LaneDecoder(data, y_table, 0)


def test_random_mutations_never_crash(y_table, z_table):
    rng = np.random.default_rng(7)
    outcomes = {"error": 0, "decoded": 0}
    for table in (y_table, z_table):
        for n_lanes in (1, 4):
            data, indexes, _ = small_payload(table, n_lanes=n_lanes)
            for _ in range(1000):
                buf = bytearray(data)
                kind = rng.integers(0, 5)
                if kind == 0:  # flip bits
                    for _ in range(rng.integers(1, 4)):
                        buf[rng.integers(len(buf))] ^= 1 << rng.integers(8)
                elif kind == 1:  # overwrite bytes
                    at = rng.integers(len(buf))
                    buf[at: at + 4] = rng.integers(0, 256, 4, dtype=np.uint8).tobytes()
                elif kind == 2:  # delete a slice
                    at = rng.integers(len(buf))
                    del buf[at: at + rng.integers(1, 9)]
                elif kind == 3:  # insert bytes
                    at = rng.integers(len(buf))
                    buf[at:at] = rng.integers(0, 256, rng.integers(1, 9), dtype=np.uint8).tobytes()
                else:  # garbage of a plausible length
                    buf = bytearray(rng.integers(0, 256, rng.integers(1, 2 * len(data)), dtype=np.uint8).tobytes())
                out = try_decode(bytes(buf), table, indexes)
                outcomes["error" if out is None else "decoded"] += 1
    assert outcomes["error"] >= 3000  # nearly every mutation is detected


BOUNDS_CHECKED = """
import numpy as np, sys
from hpcm_deploy.entropy import lanes
from hpcm_deploy.errors import BitstreamError
d = np.load(sys.argv[1])
table = lanes.LaneTable(d["cdf"], d["cdf_length"], d["offset"])
data, indexes = d["data"].tobytes(), d["indexes"]
rng = np.random.default_rng(8)
for trial in range(600):
    buf = bytearray(data)
    for _ in range(rng.integers(1, 6)):
        buf[rng.integers(len(buf))] = rng.integers(256)
    if trial % 3 == 0:
        buf = buf[: rng.integers(len(buf))]
    try:
        dec = lanes.LaneDecoder(bytes(buf), table, indexes.size, partial=trial % 2 == 0)
        dec.read(indexes[:150]); dec.read(indexes[150:])
    except BitstreamError:
        pass
    buf = bytearray(d["legacy"].tobytes())
    for _ in range(rng.integers(1, 6)):
        buf[rng.integers(len(buf))] = rng.integers(256)
    try:
        dec = lanes.LegacyDecoder(bytes(buf[: len(buf) - 4 * (trial % 2)]), table, indexes.size)
        dec.read(indexes[:150]); dec.read(indexes[150:])
    except BitstreamError:
        pass
lanes.scale_indexes(rng.random(1000).astype(np.float32), np.linspace(0.1, 1, 7, dtype=np.float32))
print("ok")
"""


def _coder_args(table: lanes.LaneTable):
    rows = [table.cdf[r, : table.cdf_length[r]].tolist() for r in range(table.rows)]
    return rows, table.cdf_length.tolist(), table.offset.tolist()


def test_kernels_stay_in_bounds(tmp_path, z_table):
    """Mutated payloads through kernels compiled with numba's bounds checking (an out-of-bounds access would
    raise IndexError there instead of silently reading memory)."""
    data, indexes, _ = small_payload(z_table, n_lanes=3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        import compressai.ans as ans
    writer = ans.BufferedRansEncoder()
    legal = np.clip(small_payload(z_table, n_lanes=1)[2], -(1 << 26), 1 << 26)  # CompressAI hangs beyond ~2**28
    writer.encode_with_indexes(legal.tolist(), indexes.tolist(), *_coder_args(z_table))
    legacy = writer.flush()
    np.savez(tmp_path / "case.npz", cdf=z_table.cdf, cdf_length=z_table.cdf_length, offset=z_table.offset,
             data=np.frombuffer(data, np.uint8), legacy=np.frombuffer(legacy, np.uint8), indexes=indexes)
    env = dict(os.environ, NUMBA_BOUNDSCHECK="1", NUMBA_CACHE_DIR=str(tmp_path / "numba"))
    run = subprocess.run([sys.executable, "-c", textwrap.dedent(BOUNDS_CHECKED), str(tmp_path / "case.npz")],
                         env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0 and run.stdout.strip() == "ok", run.stderr[-2000:]


def test_threads_and_warmup(threads):
    with pytest.raises(ValueError):
        lanes.set_threads(0)
    lanes.set_threads(3)
    assert lanes.get_threads() == 3
    lanes.warmup()
    edges = np.array([0.5, 1.0], np.float32)
    readonly = np.array([0.2, 0.7, 3.0], np.float32)
    readonly.setflags(write=False)
    assert lanes.scale_indexes(readonly, edges).tolist() == [0, 1, 2]
    assert lanes.scale_indexes(np.float32(0.7), edges).shape == ()


def test_one_varint_reader_for_lane_headers_and_side_information():
    from hpcm_deploy.entropy.varint import read_varint, varint

    for value in (0, 1, 127, 128, 300, (1 << 32) - 1):
        data = b"\x07" + varint(value)
        assert read_varint(data, 1, "x") == (value, len(data))
    assert read_varint(varint((1 << 63) - 1), 0, "x", max_bytes=10) == ((1 << 63) - 1, 9)
    with pytest.raises(BitstreamError, match="corrupted lane payload header: non-minimal varint"):
        read_varint(b"\x80\x00", 0, "lane payload header")
    assert read_varint(b"\x80\x00", 0, "side information", minimal=False) == (0, 2)  # side info never refused it
    with pytest.raises(BitstreamError, match="truncated x"):
        read_varint(b"\x80", 0, "x")
    with pytest.raises(BitstreamError, match="longer than 5 bytes"):
        read_varint(b"\xff" * 6, 0, "x")
