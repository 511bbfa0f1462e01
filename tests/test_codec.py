"""The runtime codec: API and CLI round trips, image kinds, the container, errors, cross-backend streams."""

import json
import random

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

import hpcm_deploy as hd
from hpcm_deploy.cli import main
from hpcm_deploy.codec import container
from hpcm_deploy.codec.images import ImageInfo, from_tensor, to_tensor

from .helpers import images

SIZES = [(1, 1), (17, 333), (1000, 37)]


def _photo(h: int, w: int, seed: int) -> np.ndarray:
    return (images(1, h, w, seed=seed)[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)


def _reference_reconstruction(model: hd.HPCM, image: np.ndarray) -> np.ndarray:
    """What the reference model decodes for ``image``, as 8-bit RGB (the torch codec must equal it)."""
    x, size = hd.pad_image(torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255)
    with torch.inference_mode():
        y_hat = model.compress(x, return_latents=True)["y_hat"]
        x_hat = hd.crop_image(model.g_s(y_hat).clamp(0, 1), size)[0]
    return np.clip(np.round(x_hat.permute(1, 2, 0).numpy() * 255), 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def codecs(tiny_phase2_export):
    return {b: hd.Codec(tiny_phase2_export, backend=b) for b in ("torch", "onnxruntime")}


def test_torch_codec_reconstructs_exactly_what_the_reference_model_decodes(codecs, tiny_phase2):
    pics = [_photo(h, w, seed=i) for i, (h, w) in enumerate(SIZES)]
    streams = codecs["torch"].compress(pics)  # a batch of mixed sizes
    decoded = codecs["torch"].decompress(streams, kind="numpy")
    for pic, out in zip(pics, decoded):
        assert out.shape == pic.shape and out.dtype == np.uint8
        assert np.array_equal(out, _reference_reconstruction(tiny_phase2, pic))


@pytest.mark.parametrize("backend", ["onnxruntime", "torch"])
def test_api_round_trip_every_size_and_a_mixed_batch(codecs, backend):
    codec = codecs[backend]
    pics = [_photo(h, w, seed=10 + i) for i, (h, w) in enumerate(SIZES)] + [_photo(64, 64, seed=3)]
    streams = codec.compress(pics)
    assert [container.parse(s).height for s in streams] == [p.shape[0] for p in pics]
    singles = [codec.compress(p) for p in pics]
    assert singles == streams  # a batch codes each image as if alone
    for pic, out in zip(pics, codec.decompress(streams, kind="numpy")):
        assert out.shape == pic.shape


def test_onnxruntime_decoder_reads_back_exactly_what_its_encoder_wrote(codecs):
    runner = codecs["onnxruntime"].runner
    x, _ = hd.pad_image(torch.from_numpy(_photo(300, 500, seed=5)).permute(2, 0, 1)[None].float() / 255)
    enc = runner.encode(x.numpy())
    dec = runner.decode(enc.y_strings, enc.z_strings, enc.z_shape)
    assert all((a == b).all() for a, b in zip(enc.symbols, dec.symbols))
    assert sum(int((s != 0).sum()) for s in enc.symbols) > 1000


def test_streams_cross_between_onnxruntime_and_pytorch(codecs):
    pics = [_photo(256, 256, seed=21), _photo(200, 300, seed=22)]
    ort_streams = codecs["onnxruntime"].compress(pics)
    torch_streams = codecs["torch"].compress(pics)
    # the payloads are identical; the signalled decisions may differ where a value sits right at the margin
    payload = [(container.parse(s).z, container.parse(s).y) for s in ort_streams]
    assert payload == [(container.parse(s).z, container.parse(s).y) for s in torch_streams]
    a = codecs["torch"].decompress(ort_streams, kind="numpy")
    b = codecs["onnxruntime"].decompress(torch_streams, kind="numpy")
    for x, y in zip(a, b):
        assert np.abs(x.astype(int) - y.astype(int)).max() <= 1  # same symbols; float g_s may differ by 1 level


def test_input_kinds_come_back_as_they_went_in(codecs):
    codec = codecs["torch"]
    rgb = _photo(40, 70, seed=1)
    gray = rgb.mean(axis=2).astype(np.uint8)
    wide = (rgb.astype(np.uint16) * 257)
    cases = {
        "pil rgb": (Image.fromarray(rgb), "pil", lambda o: o.mode == "RGB" and o.size == (70, 40)),
        "pil gray": (Image.fromarray(gray), "pil", lambda o: o.mode == "L" and o.size == (70, 40)),
        "pil 16-bit": (Image.fromarray(wide[..., 0]), "pil", lambda o: o.mode == "I;16"),
        "numpy uint16": (wide, "numpy", lambda o: o.dtype == np.uint16 and o.shape == (40, 70, 3)),
        "numpy gray": (gray, "numpy", lambda o: o.dtype == np.uint8 and o.shape == (40, 70)),
        "numpy float": (rgb / 255.0, "numpy", lambda o: o.dtype == np.float32 and o.shape == (40, 70, 3)),
        "torch": (torch.from_numpy(rgb).permute(2, 0, 1).float() / 255, "torch",
                  lambda o: isinstance(o, torch.Tensor) and o.shape == (3, 40, 70)),
    }
    for name, (img, kind, check) in cases.items():
        out = codec.decompress(codec.compress(img), kind=kind)
        assert check(out), name
    # 16-bit samples are the same model input as their 8-bit originals (x * 257 / 65535 == x / 255), so the
    # decodes agree: the 16-bit one just keeps more precision of the same float reconstruction
    back16 = codec.decompress(codec.compress(wide), kind="numpy")
    back8 = codec.decompress(codec.compress(rgb), kind="numpy")
    assert np.abs(back16.astype(float) / 257 - back8).max() <= 1


def test_unsupported_inputs_are_clear_errors(codecs):
    codec = codecs["torch"]
    with pytest.raises(hd.InputError, match="alpha"):
        codec.compress(Image.new("RGBA", (8, 8)))
    with pytest.raises(hd.InputError, match="alpha"):
        codec.compress(np.zeros((8, 8, 4), np.uint8))
    with pytest.raises(hd.InputError, match="dtype"):
        codec.compress(np.zeros((8, 8, 3), np.int64))
    with pytest.raises(hd.InputError, match=r"\[0, 1\]"):
        codec.compress(torch.full((3, 8, 8), 2.0))
    with pytest.raises(hd.InputError, match="no pixels"):
        codec.compress(np.zeros((0, 8, 3), np.uint8))
    with pytest.raises(hd.InputError, match="cannot code"):
        codec.compress("image.png")


def test_conversions_are_inverse_for_8_bit():
    rgb = np.random.default_rng(0).integers(0, 256, (9, 11, 3), dtype=np.uint8)
    t, info = to_tensor(rgb)
    assert np.array_equal(from_tensor(t, info), rgb)
    gray = rgb[..., 0]
    t, info = to_tensor(Image.fromarray(gray))
    assert info == ImageInfo("pil", 1, 8) and np.array_equal(np.asarray(from_tensor(t, info)), gray)


def test_container_rejects_every_kind_of_bad_stream(codecs, tiny_base_export):
    codec = codecs["onnxruntime"]
    stream = codec.compress(_photo(64, 96, seed=4))
    cases = {
        "empty": b"",
        "random": bytes(random.Random(0).getrandbits(8) for _ in range(500)),
        "truncated": stream[:-7],
        "header only": stream[:20],
        "flipped bit": stream[:50] + bytes([stream[50] ^ 0x10]) + stream[51:],
        "trailing": stream + b"\x00",
    }
    messages = {}
    for name, data in cases.items():
        with pytest.raises(hd.BitstreamError) as err:
            codec.decompress(data)
        messages[name] = str(err.value)
    assert "empty" in messages["empty"] and "bad magic" in messages["random"]
    assert "truncated" in messages["truncated"] and "truncated" in messages["header only"]
    assert "checksum" in messages["flipped bit"] and "trailing" in messages["trailing"]
    other = hd.Codec(tiny_base_export, backend="onnxruntime")
    with pytest.raises(hd.BitstreamError, match="another model"):
        other.decompress(stream)


def test_fuzzed_streams_always_fail_cleanly(codecs):
    codec = codecs["onnxruntime"]
    stream = codec.compress(_photo(32, 48, seed=6))
    rng = random.Random(1234)
    for trial in range(400):
        data = bytearray(stream)
        kind = trial % 4
        if kind == 0:
            for _ in range(rng.randint(1, 8)):
                i = rng.randrange(len(data))
                data[i] ^= 1 << rng.randrange(8)
        elif kind == 1:
            data = data[: rng.randrange(len(data))]
        elif kind == 2:
            i = rng.randrange(len(data))
            data[i:i] = bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 16)))
        else:
            i = rng.randrange(4, len(data))
            data[i:] = bytes(rng.getrandbits(8) for _ in range(len(data) - i))
        if bytes(data) == stream:
            continue
        with pytest.raises(hd.BitstreamError):
            codec.decompress(bytes(data))


