"""ONNX export: manifest, graph validity at other sizes, stream parity with the PyTorch stages."""

import json
import shutil

import numpy as np
import onnx
import pytest
import torch
from click.testing import CliRunner
from onnx import TensorProto, helper

import hpcm_deploy as hd
from hpcm_deploy.artifacts.export import FORMAT_VERSION, Manifest
from hpcm_deploy.backends.onnxrt import OnnxRuntimeBackend
from hpcm_deploy.checks.lint import polygraphy_lint
from hpcm_deploy.checks.trt_compat import check_file, check_model
from hpcm_deploy.checks.verify import check_stages, check_streams
from hpcm_deploy.cli import main
from hpcm_deploy.entropy.tables import EntropyTables
from hpcm_deploy.exporting.onnx_export import EXPORT_SIZE

OTHER_SIZES = [(256, 256), (256, 512), (768, 256)]
assert all(s != EXPORT_SIZE for s in OTHER_SIZES)


@pytest.mark.parametrize("fixture", ["tiny_phase2_export", "tiny_base_export"])
def test_manifest_describes_every_stage(request, fixture):
    root = request.getfixturevalue(fixture)
    manifest = Manifest.load(root)
    assert manifest.format_version == FORMAT_VERSION and len(manifest.fingerprint) == 64 and manifest.opset >= 18
    program = manifest.program()
    assert list(manifest.stages) == list(program.stages)
    for name, entry in manifest.stages.items():
        spec = program.stages[name]
        assert [i.name for i in entry.inputs] == list(spec.inputs)
        assert [o.name for o in entry.outputs] == list(spec.outputs)
        for io in entry.inputs + entry.outputs:
            assert io.dtype == program.tensors[io.name].dtype
            assert any(isinstance(d, str) for d in io.onnx_shape[2:4]) or len(io.onnx_shape) != 4
        onnx.checker.check_model(onnx.load(str(root / entry.file)))
    assert manifest.program_dict["encode"][0] == ["stage", "g_a"]
    assert manifest.program_dict["decode"][-1] == ["stage", "g_s"]
    assert manifest.size_rule["multiple"] == 256
    tables = EntropyTables.load(manifest.path("tables"))
    assert tables.y.cdf.shape == (60, 699)



def test_manifest_round_trips_the_json_on_disk_and_reads_older_files(tiny_phase2_export, tmp_path):
    """The typed manifest writes back exactly the JSON it read (same entries, same order); a file without the
    optional entries, or with entries this version does not know, still loads, and keeps the unknown ones."""
    data = json.loads((tiny_phase2_export / "manifest.json").read_text())
    manifest = Manifest.load(tiny_phase2_export)
    assert manifest.to_dict() == data and list(manifest.to_dict()) == list(data)
    assert manifest.weights is not None and manifest.path("weights") == tiny_phase2_export / manifest.weights.file
    with pytest.warns(DeprecationWarning):
        assert manifest.data["name"] == manifest.name
    older = tmp_path / "older"
    shutil.copytree(tiny_phase2_export, older)
    trimmed = {k: v for k, v in data.items() if k not in ("family", "created_with", "export_seconds", "size_rule")}
    (older / "manifest.json").write_text(json.dumps({**trimmed, "someone_elses": [1, 2]}))
    loaded = Manifest.load(older)
    assert loaded.extra == {"someone_elses": [1, 2]} and loaded.program().stages.keys() == manifest.stages.keys()
    loaded.save()
    assert json.loads((older / "manifest.json").read_text())["someone_elses"] == [1, 2]

@pytest.mark.parametrize("fixture", ["tiny_phase2_export", "tiny_base_export"])
def test_every_graph_matches_pytorch_at_three_other_sizes(request, fixture):
    root = request.getfixturevalue(fixture)
    manifest = Manifest.load(root)
    model = manifest.load_model()
    results = check_stages(model, manifest.program(), OnnxRuntimeBackend(manifest), OTHER_SIZES, batch=2)
    assert {r.size for r in results} == set(OTHER_SIZES)
    assert {r.stage for r in results} == set(manifest.stages)
    bad = [r for r in results if not r.ok]
    assert not bad, bad[:5]


