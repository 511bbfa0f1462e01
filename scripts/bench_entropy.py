"""Micro-benchmark: the multi-lane rANS coder (hpcm_deploy.entropy.lanes) against CompressAI's rANS.

Synthetic y latents of realistic statistics: scales log-uniform in [0.12, 8], CDF indexes from the scale table,
symbols drawn from the GGM (beta = 1.5) of that scale (the model's own distribution; ``--laplace`` for heavier
tails, which exercise the escapes). Sizes: HPCM-Base at 768x512 (M=320: 491,520 symbols) and the tiny demo
model at 768x512 (M=64: 98,304 symbols), each coded in 11 equal steps.

- decode: all 11 steps, each computing its CDF indexes from float32 scales and decoding them; ours also
  parses the payload. CompressAI as hpcm_deploy.entropy.coder calls it (numpy searchsorted, list conversions).
- encode: 11 writes and the flush.

Times are medians over ``--repeats`` runs, ours and CompressAI's interleaved in the same loop so that background
load hits both alike; "cpu ms" is the process's CPU time (all threads), which other processes disturb less.
``--first-call`` also measures, in fresh interpreters, the numba compile time (empty cache) and the cache-load
time of the first encode and decode.

    python scripts/bench_entropy.py [--repeats 15] [--threads N] [--laplace] [--first-call]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import warnings

import numpy as np

SIZES = {"base-768x512": 320 * 48 * 32, "tiny-768x512": 64 * 48 * 32}
STEPS = 11


def make_data(n: int, laplace: bool, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    from hpcm_deploy.entropy import ggm

    rng = np.random.default_rng(seed)
    scales = np.exp(rng.uniform(np.log(0.12), np.log(8.0), n)).astype(np.float32)
    if laplace:
        values = rng.laplace(0.0, scales)
    else:  # |X| = scale * Gamma(1/beta)^(1/beta), random sign: the generalized normal of shape beta
        values = rng.gamma(1 / ggm.BETA, 1.0, n) ** (1 / ggm.BETA) * scales * rng.choice([-1, 1], n)
    return scales, np.round(values).astype(np.int32)


def median_ms(times: list[float]) -> float:
    return float(np.median(times)) * 1e3


def bench_size(name: str, n: int, repeats: int, laplace: bool) -> None:
    import compressai.ans as ans  # imported here: after main() silenced its FutureWarning

    from hpcm_deploy.entropy import ggm, lanes

    cdf_table = ggm.build_cdf_table(ggm.scale_table())
    table = lanes.LaneTable.from_cdf_table(cdf_table)
    edges = ggm.scale_table()[:-1].numpy().astype(np.float32)
    scales, symbols = make_data(n, laplace)
    bounds = np.linspace(0, n, STEPS + 1).astype(int)
    steps = [slice(a, b) for a, b in zip(bounds[:-1], bounds[1:])]
    indexes = lanes.scale_indexes(scales, edges)
    cdfs, lengths, offsets = cdf_table.coder_args

    def ours_encode() -> bytes:
        enc = lanes.LaneEncoder(table)
        for s in steps:
            enc.write(symbols[s], indexes[s])
        return enc.finish()

    def ours_decode(data: bytes) -> np.ndarray:
        dec = lanes.LaneDecoder(data, table, n)
        return np.concatenate([dec.read(lanes.scale_indexes(scales[s], edges)) for s in steps])

    def cai_encode() -> bytes:
        enc = ans.BufferedRansEncoder()
        for s in steps:
            enc.encode_with_indexes(symbols[s].tolist(), indexes[s].tolist(), cdfs, lengths, offsets)
        return enc.flush()

    def cai_decode(data: bytes) -> np.ndarray:
        dec = ans.RansDecoder()
        dec.set_stream(data + bytes(65536 + 8 * n))  # as hpcm_deploy.entropy.coder.StreamReader
        out = []
        for s in steps:
            idx = np.searchsorted(edges, scales[s], side="left").astype(np.int32)
            out.append(np.asarray(dec.decode_stream(idx.tolist(), cdfs, lengths, offsets), dtype=np.int32))
        return np.concatenate(out)

    ours, cai = ours_encode(), cai_encode()
    assert np.array_equal(ours_decode(ours), symbols) and np.array_equal(cai_decode(cai), symbols)
    t: dict[str, list[float]] = {k: [] for k in ("oe", "od", "ce", "cd", "idx")}
    cpu: dict[str, list[float]] = {k: [] for k in t}
    for _ in range(repeats):
        for key, fn in (("oe", ours_encode), ("od", lambda: ours_decode(ours)), ("ce", cai_encode),
                        ("cd", lambda: cai_decode(cai)),
                        ("idx", lambda: [lanes.scale_indexes(scales[s], edges) for s in steps])):
            start, start_cpu = time.perf_counter(), time.process_time()
            fn()
            t[key].append(time.perf_counter() - start)
            cpu[key].append(time.process_time() - start_cpu)
    n_lanes = ours[0]  # the payload's first byte: the lane count (under 128)
    print(f"\n{name}: {n:,} symbols in {STEPS} steps, {lanes.get_threads()} thread(s), {n_lanes} lanes")
    print(f"  {'':12} {'decode ms':>10} {'(cpu ms)':>9} {'Msym/s':>8} {'encode ms':>10} {'(cpu ms)':>9} {'Msym/s':>8}"
          f" {'bytes':>9}")
    for label, e, d, size in (("lanes", "oe", "od", len(ours)), ("compressai", "ce", "cd", len(cai))):
        de, en = median_ms(t[d]), median_ms(t[e])
        print(f"  {label:12} {de:10.2f} {median_ms(cpu[d]):9.2f} {n / de / 1e3:8.1f} {en:10.2f} "
              f"{median_ms(cpu[e]):9.2f} {n / en / 1e3:8.1f} {size:9,}")
    print(f"  speed-up: decode x{median_ms(t['cd']) / median_ms(t['od']):.1f}, "
          f"encode x{median_ms(t['ce']) / median_ms(t['oe']):.1f}; scale_indexes alone {median_ms(t['idx']):.2f} ms; "
          f"size {100 * (len(ours) / len(cai) - 1):+.3f} % vs compressai")
    row = []
    for count in (1, 2, 4, 8, 16, 32):
        size = len(lanes.encode(symbols, indexes, table, lanes=count))
        row.append(f"{count}: {size - len(cai):+d} B ({100 * (size / len(cai) - 1):+.3f} %)")
    print("  size vs compressai by lane count: " + ", ".join(row))
    row = []
    for count in (1, 4, 16):
        data = lanes.encode(symbols, indexes, table, lanes=count)
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            ours_decode(data)
            times.append(time.perf_counter() - start)
        row.append(f"{count}: {median_ms(times):.2f} ms")
    print("  decode by lane count: " + ", ".join(row))


FIRST_CALL = """
import time, numpy as np
t0 = time.perf_counter()
from hpcm_deploy.entropy import lanes
t1 = time.perf_counter()
cdf = np.array([[0, 30000, 60000, 65536]], np.int32)
table = lanes.LaneTable(cdf, np.array([4]), np.array([-1]))
idx, sym = np.zeros(100, np.int32), (np.arange(100) % 4 - 1).astype(np.int32)
t2 = time.perf_counter()
data = lanes.encode(sym, idx, table)
t3 = time.perf_counter()
assert np.array_equal(lanes.LaneDecoder(data, table, 100).read(idx), sym)
t4 = time.perf_counter()
lanes.scale_indexes(np.ones(10, np.float32), np.ones(3, np.float32))
t5 = time.perf_counter()
print(f"import {1e3 * (t1 - t0):.0f} ms, first encode {1e3 * (t3 - t2):.0f} ms, "
      f"first decode {1e3 * (t4 - t3):.0f} ms, first scale_indexes {1e3 * (t5 - t4):.0f} ms")
