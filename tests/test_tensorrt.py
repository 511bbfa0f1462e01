"""TensorRT: everything around the TensorRT calls (profiles, the fp16 recipe, engine manifests, the argument
checks that run before TensorRT is imported, the missing-TensorRT message, the GPU check on the CPU). Tests that
need TensorRT itself skip, saying why, when TensorRT cannot create a builder on a CUDA device; none fakes it."""

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner

import hpcm_deploy as hd
from hpcm_deploy.artifacts.engine_manifest import (
    EngineManifest,
    PlanEntry,
    check_compatible,
    check_covered,
    check_engines_for_export,
    check_io_contract,
    engine_dir_name,
    new_manifest,
    resolve_precision,
    stage_io,
    timing_cache_notice,
    timing_cache_plan,
    trt_dtype_name,
)
from hpcm_deploy.artifacts.export import Manifest
from hpcm_deploy.artifacts.shapes import SizeRange, all_profiles, implied_size, shape_at
from hpcm_deploy.backends import TensorRTOptions, backend_options, open_backend
from hpcm_deploy.backends.trt_lib import check_device_index, cuda_index, unavailable_reason
from hpcm_deploy.checks.verify import TOLERANCES, StreamResult, VerifyReport, tolerance_for
from hpcm_deploy.cli import main
from hpcm_deploy.exporting.engine_build import build_engines
from hpcm_deploy.exporting.fp16_recipe import FP16, FP32, derive_export
from hpcm_deploy.files import sha256_file
from hpcm_deploy.stages import build_program

TRT_MISSING = unavailable_reason()  # None where TensorRT can create a builder on a CUDA device
needs_tensorrt = pytest.mark.skipif(TRT_MISSING is not None, reason=f"needs TensorRT on a GPU: {TRT_MISSING}")
ROOT = Path(__file__).resolve().parents[1]


def test_profiles_follow_the_size_range():
    sizes = SizeRange.from_sizes((200, 300), (500, 700), (1000, 1100), max_batch=4, opt_batch=2)
    assert (sizes.min_size, sizes.opt_size, sizes.max_size) == ((256, 512), (512, 768), (1024, 1280))
    prog = build_program(hd.get_config("tiny-phase2"))
    prof = all_profiles(prog, sizes)
    assert prof["g_a"]["x"] == {"min": (1, 3, 256, 512), "opt": (2, 3, 512, 768), "max": (4, 3, 1024, 1280)}
    assert prof["s1_step1"]["ctx.s1_start"]["max"] == (4, 128, 16, 20)
    assert prof["s3_step4"]["values_s3.s3_step3"]["min"] == (1, 4, 128, 8, 8)
    assert prof["s3_step4"]["topk_force.s3_step4"]["opt"] == (2, 2)
    fixed = all_profiles(prog, sizes, fixed_batch=3)
    assert fixed["h_s"]["z_q"]["min"][0] == fixed["h_s"]["z_q"]["max"][0] == 3
    assert shape_at(("B", 640, "H/32", "W/64"), (512, 768), 2) == (2, 640, 16, 12)
    assert sizes.covers((700, 1000), 4) and not sizes.covers((1100, 100)) and not sizes.covers((300, 600), 5)
    with pytest.raises(hd.ConfigError):
        SizeRange.from_sizes((1024, 1024), None, (512, 512))


@pytest.fixture(scope="module")
def fp16_export(tiny_phase2_export, tmp_path_factory):
    return derive_export(Manifest.load(tiny_phase2_export), tmp_path_factory.mktemp("fp16") / "tiny-fp16",
                         recipe="full")


def _node_types(model: onnx.ModelProto) -> dict[str, int]:
    inferred = onnx.shape_inference.infer_shapes(model)
    types = {v.name: v.type.tensor_type.elem_type for v in [*inferred.graph.value_info, *inferred.graph.output]}
    return types


