"""Options shared by several verbs."""

from __future__ import annotations

import dataclasses
from typing import Any

import click

from ..config import HPCMConfig
from ..errors import ConfigError


def parse_overrides(items: tuple[str, ...]) -> dict[str, Any]:
    """``("M=64", "enable_multiref=true")`` -> typed config overrides."""
    fields = {f.name: f for f in dataclasses.fields(HPCMConfig)}
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or key not in fields:
            raise ConfigError(f"bad --set {item!r}: expected FIELD=VALUE with FIELD one of {', '.join(fields)}")
        default = getattr(HPCMConfig(), key)
        try:
            if isinstance(default, bool):
                if raw.lower() not in ("1", "0", "true", "false", "yes", "no", "on", "off"):
                    raise ValueError(raw)
                value: Any = raw.lower() in ("1", "true", "yes", "on")
            elif isinstance(default, tuple):
                value = tuple(int(v) for v in raw.split(","))
            else:
                value = type(default)(raw)
        except ValueError:
            raise ConfigError(f"bad --set {item!r}: {raw!r} is not a valid {type(default).__name__}") from None
        out[key] = value
    return out


set_option = click.option("--set", "overrides", multiple=True, metavar="FIELD=VALUE",
                          help="Override a configuration field (repeatable), e.g. --set max_refs_s1=0.")


def parse_size(text: str, padded: bool = False) -> tuple[int, int]:
    """``"512x768"`` -> (512, 768); ``padded``: the size must be one the model codes (multiples of 256)."""
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise ConfigError(f"bad size {text!r}: expected HxW, e.g. 512x768") from None
    if padded and (h <= 0 or w <= 0 or h % 256 or w % 256):
        raise ConfigError(f"bad size {text!r}: padded sizes are positive multiples of 256")
    return h, w
