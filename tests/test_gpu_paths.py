"""The GPU paths' pure parts, tested without a GPU: ONNX Runtime's provider options (cpu, cuda:N, tensorrt), the
check of the provider a session obtained (on a real CPU session), the graphs weight-stripped engines refit from
(recorded relative to the engine folder, loaded from another working directory), the cheap plan digest, the GPU
name check, the CUDA-graph buckets and their admission. The parts that need CUDA skip, saying why."""

import logging
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

import hpcm_deploy as hd
from hpcm_deploy.artifacts.engines import (
    EngineManifest,
    check_compatible,
    engine_dir_name,
    gpu_notice,
    new_manifest,
    plan_digest,
    recorded_onnx_path,
)
from hpcm_deploy.artifacts.export import Manifest
from hpcm_deploy.artifacts.shapes import SizeRange, all_profiles, shape_at
from hpcm_deploy.backends.onnxrt import (
    TF32_ENV,
    OnnxRuntimeBackend,
    check_obtained,
    check_tf32_env,
    install_hint,
    parse_device,
    profile_shapes,
    provider_options,
)
from hpcm_deploy.backends.tensorrt import CapturePolicy, graph_bucket
from hpcm_deploy.files import sha256_file
from hpcm_deploy.stages import build_program

CUDA_EP = "CUDAExecutionProvider" in ort.get_available_providers()


def _export_manifest(root: Path, preset: str = "tiny-phase2") -> Manifest:
    """An export manifest whose stage files exist (small stand-in graphs: nothing here runs them)."""
    config = hd.get_config(preset)
    program = build_program(config)
    root.mkdir(parents=True, exist_ok=True)
    stages = {}
    for stage in program.stages:
        (root / f"{stage}.onnx").write_bytes(stage.encode())
        stages[stage] = {"file": f"{stage}.onnx", "sha256": sha256_file(root / f"{stage}.onnx")}
    return Manifest(root, {"name": preset, "fingerprint": "0" * 64, "config": config.to_dict(), "stages": stages})


def _engines_from(export: Manifest, engine_dir: Path, onnx_paths: dict[str, str]) -> None:
    data = new_manifest(export, "10.13.3.9", "NVIDIA H200", (9, 0), "fp32", {}, {})
    data["stripped"] = True
    engine_dir.mkdir(parents=True, exist_ok=True)
    for stage, entry in export.data["stages"].items():
        plan = engine_dir / f"{stage}.plan"
        plan.write_bytes(b"plan " + stage.encode())
        data["stages"][stage] = {"plan": plan.name, "plan_sha256": sha256_file(plan), "plan_digest": plan_digest(plan),
                                 "onnx": onnx_paths[stage], "onnx_sha256": entry["sha256"]}
    EngineManifest(engine_dir, data).save()


# ------------------------------------------------------------------ weight-stripped engines: where the graphs are
def test_graphs_are_recorded_relative_to_the_engine_folder_and_load_from_another_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    export = _export_manifest(Path("export") / "x")  # typed relative, as in `build-engine export/x`
    engine_dir = Path("engines") / "x" / "sm90-trt10.13.3-fp32"
    recorded = {s: recorded_onnx_path(export.stage_path(s), engine_dir) for s in export.data["stages"]}
    assert recorded["g_a"] == "../../../export/x/g_a.onnx"
    _engines_from(export, engine_dir, recorded)
    elsewhere = tmp_path / "somewhere" / "else"
    elsewhere.mkdir(parents=True)
    monkeypatch.chdir(elsewhere)
    engines = EngineManifest.load(tmp_path / engine_dir)
    for stage in export.data["stages"]:
        path = engines.onnx_path(stage)
        assert path.is_file() and path.read_bytes() == stage.encode()
        assert engines.refit_source(stage, Manifest(tmp_path / "export" / "x", export.data)) == path


