"""The export manifest: what an export directory holds, and the checks that it is whole and unchanged."""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..config import HPCMConfig
from ..entropy.tables import EntropyTables
from ..errors import ExportError
from ..files import sha256_file
from ..stages.program import CodingProgram, build_program
from .document import extras, read_document, write_document
from .weights import read_state_dict

FORMAT = "hpcm-deploy-export"
# 2: step stages with a top-k choice take topk_force and report topk/topk_gap
# 3: one shared weight file (weights.bin) for every graph and the PyTorch backend; stage roles in the program
FORMAT_VERSION = 3
MANIFEST = "manifest.json"
TABLES = "tables.npz"


def model_fingerprint(config: HPCMConfig, state_dict: dict[str, torch.Tensor], tables_digest: str) -> str:
    """sha256 over the configuration, every weight (name, dtype, shape, bytes) and the entropy tables: two
    exports get the same fingerprint exactly when they code the same streams."""
    h = hashlib.sha256()
    h.update(json.dumps(config.to_dict(), sort_keys=True).encode())
    for name in sorted(state_dict):
        t = state_dict[name].detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.numpy().tobytes() if t.dtype != torch.bfloat16 else t.float().numpy().tobytes())
    h.update(tables_digest.encode())
    return h.hexdigest()


@dataclass(frozen=True)
class TensorEntry:
    """One input or output of a stage graph: its name, dtype, the shape ONNX recorded and the program's."""

    name: str
    dtype: str
    onnx_shape: tuple[int | str, ...] = ()
    shape: tuple[int | str, ...] = ()

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TensorEntry:
        return cls(d["name"], d["dtype"], tuple(d.get("onnx_shape", ())), tuple(d.get("shape", ())))

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "dtype": self.dtype, "onnx_shape": list(self.onnx_shape), "shape": list(self.shape)}


@dataclass(frozen=True)
class FileEntry:
    """A file of the export and its sha256."""

    file: str
    sha256: str

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FileEntry:
        return cls(d["file"], d["sha256"])

    def to_dict(self) -> dict[str, Any]:
        return {"file": self.file, "sha256": self.sha256}


@dataclass(frozen=True)
class StageEntry:
    """One stage's graph: its file, digest and size, its role in the program and its inputs and outputs."""

    file: str
    sha256: str
    bytes: int = 0
    kind: str = ""
    scale: int = 0
    partition: int = -1
    inputs: tuple[TensorEntry, ...] = ()
    outputs: tuple[TensorEntry, ...] = ()
    export_seconds: float = 0.0

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> StageEntry:
        return cls(d.get("file", ""), d.get("sha256", ""), d.get("bytes", 0), d.get("kind", ""), d.get("scale", 0),
                   d.get("partition", -1), tuple(TensorEntry.from_dict(t) for t in d.get("inputs", ())),
                   tuple(TensorEntry.from_dict(t) for t in d.get("outputs", ())), d.get("export_seconds", 0.0))

    def to_dict(self) -> dict[str, Any]:
        return {"file": self.file, "sha256": self.sha256, "bytes": self.bytes, "kind": self.kind, "scale": self.scale,
                "partition": self.partition, "inputs": [t.to_dict() for t in self.inputs],
                "outputs": [t.to_dict() for t in self.outputs], "export_seconds": self.export_seconds}


@dataclass(frozen=True)
class WeightsEntry:
    """The shared weight file: its size, how many tensors it holds, and where each model parameter lies in it
    (``{name: {offset, length, dtype, shape}}``)."""

    file: str
    sha256: str
    bytes: int
    tensors: int
    parameters: dict[str, dict[str, Any]]
    bytes_in_graphs_before: int = 0

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> WeightsEntry:
        return cls(d["file"], d.get("sha256", ""), d.get("bytes", 0), d.get("tensors", 0), d.get("parameters", {}),
                   d.get("bytes_in_graphs_before", 0))

    def to_dict(self) -> dict[str, Any]:
        return {"file": self.file, "bytes": self.bytes, "tensors": self.tensors, "parameters": self.parameters,
                "bytes_in_graphs_before": self.bytes_in_graphs_before, "sha256": self.sha256}