@pytest.mark.parametrize("fixture", ["tiny_phase2_export", "tiny_base_export"])
def test_onnxruntime_writes_the_pytorch_streams(request, fixture):
    root = request.getfixturevalue(fixture)
    manifest = Manifest.load(root)
    model = manifest.load_model()
    tables = EntropyTables.load(manifest.path("tables"))
    results = check_streams(model, manifest.program(), OnnxRuntimeBackend(manifest), tables,
                            [(256, 256), (512, 256)], batch=2)
    for r in results:
        assert r.same_streams and r.first_difference is None and r.decode_exact, r


def test_every_graph_is_tensorrt_compatible_and_lints(tiny_phase2_export):
    manifest = Manifest.load(tiny_phase2_export)
    for stage in manifest.stages:
        report = check_file(manifest.stage_path(stage))
        assert report.ok, (stage, report.errors())
        assert report.nodes > 0
    # polygraphy's own linter on every graph (onnx checker, ONNX Runtime inference with generated inputs)
    for stage in manifest.stages:
        ok, output = polygraphy_lint(manifest, stage, (256, 512), batch=2)
        assert ok, output[-3000:]


def test_compatibility_check_flags_unsupported_graphs():
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 4])
    k = helper.make_tensor_value_info("k", TensorProto.INT64, [1])
    outs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in ("a", "b", "c", "d", "e")]
    idx = helper.make_tensor("idx", TensorProto.INT64, [4, 4], [0] * 16)
    roi = helper.make_tensor("scales", TensorProto.FLOAT, [2], [2.0, 2.0])
    nodes = [
        helper.make_node("NonZero", ["x"], ["nz"], name="nonzero"),
        helper.make_node("ScatterElements", ["x", "idx", "x"], ["a"], reduction="add", name="scatter_add"),
        helper.make_node("TopK", ["x", "k"], ["b", "ti"], name="dynamic_topk"),
        helper.make_node("Resize", ["x", "", "scales"], ["c"], mode="linear",
                         coordinate_transformation_mode="tf_crop_and_resize", name="resize"),
        helper.make_node("SequenceEmpty", [], ["seq"], name="sequence"),
        helper.make_node("Relu", ["x"], ["d"], name="fine"),
        helper.make_node("Identity", ["x"], ["e"], name="also_fine"),
    ]
    graph = helper.make_graph(nodes, "bad", [x, k], outs, initializer=[idx, roi])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    report = check_model(model)
    flagged = {f.node for f in report.errors()}
    assert flagged == {"nonzero", "scatter_add", "dynamic_topk", "resize", "sequence"}
    assert not report.ok
    big_k = helper.make_tensor("k", TensorProto.INT64, [1], [5000])
    graph = helper.make_graph([nodes[2]], "bigk", [x], [outs[1]], initializer=[big_k])
    report = check_model(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]))
    assert [f.node for f in report.errors()] == ["dynamic_topk"] and "3840" in report.errors()[0].message


def test_changed_or_incomplete_exports_are_refused(tmp_path, tiny_base_export):
    copy = tmp_path / "copy"
    shutil.copytree(tiny_base_export, copy)
    path = copy / "h_s.onnx"
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(hd.ExportError, match="was modified"):
        Manifest.load(copy)
    path.unlink()
    with pytest.raises(hd.ExportError, match="incomplete"):
        Manifest.load(copy)
    with pytest.raises(hd.ExportError, match="not an export"):
        Manifest.load(tmp_path)
    with pytest.raises(hd.ExportError, match="not found"):
        Manifest.load(tmp_path / "nowhere")


