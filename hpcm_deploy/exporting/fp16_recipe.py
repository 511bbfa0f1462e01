"""Precision recipes: rewrite exported fp32 graphs into mixed precision.

TensorRT 11 removed the FP16/BF16 builder flags (networks are strongly typed), so precision is a property of
the ONNX graph. The ``fp16`` recipe runs the convolutions, attention and activations in float16 and keeps in
float32 what decides bits and decodability:

- the entropy parameters: every node from the last convolution of a head to the ``scales``/``means`` (and
  ``params``, ``z_q``) outputs;
- the memory banks: key encoding and pooling, stored values, the query/key similarity, top-k and the softmax
  that weights the chosen entries;
- the state that must stay exact: ``y_hat`` placement (symbols plus means) and the packed latent ``y``;
- every normalisation (instance/group/layer norm, L2 norm) and global pooling, where float16 sums lose
  precision or overflow; and softmax.

Two recipes apply it. ``exact`` (the default) rewrites only the transforms ``g_a``, ``h_a`` and ``g_s``, which
decide no symbol (``g_a`` chooses ``y``, ``h_a`` chooses ``z``, ``g_s`` draws the picture), and keeps every graph
of the entropy-parameter path (``h_s`` and the context stages) as the fp32 export has it: its scales, means and
top-k choices are then computed exactly as fp32 computes them, so fp16 and fp32 streams cross-decode with the
default margins. ``full`` rewrites every graph (faster where fp16 pays, but its scales move by up to ~1e-3, so
its streams cross-decode only with ``--margin 4e-3``: docs/tensorrt.md).

Graph inputs and outputs stay float32, so a rewritten export is a drop-in replacement for the fp32 one. The
rewrite inserts explicit ``Cast`` nodes at every precision boundary and converts weights of float16 nodes to
float16 (clipped to its range).

Why not onnxconverter-common's ``convert_float_to_float16(keep_io_types=True, node_block_list=...)``: given
this recipe's node list it agrees on every node's precision but one (it keeps ``Resize`` in float32), inserts
three times the casts, truncates float32 constants below 1e-7 (the 1e-12 epsilons of the normalisations kept in
float32), and turns weights shared by a float32 and a float16 node to float16 for both, so ONNX Runtime refuses
the result (``Type parameter (T) of Optype (Conv) bound to different types``); measured with 1.16.0.
"""

from __future__ import annotations

import os
import shutil
from collections import defaultdict
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from ..artifacts.export import WeightsEntry
from ..files import sha256_file, staged_directory

if TYPE_CHECKING:
    from ..artifacts.export import Manifest

FP32, FP16 = TensorProto.FLOAT, TensorProto.FLOAT16
# ops kept in float32 wherever they appear
FP32_OPS = {"InstanceNormalization", "GroupNormalization", "LayerNormalization", "ReduceL2", "LpNormalization",
            "Softmax", "LogSoftmax", "TopK", "ReduceMean", "GlobalAveragePool"}
# the layers that end a backward walk from a protected tensor (they are included, their inputs are not)
HEAD_OPS = {"Conv", "ConvTranspose", "Gemm"}
PROTECTED_PREFIXES = ("scales.", "means.", "keys_", "values_", "y_hat.", "y.", "params", "z_q")
# inputs whose float type is not bound to the node's compute type (left as they are)
_FREE_INPUTS = {"Resize": {1, 2, 3}, "Upsample": {1}, "Cast": {0}, "Shape": {0}, "Size": {0}, "CastLike": {0}}
_NO_INPUT_CONSTRAINT = {"Shape", "Size", "Cast"}
FP16_MAX = float(np.finfo(np.float16).max)
RECIPES = ("exact", "full")
TRANSFORM_STAGES = ("g_a", "h_a", "g_s")  # the stages the stream-exact recipe rewrites (they decide no symbol)


@dataclass
class RecipeReport:
    graph: str
    fp16_nodes: int = 0
    fp32_nodes: int = 0
    casts_added: int = 0
    kept_fp32: list[str] = field(default_factory=list)  # float nodes kept in fp32, as "op:name"

    def as_dict(self) -> dict:
        return {"graph": self.graph, "fp16_nodes": self.fp16_nodes, "fp32_nodes": self.fp32_nodes,
                "casts_added": self.casts_added, "kept_fp32_ops": sorted({k.split(":")[0] for k in self.kept_fp32})}


def _elem_types(model: onnx.ModelProto) -> dict[str, int]:
    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False)
    g = inferred.graph
    types = {v.name: v.type.tensor_type.elem_type for v in [*g.value_info, *g.input, *g.output]}
    types.update({i.name: i.data_type for i in g.initializer})
    for node in g.node:
        if node.op_type == "Constant":
            for a in node.attribute:
                if a.name == "value":
                    types[node.output[0]] = a.t.data_type
    return types


