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
from hpcm_deploy.image import ImageInfo, from_tensor, to_tensor

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
    codec = codecs["onnxruntime"]
    enc = codec.compress_detailed([_photo(300, 500, seed=5)], symbols=True)[0]
    dec = codec.decompress_detailed([enc.stream], symbols=True)[0]
    assert len(enc.symbols) == len(dec.symbols) == 11
    assert all(np.array_equal(a, b) for a, b in zip(enc.symbols, dec.symbols))
    assert all(np.array_equal(a, b) for a, b in zip(enc.indexes, dec.indexes))
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
    legacy = hd.Codec(tiny_phase2_export, backend="torch", legacy_streams=True)
    legacy_plain = hd.Codec(tiny_phase2_export, backend="torch", margins=None, legacy_streams=True)
    pic = _photo(17, 333, seed=8)
    for codec in (plain, codecs["torch"], legacy, legacy_plain):
        stream = codec.compress(pic)
        box = container.parse(stream)
        lz, ly, ls = (int.from_bytes(stream[o:o + 4], "big") for o in (24, 28, 32))
        assert stream[:4] == b"HPCM" and int.from_bytes(stream[14:18], "big") == 17
        assert int.from_bytes(stream[18:22], "big") == 333 and stream[22] == 3 and stream[23] == 8
        assert len(stream) == 36 + lz + ly + ls + 4 and box.z == stream[36:36 + lz]
        if codec.legacy_streams:  # versions 1/2: z, y, side information
            assert stream[4] == (2 if ls else 1) and stream[5] == (1 if ls else 0)
            assert box.y == stream[36 + lz:36 + lz + ly] and box.side == stream[36 + lz + ly:36 + lz + ly + ls]
        else:  # version 3: z, side information, y (a prefix holds everything but the end of y)
            assert stream[4] == 3 and stream[5] == (3 if ls else 2)
            assert box.side == stream[36 + lz:36 + lz + ls] and box.y == stream[36 + lz + ls:36 + lz + ls + ly]
        assert box.fingerprint == bytes.fromhex(codec.fingerprint)[:8]
        assert np.array_equal(codecs["onnxruntime"].decompress(stream, kind="numpy"),
                              codec.decompress(stream, kind="numpy"))  # every version is read
    assert container.parse(plain.compress(pic)).side == b""
    # the same symbols in both payload formats
    assert container.parse(legacy_plain.compress(pic)).y != container.parse(plain.compress(pic)).y
    a = plain.compress_detailed([pic], symbols=True)[0].symbols
    b = legacy_plain.compress_detailed([pic], symbols=True)[0].symbols
    assert all(np.array_equal(x, y) for x, y in zip(a, b))


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


def test_cli_codes_a_folder_in_batches_and_a_bad_file_fails_alone(tmp_path, tiny_phase2_export):
    src = tmp_path / "in"
    src.mkdir()
    for i in range(3):  # one padded size: one batch
        Image.fromarray(_photo(60, 90, seed=50 + i)).save(src / f"p{i}.png")
    (src / "broken.png").write_bytes(b"not a png at all")
    ex = ["--export", str(tiny_phase2_export), "--backend", "torch"]
    result = CliRunner().invoke(main, ["compress", str(src), "-o", str(tmp_path / "s"), *ex, "--json"])
    assert result.exit_code == 1  # one file failed; the others are written
    summary = json.loads(result.output[result.output.index("{"):])
    assert summary["failed"] == 1 and [f["batch"] for f in summary["files"]] == [3, 3, 3]
    codec = hd.Codec(tiny_phase2_export, backend="torch")
    for i in range(3):
        stream = (tmp_path / "s" / f"p{i}.hpcm").read_bytes()
        assert codec.decompress(stream, kind="numpy").shape == (60, 90, 3)
    assert not (tmp_path / "s" / "broken.hpcm").exists() and not list(tmp_path.rglob("*.part"))
    result = CliRunner().invoke(main, ["decompress", str(tmp_path / "s"), "-o", str(tmp_path / "d"), *ex,
                                       "--preview", "s2"])
    assert result.exit_code == 0, result.output
    for i in range(3):
        stream = (tmp_path / "s" / f"p{i}.hpcm").read_bytes()
        assert np.array_equal(np.asarray(Image.open(tmp_path / "d" / f"p{i}.png")),
                              codec.preview(stream, 5, kind="numpy").image)


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
    good = tmp_path / "good.png"
    Image.fromarray(_photo(40, 48, seed=4)).save(good)
    result = runner.invoke(main, ["compress", str(good), "-o", str(out), "--export", str(tmp_path)])
    assert result.exit_code == 1 and "not an export" in result.output and not out.exists()
    result = runner.invoke(main, ["compress", str(good), "-o", str(out), *ex, "--engines", str(tmp_path)])
    assert result.exit_code == 1 and "--engines is for --backend tensorrt" in result.output
    rgba = tmp_path / "rgba.png"
    Image.fromarray(np.dstack([_photo(40, 48, seed=3), np.full((40, 48), 128, np.uint8)])).save(rgba)
    result = runner.invoke(main, ["compress", str(rgba), "-o", str(out), *ex])
    assert result.exit_code == 1 and "--alpha" in result.output and not out.exists()
    assert not list(tmp_path.rglob("*.part"))
    result = runner.invoke(main, ["compress", str(rgba), "-o", str(out), *ex, "--alpha", "white"])
    assert result.exit_code == 0 and out.exists()