def test_fp16_recipe_keeps_the_decision_path_in_fp32(fp16_export):
    manifest = Manifest.load(fp16_export)
    assert manifest.precision == "fp16"
    model = onnx.load(str(manifest.stage_path("s3_step4")))
    types = _node_types(model)
    by_op: dict[str, set[int]] = {}
    for node in model.graph.node:
        for out in node.output:
            if types.get(out) in (FP16, FP32):
                by_op.setdefault(node.op_type, set()).add(types[out])
    for op in ("TopK", "Softmax", "InstanceNormalization", "ReduceL2", "ReduceMean"):
        assert by_op.get(op, {FP32}) == {FP32}, op
    assert FP16 in by_op["Conv"] and FP32 in by_op["Conv"]  # the trunk in fp16, the heads in fp32
    producers = {o: n for n in model.graph.node for o in n.output}
    for out in model.graph.output:
        assert out.type.tensor_type.elem_type == (FP32 if not out.name.startswith("topk.") else onnx.TensorProto.INT64)
        if out.name.startswith(("scales.", "means.")):  # the entropy head is computed in fp32, not cast
            assert producers[out.name].op_type != "Cast"
    report = manifest.recipe["s3_step4"]
    assert report["fp16_nodes"] > 50 and "TopK" in report["kept_fp32_ops"]


def test_fp16_export_runs_in_onnxruntime_and_round_trips(fp16_export, tiny_phase2_export):
    codec16 = hd.Codec(fp16_export, backend="onnxruntime")
    codec32 = hd.Codec(tiny_phase2_export, backend="onnxruntime")
    img = (np.random.default_rng(0).random((96, 130, 3)) * 255).astype(np.uint8)
    s16 = codec16.compress(img)
    x16 = codec16.decompress(s16, kind="numpy")
    x32 = codec32.decompress(codec32.compress(img), kind="numpy")
    assert x16.shape == img.shape
    assert np.abs(x16.astype(int) - x32.astype(int)).mean() < 2.0  # a mixed-precision copy, not another model
    enc = codec16.compress_detailed([img], symbols=True)[0]
    dec = codec16.decompress_detailed([enc.stream], symbols=True)[0]
    assert all(np.array_equal(a, b) for a, b in zip(enc.symbols, dec.symbols))


def test_engine_manifest_is_checked_against_tensorrt_gpu_and_export(tmp_path, tiny_phase2_export, tiny_base_export):
    export = Manifest.load(tiny_phase2_export)
    sizes = SizeRange.from_sizes((256, 256), None, (512, 512))
    built = new_manifest(export, "10.13.3", "NVIDIA H200", (9, 0), "fp16", {}, all_profiles(export.program(), sizes),
                         root=tmp_path)
    plans = {}
    for stage in export.stages:
        (tmp_path / f"{stage}.plan").write_bytes(stage.encode())
        plans[stage] = PlanEntry(f"{stage}.plan", sha256_file(tmp_path / f"{stage}.plan"))
    replace(built, stages=plans).save()
    em = EngineManifest.load(tmp_path)
    check_compatible(em, export, "10.13.3", (9, 0))  # matches: no error
    with pytest.raises(hd.BackendError, match=r"TensorRT 10.13.3 for sm90.*TensorRT 11.0.0 on sm90"):
        check_compatible(em, export, "11.0.0", (9, 0))
    with pytest.raises(hd.BackendError, match=r"sm90.*sm89"):
        check_compatible(em, export, "10.13.3", (8, 9))
    with pytest.raises(hd.BackendError, match="another export"):
        check_compatible(em, Manifest.load(tiny_base_export), "10.13.3", (9, 0))
    with pytest.raises(hd.BackendError, match="are fp16 engines, not fp32.*--precision fp32"):
        check_compatible(em, export, "10.13.3", (9, 0), precision="fp32")
    check_engines_for_export(em, export, "fp16")
    (tmp_path / "g_s.plan").write_bytes(b"tampered")
    with pytest.raises(hd.BackendError, match="modified"):
        check_compatible(em, export, "10.13.3", (9, 0))
    assert engine_dir_name((9, 0), "10.13.3", "fp16") == "sm90-trt10.13.3-fp16"
    assert json.loads((tmp_path / "engines.json").read_text())["profiles"]["g_a"]["x"]["max"] == [1, 3, 512, 512]


