"""Optimisation profiles: the input shapes each engine must accept, from a range of padded image sizes."""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import ConfigError
from ..image import padded_size
from ..stages.program import CodingProgram


@dataclass(frozen=True)
class SizeRange:
    """Padded image sizes (multiples of 256) and batch sizes an engine set covers."""

    min_size: tuple[int, int]
    opt_size: tuple[int, int]
    max_size: tuple[int, int]
    min_batch: int = 1
    opt_batch: int = 1
    max_batch: int = 1

    @classmethod
    def from_sizes(cls, min_size: tuple[int, int], opt_size: tuple[int, int] | None, max_size: tuple[int, int],
                   max_batch: int = 1, opt_batch: int | None = None) -> SizeRange:
        """Each size padded up to the model's multiple; ``opt`` defaults to ``max``. Checks the order."""
        lo, hi = padded_size(*min_size), padded_size(*max_size)
        opt = padded_size(*opt_size) if opt_size else hi
        for a, b, what in ((lo, opt, "min <= opt"), (opt, hi, "opt <= max")):
            if a[0] > b[0] or a[1] > b[1]:
                raise ConfigError(f"size range needs {what} in both sides, got {a} and {b}")
        if max_batch < 1:
            raise ConfigError("max batch must be at least 1")
        opt_b = opt_batch or max_batch
        if not 1 <= opt_b <= max_batch:
            raise ConfigError(f"opt batch {opt_b} must be within 1..{max_batch}")
        return cls(lo, opt, hi, 1, opt_b, max_batch)

    def covers(self, size: tuple[int, int], batch: int = 1) -> bool:
        h, w = padded_size(*size)
        return (self.min_size[0] <= h <= self.max_size[0] and self.min_size[1] <= w <= self.max_size[1]
                and self.min_batch <= batch <= self.max_batch)


def _dim(d: int | str, size: tuple[int, int], batch: int) -> int:
    if isinstance(d, int):
        return d
    env = {"B": batch, "H": size[0], "W": size[1]}
    base, _, div = d.partition("/")
    return env[base] // int(div) if div else env[base]


def shape_at(shape: tuple, size: tuple[int, int], batch: int) -> tuple[int, ...]:
    """A program shape (``("B", 640, "H/16", "W/16")``) at a padded size and batch."""
    return tuple(_dim(d, size, batch) for d in shape)


def stage_profile(program: CodingProgram, stage: str, sizes: SizeRange,
                  fixed_batch: int | None = None) -> dict[str, dict[str, tuple[int, ...]]]:
    """``{input name: {"min", "opt", "max": shape}}`` for one stage."""
    out = {}
    for name in program.stages[stage].inputs:
        shape = program.tensors[name].shape
        points = {"min": (sizes.min_size, sizes.min_batch), "opt": (sizes.opt_size, sizes.opt_batch),
                  "max": (sizes.max_size, sizes.max_batch)}
        out[name] = {k: shape_at(shape, s, fixed_batch or b) for k, (s, b) in points.items()}
    return out


def all_profiles(program: CodingProgram, sizes: SizeRange, fixed_batch: int | None = None) -> dict[str, dict]:
    return {stage: stage_profile(program, stage, sizes, fixed_batch) for stage in program.stages}
