"""Low precision and memory layout for the PyTorch stages: the ``bf16`` recipes and channels-last transforms.

Only the entropy parameters decide symbols: ``h_s`` and every context stage (``s*_start``, ``s*_enter``,
``s*_step*``) turn ``z_hat``/``y_hat`` into the scales, means and top-k choices that encoder and decoder must
agree on. The transforms do not: ``g_a`` only chooses ``y`` (any ``y`` is a valid stream, rounded against the
means the entropy path gives), ``h_a`` only chooses ``z`` (coded as it is), ``g_s`` only draws the picture. So

- ``bf16`` (stream-exact, the default bf16 recipe) runs ``g_a``, ``h_a`` and ``g_s`` in bfloat16 and the whole
  entropy-parameter path exactly as the fp32 stages do. An fp32 decoder reads its streams, and it reads fp32
  streams, with the default margins (symbols identical, nothing signalled beyond what fp32 backends signal);
- ``bf16-full`` also runs the context stages under bfloat16 autocast. Its scales move by far more than the
  default margin, so its streams only cross-decode with a wide signalling margin (``docs/bitstream.md``).

bfloat16 is worth it only where the CPU computes it natively (AMX or AVX-512 BF16; otherwise PyTorch emulates it,
slower than fp32): :func:`bf16_problem` refuses it elsewhere with one line. The transforms run in channels-last
(NHWC) where that is faster, which oneDNN's bfloat16 convolutions need to reach AMX's speed.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from ..models.hpcm import HPCM
from ..stages import CodingProgram, StageModule, StageSpec

PRECISIONS = ("fp32", "bf16", "bf16-full", "auto")  # auto: bf16 where the CPU computes it natively, else fp32
LAYOUTS = ("auto", "nchw", "channels_last")
TRANSFORM_KINDS = ("analysis", "hyper_analysis", "synthesis")  # stages that decide no symbol
NATIVE_BF16_FLAGS = ("amx_bf16", "avx512_bf16")  # /proc/cpuinfo flags of CPUs that compute bfloat16 natively


@dataclass(frozen=True)
class CpuFeatures:
    """What the CPU offers for low-precision inference, from its ``/proc/cpuinfo`` flags."""

    amx_bf16: bool = False
    avx512_bf16: bool = False
    avx512: bool = False
    amx_int8: bool = False

    @property
    def native_bf16(self) -> bool:
        return self.amx_bf16 or self.avx512_bf16

    def describe(self) -> str:
        found = [name for name, ok in (("AMX-BF16", self.amx_bf16), ("AVX-512 BF16", self.avx512_bf16),
                                       ("AMX-INT8", self.amx_int8), ("AVX-512", self.avx512)) if ok]
        return ", ".join(found) or "none of AMX / AVX-512"

    def as_dict(self) -> dict[str, bool]:
        return {"amx_bf16": self.amx_bf16, "avx512_bf16": self.avx512_bf16, "amx_int8": self.amx_int8,
                "avx512": self.avx512, "native_bf16": self.native_bf16}


def parse_cpu_flags(text: str) -> CpuFeatures:
    """The features named by a ``flags`` line of ``/proc/cpuinfo`` (or the whole file, or ``lscpu``'s Flags)."""
    flags: set[str] = set()
    for line in text.splitlines() or [text]:
        key, sep, value = line.partition(":")
        if sep and key.strip().lower() not in ("flags", "features"):
            continue
        flags.update((value if sep else line).split())
    return CpuFeatures(amx_bf16="amx_bf16" in flags, avx512_bf16="avx512_bf16" in flags,
                       avx512="avx512f" in flags, amx_int8="amx_int8" in flags)


def cpu_features(cpuinfo: str | Path = "/proc/cpuinfo") -> CpuFeatures:
    """This machine's features (from ``/proc/cpuinfo``; where there is none, from what PyTorch dispatches to:
    ``AVX512`` there says AVX-512 but not whether bfloat16 is native, so bf16 counts as absent)."""
    try:
        text = Path(cpuinfo).read_text()
    except OSError:
        capability = torch.backends.cpu.get_cpu_capability()
        return CpuFeatures(avx512=capability.startswith("AVX512"))
    first = text.split("\n\n")[0]  # every core reports the same flags
    return parse_cpu_flags(first)


def bf16_problem(device: str, features: CpuFeatures | None = None) -> str | None:
    """Why bfloat16 should not run on ``device`` (one line), or None. ``features`` defaults to this CPU's."""
    kind = str(device).split(":")[0]
    if kind == "cuda":
        if torch.cuda.is_available() and not torch.cuda.is_bf16_supported():
            return "this GPU has no native bfloat16; use precision fp32 (or the fp16 recipe in ONNX Runtime/TensorRT)"
        return None
    features = features if features is not None else cpu_features()
    if not features.native_bf16:
        return ("bf16 needs a CPU with AMX or AVX-512 BF16 (this one has " + features.describe() +
                "; emulated bfloat16 is slower than fp32): use precision fp32")
    return None


def resolve_precision(precision: str, device: str, features: CpuFeatures | None = None) -> str:
    """``auto``: the stream-exact ``bf16`` recipe on a CPU that computes bfloat16 natively (measured on an AMX
    Xeon: 1.45x faster encode, 1.56x decode, +0.02 % bpp, -0.007 dB; docs/stages.md), fp32 elsewhere (CUDA
    included: unmeasured there). Any other precision is returned as it is."""
    if precision != "auto":
        return precision
    if str(device).startswith("cpu") and bf16_problem(device, features) is None:
        return "bf16"
    return "fp32"


def resolve_layout(layout: str, precision: str, device: str) -> torch.memory_format:
    """The transforms' memory format. ``auto``: channels-last for bfloat16 on the CPU (3x faster there, measured
    in docs/stages.md), NCHW for fp32, whose streams then stay byte-identical to the reference stages'."""
    if layout == "channels_last" or (layout == "auto" and precision != "fp32" and str(device).startswith("cpu")):
        return torch.channels_last
    return torch.contiguous_format


class _Transform(nn.Module):
    """A transform network copied into ``dtype`` and ``memory_format``; inputs converted, outputs float32 NCHW."""

    def __init__(self, net: nn.Module, dtype: torch.dtype, memory_format: torch.memory_format) -> None:
        super().__init__()
        self.dtype, self.memory_format = dtype, memory_format
        if dtype == torch.float32 and memory_format == torch.contiguous_format:
            self.net = net  # nothing to convert: share the model's own module
        else:
            self.net = copy.deepcopy(net).to(dtype=dtype, memory_format=memory_format)

    def forward(self, x: Tensor) -> Tensor:
        out = self.net(x.to(dtype=self.dtype, memory_format=self.memory_format))
        return out.to(dtype=torch.float32, memory_format=torch.contiguous_format)


class LowAnalysis(StageModule):
    def __init__(self, model: HPCM, spec: StageSpec, transform: _Transform) -> None:
        super().__init__(model, spec)
        self.net = transform

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class LowHyperAnalysis(LowAnalysis):
    def forward(self, y: Tensor) -> Tensor:
        return torch.round(self.net(y) - self.model.means_hyper)


class LowSynthesis(LowAnalysis):
    def forward(self, y_hat: Tensor, q: Tensor, means: Tensor) -> Tensor:
        # placement in float32 as in the reference; only the picture is drawn in low precision
        return torch.clamp(self.net(self._y_hat({"y_hat": y_hat, "q": q, "means": means})), 0, 1)


class Autocast(nn.Module):
    """A stage run under autocast to ``dtype`` (the ``bf16-full`` recipe's context stages), outputs as they
    were: float tensors float32, integer tensors (top-k slots) unchanged."""

    def __init__(self, stage: nn.Module, device_type: str, dtype: torch.dtype) -> None:
        super().__init__()
        self.stage, self.device_type, self.dtype = stage, device_type, dtype

    def forward(self, *inputs: Tensor) -> Tensor | tuple[Tensor, ...]:
        with torch.autocast(self.device_type, dtype=self.dtype):
            out = self.stage(*inputs)
        if isinstance(out, tuple):
            return tuple(t.float() if t.is_floating_point() else t for t in out)
        return out.float()


_LOW = {"analysis": (LowAnalysis, "g_a"), "hyper_analysis": (LowHyperAnalysis, "h_a"),
        "synthesis": (LowSynthesis, "g_s")}


def apply_recipe(modules: dict[str, nn.Module], model: HPCM, program: CodingProgram, precision: str,
                 memory_format: torch.memory_format, device_type: str) -> dict[str, nn.Module]:
    """The stage modules of ``precision`` and the transforms' ``memory_format``: transforms converted, the
    entropy path left as the fp32 stages (``bf16-full``: under autocast)."""
    dtype = torch.bfloat16 if precision.startswith("bf16") else torch.float32
    out = dict(modules)
    nets: dict[str, _Transform] = {}
    for name, spec in program.stages.items():
        if spec.kind in _LOW:
            cls, attr = _LOW[spec.kind]
            if attr not in nets:
                nets[attr] = _Transform(getattr(model, attr), dtype, memory_format)
            out[name] = cls(model, spec, nets[attr]).eval()
        elif precision == "bf16-full" and spec.kind != "pack":
            out[name] = Autocast(modules[name], device_type, dtype).eval()
    return out


def matmul_rate(dtype: torch.dtype, n: int = 1024, seconds: float = 0.3) -> float:
    """Dense matrix product throughput on this machine's CPU in GFLOP/s (best of repeated ``n x n`` products over
    about ``seconds``): the ceiling every timing of that precision is read against."""
    a = torch.randn(n, n).to(dtype)
    b = torch.randn(n, n).to(dtype)
    with torch.inference_mode():
        torch.mm(a, b)
        best, deadline = float("inf"), time.perf_counter() + seconds
        while time.perf_counter() < deadline:
            start = time.perf_counter()
            torch.mm(a, b)
            best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best / 1e9


def machine_report(dtypes: Iterable[str] = ("fp32", "bf16")) -> dict:
    """The CPU's low-precision features and its fp32/bf16 matmul rates (GFLOP/s) for ``bench`` and ``info``."""
    features = cpu_features()
    rates = {name: round(matmul_rate({"fp32": torch.float32, "bf16": torch.bfloat16}[name]), 1) for name in dtypes}
    return {"cpu_features": features.as_dict(), "found": features.describe(),
            "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(), "matmul_gflops": rates,
            "threads": torch.get_num_threads()}
