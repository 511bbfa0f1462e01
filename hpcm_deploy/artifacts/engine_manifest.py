"""The engine manifest: what a set of TensorRT plans was built from and for, and every check before building or
running them that needs no TensorRT (precision, size and batch range, I/O contract, timing cache decisions)."""

from __future__ import annotations

import hashlib
import logging
import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import BackendError, ConfigError
from ..files import sha256_file
from ..stages.program import CodingProgram
from .document import extras, read_document, write_document
from .export import Manifest
from .shapes import SizeRange, implied_size

log = logging.getLogger(__name__)
FORMAT = "hpcm-deploy-engines"
FORMAT_VERSION = 1
MANIFEST = "engines.json"
TIMING_CACHE = "timing.cache"
PRECISIONS = ("fp32", "fp16")
WIDEN = "`hpcm-deploy build-engine --min-size HxW --max-size HxW --max-batch N`"

# TensorRT DataType member names -> the dtype names of the coding program (numpy's)
TRT_DTYPES = {"FLOAT": "float32", "HALF": "float16", "BF16": "bfloat16", "INT8": "int8", "UINT8": "uint8",
              "INT32": "int32", "INT64": "int64", "BOOL": "bool", "FP8": "float8", "INT4": "int4", "FP4": "float4"}


def version_tuple(version: str) -> tuple[int, ...]:
    """``"10.13.3.9"`` -> ``(10, 13, 3)``."""
    return tuple(int(p) for p in version.split(".")[:3] if p.isdigit())


def arch_name(capability: tuple[int, int]) -> str:
    return f"sm{capability[0]}{capability[1]}"


def engine_dir_name(capability: tuple[int, int], trt_version: str, precision: str) -> str:
    """``<gpu-arch>-trt<major.minor.patch>-<precision>``, e.g. ``sm90-trt10.13.3-fp16`` (TensorRT reports four
    parts, ``10.13.3.9``; the build number is left out of the folder name, kept in ``engines.json``)."""
    return f"{arch_name(capability)}-trt{'.'.join(str(p) for p in version_tuple(trt_version))}-{precision}"


QUICK_BLOCKS, QUICK_BLOCK = 16, 64 << 10


def plan_digest(path: str | os.PathLike) -> str:
    """A cheap fingerprint of a plan, checked at every open: its size and the sha256 of 16 blocks of 64 KiB
    spread over it (at most 1 MiB read; a small plan is read whole). The full sha256 is taken once, at build
    (``plan_sha256``); re-hashing every plan at every open read about 1 GB for ``phase2``."""
    path = Path(path)
    size = path.stat().st_size
    h = hashlib.sha256()
    with path.open("rb") as f:
        if size <= QUICK_BLOCKS * QUICK_BLOCK:
            h.update(f.read())
        else:
            step = (size - QUICK_BLOCK) // (QUICK_BLOCKS - 1)
            for i in range(QUICK_BLOCKS):
                f.seek(i * step)
                h.update(f.read(QUICK_BLOCK))
    return f"{size}:{h.hexdigest()}"


def recorded_onnx_path(onnx_path: str | os.PathLike, engine_dir: str | os.PathLike) -> str:
    """How ``engines.json`` records the graph a plan was built from: relative to the engine folder (POSIX
    separators), so the engines load from any working directory and move together with their export."""
    return Path(os.path.relpath(Path(onnx_path).resolve(), Path(engine_dir).resolve())).as_posix()


def gpu_notice(recorded: str | None, current: str | None) -> str | None:
    """A warning when plans built on one GPU model run on another of the same compute capability (e.g. an
    H100 plan on an H200): TensorRT accepts them, but its tactics were timed on the other GPU."""
    if not recorded or not current or recorded == current:
        return None
    return (f"these engines were built on {recorded} and run on {current} (same compute capability): they work, "
            "but TensorRT timed their kernels on the other GPU; rebuild them here for the best speed")


def default_engine_dir(export: Manifest, capability: tuple[int, int], trt_version: str, precision: str,
                       root: str | os.PathLike = "engines") -> Path:
    return Path(root) / export.name / engine_dir_name(capability, trt_version, precision)


