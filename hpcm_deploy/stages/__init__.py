"""The model cut into stages with explicit state, and the coding program that orders them."""

from .modules import StageModule, stage_module, stage_modules
from .program import CodeStep, CodingProgram, Op, StageSpec, TensorInfo, build_program

__all__ = ["CodeStep", "CodingProgram", "Op", "StageModule", "StageSpec", "TensorInfo", "build_program",
           "stage_module", "stage_modules"]
