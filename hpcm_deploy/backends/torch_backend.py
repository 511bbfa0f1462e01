"""The PyTorch backend: the stage modules of the reference model, run eagerly on a CPU or CUDA device, in fp32 or
a bf16 recipe (:mod:`.lowp`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ..errors import BackendError
from ..models.hpcm import HPCM
from ..stages import CodingProgram, stage_modules
from .base import Backend
from .lowp import CpuFeatures, apply_recipe, bf16_problem, resolve_layout, resolve_precision

if TYPE_CHECKING:
    from ..artifacts.export import OpenedExport


class TorchBackend(Backend):
    name = "torch"
    torch_native = True
    concurrent = True  # the stage modules hold no state between calls

    @classmethod
    def open(cls, export: OpenedExport, device: str = "cpu", options: Any = None) -> TorchBackend:
        """The export's model, rebuilt from its shared weight file, on ``device``, in the precision and layout
        of its :class:`~hpcm_deploy.backends.TorchOptions`."""
        from . import TorchOptions

        o = options or TorchOptions()
        return cls(export.manifest.load_model(device), export.program, device, o.precision, o.layout,
                   emulate_bf16=o.emulate_bf16)

    def __init__(self, model: HPCM, program: CodingProgram, device: str | torch.device = "cpu",
                 precision: str = "fp32", layout: str = "auto", cpu: CpuFeatures | None = None,
                 emulate_bf16: bool = False) -> None:
        """``precision``: fp32, bf16 (transforms in bfloat16, entropy path fp32: stream-exact), bf16-full or auto
        (bf16 on a CPU with native bfloat16, else fp32);
        ``layout`` of the transforms: auto, nchw or channels_last; ``cpu``: the CPU features bf16 is checked
        against (default: this machine's); ``emulate_bf16``: run bf16 even where the CPU only emulates it."""
        self.device = str(device)
        self.precision = precision = resolve_precision(precision, self.device, cpu)
        if precision != "fp32" and not emulate_bf16:
            problem = bf16_problem(self.device, cpu)
            if problem:
                raise BackendError(problem)
        self.model = model.to(device).eval()
        self._torch_device = torch.device(device)
        modules = stage_modules(self.model, program)
        memory_format = resolve_layout(layout, precision, self.device)
        if precision != "fp32" or memory_format != torch.contiguous_format:
            modules = apply_recipe(modules, self.model, program, precision, memory_format, self._torch_device.type)
        self.modules = modules
        if self._torch_device.type == "cuda":
            # TF32 moves scales by ~1e-3 relative, far past the signalling margin: CUDA streams would then not
            # decode on a CPU. The stages need full fp32, as the CPU computes it.
            torch.backends.cuda.matmul.allow_tf32 = False
            torch.backends.cudnn.allow_tf32 = False

    def run(self, stage: str, inputs: Sequence[Any]) -> list[Any]:
        with torch.inference_mode():
            out = self.modules[stage](*inputs)
        return list(out) if isinstance(out, tuple) else [out]

    def from_host(self, array: np.ndarray) -> torch.Tensor:
        t = torch.from_numpy(np.ascontiguousarray(array))
        if self._torch_device.type != "cuda":
            return t
        # through pinned memory, queued on the current stream: the host does not wait for the copy (PyTorch's
        # pinned allocator keeps the staging block until the copy is done)
        pinned = torch.empty(t.shape, dtype=t.dtype, pin_memory=True)
        pinned.copy_(t)
        return pinned.to(self._torch_device, non_blocking=True)

    def to_host(self, tensor: torch.Tensor) -> np.ndarray:
        return tensor.detach().cpu().numpy()

    def synchronize(self) -> None:
        """Wait for this backend's work: the current stream of its device (the caller's), never the whole
        device, which other streams of the same process may be using."""
        if self._torch_device.type == "cuda":
            torch.cuda.current_stream(self._torch_device).synchronize()
