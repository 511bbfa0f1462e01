"""``hpcm-deploy export``: every stage of the coding program to its own ONNX graph.

One export serves every padded size: height, width (multiples of 256) and, unless ``batch`` is fixed, the
batch are dynamic. Graphs are traced with ``torch.onnx.export(dynamo=True)`` from sample tensors produced by
running the PyTorch stages on an image of the export size, so every stage sees realistic values.
"""

from __future__ import annotations

import inspect
import logging
import multiprocessing as mp
import os
import time
import warnings
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import onnx
import torch
from torch.export import Dim

from .._version import __version__
from ..artifacts.export import (
    TABLES,
    FileEntry,
    Manifest,
    StageEntry,
    TensorEntry,
    WeightsEntry,
    model_fingerprint,
)
from ..backends.torch_backend import TorchBackend
from ..config import MAX_SIDE, SIZE_MULTIPLE
from ..entropy.tables import EntropyTables
from ..errors import ExportError
from ..files import sha256_file, staged_directory
from ..image import random_image
from ..models.hpcm import HPCM
from ..runtime.runner import ProgramRunner
from ..stages import CodingProgram, StageSpec, build_program, stage_module
from .fp16_recipe import apply_recipe
from .weights import share_weights

log = logging.getLogger(__name__)

DEFAULT_OPSET = 18
EXPORT_SIZE = (512, 768)  # traced at 2x3 tiles of 256 (a size of 1 would be specialised by the tracer)
SAMPLE_BATCH = 2
MAX_TILES = MAX_SIDE // SIZE_MULTIPLE  # the dynamic range of height and width, in 256-pixel tiles
MAX_BATCH = 256
ProgressFn = Callable[[str, float], None]


def _dims(batch: int | None) -> dict[str, Any]:
    hk, wk = Dim("hk", min=1, max=MAX_TILES), Dim("wk", min=1, max=MAX_TILES)
    dims: dict[str, Any] = {}
    for div in (1, 16, 32, 64):  # every program dimension is H/div or W/div of the padded size
        key = "" if div == 1 else f"/{div}"
        dims["H" + key], dims["W" + key] = SIZE_MULTIPLE // div * hk, SIZE_MULTIPLE // div * wk
    if batch is None:
        dims["B"] = Dim("batch", min=1, max=MAX_BATCH)
    return dims


def dynamic_shapes(spec: StageSpec, program: CodingProgram, batch: int | None) -> tuple[dict[int, Any], ...]:
    """``dynamic_shapes`` for ``torch.onnx.export``: each symbolic dimension of each input."""
    dims = _dims(batch)
    out = []
    for name in spec.inputs:
        shape = program.tensors[name].shape
        out.append({i: dims[d] for i, d in enumerate(shape) if isinstance(d, str) and d in dims})
    return tuple(out)


def sample_state(model: HPCM, program: CodingProgram, batch: int, size: tuple[int, int] = EXPORT_SIZE,
                 seed: int = 0) -> dict[str, torch.Tensor]:
    """Every named tensor of an encode (and the decoder's final stage) on a smooth random image."""
    x = random_image(batch, size, seed, noise=0.0)
    runner = ProgramRunner(program, TorchBackend(model, program), EntropyTables.from_model(model))
    encoded = runner.encode(x, capture=True)
    assert encoded.state is not None
    return encoded.state


def export_stage(model: HPCM, program: CodingProgram, name: str, state: dict[str, torch.Tensor], path: Path,
                 opset: int, batch: int | None) -> None:
    """Trace one stage and write ``path`` (weights embedded)."""
    spec = program.stages[name]
    module = stage_module(model, spec)
    args = tuple(state[n] for n in spec.inputs)
    shapes: Any = dynamic_shapes(spec, program, batch)
    params = inspect.signature(module.forward).parameters.values()
    if any(p.kind is inspect.Parameter.VAR_POSITIONAL for p in params):
        shapes = (shapes,)  # forward(*inputs): one positional argument holding all inputs
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, args, str(path), dynamo=True, external_data=False, opset_version=opset,
                          dynamic_shapes=shapes, input_names=list(spec.inputs),
                          output_names=list(spec.outputs), optimize=True, verbose=False)


_WORKER_CACHE: dict[tuple[str, str], tuple[HPCM, dict, CodingProgram]] = {}


def _worker(job: tuple[str, str, str, list[str], int, int | None]) -> list[tuple[str, float]]:
    """Process-pool entry: rebuild model and samples from files (once per process), export some stages."""
    weights, samples, out_dir, names, opset, batch = job
    if (weights, samples) not in _WORKER_CACHE:
        torch.set_num_threads(1)
        from ..models.api import load_model

        model = load_model(checkpoint=weights, seed=None)
        _WORKER_CACHE.clear()
        _WORKER_CACHE[(weights, samples)] = (model, torch.load(samples, weights_only=True),
                                             build_program(model.config))
    model, state, program = _WORKER_CACHE[(weights, samples)]
    done = []
    for name in names:
        start = time.perf_counter()
        export_stage(model, program, name, state, Path(out_dir) / f"{name}.onnx", opset, batch)
        done.append((name, time.perf_counter() - start))
    return done


def _graph_io(path: Path) -> tuple[list[dict], list[dict], int]:
    m = onnx.load(str(path), load_external_data=False)

    def describe(vi: onnx.ValueInfoProto) -> dict:
        t = vi.type.tensor_type
        dims = [d.dim_param if d.dim_param else d.dim_value for d in t.shape.dim]
        return {"name": vi.name, "dtype": onnx.helper.tensor_dtype_to_np_dtype(t.elem_type).name, "onnx_shape": dims}

    opset = next(o.version for o in m.opset_import if o.domain in ("", "ai.onnx"))
    return [describe(i) for i in m.graph.input], [describe(o) for o in m.graph.output], opset