def resolve_precision(export_precision: str, requested: str | None) -> str:
    """The precision engines of an export are built (or looked for) in: ``requested``, or by default the
    export's own. An fp16 export's graphs already carry the fp16 recipe, so they cannot give fp32 engines."""
    if requested is None:
        return export_precision
    if requested not in PRECISIONS:
        raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}, not {requested!r}")
    if export_precision == "fp16" and requested == "fp32":
        raise ConfigError("this export carries the fp16 recipe (exported with --precision fp16), so its graphs "
                          "give fp16 engines only; build with --precision fp16, or build fp32 engines from an fp32 "
                          "export")
    return requested


@dataclass(frozen=True)
class PlanEntry:
    """One stage's plan: its file and digest, the graph it was built from (and that graph's digests), its TF32
    setting and build time."""

    plan: str
    plan_sha256: str
    onnx: str | None = None
    onnx_sha256: str = ""
    export_onnx_sha256: str = ""
    tf32: bool = False
    build_seconds: float = 0.0
    plan_digest: str = ""  # the cheap digest checked at open (plan_digest()); empty in engines built before it

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PlanEntry:
        return cls(d["plan"], d.get("plan_sha256", ""), d.get("onnx"), d.get("onnx_sha256", ""),
                   d.get("export_onnx_sha256", ""), bool(d.get("tf32", False)), d.get("build_seconds", 0.0),
                   d.get("plan_digest", ""))

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"plan": self.plan, "plan_sha256": self.plan_sha256}
        if self.plan_digest:
            d["plan_digest"] = self.plan_digest
        if self.onnx is not None:
            d.update(onnx=self.onnx, onnx_sha256=self.onnx_sha256, export_onnx_sha256=self.export_onnx_sha256,
                     tf32=self.tf32, build_seconds=self.build_seconds)
        return d


@dataclass(frozen=True)
class ExportRef:
    """The export a set of plans was built from."""

    name: str
    fingerprint: str
    root: str

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "fingerprint": self.fingerprint, "root": self.root}


_FIELDS = ("format", "format_version", "export", "tensorrt", "tensorrt_major", "gpu", "compute_capability", "precision",
           "tf32", "sizes", "profiles", "stages", "timing_cache", "recipe", "stripped", "timing_cache_source")


