"""Shapes and sizes: the one evaluator of the program's symbolic shapes, and the size ranges that engines and
exports cover.

A program shape is a tuple of ints and symbols over the batch ``B`` and the padded image size ``H x W``
(``("B", 640, "H/16", "W/16")``); everything else derives from those three numbers.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..config import MAX_SIDE, SIZE_MULTIPLE
from ..config import padded_size as padded
from ..errors import ConfigError
from ..stages.program import CodingProgram


def dim_at(d: int | str, size: tuple[int, int], batch: int) -> int:
    """One dimension of a program shape (``"H/16"``, ``"B"``, ``64``) at a padded size and batch."""
    if isinstance(d, int):
        return d
    env = {"B": batch, "H": size[0], "W": size[1]}
    base, _, div = d.partition("/")
    return env[base] // int(div) if div else env[base]


def shape_at(shape: tuple, size: tuple[int, int], batch: int) -> tuple[int, ...]:
    """A program shape at a padded size and batch."""
    return tuple(dim_at(d, size, batch) for d in shape)


def implied_size(shapes: dict[str, tuple],
                 actual: dict[str, tuple[int, ...]]) -> tuple[int | None, tuple[int, int] | None]:
    """The batch and padded size ``(H, W)`` that concrete tensor shapes imply, read from their program shapes
    (``("B", 64, "H/16", "W/16")`` and ``(2, 64, 32, 48)`` give batch 2 at 512x768); ``None`` where no tensor
    carries that symbol or the shapes do not match their program shape."""
    found: dict[str, int] = {}
    for name, got in actual.items():
        symbolic = shapes.get(name)
        if symbolic is None or len(symbolic) != len(got):
            continue
        for d, n in zip(symbolic, got):
            if isinstance(d, str):
                base, _, div = d.partition("/")
                found.setdefault(base, int(n) * (int(div) if div else 1))
    size = (found["H"], found["W"]) if "H" in found and "W" in found else None
    return found.get("B"), size


def z_grid(size: tuple[int, int]) -> tuple[int, int]:
    """The hyper-latent grid ``(H/64, W/64)`` of a padded size."""
    return size[0] // 64, size[1] // 64


def size_of_z_grid(z_shape: tuple[int, int]) -> tuple[int, int]:
    """The padded size whose hyper-latent grid is ``z_shape``."""
    return z_shape[0] * 64, z_shape[1] * 64


def check_padded(size: tuple[int, int], what: str = "size") -> None:
    """A padded size the model codes and an export covers, or a :class:`ConfigError`."""
    h, w = size
    if h <= 0 or w <= 0 or h % SIZE_MULTIPLE or w % SIZE_MULTIPLE:
        raise ConfigError(f"bad {what} {h}x{w}: padded sizes are positive multiples of {SIZE_MULTIPLE}")
    if h > MAX_SIDE or w > MAX_SIDE:
        raise ConfigError(f"bad {what} {h}x{w}: an export covers sides up to {MAX_SIDE}")


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
        lo, hi = padded(*min_size), padded(*max_size)
        opt = padded(*opt_size) if opt_size else hi
        for a, b, what in ((lo, opt, "min <= opt"), (opt, hi, "opt <= max")):
            if a[0] > b[0] or a[1] > b[1]:
                raise ConfigError(f"size range needs {what} in both sides, got {a} and {b}")
        check_padded(hi, "max size")
        if max_batch < 1:
            raise ConfigError("max batch must be at least 1")
        opt_b = opt_batch or max_batch
        if not 1 <= opt_b <= max_batch:
            raise ConfigError(f"opt batch {opt_b} must be within 1..{max_batch}")
        return cls(lo, opt, hi, 1, opt_b, max_batch)

    @classmethod
    def from_dict(cls, data: dict) -> SizeRange:
        """The ``sizes`` entry of an engine manifest (``min``/``opt``/``max`` as ``[H, W]``, ``max_batch``)."""
        max_batch = int(data.get("max_batch", 1))
        return cls(tuple(data["min"]), tuple(data["opt"]), tuple(data["max"]), int(data.get("min_batch", 1)),
                   int(data.get("opt_batch", max_batch)), max_batch)  # type: ignore[arg-type]

    def as_dict(self) -> dict:
        return {"min": list(self.min_size), "opt": list(self.opt_size), "max": list(self.max_size),
                "min_batch": self.min_batch, "opt_batch": self.opt_batch, "max_batch": self.max_batch}

    def with_batch(self, batch: int) -> SizeRange:
        """The same sizes at one fixed batch (an export traced at a fixed batch)."""
        return SizeRange(self.min_size, self.opt_size, self.max_size, batch, batch, batch)

    def describe(self) -> str:
        """``"sizes 256x256 to 2048x2048, batch 1 to 4"`` (sizes as H x W)."""
        lo, hi = self.min_size, self.max_size
        batch = (f"batch {self.min_batch}" if self.min_batch == self.max_batch
                 else f"batch {self.min_batch} to {self.max_batch}")
        return f"sizes {lo[0]}x{lo[1]} to {hi[0]}x{hi[1]}, {batch}"

    def covers(self, size: tuple[int, int], batch: int = 1) -> bool:
        h, w = padded(*size)
        return (self.min_size[0] <= h <= self.max_size[0] and self.min_size[1] <= w <= self.max_size[1]
                and self.min_batch <= batch <= self.max_batch)


# the padded sizes engines (and ONNX Runtime's TensorRT provider) are built for unless told otherwise: min / opt / max
DEFAULT_SIZES = SizeRange.from_sizes((256, 256), (512, 768), (2048, 2048))


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
