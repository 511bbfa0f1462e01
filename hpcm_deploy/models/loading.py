"""Checkpoint reading and loading: official HPCM-Base files, Phase 2 reference-code files, and ours."""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from ..entropy import ggm
from ..errors import CheckpointError
from .hpcm import HPCM

log = logging.getLogger(__name__)

# buffers the official code keeps in its state_dict; we rebuild the tables ourselves
_OFFICIAL_BUFFERS = {
    "scale_table", "quantized_cdf_z", "cdf_length_z", "offset_z", "quantized_cdf_y", "cdf_length_y", "offset_y",
}
_OFFICIAL_CONSTANTS = {
    "entropy_estimation.beta": ggm.BETA,
    "entropy_estimation.scale_lower_bound.bound": ggm.SCALE_BOUND,
    "entropy_estimation.likelihood_lower_bound.bound": ggm.LIKELIHOOD_BOUND,
}
# entries of the Phase 2 reference code that hold no weights we use: its memory buffers and layers it
# builds but never calls
_REFERENCE_EXTRAS = re.compile(r"^memory_bank_s[123]\.(memory_keys|memory_initialized|memory_values|"
                               r"mha_(query|key|value)\.(weight|bias))$")
# parameters a checkpoint may lack, initialised fresh: never registered in the code that trained official
# weights (adaptive params), banks absent from HPCM-Base files, transfer adapters the reference never used
_FRESH_GROUPS = (re.compile(r"^adaptive_params_list\."), re.compile(r"^(memory_bank_s[123])\."),
                 re.compile(r"^hierarchical_manager\."))


def read_checkpoint(source: str | os.PathLike | Mapping[str, Any]) -> tuple[dict[str, Tensor], dict | None]:
    """``(state_dict, config_dict_or_None)`` from a path or an already loaded object. Accepts a raw
    ``state_dict``, ``{"state_dict": ...}`` (optionally with ``"config"``), and a ``module.`` prefix."""
    if isinstance(source, Mapping):
        obj: Any = source
    else:
        path = os.fspath(source)
        if not os.path.isfile(path):
            raise CheckpointError(f"checkpoint not found: {path}")
        with open(path, "rb") as f:
            head = f.read(4)
        if not head.startswith((b"PK\x03\x04", b"\x80")):  # torch.save writes a zip archive (or, before 1.6, a pickle)
            raise CheckpointError(f"{path} is not a PyTorch checkpoint (torch.save writes a zip archive or a pickle; "
                                  f"this file starts with {head!r})")
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # torch raises many kinds for a file that is not a checkpoint
            raise CheckpointError(f"cannot read checkpoint {path}: {str(exc).splitlines()[0]}") from None
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"checkpoint holds a {type(obj).__name__}, not a state_dict")
    config = obj.get("config") if isinstance(obj.get("config"), Mapping) else None
    for key in ("state_dict", "model"):
        if isinstance(obj.get(key), Mapping):
            obj = obj[key]
            break
    state = {}
    for k, v in obj.items():
        if not isinstance(v, Tensor):
            raise CheckpointError(f"checkpoint entry {k!r} is a {type(v).__name__}, not a tensor")
        state[k[len("module."):] if k.startswith("module.") else k] = v
    return state, dict(config) if config is not None else None


def _names(keys: list[str], limit: int = 8) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f" (+{len(keys) - limit} more)" if len(keys) > limit else "")


