"""The ONNX Runtime backend: one session per stage of an export, sharing weights and working memory.

- Weights: every graph's large initializers live once in the export's ``weights.bin``. The file is mapped once
  and each tensor becomes one ``OrtValue`` over the mapped bytes, handed to every session that uses it
  (``SessionOptions.add_initializer``), so the 18 sessions share one copy of the weights as stored. The
  graph optimiser (``ORT_ENABLE_ALL``) still gives each session its own reordered copy of the convolution
  weights it uses (the blocked NCHWc layout of its fast kernels): opening ``phase2`` costs about 0.8-1.2 GB,
  against 1.7-1.8 GB with a copy of every weight in every graph (``docs/stages.md``).
- Working memory: on the CPU the sessions allocate without an arena (``enable_cpu_mem_arena = False``). The
  stages' tensors are large (hundreds of kB to tens of MB), so the C allocator maps and unmaps them directly
  and the process holds only what is live; an arena (one per session, or one shared through
  ``session.use_env_allocators``) keeps its high-water mark rounded up to powers of two: for ``phase2`` at
  768x512, 0.81 GB of growth while coding against 0.52 GB without, at the same speed.

CPU by default. With onnxruntime-gpu, the CUDA (or TensorRT) execution provider is used with IOBinding: inputs
and outputs stay ``OrtValue``s on the GPU between stages, and only what entropy coding needs is copied. The
providers get explicit options (:func:`provider_options`): the GPU ``cuda:N`` names, TF32 off and cuDNN's fixed
convolution algorithm (fp32 streams must decode elsewhere), and for TensorRT an engine cache and the profiles of
the default size range. The providers a session actually obtained are checked (:func:`check_obtained`): ONNX
Runtime falls back to the CPU, quietly or with a print on stdout, when a GPU provider fails to load.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..artifacts.export import Manifest, OpenedExport
from ..artifacts.weights import external_refs, map_weights, view
from ..errors import BackendError
from . import OnnxRuntimeOptions
from .base import Backend

log = logging.getLogger(__name__)

_PROVIDERS = {
    "cpu": ["CPUExecutionProvider"],
    "cuda": ["CUDAExecutionProvider", "CPUExecutionProvider"],
    "tensorrt": ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"],
}


TF32_ENV = "NVIDIA_TF32_OVERRIDE"  # read by cuBLAS, cuDNN and TensorRT: "0" turns TF32 off whatever is asked


def _ort():
    try:
        import onnxruntime as ort
    except ImportError as exc:  # pragma: no cover - a core dependency
        raise BackendError(f"onnxruntime is not installed ({exc}); pip install onnxruntime") from None
    return ort


def parse_device(device: str) -> tuple[str, int]:
    """``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"tensorrt:0"`` -> (provider kind, GPU index), or a one-line error."""
    kind, sep, index = str(device).partition(":")
    if kind not in _PROVIDERS or (sep and not index.isdigit()) or (kind == "cpu" and sep):
        raise BackendError(f"onnxruntime device must be cpu, cuda[:N] or tensorrt[:N], not {device!r}")
    return kind, int(index) if sep else 0


def profile_shapes(profile: dict[str, dict[str, Sequence[int]]]) -> dict[str, str]:
    """One stage's optimisation profile (``{input: {"min", "opt", "max": shape}}``) as the TensorRT provider's
    ``trt_profile_{min,opt,max}_shapes`` strings (``"x:1x3x256x256,z:1x192x4x4"``)."""
    out = {}
    for point in ("min", "opt", "max"):
        out[f"trt_profile_{point}_shapes"] = ",".join(
            f"{name}:{'x'.join(str(int(d)) for d in bounds[point])}" for name, bounds in profile.items())
    return out


def provider_options(kind: str, device_id: int = 0, profile: dict | None = None, cache_dir: str | os.PathLike = "",
                     fp16: bool = False) -> list[tuple[str, dict[str, str]]]:
    """The execution providers of a session on ``kind`` (cpu, cuda, tensorrt), best first, with their options.

    CUDA: the GPU ``device_id`` (IO binding places tensors there too), TF32 off (its ``use_tf32`` defaults on,
    and fp32 streams made with TF32 convolutions do not decode elsewhere) and cuDNN's fixed default convolution
    algorithm (``EXHAUSTIVE``, the default, benchmarks and may pick another algorithm per process).
    TensorRT: the same GPU, an engine and timing cache in ``cache_dir`` (otherwise every session rebuilds its
    engines, and again for every new shape), one explicit profile per stage (``profile``), fp16 only for an
    export that carries the fp16 recipe; TF32 is turned off through ``NVIDIA_TF32_OVERRIDE=0`` (the provider has
    no option for it), see :func:`check_tf32_env`. CUDA and the CPU follow it for the nodes it does not take."""
    if kind not in _PROVIDERS:
        raise BackendError(f"onnxruntime device must be cpu, cuda or tensorrt, not {kind!r}")
    cuda = {"device_id": str(device_id), "use_tf32": "0", "cudnn_conv_algo_search": "DEFAULT"}
    options = {"CPUExecutionProvider": {}, "CUDAExecutionProvider": cuda}
    if kind == "tensorrt":
        if not cache_dir:
            raise BackendError("the onnxruntime TensorRT provider needs an engine cache folder")
        trt = {"device_id": str(device_id), "trt_engine_cache_enable": "True", "trt_engine_cache_path": str(cache_dir),
               "trt_timing_cache_enable": "True", "trt_timing_cache_path": str(cache_dir),
               "trt_fp16_enable": "True" if fp16 else "False"}
        if profile:
            trt.update(profile_shapes(profile))
        options["TensorrtExecutionProvider"] = trt
    return [(name, dict(options[name])) for name in _PROVIDERS[kind]]


def check_tf32_env(environ: dict | None = None) -> None:
    """Turn TF32 off for the TensorRT provider (``NVIDIA_TF32_OVERRIDE=0``, set when unset), or refuse when the
    environment already asks for something else."""
    env = os.environ if environ is None else environ
    value = env.setdefault(TF32_ENV, "0")
    if value != "0":
        raise BackendError(f"{TF32_ENV}={value} in the environment would let TensorRT use TF32 in fp32 stages; "
                           f"unset it (hpcm-deploy sets it to 0) to run onnxruntime on tensorrt")


def install_hint(provider: str, distributions: set[str] | None = None) -> str:
    """What to do when ``provider`` is not available in this onnxruntime, from the installed distributions:
    onnxruntime and onnxruntime-gpu both install the ``onnxruntime`` module, and whichever was installed last
    owns its files."""
    dists = distributions if distributions is not None else _ort_distributions()
    if provider == "CPUExecutionProvider":
        return "reinstall onnxruntime"
    if "onnxruntime-gpu" in dists and "onnxruntime" in dists:
        return ("onnxruntime and onnxruntime-gpu are both installed and the CPU build's files won; run "
                "`pip uninstall -y onnxruntime onnxruntime-gpu && pip install onnxruntime-gpu` (docs/tensorrt.md)")
    if "onnxruntime-gpu" in dists:
        return ("onnxruntime-gpu is installed but does not offer it here: check the CUDA and cuDNN libraries it "
                "needs (and TensorRT for tensorrt)")
    return ('install onnxruntime-gpu in place of onnxruntime: pip install -c constraints.txt -e ".[gpu]", then the '
            "step in docs/tensorrt.md")


def _ort_distributions() -> set[str]:
    found = set()
    for name in ("onnxruntime", "onnxruntime-gpu"):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            importlib.metadata.version(name)
            found.add(name)
    return found


def check_obtained(stage: str, requested: Sequence[str], obtained: Sequence[str]) -> None:
    """Refuse a session that did not get the provider it was created for (the first of ``requested``): ONNX
    Runtime quietly runs on the next one (in the end the CPU) when a GPU provider fails to load."""
    wanted = requested[0]
    if wanted not in obtained:
        got = ", ".join(obtained) or "none"
        raise BackendError(f"onnxruntime could not load {wanted} for stage {stage} (the session got: {got}); "
                           f"{install_hint(wanted)}")


def trt_cache_dir(manifest: Manifest) -> Path:
    """Where the TensorRT provider keeps the engines it builds for an export: per user, per export fingerprint."""
    from ..files import user_cache_dir

    return user_cache_dir() / "ort-tensorrt" / f"{manifest.name}-{manifest.fingerprint[:16]}"


class OnnxRuntimeBackend(Backend):
    name = "onnxruntime"
    concurrent = True  # InferenceSession.run may be called from several threads at once

    @classmethod
    def open(cls, export: OpenedExport, device: str = "cpu",
             options: OnnxRuntimeOptions | None = None) -> OnnxRuntimeBackend:
        """One session per stage of ``export`` on ``device``."""
        o = options or OnnxRuntimeOptions()
        return cls(export.manifest, device, o.threads, o.optimization)

    def __init__(self, manifest: Manifest, device: str = "cpu", threads: int = 0, optimization: str = "all") -> None:
        ort = _ort()
        kind, self.device_id = parse_device(device)
        available = ort.get_available_providers()
        if _PROVIDERS[kind][0] not in available:
            raise BackendError(f"onnxruntime has no {_PROVIDERS[kind][0]} here (available: {', '.join(available)}); "
                               f"{install_hint(_PROVIDERS[kind][0])}")
        self._on_gpu = kind != "cpu"
        # a torch device: decoded tensors (decompress(kind="torch")) go where the sessions ran
        self.device = f"cuda:{self.device_id}" if self._on_gpu else "cpu"
        self._ort = ort
        profiles, cache = {}, ""
        if kind == "tensorrt":
            from ..artifacts.shapes import DEFAULT_SIZES, all_profiles

            check_tf32_env()
            profiles = all_profiles(manifest.program(), DEFAULT_SIZES, manifest.batch)
            self.max_batch = manifest.batch or DEFAULT_SIZES.max_batch  # Codec batches no more than the profiles
            cache = trt_cache_dir(manifest)
            cache.mkdir(parents=True, exist_ok=True)
        weights = manifest.path("weights")
        self._weights = map_weights(weights)  # kept alive as long as the sessions that read it
        self._values: dict[tuple, Any] = {}  # (offset, dtype, shape) in the weight file -> OrtValue over its bytes
        self.sessions = {}
        for stage in manifest.stages:
            path = manifest.stage_path(stage)
            opts = ort.SessionOptions()
            opts.graph_optimization_level = getattr(ort.GraphOptimizationLevel, f"ORT_ENABLE_{optimization.upper()}")
            opts.intra_op_num_threads = threads
            opts.log_severity_level = 3
            if not self._on_gpu:
                opts.enable_cpu_mem_arena = False
            else:
                opts.use_deterministic_compute = True
            chosen = [(n, o) for n, o in provider_options(kind, self.device_id, profiles.get(stage), cache,
                                                          manifest.precision == "fp16") if n in available]
            try:
                for ref in external_refs(path):
                    opts.add_initializer(ref.name, self._value(ref))
                # ONNX Runtime prints its fallback to the CPU on stdout, which would corrupt --json output
                with contextlib.redirect_stdout(sys.stderr):
                    session = ort.InferenceSession(str(path), opts, providers=[n for n, _ in chosen],
                                                   provider_options=[o for _, o in chosen])
            except Exception as exc:
                first = str(exc).splitlines()[0]
                raise BackendError(f"onnxruntime cannot load stage {stage} ({path}): {first}") from None
            check_obtained(stage, [n for n, _ in chosen], session.get_providers())
            session.disable_fallback()  # a provider failing later raises, never reruns quietly on the CPU
            self.sessions[stage] = session
        self._inputs = {s: [i.name for i in sess.get_inputs()] for s, sess in self.sessions.items()}
        self._outputs = {s: [o.name for o in sess.get_outputs()] for s, sess in self.sessions.items()}

    @property
    def shared_weights(self) -> int:
        """How many weight tensors the sessions share (one ``OrtValue`` each over the mapped weight file)."""
        return len(self._values)

    def _value(self, ref) -> Any:
        """One ``OrtValue`` per tensor of the weight file, shared by every session that uses it."""
        key = (ref.offset, ref.dtype.str, ref.shape)
        if key not in self._values:
            array = view(self._weights, ref.offset, ref.length, ref.dtype, ref.shape)
            self._values[key] = self._ort.OrtValue.ortvalue_from_numpy(array)
        return self._values[key]

    def run(self, stage: str, inputs: Sequence[Any]) -> list[Any]:
        session = self.sessions[stage]
        names = self._inputs[stage]
        if not self._on_gpu:
            return session.run(None, dict(zip(names, inputs)))
        binding = session.io_binding()
        for name, value in zip(names, inputs):
            binding.bind_ortvalue_input(name, value)
        for name in self._outputs[stage]:
            binding.bind_output(name, "cuda", self.device_id)
        session.run_with_iobinding(binding)
        return binding.get_outputs()

    def from_host(self, array: np.ndarray) -> Any:
        array = np.ascontiguousarray(array)
        if not self._on_gpu:
            return array
        return self._ort.OrtValue.ortvalue_from_numpy(array, "cuda", self.device_id)

    def to_host(self, tensor: Any) -> np.ndarray:
        return tensor if isinstance(tensor, np.ndarray) else tensor.numpy()

    def close(self) -> None:
        self.sessions.clear()
        self._values.clear()