def test_engines_that_recorded_a_working_directory_path_refit_from_the_export(tmp_path, monkeypatch):
    """Engines built before paths were relative to their folder recorded ``export/x/g_a.onnx`` as typed; from
    another folder that path is wrong, and the export's own graph (same sha256) is used instead."""
    export = _export_manifest(tmp_path / "export" / "x")
    engine_dir = tmp_path / "engines" / "x"
    _engines_from(export, engine_dir, {s: f"export/x/{s}.onnx" for s in export.data["stages"]})
    monkeypatch.chdir(tmp_path / "engines")
    engines = EngineManifest.load(engine_dir)
    assert not engines.onnx_path("g_a").is_file()
    assert engines.refit_source("g_a", export) == export.stage_path("g_a")
    engines.data["stages"]["g_s"]["onnx_sha256"] = "f" * 64  # built from another graph (an fp16 copy, say)
    with pytest.raises(hd.BackendError, match=r"refits the weight-stripped plan of stage g_s is missing") as err:
        engines.refit_source("g_s", export)
    assert "\n" not in str(err.value)


# ------------------------------------------------------------------ plans: a cheap digest at open, the GPU name
def test_plan_digest_reads_little_and_sees_changes(tmp_path):
    small = tmp_path / "small.plan"
    small.write_bytes(b"abc")
    assert plan_digest(small).startswith("3:")
    big = tmp_path / "big.plan"
    data = bytearray(np.random.default_rng(0).integers(0, 256, 3 << 20, dtype=np.uint8).tobytes())
    big.write_bytes(bytes(data))
    before = plan_digest(big)
    data[0] ^= 1  # inside the first sampled block
    big.write_bytes(bytes(data))
    assert plan_digest(big) != before
    big.write_bytes(bytes(data) + b"x")  # another size
    assert plan_digest(big).startswith(f"{(3 << 20) + 1}:")


def test_open_checks_the_digest_not_the_full_hash_and_warns_on_another_gpu(tmp_path, caplog):
    export = _export_manifest(tmp_path / "export")
    engine_dir = tmp_path / "engines"
    _engines_from(export, engine_dir, {s: f"../export/{s}.onnx" for s in export.data["stages"]})
    engines = EngineManifest.load(engine_dir)
    for entry in engines.data["stages"].values():
        entry["plan_sha256"] = "0" * 64  # a full re-hash would refuse every plan: open does not take it
    with caplog.at_level(logging.WARNING, logger="hpcm_deploy.artifacts.engines"):
        check_compatible(engines, export, "10.13.3.9", (9, 0), gpu="NVIDIA H200")
        assert not caplog.records
        check_compatible(engines, export, "10.13.3.9", (9, 0), gpu="NVIDIA H100 80GB HBM3")
    assert "built on NVIDIA H200 and run on NVIDIA H100 80GB HBM3" in caplog.text
    (engine_dir / "g_s.plan").write_bytes(b"plan g_S")  # same size, other bytes
    with pytest.raises(hd.BackendError, match="g_s.plan was modified"):
        check_compatible(engines, export, "10.13.3.9", (9, 0))
    del engines.data["stages"]["g_s"]["plan_digest"]  # engines built before the digest: the full hash decides
    with pytest.raises(hd.BackendError, match="g_s.plan was modified"):
        check_compatible(engines, export, "10.13.3.9", (9, 0))
    assert gpu_notice(None, "NVIDIA H200") is None and gpu_notice("NVIDIA H200", "NVIDIA H200") is None


def test_engine_folders_carry_three_version_parts():
    assert engine_dir_name((9, 0), "10.13.3.9", "fp16") == "sm90-trt10.13.3-fp16"
    assert engine_dir_name((10, 0), "11.1.0.3", "fp32") == "sm100-trt11.1.0-fp32"


