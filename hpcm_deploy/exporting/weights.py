"""One copy of every weight: the graphs of an export are rewritten to point into one shared weight file.

The step graphs share most of their weights (the attention, the priors, the bank encoders: the s3 prior alone is
used by six stages), and a traced graph embeds its own copy of each. :func:`share_weights` moves every
initializer of every graph into ``weights.bin``, stored once per distinct content (dtype, shape and bytes), and
leaves in each graph an ONNX external-data reference (file, offset, length) to it. The model's own parameters
are written first, under their ``state_dict`` names, so the PyTorch backend reads the same file
(:func:`read_state_dict`) and a graph initializer equal to a parameter points at the parameter's bytes.

The file's layout and the reading side are in :mod:`hpcm_deploy.artifacts.weights`.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from onnx import numpy_helper

from ..artifacts.weights import ALIGN, WEIGHTS_FILE

MIN_SHARED_BYTES = 1024  # smaller initializers (shapes, axes, scalars) stay inside their graph


def _key(array: np.ndarray) -> str:
    """Content key: element type and bytes (not the shape: a reshaped copy of a weight is the same bytes)."""
    h = hashlib.sha256()
    h.update(f"{array.dtype.str}|".encode())
    h.update(np.ascontiguousarray(array).tobytes())
    return h.hexdigest()


@dataclass
class WeightFile:
    """Writes ``weights.bin``: each distinct tensor once, aligned; remembers where."""

    path: Path
    offsets: dict[str, tuple[int, int]] = field(default_factory=dict)  # content key -> (offset, length)
    size: int = 0

    def __post_init__(self) -> None:
        self._file = open(self.path, "wb")  # noqa: SIM115 - closed by close()

    def add(self, array: np.ndarray) -> tuple[int, int]:
        """(offset, length) of ``array`` in the file, written if its content is new."""
        array = np.ascontiguousarray(array)
        if array.dtype.byteorder == ">":
            array = array.astype(array.dtype.newbyteorder("<"))
        key = _key(array)
        if key not in self.offsets:
            pad = -self.size % ALIGN
            data = array.tobytes()
            self._file.write(b"\0" * pad + data)
            self.offsets[key] = (self.size + pad, len(data))
            self.size += pad + len(data)
        return self.offsets[key]

    def close(self) -> None:
        self._file.close()


def share_weights(root: Path, graphs: list[str], state_dict: dict[str, torch.Tensor]) -> dict[str, Any]:
    """Rewrite the graphs ``root/<graph>`` (embedded weights) to point into ``root/weights.bin``; returns the
    manifest entry of the weight file (its parameter index and byte counts; the caller adds its sha256)."""
    store = WeightFile(root / WEIGHTS_FILE)
    try:
        params = {}
        for name, tensor in state_dict.items():
            array = tensor.detach().cpu().contiguous().numpy()
            offset, length = store.add(array)
            params[name] = {"offset": offset, "length": length, "dtype": array.dtype.name, "shape": list(array.shape)}
        embedded = 0
        for graph in graphs:
            embedded += _externalize(root / graph, store)
    finally:
        store.close()
    return {"file": WEIGHTS_FILE, "bytes": store.size, "tensors": len(store.offsets), "parameters": params,
            "bytes_in_graphs_before": embedded}


def _externalize(path: Path, store: WeightFile) -> int:
    """Move the large initializers of one graph into the store; returns the bytes they had taken in it. Also
    drops the exporter's per-node debugging metadata (Python stack traces with this machine's paths: most of a
    graph's bytes once its weights are gone)."""
    model = onnx.load(str(path), load_external_data=True)
    for node in model.graph.node:
        del node.metadata_props[:]
    moved = 0
    for init in model.graph.initializer:
        array = numpy_helper.to_array(init)
        if array.nbytes < MIN_SHARED_BYTES:
            continue
        offset, length = store.add(array)
        moved += length
        for name in ("raw_data", "float_data", "int32_data", "int64_data", "double_data", "uint64_data"):
            init.ClearField(name)
        del init.external_data[:]
        for key, value in (("location", WEIGHTS_FILE), ("offset", str(offset)), ("length", str(length))):
            entry = init.external_data.add()
            entry.key, entry.value = key, value
        init.data_location = onnx.TensorProto.EXTERNAL
    onnx.save(model, str(path))
    return moved
