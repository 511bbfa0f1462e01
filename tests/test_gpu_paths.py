"""The GPU paths' pure parts, tested without a GPU: ONNX Runtime's provider options (cpu, cuda:N, tensorrt), the
check of the provider a session obtained (on a real CPU session), the graphs weight-stripped engines refit from
(recorded relative to the engine folder, loaded from another working directory), the cheap plan digest, the GPU
name check, the CUDA-graph buckets and their admission. The parts that need CUDA skip, saying why."""

import logging
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

import hpcm_deploy as hd
from hpcm_deploy.artifacts.engine_manifest import (
    EngineManifest,
    PlanEntry,
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
    return Manifest.from_dict(root, {"name": preset, "fingerprint": "0" * 64, "config": config.to_dict(),
                                     "stages": stages})


def _engines_from(export: Manifest, engine_dir: Path, onnx_paths: dict[str, str]) -> None:
    engine_dir.mkdir(parents=True, exist_ok=True)
    plans = {}
    for stage, entry in export.stages.items():
        plan = engine_dir / f"{stage}.plan"
        plan.write_bytes(b"plan " + stage.encode())
        plans[stage] = PlanEntry(plan.name, sha256_file(plan), onnx_paths[stage], entry.sha256,
                                 plan_digest=plan_digest(plan))
    made = new_manifest(export, "10.13.3.9", "NVIDIA H200", (9, 0), "fp32", {}, {}, root=engine_dir)
    replace(made, stages=plans, stripped=True).save()


def _with_plan(engines: EngineManifest, stage: str, **changes) -> EngineManifest:
    """``engines`` with one stage's plan entry changed (the manifests are frozen)."""
    return replace(engines, stages={**engines.stages, stage: replace(engines.stages[stage], **changes)})


# ------------------------------------------------------------------ weight-stripped engines: where the graphs are
def test_graphs_are_recorded_relative_to_the_engine_folder_and_load_from_another_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    export = _export_manifest(Path("export") / "x")  # typed relative, as in `build-engine export/x`
    engine_dir = Path("engines") / "x" / "sm90-trt10.13.3-fp32"
    recorded = {s: recorded_onnx_path(export.stage_path(s), engine_dir) for s in export.stages}
    assert recorded["g_a"] == "../../../export/x/g_a.onnx"
    _engines_from(export, engine_dir, recorded)
    elsewhere = tmp_path / "somewhere" / "else"
    elsewhere.mkdir(parents=True)
    monkeypatch.chdir(elsewhere)
    engines = EngineManifest.load(tmp_path / engine_dir)
    for stage in export.stages:
        path = engines.onnx_path(stage)
        assert path.is_file() and path.read_bytes() == stage.encode()
        assert engines.refit_source(stage, replace(export, root=tmp_path / "export" / "x")) == path


def test_engines_that_recorded_a_working_directory_path_refit_from_the_export(tmp_path, monkeypatch):
    """Engines built before paths were relative to their folder recorded ``export/x/g_a.onnx`` as typed; from
    another folder that path is wrong, and the export's own graph (same sha256) is used instead."""
    export = _export_manifest(tmp_path / "export" / "x")
    engine_dir = tmp_path / "engines" / "x"
    _engines_from(export, engine_dir, {s: f"export/x/{s}.onnx" for s in export.stages})
    monkeypatch.chdir(tmp_path / "engines")
    engines = EngineManifest.load(engine_dir)
    assert not engines.onnx_path("g_a").is_file()
    assert engines.refit_source("g_a", export) == export.stage_path("g_a")
    engines = _with_plan(engines, "g_s", onnx_sha256="f" * 64)  # built from another graph (an fp16 copy, say)
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
    _engines_from(export, engine_dir, {s: f"../export/{s}.onnx" for s in export.stages})
    engines = EngineManifest.load(engine_dir)
    # a full re-hash would refuse every plan: open does not take it
    engines = replace(engines, stages={s: replace(e, plan_sha256="0" * 64) for s, e in engines.stages.items()})
    with caplog.at_level(logging.WARNING, logger="hpcm_deploy.artifacts.engine_manifest"):
        check_compatible(engines, export, "10.13.3.9", (9, 0), gpu="NVIDIA H200")
        assert not caplog.records
        check_compatible(engines, export, "10.13.3.9", (9, 0), gpu="NVIDIA H100 80GB HBM3")
    assert "built on NVIDIA H200 and run on NVIDIA H100 80GB HBM3" in caplog.text
    (engine_dir / "g_s.plan").write_bytes(b"plan g_S")  # same size, other bytes
    with pytest.raises(hd.BackendError, match="g_s.plan was modified"):
        check_compatible(engines, export, "10.13.3.9", (9, 0))
    engines = _with_plan(engines, "g_s", plan_digest="")  # engines built before the digest: the full hash decides
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


# ------------------------------------------------------------------ the device bundle and the GPU check's budget
ROOT = Path(__file__).resolve().parents[1]


def _script(name: str):
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _imports(paths) -> set[str]:
    """Top-level modules imported anywhere in ``paths`` (absolute imports, at module level or inside functions)."""
    import ast
    import sys

    found = set()
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.add(node.module.split(".")[0])
    return {m for m in found if m not in sys.stdlib_module_names and m != "hpcm_deploy"}


def test_the_bundle_lists_every_runtime_import_once():
    bundle = _script("device_bundle")
    imported = _imports([*(ROOT / "hpcm_deploy").rglob("*.py"), ROOT / "scripts" / "gpu_check.py"])
    lists = (bundle.DEVICE_HAS, bundle.CARRY, bundle.NOT_CARRIED)
    unlisted = imported - set().union(*lists)
    assert not unlisted, f"imported by the project but not in scripts/device_bundle.py: {sorted(unlisted)}"
    assert set(bundle.CARRY) <= imported  # nothing carried that nothing imports
    assert not (set(bundle.CARRY) & set(bundle.DEVICE_HAS)) and not (set(bundle.NOT_CARRIED) & set(bundle.CARRY))
    assert all("==" in r for r in bundle.requirements())  # pinned: the bundle is repeatable


def test_the_bundle_checks_its_folder_and_prints_the_run_command(tmp_path, capsys):
    bundle = _script("device_bundle")
    command = bundle.download_command(tmp_path, "3.12")
    assert command[3:6] == ["download", "--no-deps", "--only-binary=:all:"]
    assert command[command.index("--python-version") + 1] == "3.12" and "manylinux2014_x86_64" in command
    assert command[-len(bundle.CARRY):] == bundle.requirements()
    names = {"compressai": "compressai-1.2.8-cp312-cp312-manylinux_2_34_x86_64.whl",
             "polygraphy": "polygraphy-0.53.6-py3-none-any.whl",
             "pytorch_msssim": "pytorch_msssim-1.0.0-py3-none-any.whl",
             "bjontegaard": "bjontegaard-1.3.0-py3-none-any.whl"}
    assert {bundle.distribution(r) for r in bundle.requirements()} == set(names)
    for name in list(names.values())[:-1]:
        (tmp_path / name).write_bytes(b"w" * 1000)
    with pytest.raises(ValueError, match="lacks the wheels of: bjontegaard"):
        bundle.check_bundle(tmp_path)
    (tmp_path / names["bjontegaard"]).write_bytes(b"w" * 1000)
    sizes, total = bundle.check_bundle(tmp_path)
    assert total == 4000 and len(sizes) == 4
    with pytest.raises(ValueError, match=r"total 0.0 MiB, over the 0.001 MiB"):
        bundle.check_bundle(tmp_path, limit_mib=0.001)
    (tmp_path / "numpy-2.0.0-cp312-cp312-manylinux2014_x86_64.whl").write_bytes(b"w")
    with pytest.raises(ValueError, match="not in the bundle .*numpy-2.0.0"):
        bundle.check_bundle(tmp_path)
    run = bundle.run_command("build/wheels", 400)
    assert run.startswith("python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site "
                          "build/wheels/*.whl && ")
    assert "PYTHONPATH=/tmp/site:$PWD" in run and "scripts/gpu_check.py --budget 400 --json" in run
    with pytest.raises(ValueError, match="outside the repository"):
        bundle.carried_path(tmp_path)
    folder = ROOT / "build" / "test-bundle-offline"
    folder.mkdir(parents=True, exist_ok=True)
    try:
        for name in names.values():
            (folder / name).write_bytes(b"w" * 10)
        assert bundle.main(["--out", str(folder), "--offline"]) == 0  # the offline part: no download
        out = capsys.readouterr().out
        assert "in all (limit 64 MiB), for Python 3.12" in out and "carry: build/test-bundle-offline\n" in out
        assert "--target /tmp/site build/test-bundle-offline/*.whl" in out
    finally:
        for f in folder.iterdir():
            f.unlink()
        folder.rmdir()


def test_the_gpu_check_plans_within_its_budget():
    check = _script("gpu_check")
    now = [0.0]
    budget = check.Budget(100, "gpu", clock=lambda: now[0])
    assert budget.fits("stages", "demo")  # prior 20 s
    budget.took("stages", "demo", 30.0)
    assert budget.estimate("stages", "phase2") == 30.0 * check.WEIGHT["phase2"]
    now[0] = 60.0
    assert not budget.fits("stages", "hpcm-base")  # about 120 s, 40 s left: skipped and said so
    assert budget.skipped == ["hpcm-base: stages (needs about 120 s, 40 s left)"]
    assert budget.fits("stages", "demo") and budget.left() == 40.0
    unlimited = check.Budget(None, "cpu")
    assert unlimited.fits("export", "phase2") and unlimited.left() == float("inf")
    assert check.row_ok({"runner": "torch", "skipped": ["timing"], "stages": {"ok": True}})
    assert not check.row_ok({"runner": "torch", "stages": {"ok": False}})
