"""``hpcm-deploy bench``: per-stage and whole-image timings of backends, against the PyTorch reference model
measured in the same run."""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..artifacts.export import Manifest
from ..backends import parse_backend_spec
from ..backends.lowp import machine_report
from ..codec import Codec
from ..image import pad_image, random_image


def summary(values: list[float]) -> dict[str, float]:
    """Median and spread (min, max, interquartile range) of repeated timings."""
    v = sorted(values)
    q = statistics.quantiles(v, n=4) if len(v) >= 2 else [v[0], v[0], v[0]]
    return {"median": statistics.median(v), "min": v[0], "max": v[-1], "iqr": q[2] - q[0], "n": len(v)}


class PeakMemory:
    """Peak resident memory of this process while a block runs (sampled), minus the level before it."""

    def __init__(self, interval: float = 0.005) -> None:
        import psutil

        self._proc, self.interval = psutil.Process(), interval
        self.peak = self.base = 0

    def __enter__(self) -> PeakMemory:
        self.base = self.peak = self._proc.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._proc.memory_info().rss)
            self._stop.wait(self.interval)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._proc.memory_info().rss)

    @property
    def megabytes(self) -> float:
        return (self.peak - self.base) / 2**20


@dataclass
class BackendBench:
    backend: str
    precision: str  # the arithmetic its stages run in: fp32, bf16, bf16-full, fp16 (the export's or the spec's)
    encode: dict[str, float]
    decode: dict[str, float]
    encode_stages: dict[str, dict[str, float]] = field(default_factory=dict)
    decode_stages: dict[str, dict[str, float]] = field(default_factory=dict)
    host: dict[str, dict[str, float]] = field(default_factory=dict)  # entropy, transfer, other host work
    peak_mb: float = 0.0  # growth of the process's resident memory while coding (after the codec was opened)
    gpu_peak_mb: float | None = None
    open_seconds: float = 0.0  # opening the codec: loading the export, creating sessions or engines
    open_mb: float = 0.0  # resident memory the open codec holds (weights, sessions)
    entropy_msym_s: dict[str, float] = field(default_factory=dict)  # y symbols per second of entropy coding
    ratio_encode: float = float("nan")  # median encode time / the reference model's median compress time
    ratio_decode: float = float("nan")


def _repeat(fn: Callable[[], Any], repeat: int, warmup: int) -> tuple[list[float], list[Any]]:
    for _ in range(warmup):
        fn()
    times, outs = [], []
    for _ in range(repeat):
        start = time.perf_counter()
        outs.append(fn())
        times.append(time.perf_counter() - start)
    return times, outs


def _time_reference(manifest: Manifest, x: torch.Tensor, repeat: int, warmup: int, device: str) -> dict[str, Any]:
    """The PyTorch reference model's compress and decompress of the padded image ``x``."""
    model = manifest.load_model(device)
    xd = x.to(device)
    with PeakMemory() as mem:
        enc_t, encs = _repeat(lambda: model.compress(xd), repeat, warmup)
        strings, shape = encs[0]["strings"], encs[0]["shape"]
        dec_t, _ = _repeat(lambda: model.decompress(strings, shape), repeat, warmup)
    return {"encode": summary(enc_t), "decode": summary(dec_t), "peak_mb": mem.megabytes,
            "bytes": len(strings[0][0]) + len(strings[1][0])}


def bench(export: str, backends: list[str], size: tuple[int, int] = (512, 768), repeat: int = 5, warmup: int = 1,
          device: str = "cpu", progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Time the reference model and each backend on one random image of ``size`` (H, W)."""
    manifest = Manifest.load(export)
    image = (random_image(1, size, seed=7)[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    x, _ = pad_image(torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255)
    out: dict[str, Any] = {"export": str(export), "size": list(size), "repeat": repeat, "warmup": warmup,
                           "threads": torch.get_num_threads(), "backends": []}
    if progress:
        progress("reference")
    out["machine"] = machine_report()  # read every figure against the CPU's fp32 and bf16 matmul ceilings
    out["reference"] = _time_reference(manifest, x, repeat, warmup, device)
    reference = out["reference"]
    parsed = [(spec, *parse_backend_spec(spec, device)) for spec in backends]  # all checked before any runs
    for spec, name, dev, options in parsed:
        if progress:
            progress(spec)
        start = time.perf_counter()
        with PeakMemory() as opened:
            codec = Codec(manifest, backend=name, device=dev, options=options)
        open_seconds = time.perf_counter() - start
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        with PeakMemory() as mem:
            enc_t, enc_r = _repeat(lambda c=codec: c.compress_detailed([image], timings=True)[0], repeat, warmup)
            stream = enc_r[0].stream
            dec_t, dec_r = _repeat(lambda c=codec, s=stream: c.decompress_detailed([s], timings=True)[0], repeat,
                                   warmup)
        stages_e = {s: summary([r.timings["stages"].get(s, 0.0) for r in enc_r])
                    for s in enc_r[0].timings["stages"]}
        stages_d = {s: summary([r.timings["stages"].get(s, 0.0) for r in dec_r])
                    for s in dec_r[0].timings["stages"]}
        host = {f"{side}_{k}": summary([r.timings[k] for r in rs])
                for side, rs in (("encode", enc_r), ("decode", dec_r)) for k in ("entropy", "transfer", "host")}
        for side, rs, times in (("encode", enc_r, enc_t), ("decode", dec_r, dec_t)):
            # everything that is not a stage: entropy coding not hidden behind the network, copies, Python
            host[f"{side}_outside_stages"] = summary([t - r.timings["network"] for t, r in zip(times, rs)])
        # what the stages ran in: the backend's resolved precision (torch "auto" names bf16 or fp32), else the
        # spec's, else the export's (the PyTorch stages load fp32 weights whatever the export's graphs are)
        precision = (getattr(codec.backend, "precision", None) or options.get("precision")
                     or ("fp32" if name == "torch" else manifest.precision))
        b = BackendBench(spec, precision, summary(enc_t), summary(dec_t), stages_e, stages_d, host, mem.megabytes,
                         torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else None,
                         open_seconds, opened.megabytes)
        symbols = manifest.config.M * (x.shape[-2] // 16) * (x.shape[-1] // 16)
        b.entropy_msym_s = {side: symbols / max(host[f"{side}_entropy"]["median"], 1e-9) / 1e6
                            for side in ("encode", "decode")}
        b.ratio_encode = b.encode["median"] / reference["encode"]["median"]
        b.ratio_decode = b.decode["median"] / reference["decode"]["median"]
        out["backends"].append(vars(b))
        codec.close()
    return out