_FIELDS = ("format", "format_version", "name", "family", "source", "config", "fingerprint", "opset", "opset_requested",
           "batch", "precision", "size_rule", "export_size", "tables", "stages", "program", "created_with",
           "export_seconds", "weights", "recipe")


@dataclass(frozen=True)
class Manifest:
    """A parsed ``manifest.json`` of an export directory: written by :mod:`hpcm_deploy.exporting`, read through
    these attributes everywhere. Entries this version does not know (``source_sha256`` of the demo export, a
    script's own marks) are kept in ``extra`` and written back unchanged."""

    root: Path
    name: str
    fingerprint: str
    config_dict: dict[str, Any]
    stages: dict[str, StageEntry]
    tables: FileEntry | None = None
    weights: WeightsEntry | None = None
    family: str = ""
    source: str = ""
    opset: int = 0
    opset_requested: int = 0
    batch: int | None = None
    precision: str = "fp32"
    size_rule: dict[str, Any] = field(default_factory=dict)
    export_size: tuple[int, int] | None = None
    program_dict: dict[str, Any] = field(default_factory=dict)
    created_with: dict[str, str] = field(default_factory=dict)
    export_seconds: float = 0.0
    recipe: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    format_version: int = FORMAT_VERSION

    @classmethod
    def from_dict(cls, root: str | os.PathLike, d: dict[str, Any]) -> Manifest:
        tables, weights, size = d.get("tables"), d.get("weights"), d.get("export_size")
        return cls(
            root=Path(root), name=d["name"], fingerprint=d["fingerprint"], config_dict=d["config"],
            stages={k: StageEntry.from_dict(v) for k, v in d["stages"].items()},
            tables=FileEntry.from_dict(tables) if tables else None,
            weights=WeightsEntry.from_dict(weights) if weights else None,
            family=d.get("family", ""), source=d.get("source", ""), opset=d.get("opset", 0),
            opset_requested=d.get("opset_requested", 0), batch=d.get("batch"), precision=d.get("precision", "fp32"),
            size_rule=d.get("size_rule", {}), export_size=tuple(size) if size else None,
            program_dict=d.get("program", {}), created_with=d.get("created_with", {}),
            export_seconds=d.get("export_seconds", 0.0), recipe=d.get("recipe"), extra=extras(d, _FIELDS),
            format_version=d.get("format_version", FORMAT_VERSION))

    def to_dict(self) -> dict[str, Any]:
        """The manifest as ``manifest.json`` holds it (the same entries, in the same order, as it was read)."""
        d: dict[str, Any] = {
            "format": FORMAT, "format_version": self.format_version, "name": self.name, "family": self.family,
            "source": self.source, "config": self.config_dict, "fingerprint": self.fingerprint, "opset": self.opset,
            "opset_requested": self.opset_requested, "batch": self.batch, "precision": self.precision,
            "size_rule": self.size_rule, "export_size": list(self.export_size) if self.export_size else None,
            "tables": self.tables.to_dict() if self.tables else None,
            "stages": {k: v.to_dict() for k, v in self.stages.items()}, "program": self.program_dict,
            "created_with": self.created_with, "export_seconds": self.export_seconds,
        }
        if self.weights is not None:
            d["weights"] = self.weights.to_dict()
        if self.recipe is not None:
            d["recipe"] = self.recipe
        return {**d, **self.extra}

    def save(self) -> None:
        write_document(self.root / MANIFEST, self.to_dict())

    @property
    def data(self) -> dict[str, Any]:
        """Deprecated: the manifest as a dict (a copy); read the attributes instead."""
        warnings.warn("Manifest.data is deprecated; read the manifest's attributes", DeprecationWarning, stacklevel=2)
        return self.to_dict()

    @property
    def config(self) -> HPCMConfig:
        return HPCMConfig.from_dict(self.config_dict)

    def program(self) -> CodingProgram:
        """The coding program, checked against the one the export was made with."""
        program = build_program(self.config)
        stored = self.program_dict.get("stages")
        if stored is not None and stored != json.loads(json.dumps(program.to_dict()["stages"])):
            raise ExportError(f"export {self.root} was made for another coding program than this hpcm-deploy "
                              "runs; re-export the model")
        return program

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The model's weights, read from the export's shared weight file."""
        if self.weights is None:
            raise ExportError(f"export {self.root} has no weight file; re-export the model")
        return read_state_dict(self.root / self.weights.file, self.weights.parameters)

    def load_model(self, device: str | torch.device = "cpu"):
        """The reference model of this export (configuration and weights), ready to compress."""
        from ..models.api import load_model

        return load_model(checkpoint={"config": self.config_dict, "state_dict": self.state_dict()}, seed=None,
                          device=device)

    def stage_path(self, stage: str) -> Path:
        try:
            return self.root / self.stages[stage].file
        except KeyError:
            raise ExportError(f"export {self.root} has no stage {stage!r}") from None

    def path(self, key: str) -> Path:
        """The file of the ``tables`` or ``weights`` entry."""
        entry = {"tables": self.tables, "weights": self.weights}.get(key)
        if entry is None:
            raise ExportError(f"export {self.root} has no {key} file")
        return self.root / entry.file

    @classmethod
    def load(cls, root: str | os.PathLike, verify_hashes: bool = True) -> Manifest:
        """Read and check an export directory; a missing, foreign or modified export is an :class:`ExportError`."""
        root = Path(root)
        if not root.is_dir():
            raise ExportError(f"export directory not found: {root} (create one with `hpcm-deploy export`)")
        data = read_document(root / MANIFEST, FORMAT, "export manifest", ExportError,
                             f"{root} is not an export: no {MANIFEST} (create one with `hpcm-deploy export`)")
        if data.get("format_version") != FORMAT_VERSION:
            raise ExportError(f"{root} is an export of format version {data.get('format_version')}; this hpcm-deploy "
                              f"reads version {FORMAT_VERSION}: re-export the model with `hpcm-deploy export`")
        try:
            manifest = cls.from_dict(root, data)
        except (KeyError, TypeError, AttributeError) as exc:
            raise ExportError(f"{root / MANIFEST} is incomplete ({type(exc).__name__}: {exc}); re-export the "
                              "model") from None
        if verify_hashes:
            manifest.verify_files()
        return manifest

    def verify_files(self) -> None:
        entries: list[tuple[str, FileEntry | StageEntry | WeightsEntry]] = [
            (f"stage {k}", v) for k, v in self.stages.items()]
        entries += [(k, e) for k, e in (("tables", self.tables), ("weights", self.weights)) if e is not None]
        for label, entry in entries:
            file = self.root / entry.file
            if not file.is_file():
                raise ExportError(f"export {self.root} is incomplete: {label} file {entry.file} is missing")
            if sha256_file(file) != entry.sha256:
                raise ExportError(f"export {self.root} was modified: {entry.file} does not match its sha256 in "
                                  f"{MANIFEST}; re-export the model")


@dataclass(frozen=True)
class OpenedExport:
    """An export read once: its manifest, its coding program (checked against this hpcm-deploy's) and its entropy
    tables, handed down to the backend and the codec that run it, so that nothing reads or rebuilds them twice."""

    manifest: Manifest
    program: CodingProgram
    tables: EntropyTables

    @classmethod
    def open(cls, source: str | os.PathLike | Manifest | OpenedExport, verify_hashes: bool = True) -> OpenedExport:
        """An export directory (or an already loaded manifest) opened; an opened export is returned as it is."""
        if isinstance(source, OpenedExport):
            return source
        manifest = source if isinstance(source, Manifest) else Manifest.load(source, verify_hashes)
        return cls(manifest, manifest.program(), EntropyTables.load(manifest.path("tables")))