@dataclass(frozen=True)
class EngineManifest:
    """A parsed ``engines.json``: what a set of TensorRT plans was built from and for (written by
    :mod:`hpcm_deploy.exporting.engine_build`, read by the TensorRT backend and the checks here)."""

    root: Path
    export: ExportRef
    tensorrt: str
    gpu: str
    compute_capability: tuple[int, int]
    precision: str
    stages: dict[str, PlanEntry]
    tf32: bool = False  # whether the plans were built with TF32 allowed (``build-engine --tf32``)
    sizes_dict: dict[str, Any] = field(default_factory=dict)
    profiles: dict[str, Any] = field(default_factory=dict)
    timing_cache: str = TIMING_CACHE
    recipe: dict[str, Any] | None = None
    stripped: bool = False  # the plans hold no weights (``build-engine --strip-weights``): refitted at load
    timing_cache_source: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, root: str | os.PathLike, d: dict[str, Any]) -> EngineManifest:
        ref = d["export"]
        return cls(root=Path(root), export=ExportRef(ref["name"], ref["fingerprint"], ref.get("root", "")),
                   tensorrt=d["tensorrt"], gpu=d.get("gpu", "?"), compute_capability=tuple(d["compute_capability"]),
                   precision=d["precision"], stages={k: PlanEntry.from_dict(v) for k, v in d["stages"].items()},
                   tf32=bool(d.get("tf32", False)), sizes_dict=d.get("sizes") or {}, profiles=d.get("profiles", {}),
                   timing_cache=d.get("timing_cache", TIMING_CACHE), recipe=d.get("recipe"),
                   stripped=bool(d.get("stripped", False)), timing_cache_source=d.get("timing_cache_source"),
                   extra=extras(d, _FIELDS))

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "format": FORMAT, "format_version": FORMAT_VERSION, "export": self.export.to_dict(),
            "tensorrt": self.tensorrt, "tensorrt_major": version_tuple(self.tensorrt)[0], "gpu": self.gpu,
            "compute_capability": list(self.compute_capability), "precision": self.precision, "tf32": self.tf32,
            "sizes": self.sizes_dict, "profiles": self.profiles, "stages": {k: v.to_dict() for k, v in
                                                                            self.stages.items()},
            "timing_cache": self.timing_cache,
        }
        if self.recipe is not None:
            d.update(recipe=self.recipe, stripped=self.stripped, timing_cache_source=self.timing_cache_source)
        elif self.stripped:
            d["stripped"] = True
        return {**d, **self.extra}

    @property
    def data(self) -> dict[str, Any]:
        """Deprecated: the manifest as a dict (a copy); read the attributes instead."""
        warnings.warn("EngineManifest.data is deprecated; read its attributes", DeprecationWarning, stacklevel=2)
        return self.to_dict()

    @property
    def sizes(self) -> SizeRange | None:
        """The padded sizes and batches the plans' optimisation profiles cover."""
        sizes = self.sizes_dict
        return SizeRange.from_dict(sizes) if {"min", "opt", "max"} <= set(sizes) else None

    @property
    def max_batch(self) -> int | None:
        sizes = self.sizes
        return sizes.max_batch if sizes else None

    def onnx_path(self, stage: str) -> Path:
        """The graph a stage's plan was built from (inside the engine folder, or the export's own), recorded
        relative to the engine folder."""
        entry = self.stages.get(stage)
        if entry is None or entry.onnx is None:
            raise BackendError(f"engines in {self.root} do not say which graph stage {stage!r} came from")
        path = Path(entry.onnx)
        return path if path.is_absolute() else self.root / path

    def refit_source(self, stage: str, export: Manifest) -> Path:
        """The graph whose weights refit a weight-stripped plan: the one recorded, or, for engines that recorded
        a path relative to the folder they were built from (before paths were recorded relative to the engine
        folder), the export's own graph when the plan was built from it unchanged (same sha256)."""
        path = self.onnx_path(stage)
        if path.is_file():
            return path
        entry, own = self.stages.get(stage), export.stages.get(stage)
        if entry is not None and own is not None and entry.onnx_sha256 and entry.onnx_sha256 == own.sha256:
            candidate = export.stage_path(stage)
            if candidate.is_file():
                return candidate
        raise BackendError(f"the graph that refits the weight-stripped plan of stage {stage} is missing ({path}); "
                           "rebuild the engines with `hpcm-deploy build-engine --strip-weights`")

    def plan_path(self, stage: str) -> Path:
        try:
            return self.root / self.stages[stage].plan
        except KeyError:
            raise BackendError(f"engines in {self.root} have no plan for stage {stage!r}") from None

    @classmethod
    def load(cls, root: str | os.PathLike) -> EngineManifest:
        root = Path(root)
        data = read_document(root / MANIFEST, FORMAT, f"engine manifest of version {FORMAT_VERSION}", BackendError,
                             f"{root} holds no TensorRT engines ({MANIFEST} missing); build them with "
                             "`hpcm-deploy build-engine`")
        if data.get("format_version") != FORMAT_VERSION:
            raise BackendError(f"{root / MANIFEST} is not an hpcm-deploy engine manifest of version {FORMAT_VERSION}")
        try:
            return cls.from_dict(root, data)
        except (KeyError, TypeError, AttributeError) as exc:
            raise BackendError(f"{root / MANIFEST} is incomplete ({type(exc).__name__}: {exc}); rebuild the "
                               "engines") from None

    def save(self) -> None:
        write_document(self.root / MANIFEST, self.to_dict())


