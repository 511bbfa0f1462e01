"""The engine manifest: what a set of TensorRT plans was built from and for, and the check before running it."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import BackendError
from ..exporting.manifest import Manifest, sha256_file, write_json_atomic
from . import version_tuple

FORMAT = "hpcm-deploy-engines"
FORMAT_VERSION = 1
MANIFEST = "engines.json"
TIMING_CACHE = "timing.cache"


def arch_name(capability: tuple[int, int]) -> str:
    return f"sm{capability[0]}{capability[1]}"


def engine_dir_name(capability: tuple[int, int], trt_version: str, precision: str) -> str:
    """``<gpu-arch>-trt<version>-<precision>``, e.g. ``sm90-trt10.13.3-fp16``."""
    return f"{arch_name(capability)}-trt{trt_version}-{precision}"


def default_engine_dir(export: Manifest, capability: tuple[int, int], trt_version: str, precision: str,
                       root: str | os.PathLike = "engines") -> Path:
    return Path(root) / export.name / engine_dir_name(capability, trt_version, precision)


@dataclass
class EngineManifest:
    root: Path
    data: dict[str, Any]

    @property
    def precision(self) -> str:
        return self.data["precision"]

    def plan_path(self, stage: str) -> Path:
        try:
            return self.root / self.data["stages"][stage]["plan"]
        except KeyError:
            raise BackendError(f"engines in {self.root} have no plan for stage {stage!r}") from None

    @classmethod
    def load(cls, root: str | os.PathLike) -> EngineManifest:
        root = Path(root)
        path = root / MANIFEST
        if not path.is_file():
            raise BackendError(f"{root} holds no TensorRT engines ({MANIFEST} missing); build them with "
                               "`hpcm-deploy build-engine`")
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise BackendError(f"cannot read {path}: {exc}") from None
        if data.get("format") != FORMAT or data.get("format_version") != FORMAT_VERSION:
            raise BackendError(f"{path} is not an hpcm-deploy engine manifest of version {FORMAT_VERSION}")
        return cls(root, data)

    def save(self) -> None:
        write_json_atomic(self.root / MANIFEST, self.data)


def check_compatible(engines: EngineManifest, export: Manifest, trt_version: str, capability: tuple[int, int],
                     verify_hashes: bool = True) -> None:
    """Refuse plans built for another TensorRT, another GPU architecture or another export.

    TensorRT plans are only valid for the exact TensorRT version and compute capability they were built with.
    """
    data = engines.data
    built_cap = tuple(data["compute_capability"])
    if data["tensorrt"] != trt_version or built_cap != tuple(capability):
        raise BackendError(
            f"engines in {engines.root} were built with TensorRT {data['tensorrt']} for {arch_name(built_cap)} "
            f"({data.get('gpu', '?')}); this machine has TensorRT {trt_version} on {arch_name(tuple(capability))}; "
            "rebuild them with `hpcm-deploy build-engine`")
    if data["export"]["fingerprint"] != export.fingerprint:
        raise BackendError(f"engines in {engines.root} were built from another export (fingerprint "
                           f"{data['export']['fingerprint'][:16]}, this export {export.fingerprint[:16]})")
    missing = [s for s in export.data["stages"] if s not in data["stages"]]
    if missing:
        raise BackendError(f"engines in {engines.root} lack plans for: {', '.join(missing)}")
    if verify_hashes:
        for entry in data["stages"].values():
            plan = engines.root / entry["plan"]
            if not plan.is_file() or sha256_file(plan) != entry["plan_sha256"]:
                raise BackendError(f"engine plan {plan} is missing or was modified; rebuild the engines")


def new_manifest(export: Manifest, trt_version: str, gpu: str, capability: tuple[int, int], precision: str,
                 sizes: dict[str, Any], profiles: dict[str, Any]) -> dict[str, Any]:
    return {
        "format": FORMAT, "format_version": FORMAT_VERSION,
        "export": {"name": export.name, "fingerprint": export.fingerprint, "root": str(export.root)},
        "tensorrt": trt_version, "tensorrt_major": version_tuple(trt_version)[0],
        "gpu": gpu, "compute_capability": list(capability), "precision": precision,
        "sizes": sizes, "profiles": profiles, "stages": {}, "timing_cache": TIMING_CACHE,
    }
