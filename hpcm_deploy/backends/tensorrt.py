"""The TensorRT backend: one deserialised engine per stage, run on the GPU the caller names.

Tensors stay on the GPU as torch tensors. Every execution context of a lane shares one scratch buffer
(``USER_MANAGED`` device memory): the stages run one after another on the lane's own CUDA stream, which waits for
the caller's stream before it reads inputs, and which the caller's stream waits for before it reads outputs. A
thread runs on a lane of its own (stream, scratch, contexts; made on its first run) over the shared engines, so
batches in flight (``Codec.compress_many``) share one copy of the weights. On the first lane, each (stage,
input shapes) is captured once into a CUDA graph on an execution context of its own, bound once to the graph's
static buffers (as torch-tensorrt keeps one graph per context). Graphs are kept per (batch, padded size) bucket,
every stage of a bucket together: the cache holds ``max_graphs // stages`` buckets (at least one), a size is
captured only from its second use on, and a new size takes the place of the least used one only when it is used
more (:class:`CapturePolicy`), so a server that sees many sizes keeps its frequent ones captured instead of
recapturing forever (entering a capture synchronises the device and empties torch's caching allocator). Captures
are serialised process-wide. A (stage, shapes) that cannot be captured runs eagerly. Requires TensorRT 10.8+ or
11.x and a CUDA build of torch.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Hashable, Sequence
from typing import Any

import numpy as np

from ..artifacts.engine_manifest import (
    EngineManifest,
    check_compatible,
    check_covered,
    check_engines_for_export,
    check_io_contract,
    default_engine_dir,
    resolve_precision,
    stage_io,
    trt_dtype_name,
)
from ..artifacts.export import Manifest, OpenedExport
from ..artifacts.shapes import implied_size
from ..errors import BackendError
from . import TensorRTOptions
from .base import Backend
from .trt_lib import cuda_device, cuda_index, import_tensorrt, on_gpu, resolve_cuda

log = logging.getLogger(__name__)
ALIGNMENT = 256  # bytes; TensorRT requires tensor addresses aligned to at least this
# torch allows one stream capture at a time per process (a capture in one thread may invalidate work another
# thread queues in "global" mode, and every capture synchronises the device): captures take turns
CAPTURE_LOCK = threading.Lock()


def graph_bucket(program: Any, stage: str, shapes: Sequence[tuple[int, ...]]) -> Hashable:
    """The bucket a (stage, input shapes) is captured in: ``(batch, (H, W))``, the padded size and batch its
    inputs imply, shared by every stage of one image size; the stage and shapes themselves when they imply
    none."""
    spec = program.stages[stage]
    batch, size = implied_size({n: program.tensors[n].shape for n in spec.inputs},
                               dict(zip(spec.inputs, (tuple(s) for s in shapes))))
    if batch is None or size is None:
        return (stage, *(tuple(s) for s in shapes))
    return (batch, size)


class CapturePolicy:
    """Which buckets of CUDA graphs are kept: ``decide(bucket, stage)`` says ``"replay"`` (the bucket is kept:
    replay the stage's graph, capturing it first if needed), ``"capture"`` (the bucket was just admitted) or
    ``"eager"`` (run without a graph).

    - Capacity in whole buckets, from the stage count: ``max_graphs // stages``, at least 1 (0 graphs: none).
    - Admission: a bucket is captured from the second call of one of its stages on (a size seen once, as most
      sizes of a varied workload are, never pays a capture); when the cache is full, it replaces the least used
      kept bucket only when it has been used more often, so varied sizes cannot push out the frequent ones and
      cause capture after capture.
    ``evicted`` lists the buckets dropped by the last decision (their graphs are to be released)."""

    def __init__(self, stages: int, max_graphs: int, capture_after: int = 2, remember: int = 4096) -> None:
        self.capacity = 0 if max_graphs <= 0 else max(1, max_graphs // max(1, stages))
        self.capture_after, self.remember = capture_after, remember
        self.uses: dict[Hashable, int] = {}  # calls per bucket
        self.calls: dict[tuple, int] = {}  # calls per (bucket, stage)
        self.kept: OrderedDict[Hashable, None] = OrderedDict()
        self.evicted: list[Hashable] = []

    def decide(self, bucket: Hashable, stage: str) -> str:
        self.evicted = []
        self._forget()
        self.uses[bucket] = self.uses.get(bucket, 0) + 1
        self.calls[(bucket, stage)] = self.calls.get((bucket, stage), 0) + 1
        if bucket in self.kept:
            self.kept.move_to_end(bucket)
            return "replay"
        if self.capacity == 0 or self.calls[(bucket, stage)] < self.capture_after:
            return "eager"
        if len(self.kept) >= self.capacity:
            victim = min(self.kept, key=lambda b: self.uses.get(b, 0))
            if self.uses[bucket] <= self.uses.get(victim, 0):
                return "eager"
            del self.kept[victim]
            self.evicted = [victim]
        self.kept[bucket] = None
        return "capture"

    def _forget(self) -> None:
        """Counts stay bounded on a server that sees endless sizes: past ``remember`` entries, every count is
        halved and those of unkept buckets that reach zero are forgotten."""
        if len(self.calls) <= self.remember:
            return
        self.uses = {b: n // 2 for b, n in self.uses.items() if n // 2 or b in self.kept}
        self.calls = {k: n // 2 for k, n in self.calls.items() if n // 2 or k[0] in self.kept}


class _Graph:
    """One (stage, input shapes) captured into a CUDA graph: the execution context it was captured on (bound
    once, to the static buffers) and those buffers."""

    __slots__ = ("context", "graph", "inputs", "outputs")

    def __init__(self, context: Any, graph: Any, inputs: list[Any], outputs: list[Any]) -> None:
        self.context, self.graph, self.inputs, self.outputs = context, graph, inputs, outputs


class _Lane:
    """What one thread needs to run stages while another thread runs its own (``Codec.compress_many`` with
    batches in flight): a CUDA stream, a scratch buffer and an execution context per stage. The engines, and so
    the weights, are shared by every lane."""

    __slots__ = ("contexts", "scratch", "stream")

    def __init__(self, stream: Any, scratch: Any, contexts: dict[str, Any]) -> None:
        self.stream, self.scratch, self.contexts = stream, scratch, contexts


class TensorRTBackend(Backend):
    name = "tensorrt"
    torch_native = True
    # each thread runs on a lane of its own (stream, scratch, contexts) over the shared engines; CUDA graphs are
    # captured and replayed on the first lane only (the others run eagerly), so no graph replays twice at once
    concurrent = True

    @classmethod
    def open(cls, export: OpenedExport, device: str = "cuda",
             options: TensorRTOptions | None = None) -> TensorRTBackend:
        """Engines for ``export`` (default: ``engines/<name>/<arch>-trt<version>-<precision>``), after checking
        they were built for this TensorRT, this GPU, this export and the precision asked for."""
        manifest = export.manifest
        options = options or TensorRTOptions()
        # the arguments are checked before TensorRT is imported
        cuda_index(device)
        precision = resolve_precision(manifest.precision, options.precision)
        wanted = precision if options.precision or not options.engines else None  # a given directory names its own
        given = EngineManifest.load(options.engines) if options.engines else None
        if given is not None:
            check_engines_for_export(given, manifest, wanted)
        trt = import_tensorrt()
        gpu, capability = cuda_device(device)
        engines = given or EngineManifest.load(default_engine_dir(manifest, capability, trt.__version__, precision))
        check_compatible(engines, manifest, trt.__version__, capability, precision=wanted, gpu=gpu)
        return cls(engines, export, device, options)

    @classmethod
    def from_export(cls, manifest: Manifest | OpenedExport, device: str = "cuda",
                    options: TensorRTOptions | None = None) -> TensorRTBackend:
        """Deprecated spelling of :meth:`open` (which :func:`hpcm_deploy.backends.open_backend` calls)."""
        return cls.open(OpenedExport.open(manifest), device, options)

    def __init__(self, engines: EngineManifest, export: OpenedExport, device: str = "cuda",
                 options: TensorRTOptions | None = None) -> None:
        import torch

        options = options or TensorRTOptions()
        trt = import_tensorrt()
        self._torch, self._trt = torch, trt
        index = resolve_cuda(device)
        self.device = f"cuda:{index}"
        self._dev = torch.device("cuda", index)
        self.engine_manifest = engines
        self.precision, self.tf32 = engines.precision, engines.tf32
        self.max_batch = engines.max_batch  # Codec batches at most this many images
        self.program = export.program
        self.cuda_graphs = bool(options.cuda_graphs) and options.max_graphs > 0
        self.max_graphs = options.max_graphs
        self.policy = CapturePolicy(len(self.program.stages), options.max_graphs)
        self._graphs: dict[Hashable, dict[tuple, _Graph]] = {}  # bucket -> (stage, shapes) -> its graph
        self._eager: set[tuple] = set()  # (stage, shapes) that could not be captured
        self._covered: set[tuple] = set()  # (stage, shapes) checked against the profiles
        self._logger = trt.Logger(trt.Logger.WARNING)
        self.engines: dict[str, Any] = {}
        self.contexts: dict[str, Any] = {}
        self._io: dict[str, tuple[tuple[str, ...], tuple[Any, ...], tuple[str, ...], tuple[Any, ...]]] = {}
        with on_gpu(index):  # TensorRT deserialises onto, and runs on, the current device
            self.stream = torch.cuda.Stream(self._dev)
            self._runtime = trt.Runtime(self._logger)
            scratch = 0
            for stage, spec in self.program.stages.items():
                path = engines.plan_path(stage)
                engine = self._runtime.deserialize_cuda_engine(path.read_bytes())
                if engine is None:
                    raise BackendError(f"TensorRT could not deserialise {path} (see the TensorRT log above)")
                if engines.stripped:
                    self._refit(stage, engine, engines.refit_source(stage, export.manifest))
                check_io_contract(stage, stage_io(self.program, stage), self._engine_io(engine), path)
                self.engines[stage] = engine
                scratch = max(scratch, int(engine.device_memory_size_v2))
                dtype = {n: getattr(torch, self.program.tensors[n].dtype) for n in (*spec.inputs, *spec.outputs)}
                self._io[stage] = (spec.inputs, tuple(dtype[n] for n in spec.inputs),
                                   spec.outputs, tuple(dtype[n] for n in spec.outputs))
            # one scratch buffer for every context of a lane: its stages never run at the same time
            self._scratch_bytes = max(scratch, 1)
            self.scratch = torch.empty(self._scratch_bytes, dtype=torch.uint8, device=self._dev)
            self.contexts = {stage: self._new_context(stage) for stage in self.engines}
        self._first = _Lane(self.stream, self.scratch, self.contexts)
        self._lanes = [self._first]
        self._lanes_lock = threading.Lock()
        self._local = threading.local()
        self._local.lane = self._first  # the opening thread runs on the first lane

    @property
    def captured_graphs(self) -> int:
        """How many (stage, input shapes) are held as CUDA graphs now (at most ``max_graphs``), over all the
        size buckets kept."""
        return sum(len(graphs) for graphs in self._graphs.values())

    def _refit(self, stage: str, engine: Any, onnx_path: Any) -> None:
        """Fill a weight-stripped engine with the weights of the graph it was built from (which point into the
        export's shared weight file): ``Refitter`` + ``OnnxParserRefitter.refit_from_file``, then
        ``refit_cuda_engine``; each call's bool is checked."""
        trt = self._trt
        refitter = trt.Refitter(engine, self._logger)
        parser = trt.OnnxParserRefitter(refitter, self._logger)
        if not parser.refit_from_file(str(onnx_path)):
            errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors)) or "no detail"
            raise BackendError(f"TensorRT could not read the weights of stage {stage} from {onnx_path}: {errors}")
        if not refitter.refit_cuda_engine():
            raise BackendError(f"TensorRT could not refit the weight-stripped engine of stage {stage}")

    def _engine_io(self, engine: Any) -> dict[str, tuple[str, str]]:
        """``{tensor: (mode, dtype)}`` of a deserialised engine."""
        modes = {self._trt.TensorIOMode.INPUT: "input", self._trt.TensorIOMode.OUTPUT: "output"}
        out = {}
        for i in range(engine.num_io_tensors):
            name = engine.get_tensor_name(i)
            kind = modes.get(engine.get_tensor_mode(name), "neither input nor output")
            dtype = engine.get_tensor_dtype(name)
            out[name] = (kind, trt_dtype_name(getattr(dtype, "name", str(dtype))))
        return out

    def _new_context(self, stage: str, scratch: Any = None) -> Any:
        """An execution context of ``stage`` on a lane's scratch buffer (default: the first lane's)."""
        scratch = self.scratch if scratch is None else scratch
        strategy = self._trt.ExecutionContextAllocationStrategy.USER_MANAGED
        context = self.engines[stage].create_execution_context(strategy)
        if context is None:
            raise BackendError(f"TensorRT could not create an execution context for stage {stage}")
        context.set_device_memory(scratch.data_ptr(), scratch.numel())
        return context

    def _lane(self) -> _Lane:
        """This thread's lane, made on its first run: a stream, a scratch buffer and a context per stage."""
        lane = getattr(self._local, "lane", None)
        if lane is None:
            torch = self._torch
            with on_gpu(self._dev.index), self._lanes_lock:
                scratch = torch.empty(self._scratch_bytes, dtype=torch.uint8, device=self._dev)
                contexts = {stage: self._new_context(stage, scratch) for stage in self.engines}
                lane = _Lane(torch.cuda.Stream(self._dev), scratch, contexts)
                self._lanes.append(lane)
            self._local.lane = lane
        return lane

    # ------------------------------------------------------------------ running
    def run(self, stage: str, inputs: Sequence[Any]) -> list[Any]:
        torch = self._torch
        names, dtypes, _, _ = self._io[stage]
        if len(inputs) != len(names):
            raise BackendError(f"stage {stage} takes {len(names)} inputs, not {len(inputs)}")
        key = (stage, *(tuple(t.shape) for t in inputs))
        if key not in self._covered:
            check_covered(self.engine_manifest, self.program, stage, key[1:])
            self._covered.add(key)
        lane = self._lane()
        caller = torch.cuda.current_stream(self._dev)
        with torch.cuda.device(self._dev), torch.cuda.stream(lane.stream):
            lane.stream.wait_stream(caller)  # the caller's stream may still be writing the inputs
            ready = [self._prepared(stage, n, t, d, lane.stream) for n, t, d in zip(names, inputs, dtypes)]
            if self.cuda_graphs and key not in self._eager and lane is self._first:
                outs = self._run_graph(stage, key, ready)
            else:
                outs = self._run_eager(stage, lane.contexts[stage], ready, lane.stream)
        caller.wait_stream(lane.stream)  # the outputs are complete before the caller's stream reads them
        for out in outs:
            out.record_stream(caller)  # made on our stream, used on the caller's: not reused before it is done
        return outs

    def _prepared(self, stage: str, name: str, t: Any, dtype: Any, stream: Any) -> Any:
        """An input as TensorRT reads it: on this GPU, of the engine's dtype, contiguous and aligned. Runs on the
        backend's stream, after it waited for the caller's."""
        torch = self._torch
        if not isinstance(t, torch.Tensor):
            raise BackendError(f"input {name} of stage {stage} is a {type(t).__name__}; the TensorRT backend takes "
                               "torch tensors (use from_host for arrays)")
        if t.dtype != dtype:
            raise BackendError(f"input {name} of stage {stage} is {t.dtype}; its engine takes {dtype}")
        if t.device != self._dev:
            t = t.to(self._dev)
        else:
            t.record_stream(stream)  # the caller may drop it while our stream still reads it
        if not t.is_contiguous() or t.data_ptr() % ALIGNMENT:
            t = t.clone(memory_format=torch.contiguous_format)
        return t

    def _bind(self, stage: str, context: Any, inputs: Sequence[Any]) -> list[Any]:
        """Set the input shapes and addresses of ``context`` and allocate its outputs (on the backend's stream)."""
        names, _, out_names, out_dtypes = self._io[stage]
        for name, t in zip(names, inputs):
            if not context.set_input_shape(name, tuple(t.shape)):
                raise BackendError(f"TensorRT refused shape {tuple(t.shape)} for input {name} of stage {stage} "
                                   "(see the TensorRT log above)")
            if not context.set_tensor_address(name, t.data_ptr()):
                raise BackendError(f"TensorRT refused the address of input {name} of stage {stage}")
        outs = []
        for name, dtype in zip(out_names, out_dtypes):
            shape = tuple(context.get_tensor_shape(name))
            if any(d < 0 for d in shape):
                raise BackendError(f"TensorRT cannot infer the shape of output {name} of stage {stage} from its inputs")
            out = self._torch.empty(shape, dtype=dtype, device=self._dev)
            if not context.set_tensor_address(name, out.data_ptr()):
                raise BackendError(f"TensorRT refused the address of output {name} of stage {stage}")
            outs.append(out)
        return outs

    def _enqueue(self, stage: str, context: Any, stream: Any = None) -> None:
        if not context.execute_async_v3((stream or self.stream).cuda_stream):
            raise BackendError(f"TensorRT failed to run stage {stage} (see the TensorRT log above)")

    def _run_eager(self, stage: str, context: Any, inputs: Sequence[Any], stream: Any = None) -> list[Any]:
        outs = self._bind(stage, context, inputs)
        self._enqueue(stage, context, stream)
        return outs

    def _run_graph(self, stage: str, key: tuple, inputs: Sequence[Any]) -> list[Any]:
        bucket = graph_bucket(self.program, stage, key[1:])
        decision = self.policy.decide(bucket, stage)
        for old in self.policy.evicted:
            self._release(old)
        if decision == "eager":
            return self._run_eager(stage, self.contexts[stage], inputs)
        entry = self._graphs.get(bucket, {}).get(key)
        if entry is None:
            return self._capture(stage, key, bucket, inputs)
        for dst, src in zip(entry.inputs, inputs):
            dst.copy_(src)
        entry.graph.replay()
        return [o.clone() for o in entry.outputs]  # the next replay overwrites the static outputs

    def _release(self, bucket: Hashable) -> None:
        graphs = self._graphs.pop(bucket, {})
        if graphs:
            self.stream.synchronize()  # they may still be replaying
        for entry in graphs.values():
            entry.graph.reset()

    @property
    def graph_count(self) -> int:
        return sum(len(g) for g in self._graphs.values())

    def _capture(self, stage: str, key: tuple, bucket: Hashable, inputs: Sequence[Any]) -> list[Any]:
        """Run ``stage`` on a new context bound to static buffers, then capture that context into a CUDA graph.
        The first run is both the warm-up TensorRT needs before a capture (its first enqueue after setting shapes
        may do work a graph cannot hold) and this call's result. A failed capture (an enqueue may return False
        while the stream captures) leaves this (stage, shapes) eager, logged once. One capture at a time in the
        process (:data:`CAPTURE_LOCK`)."""
        torch = self._torch
        context = self._new_context(stage)
        static_in = [t.clone() for t in inputs]
        static_out = self._run_eager(stage, context, static_in)
        result = [o.clone() for o in static_out]
        graph = torch.cuda.CUDAGraph()
        try:
            with CAPTURE_LOCK, torch.cuda.graph(graph, stream=self.stream, capture_error_mode="thread_local"):
                self._enqueue(stage, context)
        except (BackendError, RuntimeError) as exc:
            self._eager.add(key)
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            log.warning("stage %s at input shapes %s cannot be captured into a CUDA graph (%s); it runs eagerly at "
                        "these shapes", stage, list(key[1:]), reason)
            return result
        self._graphs.setdefault(bucket, {})[key] = _Graph(context, graph, static_in, static_out)
        return result

    # ------------------------------------------------------------------ host transfers
    def from_host(self, array: np.ndarray) -> Any:
        torch = self._torch
        host = torch.from_numpy(np.ascontiguousarray(array)).pin_memory()
        stream = self._lane().stream
        with torch.cuda.device(self._dev), torch.cuda.stream(stream):
            out = host.to(self._dev, non_blocking=True)
        caller = torch.cuda.current_stream(self._dev)
        caller.wait_stream(stream)
        out.record_stream(caller)
        return out

    def to_host(self, tensor: Any) -> np.ndarray:
        self._lane().stream.synchronize()  # our work that wrote it; the copy orders after the caller's stream
        return tensor.detach().cpu().numpy()

    def synchronize(self) -> None:
        self._lane().stream.synchronize()

    def close(self) -> None:
        for lane in getattr(self, "_lanes", []):
            lane.stream.synchronize()
            lane.contexts.clear()
        stream = getattr(self, "stream", None)
        if stream is not None:
            stream.synchronize()
        for graphs in self._graphs.values():
            for entry in graphs.values():
                entry.graph.reset()
        self._graphs.clear()
        self.contexts.clear()  # contexts before their engines, engines before the runtime
        self._lanes = []
        self.engines.clear()
        self.scratch = None

