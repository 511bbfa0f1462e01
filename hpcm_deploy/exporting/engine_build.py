"""``hpcm-deploy build-engine``: one TensorRT plan per stage of an export (TensorRT 10.8+ and 11.x), built through
Polygraphy's loaders (``NetworkFromOnnxPath`` -> ``CreateConfig`` -> ``EngineBytesFromNetwork``).

Every argument is checked before TensorRT is imported (precision against the export, device, sizes, timing
cache); TensorRT itself is imported only when there is something to build.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import onnx

from ..artifacts.engine_manifest import (
    MANIFEST,
    PRECISIONS,
    TIMING_CACHE,
    PlanEntry,
    default_engine_dir,
    new_manifest,
    plan_digest,
    recorded_onnx_path,
    resolve_precision,
    timing_cache_notice,
    timing_cache_plan,
)
from ..artifacts.export import Manifest
from ..artifacts.shapes import DEFAULT_SIZES, SizeRange, all_profiles
from ..backends.trt_lib import cuda_device, cuda_index, import_tensorrt, on_gpu, resolve_cuda
from ..errors import BackendError, ConfigError
from ..files import sha256_file, staged_directory, write_atomic
from .fp16_recipe import recipe_graph
from .weights import share_weights

log = logging.getLogger(__name__)

__all__ = ["DEFAULT_SIZES", "PRECISIONS", "build_engines", "recipe_graphs"]


def recipe_graphs(export: Manifest, precision: str, out_dir: Path) -> tuple[dict[str, Path], dict[str, dict]]:
    """The ONNX files a precision builds from: the export's own (fp32 from an fp32 export, fp16 from an fp16
    export) or copies rewritten with the fp16 recipe (fp16 from an fp32 export), which share one weight file
    of their own as the export's graphs do."""
    precision = resolve_precision(export.precision, precision)
    if export.precision == precision:
        return {s: export.stage_path(s) for s in export.stages}, {}
    out_dir.mkdir(parents=True, exist_ok=True)
    paths, reports = {}, {}
    for stage in export.stages:
        model, report = recipe_graph(onnx.load(str(export.stage_path(stage))), stage)  # the stream-exact recipe
        path = out_dir / f"{stage}.onnx"
        onnx.save(model, str(path))
        paths[stage], reports[stage] = path, report.as_dict()
    share_weights(out_dir, [p.name for p in paths.values()], export.state_dict())
    return paths, reports


def build_engines(export: Manifest, out: str | os.PathLike | None = None, precision: str | None = None,
                  sizes: SizeRange | None = None, timing_cache: str | os.PathLike | None = None,
                  workspace: int = 4 << 30, device: str = "cuda", tf32: bool = False,
                  strip_weights: bool = False, progress: Callable[[str, float], None] | None = None) -> Path:
    """Build every stage's plan into ``out`` (default ``engines/<name>/<arch>-trt<version>-<precision>``).

    ``precision`` defaults to the export's; TF32 stays off unless ``tf32`` (then every stage may use it, and its
    streams interoperate with fp32 ones only through signalled decisions with an fp16-wide margin).
    ``strip_weights``: weight-stripped plans (``STRIP_PLAN`` + ``REFIT_IDENTICAL``) that hold no weights; the
    backend refits each engine at load from the graph it was built from, whose weights live in the shared
    weight file: the engine directory then holds no second copy of the weights.
    """
    precision, sizes, given_cache = _check_arguments(export, precision, sizes, timing_cache, workspace, device)
    profiles = all_profiles(export.program(), sizes)
    trt = import_tensorrt()
    index = resolve_cuda(device)
    gpu, capability = cuda_device(f"cuda:{index}")  # the name is recorded: opening on another model warns
    root = Path(out) if out else default_engine_dir(export, capability, trt.__version__, precision)
    cache_plan = given_cache or timing_cache_plan(None, root)
    if cache_plan.keep is not None:  # before building: a missing folder must not throw a finished build away
        try:
            cache_plan.keep.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"cannot create the folder of timing cache {cache_plan.keep}: {exc}") from None
    with on_gpu(index), _polygraphy_log(), staged_directory(root) as work:
        graphs, reports = recipe_graphs(export, precision, work / "onnx")
        plans: dict[str, PlanEntry] = {}
        cache = _TimingCache(cache_plan.source)
        for stage, onnx_path in graphs.items():
            start = time.perf_counter()
            plan = _build_stage(trt, stage, onnx_path, profiles[stage], workspace, tf32, cache, strip_weights)
            plan_path = work / f"{stage}.plan"
            plan_path.write_bytes(plan)
            plans[stage] = PlanEntry(
                plan_path.name, sha256_file(plan_path),
                # relative to the engine folder: the engines then load from any working directory
                recorded_onnx_path(onnx_path, work if onnx_path.is_relative_to(work) else root),
                sha256_file(onnx_path), export.stages[stage].sha256, tf32, round(time.perf_counter() - start, 1),
                plan_digest(plan_path))
            if progress:
                progress(stage, time.perf_counter() - start)
        (work / TIMING_CACHE).write_bytes(cache.serialize())
        built = new_manifest(export, trt.__version__, gpu, capability, precision, sizes.as_dict(), profiles, tf32,
                             root=work)
        replace(built, stages=plans, recipe=reports, stripped=strip_weights,
                timing_cache_source=str(cache_plan.source) if cache.reused else None).save()
    assert (root / MANIFEST).is_file()
    if cache_plan.keep is not None:
        try:
            write_atomic(cache_plan.keep, (root / TIMING_CACHE).read_bytes())
        except OSError as exc:
            raise ConfigError(f"engines written to {root}, but the timing cache could not be saved to "
                              f"{cache_plan.keep}: {exc}") from None
    return root