def fp32_nodes(model: onnx.ModelProto, types: dict[str, int]) -> set[int]:
    """Indexes of the float nodes the fp16 recipe keeps in float32."""
    g = model.graph
    producer = {out: i for i, n in enumerate(g.node) for out in n.output}
    consumers: dict[str, list[int]] = defaultdict(list)
    for i, n in enumerate(g.node):
        for x in n.input:
            consumers[x].append(i)
    keep = {i for i, n in enumerate(g.node) if n.op_type in FP32_OPS}

    def walk_back(tensor: str) -> None:
        stack = [tensor]
        while stack:
            t = stack.pop()
            i = producer.get(t)
            if i is None or i in walked:
                continue
            walked.add(i)
            keep.add(i)
            if g.node[i].op_type in HEAD_OPS:
                continue
            stack += [x for x in g.node[i].input if x and types.get(x) == FP32]

    walked: set[int] = set()
    for out in g.output:
        if out.name.startswith(PROTECTED_PREFIXES):
            walk_back(out.name)
    for n in g.node:
        if n.op_type == "TopK":
            walk_back(n.input[0])
            # from the top-k scores forward to the softmax that turns them into weights
            stack = [n.output[0]]
            while stack:
                for j in consumers.get(stack.pop(), []):
                    if j not in keep:
                        keep.add(j)
                        if g.node[j].op_type != "Softmax":
                            stack += list(g.node[j].output)
    return keep


def _bound_inputs(node: onnx.NodeProto) -> set[int]:
    free = _FREE_INPUTS.get(node.op_type, set())
    return {k for k in range(len(node.input)) if k not in free}


class _Rewrite:
    """The state of one fp16 rewrite: which tensors are float16, the casts and float16 weights added."""

    def __init__(self, graph: onnx.GraphProto, half: set[int], types: dict[str, int]) -> None:
        self.graph, self.types = graph, types
        self.initializers = {i.name: i for i in graph.initializer}
        self.half_tensors = {o for i in half for o in graph.node[i].output if types.get(o) == FP32}
        self.new_inits: dict[str, onnx.TensorProto] = {}
        self.casts: dict[tuple[str, int], str] = {}
        self.nodes: list[onnx.NodeProto] = []

    def fp16_version(self, x: str) -> str:
        """``x`` as float16: itself if produced in float16, a float16 copy of a weight, or a cast."""
        if x in self.half_tensors:
            return x
        if x in self.initializers:
            key = f"{x}__fp16"
            if key not in self.new_inits:
                arr = numpy_helper.to_array(self.initializers[x]).astype(np.float32)
                self.new_inits[key] = numpy_helper.from_array(np.clip(arr, -FP16_MAX, FP16_MAX).astype(np.float16),
                                                              key)
            return key
        return self.cast(x, FP16)

    def cast(self, x: str, to: int) -> str:
        if (x, to) not in self.casts:
            out = f"{x}__to{'16' if to == FP16 else '32'}"
            self.nodes.append(helper.make_node("Cast", [x], [out], to=to, name=f"recipe_cast_{len(self.casts)}"))
            self.casts[(x, to)] = out
        return self.casts[(x, to)]

    def to_half(self, node: onnx.NodeProto) -> None:
        """A node that now computes in float16: its float inputs become float16, its constants too."""
        bound = _bound_inputs(node)
        for k, x in enumerate(node.input):
            if x and k in bound and self.types.get(x) == FP32:
                node.input[k] = self.fp16_version(x)
        for a in node.attribute:
            if node.op_type == "Cast" and a.name == "to" and a.i == FP32:
                a.i = FP16
            elif node.op_type in ("Constant", "ConstantOfShape") and a.name == "value" and a.t.data_type == FP32:
                arr = numpy_helper.to_array(a.t).astype(np.float32)
                a.t.CopyFrom(numpy_helper.from_array(np.clip(arr, -FP16_MAX, FP16_MAX).astype(np.float16)))

    def keep_float(self, node: onnx.NodeProto) -> None:
        """A node that stays float32: float16 inputs come through a cast back to float32."""
        if node.op_type in _NO_INPUT_CONSTRAINT:
            return
        bound = _bound_inputs(node)
        for k, x in enumerate(node.input):
            if x in self.half_tensors and k in bound:
                node.input[k] = self.cast(x, FP32)

    def float_outputs(self) -> None:
        """Graph outputs produced in float16 are cast back to float32 under their own name."""
        for out in self.graph.output:
            if out.name in self.half_tensors:
                inner = f"{out.name}__fp16"
                for n in self.nodes:
                    n.output[:] = [inner if o == out.name else o for o in n.output]
                    n.input[:] = [inner if x == out.name else x for x in n.input]
                self.nodes.append(helper.make_node("Cast", [inner], [out.name], to=FP32,
                                                   name=f"recipe_out_{out.name}"))
                self.casts[(inner, FP32)] = out.name


