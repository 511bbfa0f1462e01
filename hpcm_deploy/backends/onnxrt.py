"""The ONNX Runtime backend: one session per stage of an export, sharing weights and working memory.

- Weights: every graph's large initializers live once in the export's ``weights.bin``. The file is mapped once
  and each tensor becomes one ``OrtValue`` over the mapped bytes, handed to every session that uses it
  (``SessionOptions.add_initializer``), so the 18 sessions hold one copy, not one each.
- Working memory: on the CPU all sessions allocate from one arena registered with the ONNX Runtime
  environment (``session.use_env_allocators``) instead of an arena each; the stages never run at the same
  time, so the arena only grows to the largest stage's needs.

CPU by default. With onnxruntime-gpu, the CUDA (or TensorRT) execution provider is used with IOBinding: inputs
and outputs stay ``OrtValue``s on the GPU between stages, and only what entropy coding needs is copied.
"""

from __future__ import annotations

import logging
import threading
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
_ENV_ARENA = threading.Lock()
_env_arena_registered = False


def _ort():
    try:
        import onnxruntime as ort
    except ImportError as exc:  # pragma: no cover - a core dependency
        raise BackendError(f"onnxruntime is not installed ({exc}); pip install onnxruntime") from None
    return ort


def shared_cpu_arena(ort) -> bool:
    """Register one CPU arena with ONNX Runtime's environment (once per process); False if this build cannot."""
    global _env_arena_registered
    with _ENV_ARENA:
        if not _env_arena_registered:
            try:
                info = ort.OrtMemoryInfo("Cpu", ort.OrtAllocatorType.ORT_ARENA_ALLOCATOR, 0, ort.OrtMemType.DEFAULT)
                ort.create_and_register_allocator(info, ort.OrtArenaCfg({}))
                _env_arena_registered = True
            except Exception as exc:  # an older or unusual build: per-session arenas, as before
                log.info("no shared ONNX Runtime arena (%s)", str(exc).splitlines()[0])
                return False
        return True


class OnnxRuntimeBackend(Backend):
    name = "onnxruntime"

    def __init__(self, manifest: Manifest, device: str = "cpu", threads: int = 0) -> None:
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
        env_arena = not self._on_gpu and shared_cpu_arena(ort)
        weights = manifest.root / manifest.data["weights"]["file"]
        self._weights = map_weights(weights)  # kept alive as long as the sessions that read it
        self._values: dict[tuple, Any] = {}  # (offset, dtype, shape) in the weight file -> OrtValue over its bytes
        self.sessions = {}
        for stage in manifest.data["stages"]:
            path = manifest.stage_path(stage)
            opts = ort.SessionOptions()
            opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            opts.intra_op_num_threads = threads
            opts.log_severity_level = 3
            if env_arena:
                opts.add_session_config_entry("session.use_env_allocators", "1")
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