# ------------------------------------------------------------------ checks that run before TensorRT is imported
def test_precision_follows_the_export_and_fp32_from_an_fp16_export_is_refused():
    assert resolve_precision("fp32", None) == "fp32" and resolve_precision("fp16", None) == "fp16"
    assert resolve_precision("fp32", "fp16") == "fp16" and resolve_precision("fp16", "fp16") == "fp16"
    with pytest.raises(hd.ConfigError, match="carries the fp16 recipe.*--precision fp16"):
        resolve_precision("fp16", "fp32")
    with pytest.raises(hd.ConfigError, match="fp32, fp16"):
        resolve_precision("fp32", "int8")


def test_build_engine_refuses_bad_arguments_in_one_line_before_tensorrt(fp16_export, tiny_base_export, tmp_path):
    def build(*args):
        return CliRunner().invoke(main, ["build-engine", *args, "--out", str(tmp_path / "e")])

    result = build(str(fp16_export), "--precision", "fp32")  # would have built fp16 graphs labelled fp32
    assert result.exit_code == 1 and result.output.count("\n") == 1 and "fp16 recipe" in result.output
    result = build(str(tiny_base_export), "--device", "cpu")
    assert result.exit_code == 1 and "cuda or cuda:N, not 'cpu'" in result.output
    result = build(str(tiny_base_export), "--workspace", "0")
    assert result.exit_code == 1 and "workspace" in result.output
    (tmp_path / "cachedir").mkdir()
    with pytest.raises(hd.ConfigError, match="not a file"):  # raised before TensorRT is imported
        build_engines(Manifest.load(tiny_base_export), tmp_path / "e", timing_cache=tmp_path / "cachedir")
    assert not (tmp_path / "e").exists()


def test_cuda_device_names_are_checked_without_a_gpu():
    assert cuda_index(None) is None and cuda_index("cuda") is None and cuda_index("cuda:3") == 3
    for bad in ("cpu", "cuda:x", "tensorrt", "cuda:"):
        with pytest.raises(hd.BackendError, match="cuda or cuda:N"):
            cuda_index(bad)
    check_device_index(1, 2)
    with pytest.raises(hd.BackendError, match=r"no GPU cuda:2 .*cuda:0 to cuda:1"):
        check_device_index(2, 2)
    with pytest.raises(hd.BackendError, match="0 visible"):
        check_device_index(0, 0)
    with pytest.raises(hd.BackendError, match="cannot run on device 'cpu'"):
        open_backend("tensorrt", None, "cpu")


def test_tensorrt_options_are_checked():
    assert backend_options("tensorrt").precision is None  # the export's own precision
    assert backend_options("tensorrt", {"max_graphs": 0}).max_graphs == 0
    for bad in ({"precision": "int8"}, {"max_graphs": -1}, {"max_graphs": True}, {"graphs": 3}):
        with pytest.raises(hd.BackendError):
            backend_options("tensorrt", bad)
    assert isinstance(backend_options("tensorrt", TensorRTOptions(engines="x")), TensorRTOptions)


def _program_and_export(preset="tiny-phase2"):
    """A coding program and an export manifest for it, in memory (nothing here runs a graph)."""
    config = hd.get_config(preset)
    program = build_program(config)
    export = Manifest.from_dict(Path("export") / preset, {"name": preset, "fingerprint": "0" * 64,
                                                          "config": config.to_dict(),
                                                          "stages": {s: {} for s in program.stages}})
    return program, export