def to_fp16(model: onnx.ModelProto, name: str = "") -> tuple[onnx.ModelProto, RecipeReport]:
    """The ``fp16`` recipe applied to ``model`` (a new model; ``model`` is not changed)."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    g = model.graph
    types = _elem_types(model)
    keep = fp32_nodes(model, types)
    report = RecipeReport(name or g.name)
    is_float_out = [any(types.get(o) == FP32 for o in n.output) for n in g.node]
    half = {i for i, n in enumerate(g.node) if is_float_out[i] and i not in keep and n.op_type != "Shape"}
    report.fp16_nodes = len(half)
    report.fp32_nodes = sum(is_float_out) - len(half)
    report.kept_fp32 = [f"{g.node[i].op_type}:{g.node[i].name}" for i in sorted(keep) if is_float_out[i]]
    rewrite = _Rewrite(g, half, types)
    for i, node in enumerate(g.node):
        if i in half:
            rewrite.to_half(node)
        else:
            rewrite.keep_float(node)
        rewrite.nodes.append(node)
    rewrite.float_outputs()
    report.casts_added = len(rewrite.casts)
    del g.node[:]
    g.node.extend(rewrite.nodes)
    g.initializer.extend(rewrite.new_inits.values())
    used = {x for n in g.node for x in n.input}
    keep_inits = [t for t in g.initializer if t.name in used]
    del g.initializer[:]
    g.initializer.extend(keep_inits)
    del g.value_info[:]
    model = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    onnx.checker.check_model(model)
    return model, report


def recipe_graph(model: onnx.ModelProto, stage: str, recipe: str = "exact") -> tuple[onnx.ModelProto, RecipeReport]:
    """Stage ``stage``'s graph under the fp16 ``recipe``: rewritten by :func:`to_fp16`, or (``exact``, a stage of
    the entropy-parameter path) ``model`` itself, all float32."""
    if recipe not in RECIPES:
        raise ValueError(f"unknown fp16 recipe {recipe!r}; known: {', '.join(RECIPES)}")
    if recipe == "full" or stage in TRANSFORM_STAGES:
        return to_fp16(model, stage)
    floats = sum(1 for n in model.graph.node if n.op_type not in ("Shape", "Size"))
    return model, RecipeReport(stage, fp16_nodes=0, fp32_nodes=floats)


def apply_recipe(root: Path, graphs: list[str], precision: str, recipe: str = "exact") -> dict[str, dict]:
    """Rewrite the graphs ``root/<graph>`` with the ``precision`` recipe (in place); the per-graph reports."""
    if precision != "fp16":
        raise ValueError(f"unknown precision recipe {precision!r}")
    reports = {}
    for graph in graphs:
        path = root / graph
        stage = Path(graph).stem
        if recipe == "exact" and stage not in TRANSFORM_STAGES:
            reports[stage] = recipe_graph(onnx.load(str(path), load_external_data=False), stage, recipe)[1].as_dict()
            continue
        model, report = recipe_graph(onnx.load(str(path)), stage, recipe)
        onnx.save(model, str(path))
        reports[stage] = report.as_dict()
    return reports


def derive_export(src: Manifest, out: str | os.PathLike, precision: str = "fp16", recipe: str = "exact") -> Path:
    """A copy of the export ``src`` whose graphs follow ``precision`` under ``recipe`` (``exact``: transforms only;
    ``full``: every graph), with the same tables, weights, fingerprint and program; graph inputs and outputs stay
    float32, so any backend runs it like the original."""
    from .weights import share_weights

    if precision != "fp16":
        raise ValueError(f"unknown precision recipe {precision!r}")
    out = Path(out)
    with staged_directory(out) as work:
        assert src.tables is not None
        shutil.copy2(src.path("tables"), work / src.tables.file)
        graphs = [entry.file for entry in src.stages.values()]
        for graph in graphs:  # with their weights embedded again; shared anew below
            onnx.save(onnx.load(str(src.root / graph)), str(work / graph))
        applied = apply_recipe(work, graphs, precision, recipe)
        weights = share_weights(work, graphs, src.state_dict())
        stages = {name: replace(entry, sha256=sha256_file(work / entry.file), bytes=(work / entry.file).stat().st_size)
                  for name, entry in src.stages.items()}
        replace(src, root=work, stages=stages, recipe=applied, precision=precision,
                weights=WeightsEntry.from_dict({**weights, "sha256": sha256_file(work / weights["file"])}),
                extra={**src.extra, "fp16_recipe": recipe, "derived_from": str(src.root)}).save()
    return out