def test_the_memory_budget_has_one_name_and_the_old_keyword_still_works(tiny_phase2_export):
    with pytest.warns(DeprecationWarning, match="memory_budget"):
        old = hd.Codec(tiny_phase2_export, memory=48 * 2**20)
    assert old.memory_budget == 48 * 2**20 and hd.Codec(tiny_phase2_export, memory_budget=None).memory_budget is None
    with pytest.raises(hd.InputError, match="not both"), pytest.warns(DeprecationWarning):
        hd.Codec.from_export(tiny_phase2_export, memory=None, memory_budget=None)


@pytest.mark.parametrize("backend", ["onnxruntime", "torch"])
def test_tiled_transforms_decode_within_one_level_of_untiled(tiny_phase2_export, backend):
    """A memory budget small enough to tile g_a and g_s: the same streams decode within 1 LSB of an untiled
    decode, and the tiled encoder's streams decode exactly (odd sizes, a batch)."""
    whole = hd.Codec(tiny_phase2_export, backend=backend, memory_budget=None)
    tiled = hd.Codec(tiny_phase2_export, backend=backend, memory_budget=48 * 2**20)
    pics = [_photo(500, 700, seed=50), _photo(500, 700, seed=51), _photo(300, 260, seed=52)]
    streams = whole.compress(pics)
    for stream in streams:
        a, b = whole.decompress(stream, kind="numpy"), tiled.decompress(stream, kind="numpy")
        assert a.shape == b.shape and np.abs(a.astype(int) - b.astype(int)).max() <= 1
    plans = list(tiled.tile_plans().values())
    assert plans and all(len(p.tiles) > 1 for p in plans)  # g_a and g_s really ran in several tiles
    for result in tiled.compress_detailed(pics, symbols=True):
        decoded = whole.decompress_detailed([result.stream], symbols=True)[0]
        assert all(np.array_equal(x, y) for x, y in zip(result.symbols, decoded.symbols))


def test_sizes_beyond_the_limits_are_refused_before_anything_is_allocated(codecs, tiny_phase2_export):
    import struct
    import time
    import zlib

    import psutil

    from hpcm_deploy.runtime.limits import memory_problem

    codec = codecs["onnxruntime"]
    stream = bytearray(codec.compress(_photo(40, 40, seed=60)))
    stream[14:22] = struct.pack(">II", 16384, 16384)  # a few hundred bytes announcing 268 MP
    stream[-4:] = struct.pack(">I", zlib.crc32(bytes(stream[:-4])))
    rss = psutil.Process().memory_info().rss
    start = time.perf_counter()
    with pytest.raises(hd.BitstreamError, match=r"announces a 16384x16384 image \(268 MP\).*--max-pixels"):
        codec.decompress(bytes(stream))
    assert time.perf_counter() - start < 5 and psutil.Process().memory_info().rss - rss < 50 * 2**20
    small = hd.Codec(tiny_phase2_export, max_pixels=1000)
    with pytest.raises(hd.InputError, match=r"the image is 40x30 \(0.0012 MP\), more than.*--max-pixels"):
        small.compress(np.zeros((30, 40, 3), np.uint8))
    assert len(small.compress(np.zeros((20, 40, 3), np.uint8))) > 40
    problem = memory_problem(hd.get_config("phase2"), 16384, 16384, 1, 2**30, "stream", available=24 * 2**30)
    assert problem and "GiB" in problem and "more than the 24.0 GiB available" in problem
    assert memory_problem(hd.get_config("tiny-phase2"), 768, 512, 1, 2**30, "image", available=24 * 2**30) is None


