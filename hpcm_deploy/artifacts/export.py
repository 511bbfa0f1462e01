"""The export manifest: what an export directory holds, and the checks that it is whole and unchanged."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..config import HPCMConfig
from ..errors import ExportError
from ..files import sha256_file
from ..stages.program import CodingProgram, build_program
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


@dataclass
class Manifest:
    """A parsed ``manifest.json`` of an export directory."""

    root: Path
    data: dict[str, Any]

    @property
    def name(self) -> str:
        return self.data["name"]

    @property
    def config(self) -> HPCMConfig:
        return HPCMConfig.from_dict(self.data["config"])

    @property
    def fingerprint(self) -> str:
        return self.data["fingerprint"]

    @property
    def batch(self) -> int | None:
        return self.data.get("batch")

    @property
    def precision(self) -> str:
        return self.data.get("precision", "fp32")

    def program(self) -> CodingProgram:
        """The coding program, checked against the one the export was made with."""
        program = build_program(self.config)
        stored = self.data.get("program", {}).get("stages")
        if stored is not None and stored != json.loads(json.dumps(program.to_dict()["stages"])):
            raise ExportError(f"export {self.root} was made for another coding program than this hpcm-deploy "
                              "runs; re-export the model")
        return program

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The model's weights, read from the export's shared weight file."""
        entry = self.data["weights"]
        return read_state_dict(self.root / entry["file"], entry["parameters"])

    def load_model(self, device: str | torch.device = "cpu"):
        """The reference model of this export (configuration and weights), ready to compress."""
        from ..models.api import load_model

        return load_model(checkpoint={"config": self.data["config"], "state_dict": self.state_dict()}, seed=None,
                          device=device)

    def stage_path(self, stage: str) -> Path:
        try:
            return self.root / self.data["stages"][stage]["file"]
        except KeyError:
            raise ExportError(f"export {self.root} has no stage {stage!r}") from None

    def path(self, key: str) -> Path:
        return self.root / self.data[key]["file"]

    @classmethod
    def load(cls, root: str | os.PathLike, verify_hashes: bool = True) -> Manifest:
        """Read and check an export directory; a missing, foreign or modified export is an :class:`ExportError`."""
        root = Path(root)
        path = root / MANIFEST
        if not root.is_dir():
            raise ExportError(f"export directory not found: {root} (create one with `hpcm-deploy export`)")
        if not path.is_file():
            raise ExportError(f"{root} is not an export: no {MANIFEST} (create one with `hpcm-deploy export`)")
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise ExportError(f"cannot read {path}: {exc}") from None
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise ExportError(f"{path} is not an hpcm-deploy export manifest")
        if data.get("format_version") != FORMAT_VERSION:
            raise ExportError(f"{root} is an export of format version {data.get('format_version')}; this hpcm-deploy "
                              f"reads version {FORMAT_VERSION}: re-export the model with `hpcm-deploy export`")
        manifest = cls(root, data)
        if verify_hashes:
            manifest.verify_files()
        return manifest

    def verify_files(self) -> None:
        entries = [(f"stage {k}", v) for k, v in self.data["stages"].items()]
        entries += [(k, self.data[k]) for k in ("tables", "weights") if k in self.data]
        for label, entry in entries:
            file = self.root / entry["file"]
            if not file.is_file():
                raise ExportError(f"export {self.root} is incomplete: {label} file {entry['file']} is missing")
            if sha256_file(file) != entry["sha256"]:
                raise ExportError(f"export {self.root} was modified: {entry['file']} does not match its sha256 in "
                                  f"{MANIFEST}; re-export the model")
