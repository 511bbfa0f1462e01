"""A static check of ONNX graphs against TensorRT's ONNX importer, without TensorRT.

Rules follow onnx-tensorrt's operator support matrix (docs/operators.md) for TensorRT 10.x: every node's op
must be one the importer has, with the attributes it supports. Errors make a graph fail to build; warnings
are supported with conditions worth knowing (e.g. slower paths or precision casts).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

# Opset range of the TensorRT 10 importer.
MIN_OPSET, MAX_OPSET = 9, 22
TOPK_MAX_K = 3840

SUPPORTED = frozenset("""
Abs Acos Acosh Add And ArgMax ArgMin Asin Asinh Atan Atanh AveragePool BatchNormalization Cast CastLike Ceil Celu
Clip Concat Constant ConstantOfShape Conv ConvTranspose Cos Cosh CumSum DepthToSpace DequantizeLinear Div Dropout
Einsum Elu Equal Erf Exp Expand EyeLike Flatten Floor Gather GatherElements GatherND Gelu Gemm GlobalAveragePool
GlobalLpPool GlobalMaxPool Greater GreaterOrEqual GridSample GroupNormalization GRU HardSigmoid HardSwish Identity If
InstanceNormalization IsInf IsNaN LayerNormalization LeakyRelu Less LessOrEqual Log LogSoftmax Loop LpNormalization
LpPool LRN LSTM MatMul Max MaxPool Mean MeanVarianceNormalization Min Mish Mod Mul Neg NonMaxSuppression Not OneHot Or
Pad ParametricSoftplus Pow PRelu QuantizeLinear RandomNormal RandomNormalLike RandomUniform RandomUniformLike Range
Reciprocal ReduceL1 ReduceL2 ReduceLogSum ReduceLogSumExp ReduceMax ReduceMean ReduceMin ReduceProd ReduceSum
ReduceSumSquare Relu Reshape Resize ReverseSequence RNN RoiAlign Round ScaledTanh Scan Scatter ScatterElements
ScatterND Selu Shape Shrink Sigmoid Sign Sin Sinh Size Slice Softmax Softplus Softsign SpaceToDepth Split Sqrt
Squeeze Sub Sum Tan Tanh ThresholdedRelu Tile TopK Transpose Trilu Unsqueeze Upsample Where Xor
""".split())
# Ops the importer has but that break the fixed-shape, scatter-free graphs this project promises (data-dependent
# output shapes, reductions through scatter), or that it lacks.
NEVER = {
    "NonZero": "data-dependent output shape (a decoder would need a shape only the data knows)",
    "Unique": "data-dependent output shape",
    "Compress": "data-dependent output shape",
}
RESIZE_MODES = {"nearest", "linear", "cubic"}
RESIZE_COORDS = {"half_pixel", "pytorch_half_pixel", "tf_half_pixel_for_nn", "asymmetric", "align_corners"}
RESIZE_NEAREST = {"floor", "ceil", "round_prefer_floor", "round_prefer_ceil"}


@dataclass(frozen=True)
class Finding:
    severity: str  # "error" or "warning"
    node: str
    op: str
    message: str


@dataclass
class GraphReport:
    graph: str
    opset: int
    nodes: int
    findings: list[Finding] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not any(f.severity == "error" for f in self.findings)

    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "error"]


def _attrs(node: onnx.NodeProto) -> dict:
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def _text(v: object) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def _constants(graph: onnx.GraphProto) -> dict[str, np.ndarray | None]:
    """Values known at build time: initializers and Constant node outputs."""
    # weights kept in an external file are build-time constants too; their values are never needed here
    out = {i.name: (None if i.data_location == onnx.TensorProto.EXTERNAL else numpy_helper.to_array(i))
           for i in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant" and node.output:
            attrs = _attrs(node)
            if "value" in attrs:
                out[node.output[0]] = numpy_helper.to_array(attrs["value"])
            elif "value_int" in attrs:
                out[node.output[0]] = np.array(attrs["value_int"])
            elif "value_ints" in attrs:
                out[node.output[0]] = np.array(attrs["value_ints"])
    return out


def check_model(model: onnx.ModelProto, name: str = "") -> GraphReport:
    """Check every node of ``model`` (subgraphs included)."""
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    report = GraphReport(name or model.graph.name, opset, 0)
    if not MIN_OPSET <= opset <= MAX_OPSET:
        report.findings.append(Finding("error", "", "", f"opset {opset} outside TensorRT's {MIN_OPSET}-{MAX_OPSET}"))
    _check_graph(model.graph, opset, report)
    return report


def _check_graph(graph: onnx.GraphProto, opset: int, report: GraphReport) -> None:
    consts = _constants(graph)
    for i, node in enumerate(graph.node):
        report.nodes += 1
        label = node.name or f"#{i}"
        add = lambda sev, msg, n=node, lab=label: report.findings.append(Finding(sev, lab, n.op_type, msg))  # noqa: E731
        if node.domain not in ("", "ai.onnx"):
            add("error", f"custom domain {node.domain!r} needs a TensorRT plugin")
            continue
        op = node.op_type
        if op in NEVER:
            add("error", NEVER[op])
            continue
        if op not in SUPPORTED:
            add("error", "not supported by TensorRT's ONNX importer")
            continue
        attrs = _attrs(node)
        if op in ("ScatterElements", "ScatterND") and _text(attrs.get("reduction", "none")) != "none":
            add("error", f"scatter with reduction={_text(attrs['reduction'])!r} is not supported")
        elif op == "TopK":
            k = consts.get(node.input[1]) if len(node.input) > 1 else None
            if k is None:
                add("error", "K must be a build-time constant")
            elif int(np.asarray(k).reshape(-1)[0]) >= TOPK_MAX_K:
                add("error", f"K={int(np.asarray(k).reshape(-1)[0])} must be below {TOPK_MAX_K}")
            if attrs.get("sorted", 1) != 1:
                add("error", "TopK must be sorted")
        elif op == "Resize":
            mode = _text(attrs.get("mode", "nearest"))
            coord = _text(attrs.get("coordinate_transformation_mode", "half_pixel"))
            if mode not in RESIZE_MODES:
                add("error", f"resize mode {mode!r} not supported")
            if coord not in RESIZE_COORDS:
                add("error", f"coordinate transformation {coord!r} not supported")
            if mode == "nearest" and _text(attrs.get("nearest_mode", "round_prefer_floor")) not in RESIZE_NEAREST:
                add("error", f"nearest_mode {_text(attrs.get('nearest_mode'))!r} not supported")
            if attrs.get("antialias", 0):
                add("error", "antialiased resize not supported")
        elif op == "GroupNormalization":
            if opset < 21:
                add("warning", f"opset {opset} GroupNormalization scales per group (per channel from opset 21); "
                               "check that the importer of your TensorRT version applies the opset's semantics")
        elif op in ("InstanceNormalization", "Conv", "ConvTranspose"):
            weights = node.input[1:3]
            if any(w and w not in consts for w in weights):
                add("warning", "weights computed at run time (slower path; not refittable)")
        elif op in ("Slice", "Squeeze", "Unsqueeze", "ReduceSum", "ReduceMean") and len(node.input) > 1:
            axes_index = 3 if op == "Slice" else 1
            if len(node.input) > axes_index and node.input[axes_index] and node.input[axes_index] not in consts:
                add("error", "axes must be a build-time constant")
        elif op == "Cast" and attrs.get("to") == onnx.TensorProto.DOUBLE:
            add("warning", "DOUBLE is cast down to FLOAT by TensorRT")
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                _check_graph(attr.g, opset, report)


def check_file(path: str | Path) -> GraphReport:
    return check_model(onnx.load(str(path), load_external_data=False), Path(path).stem)
