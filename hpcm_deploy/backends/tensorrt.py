"""The TensorRT backend: one deserialised engine and execution context per stage.

All contexts share one scratch buffer (stages run one after another on one CUDA stream), tensors stay on the
GPU as torch tensors, and each (stage, input shapes) is captured once into a CUDA graph and replayed (shapes
are fixed per padded image size). Requires TensorRT 10.8+ or 11.x and a CUDA build of torch.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..exporting.manifest import Manifest
from ..trt import cuda_device, import_tensorrt
from ..trt.manifest import EngineManifest, check_compatible, default_engine_dir
from .base import Backend

log = logging.getLogger(__name__)


class TensorRTBackend(Backend):
    name = "tensorrt"
    torch_native = True

    @classmethod
    def from_export(cls, manifest: Manifest, device: str = "cuda", engines: str | os.PathLike | None = None,
                    precision: str = "fp32", cuda_graphs: bool = True) -> TensorRTBackend:
        """Engines for ``manifest`` (default: ``engines/<name>/<arch>-trt<version>-<precision>``), after checking
        they were built for this TensorRT, this GPU and this export."""
        trt = import_tensorrt()
        device = device if device.startswith("cuda") else "cuda"
        _, capability = cuda_device(device)
        root = Path(engines) if engines else default_engine_dir(manifest, capability, trt.__version__, precision)
        em = EngineManifest.load(root)
        check_compatible(em, manifest, trt.__version__, capability)
        return cls(em, manifest, device, cuda_graphs)

    def __init__(self, engines: EngineManifest, manifest: Manifest, device: str, cuda_graphs: bool = True) -> None:
        import torch

        trt = import_tensorrt()
        self._torch, self._trt = torch, trt
        self.device = device
        self._dev = torch.device(device)
        self.stream = torch.cuda.Stream(self._dev)
        self._logger = trt.Logger(trt.Logger.WARNING)
        runtime = trt.Runtime(self._logger)
        program = manifest.program()
        self.engines, self.contexts, self._io = {}, {}, {}
        scratch = 0
        for stage in program.stages:
            engine = runtime.deserialize_cuda_engine(engines.plan_path(stage).read_bytes())
            if engine is None:
                from ..errors import BackendError

                raise BackendError(f"TensorRT could not deserialise {engines.plan_path(stage)}")
            self.engines[stage] = engine
            v2 = hasattr(engine, "device_memory_size_v2")  # 10.x has both; 11.x only v2
            size = engine.device_memory_size_v2 if v2 else engine.device_memory_size
            scratch = max(scratch, int(size))
            spec = program.stages[stage]
            dtypes = {n: torch.from_numpy(np.zeros(0, dtype=trt.nptype(engine.get_tensor_dtype(n)))).dtype
                      for n in (*spec.inputs, *spec.outputs)}
            self._io[stage] = (spec.inputs, spec.outputs, dtypes)
        # one scratch buffer for every context: the stages never run at the same time
        self.scratch = torch.empty(max(scratch, 1), dtype=torch.uint8, device=self._dev)
        strategy = trt.ExecutionContextAllocationStrategy.USER_MANAGED
        for stage, engine in self.engines.items():
            ctx = engine.create_execution_context(strategy)
            if hasattr(ctx, "set_device_memory"):
                ctx.set_device_memory(self.scratch.data_ptr(), self.scratch.numel())
            else:  # TensorRT < 10.1
                ctx.device_memory = self.scratch.data_ptr()
            self.contexts[stage] = ctx
        self.cuda_graphs = cuda_graphs
        self._graphs: dict[tuple, tuple[Any, list, list]] = {}

    # ------------------------------------------------------------------ running
    def _bind(self, stage: str, inputs: Sequence[Any]) -> list[Any]:
        ctx = self.contexts[stage]
        names_in, names_out, dtypes = self._io[stage]
        for name, t in zip(names_in, inputs):
            ctx.set_input_shape(name, tuple(t.shape))
            ctx.set_tensor_address(name, t.data_ptr())
        outs = []
        for name in names_out:
            out = self._torch.empty(tuple(ctx.get_tensor_shape(name)), dtype=dtypes[name], device=self._dev)
            ctx.set_tensor_address(name, out.data_ptr())
            outs.append(out)
        return outs

    def _execute(self, stage: str) -> None:
        if not self.contexts[stage].execute_async_v3(self.stream.cuda_stream):
            from ..errors import BackendError

            raise BackendError(f"TensorRT failed to run stage {stage}")

    def run(self, stage: str, inputs: Sequence[Any]) -> list[Any]:
        torch = self._torch
        inputs = [t.contiguous() for t in inputs]
        key = (stage, *(tuple(t.shape) for t in inputs))
        with torch.cuda.stream(self.stream):
            if self.cuda_graphs and key in self._graphs:
                graph, static_in, static_out = self._graphs[key]
                for dst, src in zip(static_in, inputs):
                    dst.copy_(src)
                graph.replay()
                return [o.clone() for o in static_out]  # the static buffers are reused by the next replay
            outs = self._bind(stage, inputs)
            self._execute(stage)
            if self.cuda_graphs:
                self._capture(stage, key, inputs)
            return outs

    def _capture(self, stage: str, key: tuple, inputs: list[Any]) -> None:
        """Capture the stage for these shapes after its first (warm-up) run; fall back to eager on failure."""
        torch = self._torch
        try:
            static_in = [t.clone() for t in inputs]
            static_out = self._bind(stage, static_in)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, stream=self.stream):
                self._execute(stage)
            self._graphs[key] = (graph, static_in, static_out)
        except RuntimeError as exc:
            log.warning("no CUDA graph for %s (%s); running it eagerly", stage, exc)
            self.cuda_graphs = False

    def from_host(self, array: np.ndarray) -> Any:
        torch = self._torch
        host = torch.from_numpy(np.ascontiguousarray(array)).pin_memory()
        with torch.cuda.stream(self.stream):
            return host.to(self._dev, non_blocking=True)

    def to_host(self, tensor: Any) -> np.ndarray:
        self.stream.synchronize()
        return tensor.detach().cpu().numpy()

    def synchronize(self) -> None:
        self.stream.synchronize()

    def close(self) -> None:
        self._graphs.clear()
        self.contexts.clear()
        self.engines.clear()
