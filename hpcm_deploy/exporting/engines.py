"""``hpcm-deploy build-engine``: one TensorRT plan per stage of an export (TensorRT 10.8+ and 11.x)."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

import onnx

from ..errors import BackendError, ConfigError
from ..exporting.manifest import Manifest, sha256_file
from ..exporting.precision import to_fp16
from ..files import staged_directory
from . import cuda_device, import_tensorrt
from .manifest import MANIFEST, TIMING_CACHE, EngineManifest, default_engine_dir, new_manifest
from .profiles import SizeRange, all_profiles

log = logging.getLogger(__name__)
PRECISIONS = ("fp32", "fp16")
# stages whose outputs never reach a probability: they may use TF32 tensor cores in the fp32 recipe
TF32_ALLOWED = {"g_a", "g_s"}


def parse_workspace(text: str) -> int:
    """``"4G"``, ``"512M"``, ``"1073741824"`` -> bytes."""
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    t = text.strip().upper().removesuffix("B")
    try:
        return int(float(t[:-1]) * units[t[-1]]) if t and t[-1] in units else int(t)
    except (ValueError, KeyError):
        raise ConfigError(f"bad workspace size {text!r}: use e.g. 512M or 4G") from None


def recipe_graphs(export: Manifest, precision: str, out_dir: Path) -> tuple[dict[str, Path], dict[str, dict]]:
    """The ONNX files a precision builds from: the export's own (fp32) or rewritten copies (fp16)."""
    if precision not in PRECISIONS:
        raise ConfigError(f"precision must be one of {PRECISIONS}, not {precision!r}")
    if precision == "fp32" or export.precision == precision:
        return {s: export.stage_path(s) for s in export.data["stages"]}, {}
    out_dir.mkdir(parents=True, exist_ok=True)
    paths, reports = {}, {}
    for stage in export.data["stages"]:
        model, report = to_fp16(onnx.load(str(export.stage_path(stage))), stage)
        path = out_dir / f"{stage}.onnx"
        onnx.save(model, str(path))
        paths[stage], reports[stage] = path, report.as_dict()
    return paths, reports


def build_engines(export: Manifest, out: str | os.PathLike | None = None, precision: str = "fp32",
                  sizes: SizeRange | None = None, timing_cache: str | os.PathLike | None = None,
                  workspace: int = 4 << 30, device: str = "cuda",
                  progress: Callable[[str, float], None] | None = None) -> Path:
    """Build every stage's plan into ``out`` (default ``engines/<name>/<arch>-trt<version>-<precision>``)."""
    trt = import_tensorrt()
    gpu, capability = cuda_device(device)
    sizes = sizes or SizeRange.from_sizes((256, 256), (768, 512), (2048, 2048))
    root = Path(out) if out else default_engine_dir(export, capability, trt.__version__, precision)
    with staged_directory(root) as work:
        program = export.program()
        profiles = all_profiles(program, sizes, export.batch)
        graphs, reports = recipe_graphs(export, precision, work / "onnx")
        data = new_manifest(export, trt.__version__, gpu, capability, precision,
                            {"min": sizes.min_size, "opt": sizes.opt_size, "max": sizes.max_size,
                             "max_batch": sizes.max_batch}, profiles)
        data["recipe"] = reports
        logger = trt.Logger(trt.Logger.WARNING)
        builder = trt.Builder(logger)
        cache_path = Path(timing_cache) if timing_cache else root / TIMING_CACHE
        cache_bytes = cache_path.read_bytes() if cache_path.is_file() else b""
        cache = None
        for stage, onnx_path in graphs.items():
            start = time.perf_counter()
            plan, cache = _build_one(trt, builder, logger, onnx_path, profiles[stage], workspace,
                                     allow_tf32=stage in TF32_ALLOWED and precision == "fp32",
                                     cache=cache, cache_bytes=cache_bytes)
            plan_path = work / f"{stage}.plan"
            plan_path.write_bytes(plan)
            data["stages"][stage] = {
                "plan": plan_path.name, "plan_sha256": sha256_file(plan_path),
                "onnx": str(onnx_path.relative_to(work)) if onnx_path.is_relative_to(work) else str(onnx_path),
                "onnx_sha256": sha256_file(onnx_path),
                "export_onnx_sha256": export.data["stages"][stage]["sha256"],
                "tf32": stage in TF32_ALLOWED and precision == "fp32",
                "build_seconds": round(time.perf_counter() - start, 1),
            }
            if progress:
                progress(stage, time.perf_counter() - start)
        if cache is not None:
            serialized = bytes(cache.serialize())
            (work / TIMING_CACHE).write_bytes(serialized)
            if timing_cache:
                Path(timing_cache).write_bytes(serialized)
        EngineManifest(work, data).save()
    assert (root / MANIFEST).is_file()
    return root


def _build_one(trt, builder, logger, onnx_path: Path, profile: dict, workspace: int, allow_tf32: bool, cache,
               cache_bytes: bytes):
    flags = 0
    creation = trt.NetworkDefinitionCreationFlag
    if hasattr(creation, "STRONGLY_TYPED"):  # required on 10.x to honour the graph's types; implied on 11.x
        flags |= 1 << int(creation.STRONGLY_TYPED)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise BackendError(f"TensorRT cannot parse {onnx_path.name}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace)
    if not allow_tf32 and hasattr(trt.BuilderFlag, "TF32"):
        config.clear_flag(trt.BuilderFlag.TF32)  # keep fp32 maths exact on the probability path
    if cache is None:
        cache = config.create_timing_cache(cache_bytes)
    config.set_timing_cache(cache, ignore_mismatch=False)
    opt = builder.create_optimization_profile()
    for name, shapes in profile.items():
        opt.set_shape(name, shapes["min"], shapes["opt"], shapes["max"])
    config.add_optimization_profile(opt)
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise BackendError(f"TensorRT failed to build {onnx_path.name} (see the TensorRT log above)")
    return bytes(plan), cache