def _engines(root, sizes, precision="fp32", tf32=False, fixed_batch=None):
    """An engine manifest as build-engine writes it (no plans: nothing here runs them)."""
    program, export = _program_and_export()
    if fixed_batch:
        sizes = sizes.with_batch(fixed_batch)
    built = new_manifest(export, "10.13.3", "NVIDIA H200", (9, 0), precision, sizes.as_dict(),
                         all_profiles(program, sizes), tf32=tf32, root=root)
    root.mkdir(parents=True, exist_ok=True)
    replace(built, stages={stage: PlanEntry(f"{stage}.plan", "") for stage in program.stages}).save()
    return EngineManifest.load(root)


def test_engine_manifest_round_trips_the_json_on_disk(tmp_path):
    sizes = SizeRange.from_sizes((256, 256), (256, 512), (512, 768), max_batch=2, opt_batch=1)
    engines = _engines(tmp_path / "e", sizes, precision="fp16", tf32=True)
    data = json.loads((tmp_path / "e" / "engines.json").read_text())
    assert engines.to_dict() == data and list(engines.to_dict()) == list(data)
    assert engines.export.name == "tiny-phase2" and engines.compute_capability == (9, 0) and engines.tf32
    assert all(isinstance(p, PlanEntry) for p in engines.stages.values())
    with pytest.raises(hd.BackendError, match="incomplete"):
        (tmp_path / "e" / "engines.json").write_text(json.dumps({k: v for k, v in data.items() if k != "export"}))
        EngineManifest.load(tmp_path / "e")

def test_sizes_and_batches_outside_the_engines_are_refused_naming_the_range(tmp_path):
    program, export = _program_and_export()
    sizes = SizeRange.from_sizes((256, 256), (256, 512), (512, 768), max_batch=2, opt_batch=1)
    em = _engines(tmp_path / "e", sizes, tf32=True)
    assert em.max_batch == 2 and em.sizes == sizes and em.tf32 and em.to_dict()["tf32"] is True
    assert em.sizes.describe() == "sizes 256x256 to 512x768, batch 1 to 2"
    check_engines_for_export(em, export, "fp32")

    def shapes(stage, batch, size):
        return [shape_at(program.tensors[n].shape, size, batch) for n in program.stages[stage].inputs]

    for stage in ("g_a", "h_s", "s3_step4", "g_s"):
        check_covered(em, program, stage, shapes(stage, 2, (512, 768)))
        check_covered(em, program, stage, shapes(stage, 1, (256, 256)))
    with pytest.raises(hd.BackendError) as err:
        check_covered(em, program, "s2_step2", shapes("s2_step2", 3, (256, 512)))
    text = str(err.value)
    assert text.startswith("a batch of 3 at 256x512 is outside the engines in") and "\n" not in text
    assert "sizes 256x256 to 512x768, batch 1 to 2" in text and "--max-size HxW --max-batch N" in text
    with pytest.raises(hd.BackendError, match="a batch of 1 at 768x768 is outside"):
        check_covered(em, program, "g_a", shapes("g_a", 1, (768, 768)))
    with pytest.raises(hd.BackendError, match="a batch of 1 at 512x1024"):
        check_covered(em, program, "h_s", shapes("h_s", 1, (512, 1024)))
    fixed = _engines(tmp_path / "f", sizes, fixed_batch=4)
    assert fixed.max_batch == 4 and fixed.sizes.min_batch == 4
    assert implied_size({"x": ("B", 3, "H", "W")}, {"x": (2, 3, 512, 768)}) == (2, (512, 768))
    assert implied_size({"t": ("B", 2)}, {"t": (5, 2)}) == (5, None)


