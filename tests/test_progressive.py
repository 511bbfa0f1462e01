"""Progressive decoding: previews after the first coding steps, and truncated streams decoded as far as they go."""

from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

import hpcm_deploy as hd
from hpcm_deploy.app.bundled import SAMPLE, data_path, demo_weights
from hpcm_deploy.cli import main
from hpcm_deploy.codec import container
from hpcm_deploy.evaluation.metrics import psnr


@pytest.fixture(scope="module")
def demo():
    """The embedded demo model (a trained model: its previews improve step by step), PyTorch stages."""
    return hd.Codec(hd.load_model(checkpoint=demo_weights(), seed=None))


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    return np.asarray(Image.open(data_path(SAMPLE)).convert("RGB"))[100:228, 200:392]


def test_previews_improve_step_by_step_and_end_in_the_full_decode(demo, photo):
    stream = demo.compress(photo)
    full = demo.decompress(stream, kind="numpy")
    steps = list(demo.decompress_progressive(stream, every="step", kind="numpy"))
    assert [p.steps for p in steps] == list(range(1, 12))
    assert np.array_equal(steps[-1].image, full)  # the last one is the full decode, unchanged
    quality = [psnr(photo, p.image) for p in steps]
    assert all(q <= quality[-1] + 1e-9 for q in quality)  # no preview beats the full decode
    assert quality[1] < quality[4] < quality[10]  # scale 1 < scales 1-2 < all
    scales = list(demo.decompress_progressive(stream, kind="numpy"))  # every="scale"
    assert [p.steps for p in scales] == [2, 5, 11]
    assert np.array_equal(scales[0].image, steps[1].image) and np.array_equal(scales[1].image, steps[4].image)
    assert np.array_equal(demo.preview(stream, 5, kind="numpy").image, steps[4].image)


def test_a_truncated_stream_decodes_to_the_preview_of_its_last_complete_step(demo, photo):
    stream = demo.compress(photo)
    box = container.parse(stream)
    full = demo.decompress_detailed([stream], kind="numpy", symbols=True)[0]
    y_start = len(stream) - 4 - len(box.y)
    for k in (1, 3, 6, 10):
        end = y_start + full.offsets[k - 1]  # where the decoder's reads for step k end
        cut = stream[: end + (full.offsets[k] - full.offsets[k - 1]) // 2]  # and half of step k + 1
        with pytest.raises(hd.BitstreamError, match="truncated"):
            demo.decompress(cut)
        part = demo.decompress_detailed([cut], kind="numpy", partial=True)[0]
        assert part.steps == k
        # a truncated stream gives the best image its bytes allow: the context-filled preview, not the thumbnail
        assert np.array_equal(part.image, demo.preview(stream, k, kind="numpy", fill="context").image)
    exact = demo.decompress_detailed([stream[: y_start + full.offsets[2]]], kind="numpy", partial=True)[0]
    assert exact.steps == 3  # the bytes of exactly three steps decode three steps
    with pytest.raises(hd.BitstreamError, match="do not reach the y payload"):
        demo.decompress(stream[: y_start - 1], partial=True)
    legacy = hd.Codec(hd.load_model(checkpoint=demo_weights(), seed=None), legacy_streams=True).compress(photo)
    with pytest.raises(hd.BitstreamError, match="only version 3"):
        demo.decompress(legacy[:-20], partial=True)


def test_cli_previews_and_partial_files(tiny_base_export, photo, tmp_path):
    export = tiny_base_export
    Image.fromarray(photo).save(tmp_path / "a.png")
    runner = CliRunner()
    ex = ["--export", str(export)]
    result = runner.invoke(main, ["compress", str(tmp_path / "a.png"), "-o", str(tmp_path / "a.hpcm"), *ex])
    assert result.exit_code == 0, result.output
    stream = (tmp_path / "a.hpcm").read_bytes()
    result = runner.invoke(main, ["decompress", str(tmp_path / "a.hpcm"), "-o", str(tmp_path / "s1.png"),
                                  "--preview", "s1", "--json", *ex])
    assert result.exit_code == 0, result.output
    assert '"steps": 2' in result.output and Image.open(tmp_path / "s1.png").size == (192, 128)
    (tmp_path / "cut.hpcm").write_bytes(stream[: len(stream) - 40])
    result = runner.invoke(main, ["decompress", str(tmp_path / "cut.hpcm"), "-o", str(tmp_path / "cut.png"), *ex])
    assert result.exit_code == 1 and "truncated" in result.output and not (tmp_path / "cut.png").exists()
    result = runner.invoke(main, ["decompress", str(tmp_path / "cut.hpcm"), "-o", str(tmp_path / "cut.png"),
                                  "--partial", *ex])
    assert result.exit_code == 0 and (tmp_path / "cut.png").is_file()
    result = runner.invoke(main, ["decompress", str(tmp_path / "a.hpcm"), "-o", str(tmp_path / "x.png"),
                                  "--preview", "s9", *ex])
    assert result.exit_code == 1 and "--preview must be" in result.output
