"""Low precision without losing the stream: the bf16 recipes of the PyTorch stages, the stream-exact fp16
recipe of the ONNX graphs, and the CPU detection that decides whether bf16 may run."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from click.testing import CliRunner

import hpcm_deploy as hd
from hpcm_deploy.artifacts.export import Manifest
from hpcm_deploy.backends import backend_options, parse_backend_spec
from hpcm_deploy.backends.lowp import CpuFeatures, bf16_problem, cpu_features, parse_cpu_flags, resolve_precision
from hpcm_deploy.backends.torch_backend import TorchBackend
from hpcm_deploy.cli import main
from hpcm_deploy.evaluation.precision_cost import compare_codecs
from hpcm_deploy.exporting.fp16_recipe import FP16, FP32, TRANSFORM_STAGES, derive_export

SPR_FLAGS = ("flags\t\t: fpu vme sse sse2 avx avx2 avx512f avx512bw avx_vnni avx512_bf16 amx_bf16 avx512_fp16 "
             "amx_tile amx_int8")


def _image(seed: int = 0, size: tuple[int, int] = (96, 130)) -> np.ndarray:
    return (np.random.default_rng(seed).random((*size, 3)) * 255).astype(np.uint8)


def _bf16_codec(export, precision: str = "bf16") -> hd.Codec:
    """The bf16 recipe, emulated where the CPU has no native bfloat16 (same arithmetic, only slower)."""
    emulate = not cpu_features().native_bf16
    return hd.Codec(export, backend="torch", margins=None, precision=precision, emulate_bf16=emulate)


def test_cpu_flags_are_parsed_from_cpuinfo_lines():
    spr = parse_cpu_flags("processor\t: 0\nmodel name\t: Intel(R) Xeon(R)\n" + SPR_FLAGS + "\nbogomips\t: 5200")
    assert spr == CpuFeatures(amx_bf16=True, avx512_bf16=True, avx512=True, amx_int8=True) and spr.native_bf16
    cooper = parse_cpu_flags("Flags: fpu sse2 avx2 avx512f avx512_bf16")  # lscpu's form; bf16 without AMX
    assert cooper.native_bf16 and not cooper.amx_bf16 and cooper.avx512
    skylake = parse_cpu_flags("flags : fpu sse2 avx2 avx512f avx512bw avx512_vnni")
    assert not skylake.native_bf16 and skylake.avx512 and skylake.describe() == "AVX-512"
    assert parse_cpu_flags("fpu sse2 avx2 fma") == CpuFeatures()  # a bare flag list
    # "amx_bf16" mentioned in another field is not a flag
    assert not parse_cpu_flags("model name : amx_bf16 lookalike\nflags : fpu avx2").native_bf16


def test_bf16_is_refused_in_one_line_without_native_bfloat16(tiny_base):
    avx2 = parse_cpu_flags("flags : fpu sse2 avx2 fma")
    problem = bf16_problem("cpu", avx2)
    assert problem is not None and "\n" not in problem and "AMX or AVX-512 BF16" in problem
    assert bf16_problem("cpu", parse_cpu_flags(SPR_FLAGS)) is None
    program = hd.Codec(tiny_base).program
    with pytest.raises(hd.BackendError, match="bf16 needs a CPU with AMX or AVX-512 BF16"):
        TorchBackend(tiny_base, program, "cpu", precision="bf16", cpu=avx2)
    TorchBackend(tiny_base, program, "cpu", precision="fp32", cpu=avx2)  # fp32 needs nothing


def test_auto_precision_is_bf16_only_where_the_cpu_computes_it(tiny_base):
    avx2, spr = parse_cpu_flags("flags : fpu sse2 avx2 fma"), parse_cpu_flags(SPR_FLAGS)
    assert resolve_precision("auto", "cpu", spr) == "bf16" and resolve_precision("auto", "cpu", avx2) == "fp32"
    assert resolve_precision("auto", "cuda", spr) == "fp32"
    assert resolve_precision("bf16-full", "cpu", avx2) == "bf16-full"  # asked for: refused later, not changed
    program = hd.Codec(tiny_base).program
    assert TorchBackend(tiny_base, program, "cpu", precision="auto", cpu=avx2).precision == "fp32"  # no refusal
    chosen = TorchBackend(tiny_base, program, "cpu", precision="auto", cpu=spr, emulate_bf16=True)
    assert chosen.precision == "bf16" and chosen.modules["g_a"].net.dtype == torch.bfloat16


def test_torch_precision_options_are_checked_and_spelled_as_bench_specs():
    assert parse_backend_spec("torch:bf16")[2] == {"precision": "bf16"}
    assert backend_options("torch", {"precision": "bf16-full", "layout": "channels_last"}).layout == "channels_last"
    with pytest.raises(hd.BackendError, match="torch option precision must be one of fp32, bf16, bf16-full"):
        parse_backend_spec("torch:fp16")
    with pytest.raises(hd.BackendError, match="torch option layout"):
        backend_options("torch", {"layout": "nhwc"})
    result = CliRunner().invoke(main, ["bench", "--backend", "torch:int8"])
    assert result.exit_code == 1 and result.output.count("\n") == 1


def test_bench_specs_carry_typed_backend_options():
    assert parse_backend_spec("torch:bf16,layout=channels_last@cpu") == (
        "torch", "cpu", {"precision": "bf16", "layout": "channels_last"})
    assert parse_backend_spec("onnxruntime,optimization=extended,threads=2")[2] == {
        "optimization": "extended", "threads": 2}
    assert parse_backend_spec("tensorrt,cuda_graphs=off")[2] == {"cuda_graphs": False}
    for spec, message in (("onnxruntime,threads=two", "threads is a whole number"),
                          ("onnxruntime,optimization=fast", "optimization must be all, extended or basic"),
                          ("torch,stride=2", "has no option stride"), ("torch,layout", "options are key=value")):
        with pytest.raises(hd.BackendError, match=message):
            parse_backend_spec(spec)


@pytest.mark.parametrize("fixture", ["tiny_base_export", "tiny_phase2_export"])
def test_bf16_streams_decode_exactly_on_fp32_and_back_without_margin(request, fixture):
    export = request.getfixturevalue(fixture)
    c32 = hd.Codec(export, backend="torch", margins=None)
    result = compare_codecs(c32, _bf16_codec(export), {"a": _image(1), "b": _image(2, (64, 200))}, "bf16")
    assert result["cross_exact"] == {"fp32_to_bf16": True, "bf16_to_fp32": True}
    assert result["total"]["cdf_flips"] == 0 and result["total"]["topk_flips"] == 0  # the same entropy path
    # bf16 transforms choose another y and draw another picture, by little (random-weight models: a loose bound)
    assert abs(result["delta_bpp_percent"]) < 1.0 and abs(result["delta_psnr_db"]) < 0.1
    assert 0 < result["mean"]["bpp_bf16"]


def test_bf16_transforms_run_in_bfloat16_and_channels_last(tiny_base_export):
    codec = _bf16_codec(tiny_base_export)
    nets = {name: m.net.net for name, m in codec.backend.modules.items() if name in TRANSFORM_STAGES}
    assert set(nets) == set(TRANSFORM_STAGES)
    for net in nets.values():
        weight = next(p for p in net.parameters() if p.dim() == 4)
        assert weight.dtype == torch.bfloat16 and weight.is_contiguous(memory_format=torch.channels_last)
    ref = hd.Codec(tiny_base_export, backend="torch")
    assert codec.backend.modules["s1_start"] is not None
    assert type(codec.backend.modules["s1_start"]) is type(ref.backend.modules["s1_start"])  # entropy path as fp32
    x32 = ref.backend.model.g_a.branch[0].weight
    assert x32.dtype == torch.float32  # the fp32 model is left as it was


def test_bf16_full_recipe_round_trips_its_own_streams(tiny_phase2_export):
    codec = _bf16_codec(tiny_phase2_export, "bf16-full")
    enc = codec.compress_detailed([_image(3)], symbols=True)[0]
    dec = codec.decompress_detailed([enc.stream], symbols=True)[0]
    assert all(np.array_equal(a, b) for a, b in zip(enc.symbols, dec.symbols))


def test_fp32_channels_last_layout_decodes_the_nchw_streams(tiny_base_export):
    c32 = hd.Codec(tiny_base_export, backend="torch", margins=None)
    cl = hd.Codec(tiny_base_export, backend="torch", margins=None, layout="channels_last")
    result = compare_codecs(c32, cl, {"a": _image(4)}, "fp32cl")
    assert result["cross_exact"] == {"fp32_to_fp32cl": True, "fp32cl_to_fp32": True}
    assert abs(result["delta_psnr_db"]) < 1e-3


@pytest.fixture(scope="module")
def exact_fp16_export(tiny_phase2_export, tmp_path_factory):
    return derive_export(Manifest.load(tiny_phase2_export), tmp_path_factory.mktemp("fp16x") / "tiny-fp16")


def test_stream_exact_fp16_recipe_rewrites_only_the_transforms(exact_fp16_export):
    manifest = Manifest.load(exact_fp16_export)
    assert manifest.precision == "fp16" and manifest.extra["fp16_recipe"] == "exact"
    for stage, report in manifest.recipe.items():
        if stage in TRANSFORM_STAGES:
            assert report["fp16_nodes"] > 0 or stage == "h_a", stage
        else:
            assert report["fp16_nodes"] == 0, stage
    step = onnx.load(str(manifest.stage_path("s3_step4")))
    inferred = onnx.shape_inference.infer_shapes(step)
    types = {v.type.tensor_type.elem_type for v in inferred.graph.value_info}
    assert FP16 not in types and FP32 in types
    g_a = onnx.shape_inference.infer_shapes(onnx.load(str(manifest.stage_path("g_a"))))
    assert FP16 in {v.type.tensor_type.elem_type for v in g_a.graph.value_info}


def test_stream_exact_fp16_streams_cross_decode_with_fp32_both_ways(exact_fp16_export, tiny_phase2_export):
    c32 = hd.Codec(tiny_phase2_export, backend="onnxruntime", margins=None)
    c16 = hd.Codec(exact_fp16_export, backend="onnxruntime", margins=None)
    result = compare_codecs(c32, c16, {"a": _image(5), "b": _image(6, (70, 150))}, "fp16")
    assert result["cross_exact"] == {"fp32_to_fp16": True, "fp16_to_fp32": True}
    assert result["total"]["cdf_flips"] == 0 and result["total"]["topk_flips"] == 0
    assert abs(result["delta_bpp_percent"]) < 1.0 and abs(result["delta_psnr_db"]) < 0.1