def test_verify_cli_reports_and_passes(tiny_phase2_export):
    result = CliRunner().invoke(main, ["verify", str(tiny_phase2_export), "--size", "256x256", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["ok"] and report["streams"][0]["same_streams"]
    assert {c["graph"] for c in report["compatibility"]} == set(Manifest.load(tiny_phase2_export).stages)
    bad = CliRunner().invoke(main, ["verify", str(tiny_phase2_export), "--size", "300x256"])
    assert bad.exit_code == 1 and "multiples of 256" in bad.output


def test_export_cli_errors_are_one_line(tmp_path):
    result = CliRunner().invoke(main, ["export", "--checkpoint", str(tmp_path / "missing.pth")])
    assert result.exit_code == 1 and result.output.startswith("error: checkpoint not found")
    assert not (tmp_path / "export").exists()


def test_fingerprint_follows_weights(tiny_phase2_export, tiny_base_export):
    a, b = Manifest.load(tiny_phase2_export), Manifest.load(tiny_base_export)
    assert a.fingerprint != b.fingerprint
    assert np.array_equal(EntropyTables.load(a.path("tables")).y.cdf, EntropyTables.load(b.path("tables")).y.cdf)


@pytest.mark.parametrize("fixture", ["tiny_phase2_export", "tiny_base_export"])
def test_graphs_share_one_weight_file_read_by_every_backend(request, fixture):
    from hpcm_deploy.artifacts.weights import external_refs

    root = request.getfixturevalue(fixture)
    manifest = Manifest.load(root)
    params = sum(v.numel() * v.element_size() for v in manifest.state_dict().values())
    embedded = [i for s in manifest.stages for i in onnx.load(str(manifest.stage_path(s)),
                load_external_data=False).graph.initializer if i.data_location != onnx.TensorProto.EXTERNAL]
    assert all(len(i.raw_data) < 1024 for i in embedded)  # the graphs keep only shapes, axes and scalars
    weights = (root / manifest.weights.file).stat().st_size + sum(len(i.raw_data) for i in embedded)
    assert weights <= 1.15 * params  # one copy of each weight (plus small derived constants)
    referenced = {(r.offset, r.length) for s in manifest.stages for r in external_refs(manifest.stage_path(s))}
    uses = sum(len(external_refs(manifest.stage_path(s))) for s in manifest.stages)
    assert len(referenced) < uses  # some tensors are shared by several graphs
    # the PyTorch backend reads the same file: exactly the model that was exported
    model = manifest.load_model()
    state = model.state_dict()
    assert all(torch.equal(state[k], v) for k, v in manifest.state_dict().items())
    from hpcm_deploy.artifacts.export import model_fingerprint
    from hpcm_deploy.entropy.tables import EntropyTables as Tables

    assert model_fingerprint(model.config, state, Tables.load(manifest.path("tables")).digest()) == manifest.fingerprint


def test_onnxruntime_sessions_share_the_weight_tensors(tiny_phase2_export):
    from hpcm_deploy.artifacts.weights import external_refs

    manifest = Manifest.load(tiny_phase2_export)
    backend = OnnxRuntimeBackend(manifest)
    refs = [r for s in manifest.stages for r in external_refs(manifest.stage_path(s))]
    assert 0 < backend.shared_weights < len(refs)  # one OrtValue per distinct tensor, handed to every session
    backend.close()


def test_tampered_weight_file_and_old_exports_are_refused(tmp_path, tiny_base_export):
    copy = tmp_path / "copy"
    shutil.copytree(tiny_base_export, copy)
    weights = copy / "weights.bin"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0x01
    weights.write_bytes(bytes(data))
    with pytest.raises(hd.ExportError, match="weights.bin does not match"):
        Manifest.load(copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["format_version"] = 2
    (copy / "manifest.json").write_text(json.dumps(manifest))
    from PIL import Image

    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    result = CliRunner().invoke(main, ["compress", str(tmp_path / "a.png"), "-o", str(tmp_path / "a.hpcm"),
                                       "--export", str(copy)])
    assert result.exit_code == 1 and result.output.count("\n") == 1, result.output
    assert "format version 2" in result.output and "re-export" in result.output
    assert not (tmp_path / "a.hpcm").exists()


def test_export_check_counts_rounding_and_choice_decisions_instead_of_failing():
    from hpcm_deploy.checks.verify import choice_flips, rounding_flips

    before = np.array([0.2, 1.49999, 2.50003, -0.7, 3.0], dtype=np.float32)
    ref = np.round(before)
    got = ref.copy()
    got[1], got[2] = 2.0, 2.0  # both within float error of .5: legitimate rounding decisions
    assert rounding_flips(ref, got, before) == (True, 2)
    got[4] = 4.0  # 3.0 is far from a rounding boundary: a wrong graph
    assert rounding_flips(ref, got, before)[0] is False
    got = ref.copy()
    got[0] = 2.0  # off by two: never a rounding flip
    assert rounding_flips(ref, got, before)[0] is False
    slots = np.array([[0, 1], [2, 3]])
    other = np.array([[1, 0], [2, 1]])  # same set in image 0; a different choice in image 1
    assert choice_flips(slots, other, np.array([0.5, 1e-6])) == (True, 1)
    assert choice_flips(slots, other, np.array([0.5, 0.3])) == (False, 1)