def test_container_layout_is_as_documented(codecs, tiny_phase2_export):
    plain = hd.Codec(tiny_phase2_export, backend="torch", margins=None)
    for codec in (plain, codecs["torch"]):
        stream = codec.compress(_photo(17, 333, seed=8))
        box = container.parse(stream)
        lz, ly, ls = (int.from_bytes(stream[o:o + 4], "big") for o in (24, 28, 32))
        assert stream[:4] == b"HPCM" and stream[4] == (2 if ls else 1) and stream[5] == (1 if ls else 0)
        assert int.from_bytes(stream[14:18], "big") == 17 and int.from_bytes(stream[18:22], "big") == 333
        assert stream[22] == 3 and stream[23] == 8
        assert len(stream) == 36 + lz + ly + ls + 4 and box.z == stream[36:36 + lz]
        assert box.y == stream[36 + lz:36 + lz + ly] and box.side == stream[36 + lz + ly:36 + lz + ly + ls]
        assert box.fingerprint == bytes.fromhex(codec.fingerprint)[:8]
    assert container.parse(plain.compress(_photo(17, 333, seed=8))).side == b""


def _write_pngs(folder, sizes):
    folder.mkdir()
    for i, (h, w) in enumerate(sizes):
        Image.fromarray(_photo(h, w, seed=30 + i)).save(folder / f"img{i}.png")
    Image.fromarray(_photo(20, 20, seed=40).mean(axis=2).astype(np.uint8)).save(folder / "gray.png")


