"""The main-job demo and the embedded weights."""

import hpcm_deploy as hd
from hpcm_deploy.app.bundled import data_path, demo_weights
from hpcm_deploy.app.demo import run_demo


def test_embedded_demo_weights_load_as_tiny_phase2():
    model = hd.load_model(checkpoint=demo_weights(), seed=None)
    assert model.config == hd.get_config("tiny-phase2")
    assert all(p.dtype.is_floating_point and p.dtype == next(model.parameters()).dtype for p in model.parameters())
    assert data_path("sample.png").is_file()


def test_demo_on_an_export_checks_round_trip_and_reference(tiny_phase2_export):
    report = run_demo(tiny_phase2_export)
    assert report.ok and report.round_trip_exact and report.matches_pytorch
    assert report.bpp > 0 and report.width == 640 and report.height == 427
    assert set(report.decode_stages) >= {"h_s", "s3_step7", "g_s"} and "g_a" in report.encode_stages