def test_backend_options_and_devices_are_checked(tiny_phase2_export):
    with pytest.raises(hd.BackendError, match="backend onnxruntime has no option precision .its options: threads"):
        hd.Codec(tiny_phase2_export, precision="fp16")
    with pytest.raises(hd.BackendError, match="threads must be a whole number"):
        hd.Codec(tiny_phase2_export, threads=-1)
    with pytest.raises(hd.BackendError, match="backend torch has no option threads .its options: precision"):
        hd.Codec(tiny_phase2_export, backend="torch", threads=2)
    with pytest.raises(hd.BackendError, match="cannot run on device 'tpu'"):
        hd.Codec(tiny_phase2_export, device="tpu")
    with pytest.raises(hd.BackendError, match="unknown backend 'onnx'"):
        hd.Codec(tiny_phase2_export, backend="onnx")
    codec = hd.Codec(tiny_phase2_export, threads=1)
    assert codec.backend.device == "cpu" and codec.max_batch == 8



def test_the_long_forms_open_once_and_write_what_the_short_form_writes(codecs, tiny_phase2_export, tiny_phase2):
    """Codec(path) is Codec.from_export(path); an export opened once serves several backends; Codec(model) is
    Codec.from_model(model); options go as a mapping or as keywords alike."""
    from hpcm_deploy.artifacts.export import OpenedExport

    image = _photo(70, 90, seed=61)
    opened = OpenedExport.open(tiny_phase2_export)
    long_ort = hd.Codec.from_export(opened, "onnxruntime", options={"threads": 1})
    long_torch = hd.Codec.from_export(opened, "torch")
    assert long_ort.program is opened.program and long_torch.tables is opened.tables  # read once, handed down
    assert long_ort.compress(image) == codecs["onnxruntime"].compress(image)
    assert long_torch.compress(image) == codecs["torch"].compress(image)
    assert hd.Codec.from_model(tiny_phase2).compress(image) == hd.Codec(tiny_phase2).compress(image)
    assert long_ort.backend.max_batch is None and long_ort.backend.precision is None and not long_ort.backend.tf32
    with pytest.raises(TypeError):
        hd.Codec.from_export(opened, "onnxruntime", threads=1)  # backend options go in options= here
    with pytest.raises(hd.InputError, match="alpha"):
        hd.Codec.from_export(opened, "onnxruntime", alpha="not-a-colour")


# ---------------------------------------------------------------------------------------------------- alpha
def _rgba() -> np.ndarray:
    """A 2x3 RGBA image: alpha 0, 255 and 128 in the first row, 64 in the second."""
    a = np.zeros((2, 3, 4), np.uint8)
    a[..., :3] = [[[10, 20, 30], [40, 50, 60], [200, 100, 0]], [[0, 0, 0], [255, 255, 255], [90, 90, 90]]]
    a[..., 3] = [[0, 255, 128], [64, 64, 64]]
    return a


def _composited(a: np.ndarray, background, top: float = 255.0) -> np.ndarray:
    weight = a[..., -1:].astype(np.float64) / top
    return np.round(a[..., :-1] * weight + np.asarray(background, np.float64) * (1 - weight))


def _samples(t: torch.Tensor, top: float = 255.0) -> np.ndarray:
    return np.round(t.permute(1, 2, 0).numpy().astype(np.float64) * top)