def test_engine_io_must_match_the_stage():
    program, _ = _program_and_export()
    expected = stage_io(program, "s3_step4")
    assert expected["topk_force.s3_step4"] == ("input", "int64") and expected["topk.s3_step4"] == ("output", "int64")
    assert expected["ctx.s3_step4"] == ("output", "float32")
    check_io_contract("s3_step4", expected, dict(expected))
    assert [trt_dtype_name(n) for n in ("FLOAT", "HALF", "DataType.INT64", "INT32", "BOOL")] == [
        "float32", "float16", "int64", "int32", "bool"]
    cases = [({k: v for k, v in expected.items() if k != "topk.s3_step4"}, "no tensor 'topk.s3_step4'"),
             ({**expected, "ctx.s3_step4": ("input", "float32")}, "'ctx.s3_step4' of stage s3_step4 is an input"),
             ({**expected, "scales.7": ("output", "float16")}, "'scales.7' of stage s3_step4 is float16"),
             ({**expected, "extra": ("output", "float32")}, "does not know: extra")]
    for actual, message in cases:
        with pytest.raises(hd.BackendError, match=message) as err:
            check_io_contract("s3_step4", expected, actual, "e/s3_step4.plan")
        assert "\n" not in str(err.value)


def test_timing_cache_decisions(tmp_path):
    shared = tmp_path / "caches" / "gpu.cache"
    plan = timing_cache_plan(shared, tmp_path / "engines")  # not there yet: start fresh, write it (folder made)
    assert plan.source is None and plan.keep == shared
    shared.parent.mkdir()
    shared.write_bytes(b"cache")
    assert timing_cache_plan(shared, tmp_path / "engines").source == shared
    with pytest.raises(hd.ConfigError, match="not a file"):
        timing_cache_plan(tmp_path / "caches", tmp_path / "engines")
    assert timing_cache_plan(None, tmp_path / "engines") == type(plan)(None, None)
    (tmp_path / "engines").mkdir()
    (tmp_path / "engines" / "timing.cache").write_bytes(b"previous")
    assert timing_cache_plan(None, tmp_path / "engines").source == tmp_path / "engines" / "timing.cache"
    assert timing_cache_notice(None, False, False) is None
    assert timing_cache_notice(shared, True, True) is None
    assert "another GPU or TensorRT version; starting a fresh one" in timing_cache_notice(shared, True, False)
    assert "cannot be read by this TensorRT" in timing_cache_notice(shared, False, False)


def test_verify_tolerance_follows_the_precision():
    fp32, fp16 = tolerance_for("fp32"), tolerance_for("fp16")
    assert fp32.atol == fp32.rtol == 1e-4 and fp32.same_streams and fp32 is TOLERANCES["fp32"]
    assert fp16.atol > 1e-3 and not fp16.same_streams and fp16.margins.scale == 4e-3
    assert tolerance_for("fp32", tf32=True) is fp16  # TF32 has fp16's 10-bit mantissa
    with pytest.raises(hd.ConfigError):
        tolerance_for("int8")
    # an fp16 backend's own streams differ from fp32's: fine when every stream decodes exactly both ways
    differs = StreamResult((256, 256), False, ("symbol", 3, (0, 1, 2, 3)), True, 5, 1e-3, 4e-3, True)
    assert VerifyReport("tensorrt", streams=[differs], tolerance=fp16).ok
    assert not VerifyReport("tensorrt", streams=[differs], tolerance=fp32).ok
    broken = StreamResult((256, 256), False, None, True, 5, 1e-3, 4e-3, cross_exact=False)
    assert not VerifyReport("tensorrt", streams=[broken], tolerance=fp16).ok


# ------------------------------------------------------------------ without TensorRT
@pytest.mark.skipif(TRT_MISSING is None, reason="TensorRT works here: the missing-TensorRT message cannot be shown")
def test_without_tensorrt_build_engine_says_what_is_missing(tiny_base_export, tmp_path):
    result = CliRunner().invoke(main, ["build-engine", str(tiny_base_export), "--out", str(tmp_path / "e")])
    assert result.exit_code == 1 and result.output.count("\n") == 1
    assert result.output.strip() == f"error: {TRT_MISSING}"
    assert not (tmp_path / "e").exists()
    with pytest.raises(hd.BackendError, match="TensorRT is not available|no CUDA GPU"):
        hd.Codec(tiny_base_export, backend="tensorrt")


