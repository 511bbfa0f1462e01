"""The model cut into stages with explicit state, and the coding program that orders them.

The names are imported on first use: the coding program (:mod:`.program`) is pure Python over the configuration
and the static schedule, and importing it must not load torch, which the stage modules (:mod:`.modules`) need.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_names

_NAMES = {
    "StageModule": "modules", "stage_module": "modules", "stage_modules": "modules",
    "CodeStep": "program", "CodingProgram": "program", "Op": "program", "StageSpec": "program",
    "TensorInfo": "program", "build_program": "program",
}

__all__ = ["CodeStep", "CodingProgram", "Op", "StageModule", "StageSpec", "TensorInfo", "build_program",
           "stage_module", "stage_modules"]


__getattr__ = lazy_names(__name__, _NAMES, globals())

if TYPE_CHECKING:  # pragma: no cover - for type checkers
    from .modules import StageModule, stage_module, stage_modules
    from .program import CodeStep, CodingProgram, Op, StageSpec, TensorInfo, build_program