def load_into(model: HPCM, state: Mapping[str, Tensor]) -> list[str]:
    """Load ``state`` into ``model`` under the rules above; returns the notices it logged.

    Raises :class:`CheckpointError` naming the keys for any other mismatch.
    """
    notices: list[str] = []
    for key, expected in _OFFICIAL_CONSTANTS.items():
        if key in state and not torch.allclose(state[key].float().reshape(-1)[:1], torch.tensor([expected])):
            found = state[key].reshape(-1)[0].item()
            raise CheckpointError(f"checkpoint has {key}={found}, this model uses {expected}")
    own = model.state_dict()
    ignored_official = [k for k in state if k in _OFFICIAL_BUFFERS or k in _OFFICIAL_CONSTANTS]
    ignored_reference = [k for k in state if _REFERENCE_EXTRAS.match(k)]
    usable = {k: v for k, v in state.items() if k in own}
    unexpected = sorted(k for k in state if k not in own and k not in ignored_official and k not in ignored_reference)
    missing = sorted(k for k in own if k not in state)
    mismatched = sorted(k for k, v in usable.items() if v.shape != own[k].shape)

    fresh: dict[str, list[str]] = {}
    still_missing = []
    for k in missing:
        group = next((m.group(0) for rx in _FRESH_GROUPS if (m := rx.match(k))), None)
        if group is None:
            still_missing.append(k)
            continue
        fresh.setdefault(group, []).append(k)
    # a bank is fresh only if the checkpoint has none of it; a partial bank is a broken file
    for group, keys in list(fresh.items()):
        if group.startswith("memory_bank_") and any(k.startswith(group) for k in state):
            still_missing += keys
            del fresh[group]

    problems = []
    if still_missing:
        problems.append(f"missing {len(still_missing)}: {_names(still_missing)}")
    if unexpected:
        problems.append(f"unexpected {len(unexpected)}: {_names(unexpected)}")
    if mismatched:
        detail = [f"{k} {tuple(usable[k].shape)} vs {tuple(own[k].shape)}" for k in mismatched]
        problems.append(f"shape mismatch {len(mismatched)}: {_names(detail)}")
    if problems:
        raise CheckpointError(f"checkpoint does not fit the {model.config.family} model (M={model.config.M}, "
                              f"N={model.config.N}): " + "; ".join(problems))
    model.load_state_dict(usable, strict=False)
    if ignored_reference:
        notices.append(f"ignored {len(ignored_reference)} Phase 2 reference-code entries that hold no used weights "
                       "(memory_* buffers, unused mha_* layers)")
    if fresh:
        notices.append("initialised fresh (not in the checkpoint): " + ", ".join(
            f"{g.rstrip('.')} ({len(k)})" for g, k in fresh.items()))
    for n in notices:
        log.warning(n)
    model.update(force=True)
    return notices


# configuration fields an ablation may change while starting from another configuration's weights: they
# add, remove or resize memory banks and transfer adapters, never the layers the two models share
_BANK_FIELDS = frozenset({"enable_multiref", "enable_hierarchical_transfer", "value_resolution", "compress_ratio",
                          *(f"{kind}_refs_s{s}" for kind in ("max", "topk") for s in (1, 2, 3))})


def copy_shared_weights(model: HPCM, start: HPCM, what: str = "the weights") -> dict[str, list[str]]:
    """Copy ``start``'s weights into ``model`` (float16 shipped weights become float32 here). The two may
    differ only in their banks (an ablation of a trained model): then every tensor the two share with the same
    shape is copied, and banks or adapters that ``start`` lacks stay as ``model`` has them. Returns the
    top-level modules left fresh and dropped."""
    ours, theirs = model.config.to_dict(), start.config.to_dict()
    changed = {k for k in ours if ours[k] != theirs.get(k)}
    if changed - _BANK_FIELDS:
        raise CheckpointError(f"{what} hold a {theirs} model, not the {ours} they are copied into "
                              f"(differs in {', '.join(sorted(changed - _BANK_FIELDS))})")
    own, state = model.state_dict(), start.state_dict()
    shared = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    model.load_state_dict(shared, strict=False)
    fresh = sorted({k.split(".")[0] for k in own if k not in shared})
    dropped = sorted({k.split(".")[0] for k in state if k not in shared})
    if changed:
        log.info("%s differ in %s: %d of %d tensors copied; fresh: %s; dropped: %s", what, ", ".join(sorted(changed)),
                 len(shared), len(own), ", ".join(fresh) or "none", ", ".join(dropped) or "none")
    model.update(force=True)
    return {"fresh": fresh, "dropped": dropped}