def _check_arguments(export: Manifest, precision: str | None, sizes: SizeRange | None,
                     timing_cache: str | os.PathLike | None, workspace: int, device: str):
    """Everything about a build that can be wrong, checked before TensorRT is imported: ``(precision, sizes,
    timing cache plan or None)``."""
    precision = resolve_precision(export.precision, precision)
    cuda_index(device)
    sizes = sizes or DEFAULT_SIZES
    if export.batch:  # an export traced at a fixed batch runs at that batch only
        sizes = sizes.with_batch(export.batch)
    if workspace <= 0:
        raise ConfigError("the builder workspace must be positive")
    return precision, sizes, timing_cache_plan(timing_cache, ".") if timing_cache else None


class _TimingCache:
    """One timing cache for every stage of a build: the given one when TensorRT accepts it for this GPU and
    version (``set_timing_cache`` returns False otherwise, which Polygraphy's ``CreateConfig`` ignores), else a
    fresh one, with a notice. Attached to each stage's config through Polygraphy's ``PostprocessConfig``."""

    def __init__(self, source: Path | None) -> None:
        self.source, self.cache, self.reused = source, None, False

    def attach(self, builder: Any, network: Any, config: Any) -> None:
        if self.cache is not None:
            if not config.set_timing_cache(self.cache, ignore_mismatch=False):
                raise BackendError("TensorRT refused this build's own timing cache")
            return
        loaded = accepted = False
        if self.source is not None:
            try:
                cache = config.create_timing_cache(self.source.read_bytes())
            except Exception:  # unreadable file, or a blob this TensorRT cannot parse
                cache = None
            loaded = cache is not None
            accepted = loaded and bool(config.set_timing_cache(cache, ignore_mismatch=False))
        notice = timing_cache_notice(self.source, loaded, accepted)
        if notice:
            log.warning(notice)
        if not accepted:
            cache = config.create_timing_cache(b"")
            if cache is None or not config.set_timing_cache(cache, ignore_mismatch=False):
                raise BackendError("TensorRT could not create a timing cache")
        self.cache, self.reused = cache, accepted

    def serialize(self) -> bytes:
        if self.cache is None:
            raise BackendError("no stage was built, so there is no timing cache to save")
        return bytes(self.cache.serialize())


def _build_stage(trt: Any, stage: str, onnx_path: Path, profile: dict, workspace: int, tf32: bool,
                 cache: _TimingCache, strip_weights: bool = False) -> bytes:
    """One plan: the ONNX graph as a strongly typed network (the graph's types are the precision; on 11.x every
    network is), one optimisation profile, TF32 cleared unless asked for, the shared timing cache; with
    ``strip_weights`` a plan without its weights (refitted from the same graph at load)."""
    from polygraphy.backend.trt import (
        CreateConfig,
        EngineBytesFromNetwork,
        NetworkFromOnnxPath,
        PostprocessConfig,
        Profile,
    )
    from polygraphy.exception import PolygraphyException

    shapes = Profile()
    for name, bounds in profile.items():
        shapes.add(name, bounds["min"], bounds["opt"], bounds["max"])
    config = CreateConfig(profiles=[shapes], tf32=tf32, memory_pool_limits={trt.MemoryPoolType.WORKSPACE: workspace})
    network = NetworkFromOnnxPath(str(onnx_path), strongly_typed=True)

    def postprocess(builder: Any, net: Any, cfg: Any) -> None:
        cache.attach(builder, net, cfg)
        if strip_weights:
            for flag in ("STRIP_PLAN", "REFIT_IDENTICAL"):  # REFIT_IDENTICAL: the weights at load are the same
                if not hasattr(trt.BuilderFlag, flag):
                    raise BackendError(f"this TensorRT has no {flag} builder flag: weight-stripped plans need 10.0+")
                cfg.set_flag(getattr(trt.BuilderFlag, flag))

    try:
        plan = EngineBytesFromNetwork(network, PostprocessConfig(config, postprocess))()
    except PolygraphyException as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else "see the log above"
        raise BackendError(f"TensorRT could not build stage {stage} from {onnx_path}: {first}") from None
    return bytes(plan)


@contextlib.contextmanager
def _polygraphy_log() -> Iterator[None]:
    """Polygraphy's own log at warnings and above unless hpcm-deploy runs verbose (``-v``)."""
    from polygraphy.logger import G_LOGGER

    old = G_LOGGER.module_severity
    if not log.isEnabledFor(logging.INFO):
        G_LOGGER.module_severity = G_LOGGER.WARNING
    try:
        yield
    finally:
        G_LOGGER.module_severity = old