"""


def first_call() -> None:
    print("\nfirst call in a fresh interpreter (numba compile, then cache load):")
    with tempfile.TemporaryDirectory() as cache:
        env = dict(os.environ, NUMBA_CACHE_DIR=cache)
        for label in ("empty cache (compile)", "warm cache (load)", "warm cache (load)"):
            out = subprocess.run([sys.executable, "-c", FIRST_CALL], env=env, capture_output=True, text=True)
            print(f"  {label:22} {out.stdout.strip() or out.stderr.strip()[-300:]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--threads", type=int, default=None, help="coding threads (default: the module's)")
    parser.add_argument("--laplace", action="store_true", help="Laplace symbols (heavier tails) instead of GGM")
    parser.add_argument("--first-call", action="store_true", help="also time compile and cache load")
    parser.add_argument("--sizes", nargs="*", default=list(SIZES), choices=list(SIZES))
    args = parser.parse_args()
    warnings.simplefilter("ignore", FutureWarning)
    from hpcm_deploy.entropy import lanes

    if args.threads:
        lanes.set_threads(args.threads)
    print(f"cpus: {os.cpu_count()}, load average: {', '.join(f'{x:.1f}' for x in os.getloadavg())}")
    for name in args.sizes:
        bench_size(name, SIZES[name], args.repeats, args.laplace)
    if args.first_call:
        first_call()


if __name__ == "__main__":
    main()
