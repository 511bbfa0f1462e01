"""Full-size checks (slow; run with `pytest -m slow`)."""

import pytest

import hpcm_deploy as hd
from hpcm_deploy.artifacts.export import Manifest
from hpcm_deploy.backends.onnxrt import OnnxRuntimeBackend
from hpcm_deploy.backends.torch_backend import TorchBackend
from hpcm_deploy.checks.verify import check_stages, check_streams
from hpcm_deploy.entropy.tables import EntropyTables
from hpcm_deploy.exporting.onnx_export import export_model
from hpcm_deploy.runtime.runner import ProgramRunner
from hpcm_deploy.stages import build_program

from .helpers import images, open_gates, spread

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("name", ["hpcm-base", "phase2", "phase2-memory", "phase2-speed", "phase2-quality"])
def test_full_size_stages_equal_reference_and_round_trip(name):
    model = spread(hd.load_model(name, seed=5))
    open_gates(model)
    prog = build_program(model.config)
    runner = ProgramRunner(prog, TorchBackend(model, prog), EntropyTables.from_model(model))
    x = images(1, 512, 768, seed=3)
    enc = runner.encode(x, legacy=True)  # CompressAI payloads: the official strings
    ref = model.compress(x, return_latents=True)
    assert enc.y_strings == ref["strings"][0] and enc.z_strings == ref["strings"][1]
    lane = runner.encode(x)  # lane payloads: the same symbols, decoded back exactly
    assert all((a == b).all() for a, b in zip(runner.decode(lane.y_strings, lane.z_strings, lane.z_shape).symbols,
                                               ref["symbols"]))
    dec = model.decompress(ref["strings"], ref["shape"], return_latents=True)
    assert all((a == b).all() for a, b in zip(dec["symbols"], ref["symbols"]))
    assert (dec["y_hat"] == ref["y_hat"]).all()


def test_full_size_phase2_export(tmp_path):
    model = spread(hd.load_model("phase2", seed=6))
    open_gates(model)
    root = export_model(model, tmp_path / "phase2", "phase2", jobs=2)
    manifest = Manifest.load(root)
    backend = OnnxRuntimeBackend(manifest)
    sizes = [(256, 256), (256, 512), (768, 512)]
    results = check_stages(model, manifest.program(), backend, sizes)
    assert all(r.ok for r in results), [r for r in results if not r.ok][:5]
    streams = check_streams(model, manifest.program(), backend, EntropyTables.load(manifest.path("tables")),
                            [(256, 256)])
    assert all(s.decode_exact for s in streams)