def test_cli_round_trip_of_a_folder(tmp_path, tiny_phase2_export):
    src = tmp_path / "in"
    _write_pngs(src, SIZES)
    runner = CliRunner()
    result = runner.invoke(main, ["compress", str(src), "-o", str(tmp_path / "streams"), "--export",
                                  str(tiny_phase2_export), "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert len(summary["files"]) == 4 and summary["failed"] == 0
    assert all(f["bpp"] > 0 and f["seconds"]["network"] > 0 and "io" in f["seconds"] for f in summary["files"])
    result = runner.invoke(main, ["decompress", str(tmp_path / "streams"), "-o", str(tmp_path / "out"),
                                  "--export", str(tiny_phase2_export), "--backend", "torch"])
    assert result.exit_code == 0, result.output
    for i, (h, w) in enumerate(SIZES):
        assert Image.open(tmp_path / "out" / f"img{i}.png").size == (w, h)
    assert Image.open(tmp_path / "out" / "gray.png").mode == "L"
    assert not list(tmp_path.rglob("*.part"))


def test_cli_margin_sets_how_much_is_signalled(tmp_path, tiny_phase2_export):
    Image.fromarray(_photo(96, 160, seed=11)).save(tmp_path / "a.png")
    side = {}
    for margin in ("0", "2e-5", "4e-3"):
        out = tmp_path / f"a-{margin}.hpcm"
        result = CliRunner().invoke(main, ["compress", str(tmp_path / "a.png"), "-o", str(out), "--margin", margin,
                                           "--export", str(tiny_phase2_export)])
        assert result.exit_code == 0, result.output
        box = container.parse(out.read_bytes())
        side[margin] = len(box.side)
        decoded = tmp_path / f"a-{margin}.png"
        assert CliRunner().invoke(main, ["decompress", str(out), "-o", str(decoded), "--export",
                                         str(tiny_phase2_export), "--backend", "torch"]).exit_code == 0
    assert side["0"] == 0 < side["2e-5"] < side["4e-3"]
    bad = CliRunner().invoke(main, ["compress", str(tmp_path / "a.png"), "-o", str(tmp_path / "b.hpcm"),
                                    "--margin", "-1", "--export", str(tiny_phase2_export)])
    assert bad.exit_code != 0 and not (tmp_path / "b.hpcm").exists()


def test_cli_errors_are_one_line_and_leave_nothing(tmp_path, tiny_phase2_export):
    runner = CliRunner()
    ex = ["--export", str(tiny_phase2_export)]
    out = tmp_path / "out.hpcm"
    result = runner.invoke(main, ["compress", str(tmp_path / "missing.png"), "-o", str(out), *ex])
    assert result.exit_code == 1 and result.output.count("\n") == 1 and "no such file" in result.output
    bad = tmp_path / "notanimage.png"
    bad.write_text("hello")
    result = runner.invoke(main, ["compress", str(bad), "-o", str(out), *ex])
    assert result.exit_code == 1 and "not a readable image" in result.output and not out.exists()
    junk = tmp_path / "junk.hpcm"
    junk.write_bytes(b"HPCM" + bytes(100))
    png = tmp_path / "junk.png"
    result = runner.invoke(main, ["decompress", str(junk), "-o", str(png), *ex])
    assert result.exit_code == 1 and result.output.count("\n") == 1 and not png.exists()
    result = runner.invoke(main, ["compress", str(bad), "-o", str(out), "--export", str(tmp_path)])
    assert result.exit_code == 1 and "not an export" in result.output
    assert not list(tmp_path.rglob("*.part"))
