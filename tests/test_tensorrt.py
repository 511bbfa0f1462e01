"""TensorRT: everything around the TensorRT calls (profiles, the fp16 recipe, engine manifests, the missing-
TensorRT message). Tests that need TensorRT itself skip when it is absent; none fakes it."""

import importlib.util
import json

import numpy as np
import onnx
import pytest
from click.testing import CliRunner

import hpcm_deploy as hd
from hpcm_deploy.cli import main
from hpcm_deploy.exporting.manifest import Manifest
from hpcm_deploy.exporting.precision import FP16, FP32, derive_export
from hpcm_deploy.stages import build_program
from hpcm_deploy.trt.manifest import EngineManifest, check_compatible, engine_dir_name, new_manifest
from hpcm_deploy.trt.profiles import SizeRange, all_profiles, shape_at

HAVE_TRT = importlib.util.find_spec("tensorrt") is not None


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
    return derive_export(Manifest.load(tiny_phase2_export), tmp_path_factory.mktemp("fp16") / "tiny-fp16")


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
    report = manifest.data["recipe"]["s3_step4"]
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
    runner = codec16.runner
    x, _ = hd.pad_image(__import__("torch").from_numpy(img).permute(2, 0, 1)[None].float() / 255)
    enc = runner.encode(x.numpy())
    dec = runner.decode(enc.y_strings, enc.z_strings, enc.z_shape)
    assert all((a == b).all() for a, b in zip(enc.symbols, dec.symbols))


def test_engine_manifest_is_checked_against_tensorrt_gpu_and_export(tmp_path, tiny_phase2_export, tiny_base_export):
    export = Manifest.load(tiny_phase2_export)
    sizes = SizeRange.from_sizes((256, 256), None, (512, 512))
    data = new_manifest(export, "10.13.3", "NVIDIA H200", (9, 0), "fp16", {}, all_profiles(export.program(), sizes))
    for stage in export.data["stages"]:
        (tmp_path / f"{stage}.plan").write_bytes(stage.encode())
        from hpcm_deploy.exporting.manifest import sha256_file

        data["stages"][stage] = {"plan": f"{stage}.plan", "plan_sha256": sha256_file(tmp_path / f"{stage}.plan")}
    EngineManifest(tmp_path, data).save()
    em = EngineManifest.load(tmp_path)
    check_compatible(em, export, "10.13.3", (9, 0))  # matches: no error
    with pytest.raises(hd.BackendError, match=r"TensorRT 10.13.3 for sm90.*TensorRT 11.0.0 on sm90"):
        check_compatible(em, export, "11.0.0", (9, 0))
    with pytest.raises(hd.BackendError, match=r"sm90.*sm89"):
        check_compatible(em, export, "10.13.3", (8, 9))
    with pytest.raises(hd.BackendError, match="another export"):
        check_compatible(em, Manifest.load(tiny_base_export), "10.13.3", (9, 0))
    (tmp_path / "g_s.plan").write_bytes(b"tampered")
    with pytest.raises(hd.BackendError, match="modified"):
        check_compatible(em, export, "10.13.3", (9, 0))
    assert engine_dir_name((9, 0), "10.13.3", "fp16") == "sm90-trt10.13.3-fp16"
    assert json.loads((tmp_path / "engines.json").read_text())["profiles"]["g_a"]["x"]["max"] == [1, 3, 512, 512]


@pytest.mark.skipif(HAVE_TRT, reason="TensorRT is installed: the missing-TensorRT message cannot be shown")
def test_without_tensorrt_build_engine_says_what_is_missing(tiny_base_export, tmp_path):
    result = CliRunner().invoke(main, ["build-engine", str(tiny_base_export), "--out", str(tmp_path / "e")])
    assert result.exit_code == 1 and result.output.count("\n") == 1
    assert "TensorRT is not available" in result.output and "pip install tensorrt" in result.output
    assert not (tmp_path / "e").exists()
    with pytest.raises(hd.BackendError, match="TensorRT is not available"):
        hd.Codec(tiny_base_export, backend="tensorrt")


@pytest.mark.tensorrt
@pytest.mark.skipif(not HAVE_TRT, reason="needs TensorRT 10.8+/11.x and an NVIDIA GPU (not installable here)")
def test_tensorrt_engines_match_pytorch(tiny_phase2_export, tmp_path):
    from hpcm_deploy.backends.tensorrt import TensorRTBackend
    from hpcm_deploy.exporting.verify import verify_export
    from hpcm_deploy.trt.build import build_engines

    export = Manifest.load(tiny_phase2_export)
    root = build_engines(export, tmp_path / "engines", "fp32", SizeRange.from_sizes((256, 256), None, (768, 768)))
    report = verify_export(export, TensorRTBackend.from_export(export, "cuda", engines=root), lint=False)
    assert report.ok


def test_precision_cost_counts_decision_flips(fp16_export, tiny_phase2_export):
    from hpcm_deploy.evaluation.precision import decision_flips, precision_cost

    img = (np.random.default_rng(1).random((64, 96, 3)) * 255).astype(np.uint8)
    same = hd.Codec(tiny_phase2_export, backend="onnxruntime")
    flips = decision_flips(same, same, img)
    assert flips["cdf_flips"] == 0 and flips["topk_flips"] == 0
    assert flips["symbols"] == 64 * 16 * 16 and flips["topk_choices"] == 9  # 256x256 padded; 9 choosing steps
    cost = precision_cost(tiny_phase2_export, fp16_export, {"noise": img})
    assert cost["total"]["symbols"] == flips["symbols"] and 0 <= cost["cdf_flip_rate"] < 0.01
    assert abs(cost["delta_bpp_percent"]) < 5 and cost["images"][0]["bpp_fp16"] > 0