def check_engines_for_export(engines: EngineManifest, export: Manifest, precision: str | None = None) -> None:
    """Refuse plans built from another export, lacking a stage, or of another precision than asked for."""
    if engines.export.fingerprint != export.fingerprint:
        raise BackendError(f"engines in {engines.root} were built from another export (fingerprint "
                           f"{engines.export.fingerprint[:16]}, this export {export.fingerprint[:16]})")
    missing = [s for s in export.stages if s not in engines.stages]
    if missing:
        raise BackendError(f"engines in {engines.root} lack plans for: {', '.join(missing)}")
    if precision is not None and engines.precision != precision:
        raise BackendError(f"engines in {engines.root} are {engines.precision} engines, not {precision}; pass the "
                           f"{precision} engine directory or build it with `hpcm-deploy build-engine --precision "
                           f"{precision}`")


def check_compatible(engines: EngineManifest, export: Manifest, trt_version: str, capability: tuple[int, int],
                     verify_hashes: bool = True, precision: str | None = None, gpu: str | None = None) -> None:
    """Refuse plans built for another TensorRT, another GPU architecture or another export; warn when they were
    built on another GPU model (``gpu``, the name of this one) of the same architecture.

    TensorRT plans are only valid for the exact TensorRT version and compute capability they were built with.
    Each plan is checked against the cheap digest recorded at build (:func:`plan_digest`); engines built before
    it was recorded are checked against their full sha256.
    """
    built_cap = tuple(engines.compute_capability)
    if engines.tensorrt != trt_version or built_cap != tuple(capability):
        raise BackendError(
            f"engines in {engines.root} were built with TensorRT {engines.tensorrt} for {arch_name(built_cap)} "
            f"({engines.gpu}); this machine has TensorRT {trt_version} on {arch_name(tuple(capability))}; "
            "rebuild them with `hpcm-deploy build-engine`")
    check_engines_for_export(engines, export, precision)
    notice = gpu_notice(engines.gpu, gpu)
    if notice:
        log.warning(notice)
    if verify_hashes:
        for entry in engines.stages.values():
            plan = engines.root / entry.plan
            if not plan.is_file():
                raise BackendError(f"engine plan {plan} is missing; rebuild the engines")
            quick = entry.plan_digest
            same = plan_digest(plan) == quick if quick else sha256_file(plan) == entry.plan_sha256
            if not same:
                raise BackendError(f"engine plan {plan} was modified; rebuild the engines")


# ---------------------------------------------------------------------------------------------- profiles
def check_covered(engines: EngineManifest, program: CodingProgram, stage: str,
                  shapes: Sequence[tuple[int, ...]]) -> None:
    """Refuse input shapes outside the optimisation profile a stage's plan was built with, in one line naming
    the engines' size and batch range and the ``build-engine`` flags that widen it. (Outside its profile an
    execution context would refuse the shape, or with an ignored refusal run on the previous one.)"""
    spec = program.stages[stage]
    profile = engines.profiles.get(stage)
    if profile is None:
        raise BackendError(f"engines in {engines.root} record no optimisation profile for stage {stage}; rebuild them")
    for name, shape in zip(spec.inputs, shapes):
        bounds = profile.get(name)
        if bounds is None:
            raise BackendError(f"engines in {engines.root} record no profile for input {name} of stage {stage}; "
                               "rebuild them")
        lo, hi = bounds["min"], bounds["max"]
        if len(shape) == len(lo) and all(a <= d <= b for a, d, b in zip(lo, shape, hi)):
            continue
        batch, size = implied_size({n: program.tensors[n].shape for n in spec.inputs},
                                   dict(zip(spec.inputs, (tuple(s) for s in shapes))))
        sizes = engines.sizes
        what = (f"a batch of {batch} at {size[0]}x{size[1]}" if batch is not None and size is not None
                else f"input {name} of stage {stage} with shape {tuple(shape)}")
        built = sizes.describe() if sizes else f"{name} from {tuple(lo)} to {tuple(hi)}"
        raise BackendError(f"{what} is outside the engines in {engines.root} ({built}); rebuild them with {WIDEN} "
                           "to cover it")


