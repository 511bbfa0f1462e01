"""The shared weight file of an export (``weights.bin``), read side: every graph's large initializers and the
model's parameters live in it once (written by :mod:`hpcm_deploy.exporting.weights`).

The file is a plain concatenation of little-endian tensors, each starting at a multiple of ``ALIGN`` bytes;
graphs point into it with ONNX external-data references (file, offset, length), and the manifest indexes the
model's parameters by ``state_dict`` name, so ONNX Runtime, TensorRT and the PyTorch backend all read the same
bytes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import torch

WEIGHTS_FILE = "weights.bin"
ALIGN = 64


@dataclass(frozen=True)
class ExternalRef:
    """An initializer of a graph that lives in the shared weight file."""

    name: str
    offset: int
    length: int
    dtype: np.dtype
    shape: tuple[int, ...]


def external_refs(path: Path) -> list[ExternalRef]:
    """The initializers of the graph at ``path`` that point into the shared weight file."""
    model = onnx.load(str(path), load_external_data=False)
    out = []
    for init in model.graph.initializer:
        if init.data_location != onnx.TensorProto.EXTERNAL:
            continue
        info = {e.key: e.value for e in init.external_data}
        if info.get("location") != WEIGHTS_FILE:
            continue
        dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(init.data_type))
        out.append(ExternalRef(init.name, int(info.get("offset", 0)), int(info["length"]), dtype,
                               tuple(int(d) for d in init.dims)))
    return out


def map_weights(path: Path) -> np.ndarray:
    """The weight file as a read-only byte array mapped from disk (pages shared by every reader)."""
    return np.memmap(path, dtype=np.uint8, mode="r")


def view(buffer: np.ndarray, offset: int, length: int, dtype: np.dtype | str, shape) -> np.ndarray:
    """A tensor of the weight file, without a copy."""
    dtype = np.dtype(dtype)
    return np.frombuffer(buffer, dtype=dtype, count=length // dtype.itemsize, offset=offset).reshape(shape)


def read_state_dict(path: Path, parameters: dict[str, dict]) -> dict[str, torch.Tensor]:
    """The model's ``state_dict`` from the weight file and its parameter index (tensors are copies, so the
    model owns its memory)."""
    buffer = map_weights(path)
    return {name: torch.from_numpy(view(buffer, e["offset"], e["length"], e["dtype"], e["shape"]).copy())
            for name, e in parameters.items()}


def weight_usage(graphs: dict[str, Path]) -> dict[str, int]:
    """Bytes of the shared weight file each graph reads (``{graph: bytes}``): what an engine or session per
    graph would hold if it kept its own copy (a TensorRT engine does)."""
    return {name: sum(ref.length for ref in external_refs(path)) for name, path in graphs.items()}
