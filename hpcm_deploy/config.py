"""Model configuration: one frozen dataclass and the named presets.

Field names follow the Phase 2 design document (``max_refs_s1``, ``topk_refs_s2``, ``value_resolution``...),
so a user who read the seed finds every knob under the name they know.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from .errors import ConfigError

SCHEDULES = ("seed", "reference")
#: Padded image sides are multiples of this (window attention and the mask tilings need whole 256 tiles).
SIZE_MULTIPLE = 256
#: The largest image side an export covers (its dynamic height and width range: 64 tiles of 256).
MAX_SIDE = 64 * SIZE_MULTIPLE
#: The most pixels a codec takes on by default (an 8K frame is 33 MP, a phone photo 12-50 MP; a 16384 x 16384
#: "decompression bomb" is 268 MP): larger images and streams are refused before anything is allocated.
DEFAULT_MAX_PIXELS = 64_000_000


def padded_size(height: int, width: int, multiple: int = SIZE_MULTIPLE) -> tuple[int, int]:
    """The smallest multiple of ``multiple`` at least ``height`` x ``width`` (the size an image is coded at)."""
    return (-(-height // multiple) * multiple, -(-width // multiple) * multiple)


@dataclass(frozen=True)
class HPCMConfig:
    """Everything that defines the architecture of an HPCM-Base or Phase 2 model.

    ``enable_multiref=False`` gives HPCM-Base. With it on, a scale whose ``max_refs_sX`` is 0 has no bank.
    ``multiref_schedule`` picks where the banks are queried: ``"seed"`` (every network-driven coding step,
    as the design document says) or ``"reference"`` (the Phase 2 reference code, which skips the first
    coding step of s2 and s3); see docs/model.md.
    """

    M: int = 320
    N: int = 256
    enable_multiref: bool = False
    max_refs_s1: int = 2
    max_refs_s2: int = 3
    max_refs_s3: int = 4
    topk_refs_s1: int = 1
    topk_refs_s2: int = 2
    topk_refs_s3: int = 2
    compress_ratio: int = 4
    value_resolution: int = 8
    temperature: float = 0.1
    enable_hierarchical_transfer: bool = True
    multiref_schedule: str = "seed"
    # widths of the analysis/synthesis transforms (g_a: 3 -> w0 -> w1 -> w2 -> M; g_s mirrors it)
    transform_widths: tuple[int, int, int] = (96, 192, 384)
    attn_heads: int = 32

    def __post_init__(self) -> None:
        if isinstance(self.transform_widths, list):
            object.__setattr__(self, "transform_widths", tuple(self.transform_widths))
        self.validate()

    def validate(self) -> None:
        """Raise :class:`ConfigError` for a configuration the model cannot be built from."""
        problems: list[str] = []
        if self.M <= 0 or self.M % 8:
            problems.append(f"M={self.M} must be a positive multiple of 8 (8 channel groups)")
        if self.N <= 0:
            problems.append(f"N={self.N} must be positive")
        if (2 * self.M) % self.attn_heads:
            problems.append(f"2*M={2 * self.M} must be divisible by attn_heads={self.attn_heads}")
        if len(self.transform_widths) != 3 or any(w <= 0 or w % 4 for w in self.transform_widths):
            problems.append(f"transform_widths={self.transform_widths} must be 3 positive multiples of 4")
        if self.multiref_schedule not in SCHEDULES:
            problems.append(f"multiref_schedule={self.multiref_schedule!r} must be one of {SCHEDULES}")
        for s in (1, 2, 3):
            refs, topk = getattr(self, f"max_refs_s{s}"), getattr(self, f"topk_refs_s{s}")
            if refs < 0:
                problems.append(f"max_refs_s{s}={refs} must be >= 0")
            if topk < 1:
                problems.append(f"topk_refs_s{s}={topk} must be >= 1")
        if self.enable_multiref:
            c = 2 * self.M
            if self.compress_ratio <= 0 or c % self.compress_ratio:
                problems.append(f"compress_ratio={self.compress_ratio} must divide 2*M={c}")
            elif (c // self.compress_ratio) % min(8, c // self.compress_ratio):
                problems.append(f"key dim {c // self.compress_ratio} must be divisible by its 8 norm groups")
            if c % 32:
                problems.append(f"2*M={c} must be divisible by 32 (fusion GroupNorm)")
            if self.value_resolution <= 0:
                problems.append(f"value_resolution={self.value_resolution} must be positive")
            if self.temperature <= 0:
                problems.append(f"temperature={self.temperature} must be positive")
        if problems:
            raise ConfigError("invalid configuration: " + "; ".join(problems))

    # ----- derived facts -----
    @property
    def family(self) -> str:
        """``"hpcm-base"`` or ``"phase2"``."""
        return "phase2" if self.enable_multiref else "hpcm-base"

    def max_refs(self, scale: int) -> int:
        """Bank capacity of scale 1, 2 or 3 (0 when the scale has no bank)."""
        return getattr(self, f"max_refs_s{scale}") if self.enable_multiref else 0

    def topk(self, scale: int) -> int:
        return getattr(self, f"topk_refs_s{scale}")

    @property
    def key_dim(self) -> int:
        return 2 * self.M // self.compress_ratio

    def replace(self, **overrides: Any) -> HPCMConfig:
        """A copy with some fields changed; unknown names are a :class:`ConfigError`."""
        names = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(overrides) - names)
        if unknown:
            raise ConfigError(f"unknown configuration field(s): {', '.join(unknown)}; "
                              f"known: {', '.join(sorted(names))}")
        return dataclasses.replace(self, **overrides)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["transform_widths"] = list(self.transform_widths)
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> HPCMConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ConfigError(f"unknown configuration field(s): {', '.join(unknown)}")
        return cls(**data)


_PHASE2 = dict(enable_multiref=True, max_refs_s1=2, max_refs_s2=3, max_refs_s3=4, topk_refs_s1=1, topk_refs_s2=2,
               topk_refs_s3=2, compress_ratio=4, value_resolution=8, enable_hierarchical_transfer=True)
_TINY = dict(M=64, N=64, transform_widths=(32, 48, 64), attn_heads=8)

PRESETS: dict[str, HPCMConfig] = {
    # the official HPCM-Base (ICCV 2025): parameter names and shapes match the official code
    "hpcm-base": HPCMConfig(),
    # the seed's defaults
    "phase2": HPCMConfig(**_PHASE2),
    # the seed's three tuning presets
    "phase2-memory": HPCMConfig(**{**_PHASE2, "compress_ratio": 8, "value_resolution": 4,
                                   "max_refs_s1": 1, "max_refs_s2": 2, "max_refs_s3": 3}),
    "phase2-speed": HPCMConfig(**{**_PHASE2, "topk_refs_s1": 1, "topk_refs_s2": 1, "topk_refs_s3": 2,
                                  "enable_hierarchical_transfer": False}),
    "phase2-quality": HPCMConfig(**{**_PHASE2, "compress_ratio": 2, "value_resolution": 16,
                                    "max_refs_s1": 3, "max_refs_s2": 4, "max_refs_s3": 6,
                                    "topk_refs_s1": 2, "topk_refs_s2": 3, "topk_refs_s3": 3}),
    # same structure, small widths: for tests and CPU training
    "tiny-base": HPCMConfig(**_TINY),
    "tiny-phase2": HPCMConfig(**{**_PHASE2, **_TINY}),
}


def get_config(name: str, **overrides: Any) -> HPCMConfig:
    """The preset ``name`` with ``overrides`` applied."""
    try:
        base = PRESETS[name]
    except KeyError:
        raise ConfigError(f"unknown preset {name!r}; choose one of: {', '.join(PRESETS)}") from None
    return base.replace(**overrides) if overrides else base

