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


def test_compare_picture_shows_every_codec_at_most_at_the_models_rate(tmp_path):
    import numpy as np
    from PIL import Image

    from hpcm_deploy.evaluation.compare import compare_picture
    from hpcm_deploy.evaluation.metrics import psnr
    from hpcm_deploy.image import read_image

    image = np.asarray(read_image(data_path("sample.png")).convert("RGB"))[:192, 64:320]
    out = tmp_path / "cmp.png"
    codec = hd.Codec.from_model(hd.load_model(checkpoint=demo_weights(), seed=None))
    base = hd.Codec.from_model(hd.load_model(checkpoint=demo_weights(base=True), seed=None))
    shown = compare_picture(image, out, {"Phase 2": codec, "Base": base}, size=96, zoom=1,
                            anchors=("jpeg", "webp"))  # AVIF takes seconds per encode
    assert Image.open(out).size == (3 * 96, 2 * (96 + 18))  # original, Phase 2, Base, JPEG, WebP: a 3x2 grid
    assert set(shown["psnr"]) == {"Phase 2", "Base", "JPEG", "WebP"}
    # the Phase 2 panel is the real decode of the real stream
    stream = codec.compress(image)
    assert abs(shown["bpp"] - 8 * len(stream) / image[..., 0].size) < 1e-12
    assert abs(shown["psnr"]["Phase 2"] - psnr(image, codec.decompress(stream, kind="numpy"))) < 1e-9
    assert shown["bpp_of"]["JPEG"] <= shown["bpp"] and shown["bpp_of"]["WebP"] <= shown["bpp"]
    assert not list(tmp_path.glob("*.part"))