# ------------------------------------------------------------------ ONNX Runtime: providers and their options
def test_provider_options_for_cpu_cuda_n_and_tensorrt(tmp_path):
    assert provider_options("cpu") == [("CPUExecutionProvider", {})]
    cuda = provider_options("cuda", 3)
    assert [n for n, _ in cuda] == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert cuda[0][1] == {"device_id": "3", "use_tf32": "0", "cudnn_conv_algo_search": "DEFAULT"}
    program = build_program(hd.get_config("tiny-phase2"))
    sizes = SizeRange.from_sizes((256, 256), (512, 768), (1024, 1024), max_batch=2)
    profile = all_profiles(program, sizes)["h_s"]
    trt = provider_options("tensorrt", 1, profile, tmp_path / "cache")
    assert [n for n, _ in trt] == ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    opts = trt[0][1]
    assert opts["device_id"] == "1" and trt[1][1]["device_id"] == "1" and trt[1][1]["use_tf32"] == "0"
    assert opts["trt_engine_cache_enable"] == "True" and opts["trt_engine_cache_path"] == str(tmp_path / "cache")
    assert opts["trt_timing_cache_enable"] == "True" and opts["trt_fp16_enable"] == "False"
    (name,) = program.stages["h_s"].inputs
    smallest = shape_at(program.tensors[name].shape, (256, 256), 1)
    assert opts["trt_profile_min_shapes"] == f"{name}:{'x'.join(map(str, smallest))}"
    assert opts["trt_profile_max_shapes"].endswith("x16x16") and opts["trt_profile_opt_shapes"].startswith(f"{name}:2x")
    assert provider_options("tensorrt", 0, None, tmp_path, fp16=True)[0][1]["trt_fp16_enable"] == "True"
    with pytest.raises(hd.BackendError, match="engine cache"):
        provider_options("tensorrt", 0)
    two = profile_shapes({"a": {"min": (1, 2), "opt": (2, 2), "max": (4, 2)}, "b.c": {"min": (1,), "opt": (1,),
                                                                                      "max": (3,)}})
    assert two["trt_profile_max_shapes"] == "a:4x2,b.c:3"


def test_devices_are_parsed_and_cuda_n_is_kept():
    assert parse_device("cpu") == ("cpu", 0) and parse_device("cuda") == ("cuda", 0)
    assert parse_device("cuda:2") == ("cuda", 2) and parse_device("tensorrt:1") == ("tensorrt", 1)
    for bad in ("gpu", "cuda:x", "cpu:1", "tensorrt:"):
        with pytest.raises(hd.BackendError, match="cpu, cuda"):
            parse_device(bad)


def test_tensorrt_provider_turns_tf32_off_through_the_environment():
    env: dict[str, str] = {}
    check_tf32_env(env)
    assert env == {TF32_ENV: "0"}
    with pytest.raises(hd.BackendError, match=f"{TF32_ENV}=1"):
        check_tf32_env({TF32_ENV: "1"})


def _identity_model(path: Path) -> Path:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g", [x], [y])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


@pytest.mark.skipif(CUDA_EP, reason="this onnxruntime has the CUDA provider: a CPU-only fallback cannot be shown")
def test_a_session_that_did_not_get_its_provider_is_refused(tmp_path, recwarn):
    """Asking this CPU-only onnxruntime for CUDA gives a CPU session (with only a warning); the check refuses it."""
    wanted = [n for n, _ in provider_options("cuda", 1)]
    session = ort.InferenceSession(str(_identity_model(tmp_path / "m.onnx")), providers=wanted)
    assert session.get_providers() == ["CPUExecutionProvider"]  # onnxruntime fell back without failing
    with pytest.raises(hd.BackendError) as err:
        check_obtained("g_a", wanted, session.get_providers())
    text = str(err.value)
    assert text.startswith("onnxruntime could not load CUDAExecutionProvider for stage g_a (the session got: "
                           "CPUExecutionProvider)") and "\n" not in text
    check_obtained("g_a", ["CPUExecutionProvider"], session.get_providers())  # what it asked for: no error
    with pytest.raises(hd.BackendError, match=r"has no CUDAExecutionProvider here .*onnxruntime-gpu"):
        OnnxRuntimeBackend(None, "cuda:1")  # refused before the export is read