def test_alpha_is_refused_by_default_with_the_choices_named():
    rgba = _rgba()
    palette = Image.fromarray(rgba[..., :3]).convert("P")
    palette.info["transparency"] = 0
    refused = {"RGBA": Image.fromarray(rgba, "RGBA"), "LA": Image.fromarray(rgba, "RGBA").convert("LA"),
               "PA": Image.fromarray(rgba, "RGBA").convert("PA"), "P with transparency": palette,
               "[H, W, 4]": rgba}
    for name, img in refused.items():
        with pytest.raises(hd.InputError, match="alpha='drop'") as info:
            to_tensor(img)
        assert "\n" not in str(info.value), name
    for bad in ("transparent", "#12345", "#ff000080", (1, 2), (0, 0, 256), 7):
        with pytest.raises(hd.InputError, match="alpha must be|not opaque"):
            to_tensor(rgba, alpha=bad)
    with pytest.raises(hd.InputError, match="alpha must be"):  # before the export is even read
        hd.Codec("/nonexistent/export", alpha="sideways")


def test_alpha_drop_and_composite_give_the_expected_samples():
    rgba = _rgba()
    for background, colour in (("white", (255, 255, 255)), ("black", (0, 0, 0)), ("#3366cc", (51, 102, 204)),
                               ("#fff", (255, 255, 255)), ((1, 2, 3), (1, 2, 3))):
        t, info = to_tensor(Image.fromarray(rgba, "RGBA"), alpha=background)
        assert info == ImageInfo("pil", 3, 8)
        assert np.array_equal(_samples(t), _composited(rgba, colour)), background
        t, info = to_tensor(rgba, alpha=background)  # the same for an [H, W, 4] array
        assert info == ImageInfo("numpy", 3, 8) and np.array_equal(_samples(t), _composited(rgba, colour))
    t, _ = to_tensor(rgba, alpha="white")
    assert _samples(t)[0, 0].tolist() == [255, 255, 255]  # alpha 0: the background exactly
    assert _samples(t)[0, 1].tolist() == [40, 50, 60]  # alpha 255: the colour exactly
    assert _samples(t)[0, 2].tolist() == [227, 177, 127]  # alpha 128: 200 * 128/255 + 255 * 127/255 = 227.4
    t, _ = to_tensor(rgba, alpha="black")
    assert _samples(t)[0, 0].tolist() == [0, 0, 0] and _samples(t)[0, 2].tolist() == [100, 50, 0]
    t, info = to_tensor(Image.fromarray(rgba, "RGBA"), alpha="drop")
    assert info == ImageInfo("pil", 3, 8) and np.array_equal(_samples(t), rgba[..., :3])

    # greyscale with alpha stays greyscale on a grey background and when dropped, and turns RGB on a colour
    la = Image.fromarray(rgba, "RGBA").convert("LA")
    grey = np.asarray(la)
    t, info = to_tensor(la, alpha="white")
    assert info == ImageInfo("pil", 1, 8) and np.array_equal(_samples(t)[..., 0], _composited(grey, [255])[..., 0])
    assert _samples(t)[0, 0, 0] == 255
    t, info = to_tensor(la, alpha="drop")
    assert info == ImageInfo("pil", 1, 8) and np.array_equal(_samples(t)[..., 0], grey[..., 0])
    t, info = to_tensor(la, alpha="#ff0000")
    assert info == ImageInfo("pil", 3, 8) and _samples(t)[0, 0].tolist() == [255, 0, 0]

    # a palette image whose index 0 is transparent: those pixels take the background, the others their colour
    indexes = np.array([[0, 1, 2], [2, 1, 0]], np.uint8)
    palette = Image.fromarray(indexes, "P")
    palette.putpalette([9, 9, 9, 200, 10, 10, 10, 200, 10] + [0] * 759)
    palette.info["transparency"] = 0
    t, info = to_tensor(palette, alpha="white")
    assert info == ImageInfo("pil", 3, 8)
    white = [255, 255, 255]
    assert _samples(t).tolist() == [[white, [200, 10, 10], [10, 200, 10]], [[10, 200, 10], [200, 10, 10], white]]
    t, _ = to_tensor(palette, alpha="drop")
    assert _samples(t)[0, 0].tolist() == [9, 9, 9]

    # 16-bit and float arrays keep their sample format
    wide = rgba.astype(np.uint16) * 257
    t, info = to_tensor(wide, alpha="white")
    assert info == ImageInfo("numpy", 3, 16)
    assert np.array_equal(_samples(t, 65535.0), _composited(wide, [65535] * 3, 65535.0))
    t, info = to_tensor(rgba / 255.0, alpha="black")
    assert info == ImageInfo("numpy", 3, 32)
    assert np.allclose(t.permute(1, 2, 0).numpy(), rgba[..., :3] / 255.0 * rgba[..., 3:] / 255.0, atol=1e-6)
    with pytest.raises(hd.InputError, match=r"\[0, 1\]"):
        to_tensor(np.full((2, 2, 4), 2.0), alpha="white")


