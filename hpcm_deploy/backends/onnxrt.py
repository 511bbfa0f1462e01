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
and outputs stay ``OrtValue``s on the GPU between stages, and only what entropy coding needs is copied.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..artifacts.export import Manifest
from ..artifacts.weights import external_refs, map_weights, view
from ..errors import BackendError
from .base import Backend

log = logging.getLogger(__name__)

_PROVIDERS = {
    "cpu": ["CPUExecutionProvider"],
    "cuda": ["CUDAExecutionProvider", "CPUExecutionProvider"],
    "tensorrt": ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"],
}


def _ort():
    try:
        import onnxruntime as ort
    except ImportError as exc:  # pragma: no cover - a core dependency
        raise BackendError(f"onnxruntime is not installed ({exc}); pip install onnxruntime") from None
    return ort


class OnnxRuntimeBackend(Backend):
    name = "onnxruntime"

    def __init__(self, manifest: Manifest, device: str = "cpu", threads: int = 0, optimization: str = "all") -> None:
        ort = _ort()
        kind = device.split(":")[0]
        if kind not in _PROVIDERS:
            raise BackendError(f"onnxruntime device must be cpu, cuda or tensorrt, not {device!r}")
        available = ort.get_available_providers()
        if _PROVIDERS[kind][0] not in available:
            raise BackendError(f"onnxruntime has no {_PROVIDERS[kind][0]} here (available: {', '.join(available)}); "
                               "install onnxruntime-gpu for cuda/tensorrt")
        self.device = device
        self.device_id = int(device.split(":")[1]) if ":" in device else 0
        self._on_gpu = kind != "cpu"
        self._ort = ort
        providers = [p for p in _PROVIDERS[kind] if p in available]
        weights = manifest.root / manifest.data["weights"]["file"]
        self._weights = map_weights(weights)  # kept alive as long as the sessions that read it
        self._values: dict[tuple, Any] = {}  # (offset, dtype, shape) in the weight file -> OrtValue over its bytes
        self.sessions = {}
        for stage in manifest.data["stages"]:
            path = manifest.stage_path(stage)
            opts = ort.SessionOptions()
            opts.graph_optimization_level = getattr(ort.GraphOptimizationLevel, f"ORT_ENABLE_{optimization.upper()}")
            opts.intra_op_num_threads = threads
            opts.log_severity_level = 3
            if not self._on_gpu:
                opts.enable_cpu_mem_arena = False
            try:
                for ref in external_refs(path):
                    opts.add_initializer(ref.name, self._value(ref))
                self.sessions[stage] = ort.InferenceSession(str(path), opts, providers=providers)
            except Exception as exc:
                first = str(exc).splitlines()[0]
                raise BackendError(f"onnxruntime cannot load stage {stage} ({path}): {first}") from None
        self._inputs = {s: [i.name for i in sess.get_inputs()] for s, sess in self.sessions.items()}
        self._outputs = {s: [o.name for o in sess.get_outputs()] for s, sess in self.sessions.items()}

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
