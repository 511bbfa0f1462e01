"""``eval`` and ``bench``: rates measured from the real streams, the metrics, and the benchmark's report."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from hpcm_deploy import Codec
from hpcm_deploy.cli import main
from hpcm_deploy.codec.container import parse
from hpcm_deploy.evaluation.bench import bench
from hpcm_deploy.evaluation.evaluate import evaluate
from hpcm_deploy.evaluation.metrics import (
    ANCHORS,
    anchor_curve,
    anchor_psnr_at,
    available_anchors,
    bd_psnr,
    bd_rate,
    jpeg_curve,
    jpeg_psnr_at,
    psnr,
    psnr_overlap,
)

from .helpers import images


def _uint8(h: int, w: int, seed: int) -> np.ndarray:
    return (images(1, h, w, seed)[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)


@pytest.fixture(scope="module")
def pictures() -> dict[str, np.ndarray]:
    return {"wide": _uint8(48, 200, 1), "odd": _uint8(37, 61, 2)}


def test_eval_rates_come_from_the_streams(tiny_phase2_export, pictures):
    (result,) = evaluate([(str(tiny_phase2_export), "p2")], pictures, anchors=("jpeg", "webp"))
    codec = Codec(tiny_phase2_export)
    for row in result.images:
        img = pictures[row.image]
        stream = codec.compress(img)
        px = img.shape[0] * img.shape[1]
        box = parse(stream)
        assert row.bpp == pytest.approx(8 * len(stream) / px)
        assert row.bpp_y == pytest.approx(8 * len(box.y) / px)
        # per-step bytes are where the decoder's reads end: they add up to the whole y payload
        assert sum(row.bpp_per_step) == pytest.approx(row.bpp_y)
        assert all(b > 0 for b in row.bpp_per_step)
        for name in ("jpeg", "webp"):
            value = row.anchors[name]
            assert value is None or value == pytest.approx(anchor_psnr_at(img, row.bpp, name))
        assert len(row.bpp_per_step) == 11
        assert sum(row.bpp_per_scale[s] for s in ("s1", "s2", "s3")) == pytest.approx(row.bpp_y)
        assert row.bpp_per_scale["z"] == pytest.approx(row.bpp_z)
        assert row.psnr == pytest.approx(psnr(img, codec.decompress(stream, kind="numpy")))
        assert 0 < row.ms_ssim <= 1
    means = result.as_dict()["mean"]
    assert means["bpp"] == pytest.approx(np.mean([r.bpp for r in result.images]))
    codec.close()


def test_anchor_bracket_search_matches_a_sweep():
    img = _uint8(96, 128, 5)
    for codec in ("jpeg", "webp"):
        sweep = sorted(anchor_curve(img, codec, range(ANCHORS[codec][2][0], ANCHORS[codec][2][-1] + 1)),
                       key=lambda p: (p.bpp, p.quality))
        for target in (sweep[3].bpp * 1.01, (sweep[10].bpp + sweep[11].bpp) / 2, sweep[-5].bpp):
            below = max((p for p in sweep if p.bpp <= target), key=lambda p: p.quality)
            above = min((p for p in sweep if p.bpp > target and p.quality > below.quality),
                        key=lambda p: p.quality)
            t = (target - below.bpp) / (above.bpp - below.bpp)
            assert anchor_psnr_at(img, target, codec) == pytest.approx(below.psnr + t * (above.psnr - below.psnr))
    assert "jpeg" in available_anchors()


def test_jpeg_reference_points():
    img = _uint8(64, 96, 3)
    curve = sorted(jpeg_curve(img, qualities=(5, 50, 95)), key=lambda p: p.bpp)
    assert curve[0].psnr < curve[-1].psnr
    assert jpeg_psnr_at(img, curve[0].bpp / 2) is None  # below what JPEG can reach
    full = sorted(jpeg_curve(img), key=lambda p: p.bpp)
    mid = (full[3].bpp + full[4].bpp) / 2
    assert min(full[3].psnr, full[4].psnr) <= jpeg_psnr_at(img, mid) <= max(full[3].psnr, full[4].psnr)


def test_bd_rate_of_a_curve_that_needs_a_fifth_fewer_bits():
    anchor = [(0.2, 28.0), (0.4, 31.0), (0.8, 34.0), (1.6, 37.0)]
    better = [(r * 0.8, d) for r, d in anchor]
    assert bd_rate(anchor, better) == pytest.approx(-20.0, abs=0.05)
    assert bd_rate(anchor, anchor) == pytest.approx(0.0, abs=1e-9)
    assert bd_psnr(anchor, better) > 0
    assert bd_rate(anchor, [(0.05, 20.0), (0.1, 22.0)]) is None  # no common PSNR: nothing to compare


def test_bench_reports_every_backend_against_the_reference(tiny_phase2_export):
    result = bench(str(tiny_phase2_export), ["onnxruntime", "torch"], size=(64, 80), repeat=2, warmup=0)
    assert result["reference"]["bytes"] > 0 and result["reference"]["encode"]["n"] == 2
    assert [b["backend"] for b in result["backends"]] == ["onnxruntime", "torch"]
    for b in result["backends"]:
        assert b["ratio_encode"] > 0 and b["ratio_decode"] > 0
        assert {"g_a", "h_a", "s3_step7"} <= set(b["encode_stages"]) and "g_s" in b["decode_stages"]
        assert "g_a" not in b["decode_stages"]
        assert b["encode"]["min"] <= b["encode"]["median"] <= b["encode"]["max"]
        assert b["host"]["encode_entropy"]["median"] > 0


def test_eval_command_json_and_plot(tiny_phase2_export, tiny_base_export, tmp_path, pictures):
    from PIL import Image

    folder = tmp_path / "imgs"
    folder.mkdir()
    Image.fromarray(pictures["wide"]).save(folder / "wide.png")
    plot = tmp_path / "rd.png"
    result = CliRunner().invoke(main, ["eval", str(folder), "--export", str(tiny_phase2_export), "--label", "p2",
                                       "--export", str(tiny_base_export), "--label", "p2",
                                       "--anchor", "jpeg", "--anchor", "webp", "--json", "--plot", str(plot)])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert [e["label"] for e in data["exports"]] == ["p2", "p2"]
    # two exports under one label make a curve: BD-rates against each anchor's mean curve
    assert set(data["bd_rate_percent"]) == {"p2 vs jpeg", "p2 vs webp"}
    p2 = [(e["mean"]["bpp"], e["mean"]["psnr"]) for e in data["exports"]]
    for name in ("jpeg", "webp"):  # a number where the PSNR ranges overlap, null where they do not
        value, anchor = data["bd_rate_percent"][f"p2 vs {name}"], data["anchor_curves"][name]
        assert (value is not None and np.isfinite(value)) == psnr_overlap(anchor, p2)
    assert {"jpeg_psnr", "webp_psnr"} <= set(data["exports"][0]["mean"])
    assert all(e["images"][0]["image"] == "wide.png" for e in data["exports"])
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    bad = CliRunner().invoke(main, ["eval", str(folder), "--export", str(tiny_phase2_export), "--label", "a",
                                    "--label", "b"])
    assert bad.exit_code != 0