def test_gpu_check_runs_on_the_cpu(tiny_phase2_export, tmp_path):
    """scripts/gpu_check.py --device cpu --quick: the checks of the GPU machine, on the CPU at 256x256."""
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "gpu_check.py"), "--device", "cpu", "--quick",
                             "--export", str(tiny_phase2_export), "--work", str(tmp_path), "--threads", "1", "--json"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout)
    assert report["ok"] and report["device"] == "cpu" and report["tensorrt"].startswith("not run")
    (row,) = report["models"][0]["rows"]
    assert row["stages"]["ok"] and row["stages"]["outputs"] > 20 and row["cross"]["to_cpu"] and row["cross"]["from_cpu"]
    timing = row["timing"]
    assert set(timing["encode"]["stages"]) >= {"g_a", "h_a", "s3_step4"} and "g_s" in timing["decode"]["stages"]
    assert "all checks passed" in result.stderr


# ------------------------------------------------------------------ with TensorRT on a GPU
@pytest.mark.tensorrt
@needs_tensorrt
def test_tensorrt_engines_match_pytorch_and_refuse_sizes_outside(tiny_phase2_export, tmp_path):
    from hpcm_deploy.backends.tensorrt import TensorRTBackend
    from hpcm_deploy.checks.verify import verify_export
    from hpcm_deploy.exporting.engine_build import build_engines

    export = Manifest.load(tiny_phase2_export)
    sizes = SizeRange.from_sizes((256, 256), None, (768, 768), max_batch=2)
    root = build_engines(export, tmp_path / "engines", "fp32", sizes, timing_cache=tmp_path / "new" / "t.cache")
    assert (tmp_path / "new" / "t.cache").is_file() and not EngineManifest.load(root).tf32
    options = TensorRTOptions(engines=str(root), max_graphs=2)
    backend = TensorRTBackend.from_export(export, "cuda", options)
    report = verify_export(export, backend, lint=False)
    assert report.ok and report.tolerance.name == "fp32"
    # max_graphs=2 < 18 stages: one size bucket is kept whole, never more
    assert backend.policy.capacity == 1 and backend.captured_graphs <= len(backend.program.stages)
    backend.close()
    codec = hd.Codec(export, backend="tensorrt", engines=str(root))
    assert codec.max_batch == 2
    with pytest.raises(hd.BackendError, match=r"outside the engines .*--max-size"):
        codec.compress(np.zeros((1000, 300, 3), np.uint8))


@pytest.mark.tensorrt
@needs_tensorrt
def test_tensorrt_fp16_engines_pass_the_fp16_tolerance(tiny_phase2_export, tmp_path):
    from hpcm_deploy.backends.tensorrt import TensorRTBackend
    from hpcm_deploy.checks.verify import verify_export
    from hpcm_deploy.exporting.engine_build import build_engines

    export = Manifest.load(tiny_phase2_export)
    root = build_engines(export, tmp_path / "engines", "fp16", SizeRange.from_sizes((256, 256), None, (768, 768)))
    backend = TensorRTBackend.from_export(export, "cuda", TensorRTOptions(engines=str(root)))
    report = verify_export(export, backend, lint=False)
    assert report.tolerance.name == "fp16" and report.ok


def test_precision_cost_counts_decision_flips(fp16_export, tiny_phase2_export):
    from hpcm_deploy.evaluation.precision_cost import decision_flips, precision_cost

    img = (np.random.default_rng(1).random((64, 96, 3)) * 255).astype(np.uint8)
    same = hd.Codec(tiny_phase2_export, backend="onnxruntime")
    flips = decision_flips(same, same, img)
    assert flips["cdf_flips"] == 0 and flips["topk_flips"] == 0
    assert flips["symbols"] == 64 * 16 * 16 and flips["topk_choices"] == 9  # 256x256 padded; 9 choosing steps
    cost = precision_cost(tiny_phase2_export, fp16_export, {"noise": img})
    assert cost["total"]["symbols"] == flips["symbols"] and 0 <= cost["cdf_flip_rate"] < 0.01
    assert abs(cost["delta_bpp_percent"]) < 5 and cost["images"][0]["bpp_fp16"] > 0
