"""The entropy tables a codec needs (y and z CDFs, the scale bucket edges), from a model or from a file."""

from __future__ import annotations

import hashlib
import io
import os
from dataclasses import dataclass

import numpy as np

from ..errors import ExportError
from .ggm import CDFTable
from .lanes import LaneTable


@dataclass(frozen=True)
class EntropyTables:
    y: CDFTable
    z: CDFTable
    scale_edges: np.ndarray  # float32 [59]: the scale table without its last entry

    @classmethod
    def from_model(cls, model) -> EntropyTables:
        model.update()
        return cls(model.table_y, model.table_z, model.scale_edges.cpu().numpy().astype(np.float32))

    def lane_tables(self) -> tuple[LaneTable, LaneTable]:
        """``(y, z)`` in the form the lane coder reads (built once, then kept)."""
        cached = self.__dict__.get("_lanes")
        if cached is None:
            cached = (LaneTable.from_cdf_table(self.y), LaneTable.from_cdf_table(self.z))
            object.__setattr__(self, "_lanes", cached)
        return cached

    def to_bytes(self) -> bytes:
        buf = io.BytesIO()
        np.savez(buf, y_cdf=self.y.cdf, y_cdf_length=self.y.cdf_length, y_offset=self.y.offset,
                 z_cdf=self.z.cdf, z_cdf_length=self.z.cdf_length, z_offset=self.z.offset,
                 scale_edges=self.scale_edges)
        return buf.getvalue()

    def digest(self) -> str:
        h = hashlib.sha256()
        for a in (self.y.cdf, self.y.cdf_length, self.y.offset, self.z.cdf, self.z.cdf_length, self.z.offset,
                  self.scale_edges):
            h.update(np.ascontiguousarray(a).tobytes())
        return h.hexdigest()

    def save(self, path: str | os.PathLike) -> None:
        with open(path, "wb") as f:
            f.write(self.to_bytes())

    @classmethod
    def load(cls, path: str | os.PathLike) -> EntropyTables:
        try:
            with np.load(path) as d:
                y, z = (CDFTable(d[f"{p}_cdf"].astype(np.int32), d[f"{p}_cdf_length"].astype(np.int32),
                                 d[f"{p}_offset"].astype(np.int32)) for p in ("y", "z"))
                edges = d["scale_edges"].astype(np.float32)
        except (OSError, KeyError, ValueError) as exc:
            raise ExportError(f"cannot read entropy tables {os.fspath(path)}: {exc}") from None
        return cls(y, z, edges)