def test_codec_and_cli_alpha_code_what_compositing_beforehand_codes(tmp_path, tiny_phase2_export):
    rgba = np.concatenate([_photo(40, 56, seed=21), np.zeros((40, 56, 1), np.uint8)], axis=2)
    rgba[..., 3] = np.linspace(0, 255, 56).round().astype(np.uint8)[None, :]  # a horizontal fade
    flat = _composited(rgba, (255, 255, 255)).astype(np.uint8)
    with hd.Codec(tiny_phase2_export, alpha="white") as codec:
        assert codec.alpha == "white"
        stream = codec.compress(Image.fromarray(rgba, "RGBA"))
        assert stream == codec.compress(flat)
        assert codec.decompress(stream).mode == "RGB"
    Image.fromarray(rgba, "RGBA").save(tmp_path / "logo.png")
    ex = ["--export", str(tiny_phase2_export)]
    runner = CliRunner()
    refused = runner.invoke(main, ["compress", str(tmp_path / "logo.png"), "-o", str(tmp_path / "a.hpcm"), *ex])
    assert refused.exit_code == 1 and refused.output.count("\n") == 1 and "--alpha" in refused.output
    assert not (tmp_path / "a.hpcm").exists()
    done = runner.invoke(main, ["compress", str(tmp_path / "logo.png"), "-o", str(tmp_path / "a.hpcm"), "--alpha",
                                "white", *ex])
    assert done.exit_code == 0, done.output
    assert (tmp_path / "a.hpcm").read_bytes() == stream
    bad = runner.invoke(main, ["compress", str(tmp_path / "logo.png"), "-o", str(tmp_path / "b.hpcm"), "--alpha",
                               "sideways", *ex])
    assert bad.exit_code == 1 and bad.output.count("\n") == 1 and "alpha must be" in bad.output


def test_cli_failed_writes_leave_nothing_and_are_one_line(tmp_path, tiny_phase2_export, monkeypatch):
    import errno
    import os
    from pathlib import Path

    Image.fromarray(_photo(32, 48, seed=5)).save(tmp_path / "a.png")
    ex = ["--export", str(tiny_phase2_export)]
    runner = CliRunner()
    assert runner.invoke(main, ["compress", str(tmp_path / "a.png"), "-o", str(tmp_path / "ok.hpcm"), *ex]
                         ).exit_code == 0
    real_write = Path.write_bytes

    def disk_full(self, data):  # half of it lands, then the disk is full
        if self.name.endswith(".part"):
            real_write(self, data[:len(data) // 2])
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_write(self, data)

    with monkeypatch.context() as m:
        m.setattr(Path, "write_bytes", disk_full)
        result = runner.invoke(main, ["compress", str(tmp_path / "a.png"), "-o", str(tmp_path / "a.hpcm"), *ex])
    assert result.exit_code == 1 and result.output.count("\n") == 1, result.output
    assert "cannot write" in result.output and "No space left on device" in result.output
    assert not (tmp_path / "a.hpcm").exists()

    def no_permission(src, dst):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES))

    with monkeypatch.context() as m:
        m.setattr("hpcm_deploy.files.os.replace", no_permission)
        result = runner.invoke(main, ["decompress", str(tmp_path / "ok.hpcm"), "-o", str(tmp_path / "a.png.out.png"),
                                      *ex])
    assert result.exit_code == 1 and result.output.count("\n") == 1 and "Permission denied" in result.output
    assert not (tmp_path / "a.png.out.png").exists()
    assert not list(tmp_path.rglob("*.part"))
