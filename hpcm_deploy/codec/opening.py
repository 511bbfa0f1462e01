"""How a :class:`~hpcm_deploy.codec.Codec` is opened: from an export (read once: manifest, program, tables, handed
to the backend the registry opens) or from a reference model (its stages in PyTorch), and the settings that say
how it codes whatever it runs on."""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..artifacts.export import Manifest, OpenedExport, model_fingerprint
from ..backends import open_backend
from ..backends.base import Backend
from ..backends.torch_backend import TorchBackend
from ..config import DEFAULT_MAX_PIXELS
from ..entropy.tables import EntropyTables
from ..errors import InputError
from ..image import parse_alpha
from ..models.hpcm import HPCM
from ..runtime.decisions import DEFAULT_MARGINS, Margins
from ..stages import CodingProgram, build_program


@dataclass(frozen=True)
class Settings:
    """How a codec codes, whatever it runs on (the constructor's keyword arguments)."""

    max_batch: int | None = None
    margins: Margins | None = DEFAULT_MARGINS
    memory_budget: int | None | str = "auto"  # bytes of the transforms' working memory (tiling), auto or None
    max_pixels: int | None = DEFAULT_MAX_PIXELS
    legacy_streams: bool = False
    alpha: Any = "refuse"

    def __post_init__(self) -> None:
        parse_alpha(self.alpha)  # a bad choice fails before anything is loaded

    @classmethod
    def of(cls, **given: Any) -> Settings:
        """Settings from keyword arguments, reading the deprecated ``memory=`` as ``memory_budget=`` (the word
        "memory" alone names the model's memory banks)."""
        if "memory" in given:
            warnings.warn("Codec(memory=...) is deprecated: use memory_budget=...", DeprecationWarning, stacklevel=3)
            if "memory_budget" in given:
                raise InputError("give memory_budget or the deprecated memory, not both")
            given["memory_budget"] = given.pop("memory")
        return cls(**given)


@dataclass(frozen=True)
class Opened:
    """What a codec runs: the coding program, its entropy tables and fingerprint, the backend (and the export's
    manifest and fixed batch, when it came from an export)."""

    program: CodingProgram
    tables: EntropyTables
    fingerprint: str
    backend: Backend
    manifest: Manifest | None = None
    fixed_batch: int | None = None


def open_export(source: str | os.PathLike | Manifest | OpenedExport | None, backend: str | None,
                 device: str | None, options: Mapping[str, Any] | object | None) -> Opened:
    """The export opened once (manifest, program, tables) and handed to its backend."""
    if source is None:
        raise InputError("Codec needs an export directory (hpcm_deploy.default_export() gives the embedded "
                         "demo model's)")
    export = OpenedExport.open(source)
    opened = open_backend(backend or "onnxruntime", export, device, options)
    return Opened(export.program, export.tables, export.manifest.fingerprint, opened, export.manifest,
                   export.manifest.batch)


def open_model(model: HPCM, device: str | None) -> Opened:
    """A reference model's stages in PyTorch, with the tables and fingerprint an export of it would have."""
    model = model.eval()
    tables = EntropyTables.from_model(model)
    program = build_program(model.config)
    fingerprint = model_fingerprint(model.config, model.state_dict(), tables.digest())
    return Opened(program, tables, fingerprint, TorchBackend(model, program, device or "cpu"))
