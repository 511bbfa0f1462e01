"""Issue 28 measurements on the demo model at 768x512 (torch backend, this machine's CPU), A/B interleaved in one
process: preview time and PSNR (fill="thumbnail" vs "context") against a full decode, and batches in flight
against sequential calls.

    python scripts/bench_pipeline.py [--reps 3] [--images 4] [--size 512x768]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

import hpcm_deploy as hd
from hpcm_deploy.app.bundled import demo_weights
from hpcm_deploy.image import random_image
from hpcm_deploy.training.data import bundled_images


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(10 * np.log10(255.0 ** 2 / np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)))


def timed(fn) -> tuple[float, object]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--images", type=int, default=4)
    ap.add_argument("--skip-flight", action="store_true")
    ap.add_argument("--size", default="512x768", help="HEIGHTxWIDTH")
    args = ap.parse_args()
    codec = hd.Codec(hd.load_model(checkpoint=demo_weights(), seed=None))
    height, width = (int(v) for v in args.size.split("x"))
    x = random_image(args.images, (height, width), seed=28)
    photos = [(x[i].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8) for i in range(args.images)]
    stream = codec.compress(photos[0])
    runs: dict[str, list[float]] = {}
    images: dict[str, np.ndarray] = {}
    kinds: dict[str, tuple[int, str] | None] = {"full": None}  # name -> (steps, fill) of a preview
    for k in (2, 5):
        for fill in ("thumbnail", "context"):
            kinds[f"preview{k}-{fill}"] = (k, fill)

    def decode(s: bytes, kind: tuple[int, str] | None) -> np.ndarray:
        if kind is None:
            return codec.decompress(s, kind="numpy")
        return codec.preview(s, kind[0], kind="numpy", fill=kind[1]).image

    for _ in range(args.reps):
        for name, kind in kinds.items():
            seconds, images[name] = timed(lambda kind=kind: decode(stream, kind))
            runs.setdefault(name, []).append(seconds)
    # quality on photographs: the bundled held-out images (the random image above is smooth noise)
    heldout: dict[str, list[float]] = {}
    for photo in bundled_images("heldout").values():
        s = codec.compress(photo)
        for name, kind in kinds.items():
            heldout.setdefault(name, []).append(psnr(decode(s, kind), photo))
    full = statistics.median(runs["full"])
    print(f"| decode ({height}x{width}) | median s | of full decode | PSNR dB (this image) | PSNR dB (held-out mean) |")
    print("|---|---|---|---|---|")
    for name in kinds:
        med = statistics.median(runs[name])
        print(f"| {name} | {med:.3f} | {100 * med / full:.0f} % | {psnr(images[name], photos[0]):.2f} | "
              f"{statistics.mean(heldout[name]):.2f} |")
    if args.skip_flight:
        return
    flight: dict[str, list[float]] = {}
    for _ in range(args.reps):
        seconds, seq = timed(lambda: [codec.compress(p) for p in photos])
        flight.setdefault("compress sequential", []).append(seconds)
        seconds, many = timed(lambda: list(codec.compress_many(photos, in_flight=2, batch=1)))
        flight.setdefault("compress_many in_flight=2", []).append(seconds)
        assert many == seq
        seconds, _ = timed(lambda seq=seq: [codec.decompress(s, kind="numpy") for s in seq])
        flight.setdefault("decompress sequential", []).append(seconds)
        seconds, _ = timed(lambda seq=seq: list(codec.decompress_many(seq, in_flight=2, batch=1, kind="numpy")))
        flight.setdefault("decompress_many in_flight=2", []).append(seconds)
    for name, values in flight.items():
        med = statistics.median(values)
        print(f"{name}: {med:.3f} s for {len(photos)} images ({len(photos) / med:.2f} images/s)")


if __name__ == "__main__":
    main()
