"""One :class:`hpcm_deploy.Codec` shared by threads: every thread gets the streams and images that one thread
gets, whatever the interleaving (the codec serialises its backend calls; see its docstring)."""

from __future__ import annotations

import threading

import numpy as np

import hpcm_deploy as hd

from .helpers import images

THREADS = 3
SIZES = [(16, 16), (32, 48), (16, 32)]  # small: the point is the interleaving, not the size


def _photo(h: int, w: int, seed: int) -> np.ndarray:
    return (images(1, h, w, seed=seed)[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)


def test_threads_sharing_one_codec_get_exactly_the_streams_and_images_of_one_thread(tiny_phase2_export):
    pictures = [_photo(h, w, seed=40 + i) for i, (h, w) in enumerate(SIZES)]
    with hd.Codec(tiny_phase2_export) as codec:  # ONNX Runtime on the CPU
        streams = [codec.compress(p) for p in pictures]  # one thread, one image at a time
        decoded = [codec.decompress(s, kind="numpy") for s in streams]
        assert codec.compress(pictures) == streams  # the reference batch agrees with the single calls

        barrier = threading.Barrier(THREADS)
        got: dict[int, dict[str, list]] = {}
        failures: list[BaseException] = []

        def worker(t: int) -> None:
            try:
                order = [(t + k) % len(pictures) for k in range(len(pictures))]  # each thread starts elsewhere
                barrier.wait(timeout=60)
                mine: dict[str, list] = {"single": [None] * len(pictures), "decoded": [None] * len(pictures)}
                for i in order:  # singles interleave with the other threads' batches and decodes
                    mine["single"][i] = codec.compress(pictures[i])
                    mine["decoded"][i] = codec.decompress(mine["single"][i], kind="numpy")
                if t % 2:  # a batch, in another order: it runs while other threads code singles
                    mine["batch"] = codec.compress(pictures[::-1])[::-1]
                else:
                    mine["batch decoded"] = codec.decompress(streams, kind="numpy")
                got[t] = mine
            except BaseException as exc:  # reported by the main thread
                failures.append(exc)

        threads = [threading.Thread(target=worker, args=(t,)) for t in range(THREADS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=300)
        assert not failures, failures
        assert sorted(got) == list(range(THREADS))
        for t, mine in got.items():
            assert mine["single"] == streams, f"thread {t}: single streams differ"
            assert mine.get("batch", streams) == streams, f"thread {t}: batched streams differ"
            for key in ("decoded", "batch decoded"):
                assert all(np.array_equal(a, b) for a, b in zip(mine.get(key, decoded), decoded)), f"thread {t}: {key}"