def test_install_hints_follow_the_installed_distributions():
    assert "both installed" in install_hint("CUDAExecutionProvider", {"onnxruntime", "onnxruntime-gpu"})
    assert "CUDA and cuDNN libraries" in install_hint("CUDAExecutionProvider", {"onnxruntime-gpu"})
    assert '".[gpu]"' in install_hint("CUDAExecutionProvider", {"onnxruntime"})


@pytest.mark.skipif(not CUDA_EP, reason="needs onnxruntime-gpu with a working CUDA provider")
def test_onnxruntime_cuda_sessions_run_where_asked(tiny_phase2_export):
    import torch

    index = torch.cuda.device_count() - 1
    with hd.Codec(tiny_phase2_export, backend="onnxruntime", device=f"cuda:{index}") as codec:
        for session in codec.backend.sessions.values():
            assert session.get_providers()[0] == "CUDAExecutionProvider"
            assert session.get_provider_options()["CUDAExecutionProvider"]["device_id"] == str(index)
            assert session.get_provider_options()["CUDAExecutionProvider"]["use_tf32"] == "0"
        img = (np.random.default_rng(0).random((64, 80, 3)) * 255).astype(np.uint8)
        out = codec.decompress(codec.compress(img), kind="torch")
        assert out.device == torch.device("cuda", index)


# ------------------------------------------------------------------ CUDA graphs: buckets and admission
def test_every_stage_of_one_image_size_shares_a_bucket():
    program = build_program(hd.get_config("tiny-phase2"))

    def shapes(stage, batch, size):
        return [shape_at(program.tensors[n].shape, size, batch) for n in program.stages[stage].inputs]

    buckets = {graph_bucket(program, s, shapes(s, 2, (512, 768))) for s in program.stages}
    assert buckets == {(2, (512, 768))}
    assert graph_bucket(program, "g_a", shapes("g_a", 1, (256, 512))) == (1, (256, 512))


def test_capture_policy_keeps_frequent_sizes_and_never_churns():
    assert CapturePolicy(18, 64).capacity == 3 and CapturePolicy(18, 2).capacity == 1
    assert CapturePolicy(18, 0).capacity == 0 and CapturePolicy(18, 0).decide("a", "g_a") == "eager"
    policy = CapturePolicy(stages=2, max_graphs=4)  # two buckets
    assert policy.decide("A", "g_a") == "eager"  # first sight of a size: no capture
    assert policy.decide("A", "g_s") == "eager"
    assert policy.decide("A", "g_a") == "capture" and policy.decide("A", "g_s") == "replay"
    for _ in range(3):
        policy.decide("B", "g_a")
    assert list(policy.kept) == ["A", "B"]
    for i in range(50):  # many sizes seen once or twice: they run eagerly and push nothing out
        assert policy.decide(f"once{i}", "g_a") == "eager"
        assert policy.decide(f"once{i}", "g_a") == "eager" and not policy.evicted
    assert list(policy.kept) == ["A", "B"]
    assert policy.uses["A"] == 4 and policy.uses["B"] == 3
    for _ in range(5):  # a size used more than the least used kept one (B) takes its place
        decision = policy.decide("C", "g_a")
    assert decision == "replay" and list(policy.kept) == ["A", "C"]
    small = CapturePolicy(stages=1, max_graphs=1, remember=8)
    for i in range(100):
        small.decide(i, "g_a")
    assert len(small.calls) <= 9 and len(small.uses) <= 9  # counts stay bounded on endless sizes


def test_the_tensorrt_backend_module_imports_without_tensorrt():
    import hpcm_deploy.backends.tensorrt as module

    assert module.CAPTURE_LOCK.acquire(blocking=False)  # one process-wide lock, free when nothing captures
    module.CAPTURE_LOCK.release()