# ---------------------------------------------------------------------------------------------- I/O contract
def stage_io(program: CodingProgram, stage: str) -> dict[str, tuple[str, str]]:
    """``{tensor: (mode, dtype)}`` a stage's plan must have: its inputs and outputs with the program's dtypes."""
    spec = program.stages[stage]
    return {**{n: ("input", program.tensors[n].dtype) for n in spec.inputs},
            **{n: ("output", program.tensors[n].dtype) for n in spec.outputs}}


def trt_dtype_name(member: str) -> str:
    """A TensorRT ``DataType`` member name (``"FLOAT"``, ``"DataType.INT64"``) as a program dtype name."""
    key = member.rsplit(".", 1)[-1].upper()
    return TRT_DTYPES.get(key, key.lower())


def check_io_contract(stage: str, expected: Mapping[str, tuple[str, str]], actual: Mapping[str, tuple[str, str]],
                      plan: str | os.PathLike = "") -> None:
    """Refuse a plan whose I/O tensors (names, input/output mode, dtype) are not the stage's, naming the stage
    and the first tensor that differs."""
    where = f" ({plan})" if plan else ""
    for name, (mode, dtype) in expected.items():
        got = actual.get(name)
        if got is None:
            raise BackendError(f"the engine of stage {stage}{where} has no tensor {name!r} (the stage's {mode}); "
                               "rebuild the engines from this export")
        if got[0] != mode:
            raise BackendError(f"tensor {name!r} of stage {stage} is an {got[0]} of its engine{where} but an {mode} of "
                               "the stage; rebuild the engines from this export")
        if got[1] != dtype:
            raise BackendError(f"tensor {name!r} of stage {stage} is {got[1]} in its engine{where}, the stage needs "
                               f"{dtype}; rebuild the engines from this export")
    extra = sorted(set(actual) - set(expected))
    if extra:
        raise BackendError(f"the engine of stage {stage}{where} has tensors the stage does not know: "
                           f"{', '.join(extra)}; rebuild the engines from this export")


# ---------------------------------------------------------------------------------------------- timing cache
@dataclass(frozen=True)
class TimingCachePlan:
    """Where a build's timing cache starts from and where it goes. The engine directory always keeps its own
    copy (``timing.cache``); ``keep`` is the user's shared cache file, updated after the engines are in place."""

    source: Path | None  # an existing cache to start from; None: start empty
    keep: Path | None  # the shared cache to write back (its folder is created before building)


def timing_cache_plan(requested: str | os.PathLike | None, out_dir: str | os.PathLike) -> TimingCachePlan:
    """``--timing-cache FILE``: start from it when it exists, write it back; without it, start from the cache a
    previous build left in the same engine directory."""
    if requested:
        path = Path(requested)
        if path.exists() and not path.is_file():
            raise ConfigError(f"timing cache {path} is not a file")
        return TimingCachePlan(path if path.is_file() else None, path)
    previous = Path(out_dir) / TIMING_CACHE
    return TimingCachePlan(previous if previous.is_file() else None, None)


def timing_cache_notice(source: Path | None, loaded: bool, accepted: bool) -> str | None:
    """What to tell the user when a cache is not used (a fresh one is started then); ``None`` when it was used
    or there was none. TensorRT refuses (``set_timing_cache`` returns False) a cache made on another GPU;
    one from another TensorRT version may not even load."""
    if source is None or (loaded and accepted):
        return None
    why = "cannot be read by this TensorRT" if not loaded else "was made on another GPU or TensorRT version"
    return f"timing cache {source} {why}; starting a fresh one, which replaces it after the build"


def new_manifest(export: Manifest, trt_version: str, gpu: str, capability: tuple[int, int], precision: str,
                 sizes: dict[str, Any], profiles: dict[str, Any], tf32: bool = False,
                 root: str | os.PathLike = ".") -> EngineManifest:
    """The manifest of a build about to start (its plans are added with ``dataclasses.replace(..., stages=)``)."""
    return EngineManifest(Path(root), ExportRef(export.name, export.fingerprint, str(export.root)), trt_version, gpu,
                          tuple(capability), precision, {}, tf32=bool(tf32), sizes_dict=sizes, profiles=profiles)