def export_model(model: HPCM, out_dir: str | os.PathLike, name: str, opset: int = DEFAULT_OPSET,
                 batch: int | None = None, jobs: int | None = None, progress: ProgressFn | None = None,
                 source: str = "", extra: dict[str, Any] | None = None, precision: str = "fp32",
                 check: Callable[[Manifest], None] | None = None, fp16_recipe: str = "exact") -> Path:
    """Export every stage of ``model`` into ``out_dir``, which appears whole or not at all.

    ``batch=None`` exports a dynamic batch; an int fixes it. ``jobs`` processes trace in parallel (tracing is
    single-threaded Python; default: one per CPU, at most 4). ``precision="fp16"`` rewrites the graphs with the
    mixed-precision recipe ``fp16_recipe`` (:mod:`.fp16_recipe`: ``exact``, the transforms only, or ``full``).
    ``check`` runs on the finished export before it is put in place; if it raises, nothing is written.
    """
    model = model.cpu().eval()
    model.update()
    program = build_program(model.config)
    out = Path(out_dir)
    with staged_directory(out) as work:
        tables = EntropyTables.from_model(model)
        tables.save(work / TABLES)
        state_dict = {k: v.detach().cpu() for k, v in model.state_dict().items()}
        started = time.perf_counter()
        timings = _trace_stages(model, program, work, opset, batch, jobs, progress)
        graphs = [f"{n}.onnx" for n in program.stages]
        recipe = apply_recipe(work, graphs, precision, fp16_recipe) if precision != "fp32" else None
        weights = share_weights(work, graphs, state_dict)
        manifest = _manifest(model, program, name, work, opset, batch, tables, state_dict, timings,
                             time.perf_counter() - started, source,
                             WeightsEntry.from_dict({**weights, "sha256": sha256_file(work / weights["file"])}))
        if recipe is not None:
            manifest = replace(manifest, precision=precision, recipe=recipe)
        manifest = replace(manifest, extra={**({"fp16_recipe": fp16_recipe} if recipe is not None else {}),
                                            **dict(extra or {})})
        manifest.save()
        if check is not None:
            check(Manifest.load(work))
    return out


def _trace_stages(model: HPCM, program: CodingProgram, work: Path, opset: int, batch: int | None,
                  jobs: int | None, progress: ProgressFn | None) -> dict[str, float]:
    """Trace every stage into ``work/<stage>.onnx`` (in ``jobs`` processes); seconds per stage."""
    state = sample_state(model, program, batch or SAMPLE_BATCH)
    names = list(program.stages)
    jobs = max(1, min(jobs or min(os.cpu_count() or 1, 4), len(names)))
    timings: dict[str, float] = {}
    if jobs == 1:
        for n in names:
            t0 = time.perf_counter()
            export_stage(model, program, n, state, work / f"{n}.onnx", opset, batch)
            timings[n] = time.perf_counter() - t0
            if progress:
                progress(n, timings[n])
        return timings
    samples, weights = work / ".samples.pt", work / ".model.pt"  # what the worker processes rebuild from
    torch.save({k: v.contiguous() for k, v in state.items()}, samples)
    torch.save({"config": model.config.to_dict(), "state_dict": model.state_dict()}, weights)
    order = sorted(names, key=lambda n: -len(program.stages[n].inputs))  # biggest first: the pool stays balanced
    pool = mp.get_context("spawn").Pool(jobs)
    try:
        for done in pool.imap_unordered(_worker, [(str(weights), str(samples), str(work), [n], opset, batch)
                                                  for n in order]):
            for n, sec in done:
                timings[n] = sec
                if progress:
                    progress(n, sec)
        pool.close()
    except BaseException:
        pool.terminate()
        raise
    finally:
        pool.join()
    samples.unlink()
    weights.unlink()
    return timings


def _manifest(model: HPCM, program: CodingProgram, name: str, root: Path, opset: int, batch: int | None,
              tables: EntropyTables, state_dict: dict, timings: dict[str, float], seconds: float,
              source: str, weights: WeightsEntry) -> Manifest:
    stages = {}
    written_opset = opset
    for sname, spec in program.stages.items():
        path = root / f"{sname}.onnx"
        if not path.is_file():
            raise ExportError(f"stage {sname} was not written")
        ins, outs, written_opset = _graph_io(path)
        ins, outs = ([TensorEntry(e["name"], e["dtype"], tuple(e["onnx_shape"]),
                                  tuple(program.tensors[e["name"]].shape)) for e in io] for io in (ins, outs))
        stages[sname] = StageEntry(path.name, sha256_file(path), path.stat().st_size, spec.kind, spec.scale,
                                   spec.partition, tuple(ins), tuple(outs), round(timings.get(sname, 0.0), 2))
    return Manifest(
        root=root, name=name, family=model.config.family, source=source, config_dict=model.config.to_dict(),
        fingerprint=model_fingerprint(model.config, state_dict, tables.digest()), opset=written_opset,
        opset_requested=opset, batch=batch, precision="fp32",
        size_rule={"multiple": SIZE_MULTIPLE, "max_side": MAX_SIDE,
                   "dims": "H and W of the padded image; every other size derives from them"},
        export_size=EXPORT_SIZE, tables=FileEntry(TABLES, sha256_file(root / TABLES)), stages=stages,
        program_dict=program.to_dict(),
        created_with={"hpcm_deploy": __version__, "torch": torch.__version__, "onnx": onnx.__version__},
        export_seconds=round(seconds, 1), weights=weights)
