"""How often the host waits for the device: a counting wrapper around a real backend's blocking calls.

On the CPU nothing truly blocks, but the code path is the one a GPU runs: every ``synchronize``, ``to_host``
and ``fetch`` the runtime makes is a point where a CUDA host thread would wait for its stream. The targets
(issue 28): at most 3 per encode and at most one per coding step plus one per decode, per batch.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import hpcm_deploy as hd
from hpcm_deploy.backends.base import Backend
from hpcm_deploy.entropy.lanes import ScaleIndexer
from hpcm_deploy.models import lattice

from .helpers import images

STEPS = 11
ENCODE_WAITS = 3
DECODE_WAITS = STEPS + 1


@contextmanager
def counting(backend: Backend) -> Iterator[Counter]:
    """Count the blocking calls made on ``backend`` (its own methods still do the work). A ``fetch`` is one
    wait however many tensors it brings; calls it makes itself are not counted again."""
    counts: Counter = Counter()
    depth = [0]
    originals = {name: getattr(backend, name) for name in ("synchronize", "to_host", "fetch")}

    def wrap(name):
        real = originals[name]

        def counted(*args, **kwargs):
            if depth[0] == 0:
                counts[name] += 1
            depth[0] += 1
            try:
                return real(*args, **kwargs)
            finally:
                depth[0] -= 1
        return counted

    for name in originals:
        setattr(backend, name, wrap(name))
    try:
        yield counts
    finally:
        for name in originals:
            delattr(backend, name)  # the class's methods again


def _waits(counts: Counter) -> int:
    return sum(counts.values())


@pytest.mark.parametrize("backend", ["torch", "onnxruntime"])
@pytest.mark.parametrize("batch", [1, 2])
def test_waits_per_batch(request, backend, batch):
    if backend == "torch":
        codec = hd.Codec(request.getfixturevalue("tiny_phase2"))
    else:
        codec = hd.Codec(request.getfixturevalue("tiny_phase2_export"), backend="onnxruntime")
    x = images(batch, 128, 192, seed=3)
    with counting(codec.backend) as enc:
        streams = codec.compress([x[b] for b in range(batch)])
    assert _waits(enc) <= ENCODE_WAITS, enc
    with counting(codec.backend) as dec:
        out = codec.decompress(streams, kind="numpy")
    assert _waits(dec) <= DECODE_WAITS, dec
    assert len(out) == batch and out[0].shape == (128, 192, 3)
    # timings on request wait after every stage: that is what the default avoids
    with counting(codec.backend) as timed:
        codec.compress_detailed([x[0]], timings=True)
    assert timed["synchronize"] >= len(codec.program.encode) - STEPS - 1


def test_a_preview_waits_once_per_step_it_decodes(tiny_phase2):
    codec = hd.Codec(tiny_phase2)
    stream = codec.compress(images(1, 128, 128, seed=4)[0])
    with counting(codec.backend) as waits:
        codec.preview(stream, 2, kind="numpy")
    assert _waits(waits) <= 2 + 1, waits


def test_symbols_and_choices_cost_no_more_waits_when_asked(tiny_phase2):
    """Choices recorded on request (symbols=True) come back with the encoder's one fetch."""
    codec = hd.Codec(tiny_phase2)
    with counting(codec.backend) as waits:
        result = codec.compress_detailed([images(1, 128, 128, seed=5)[0]], symbols=True)[0]
    assert _waits(waits) <= ENCODE_WAITS
    assert result.choices and len(result.symbols) == STEPS


def test_out_of_range_tensor_refused_without_a_wait_of_its_own(tiny_phase2):
    codec = hd.Codec(tiny_phase2)
    x = images(1, 64, 64, seed=6)[0].clone()
    x[0, 3, 4] = 1.5
    with counting(codec.backend) as waits, pytest.raises(hd.InputError, match=r"\[0, 1\]"):
        codec.compress(x)
    assert _waits(waits) <= ENCODE_WAITS
    x[0, 3, 4] = float("nan")
    with pytest.raises(hd.InputError, match=r"\[0, 1\]"):
        codec.compress(x)


def test_device_bucketing_matches_the_host_indexer(tiny_phase2):
    """The CDF indexes the device buckets (torch) equal the host's, at and around every edge, for NaN, zero,
    negative, infinite and subnormal scales."""
    codec = hd.Codec(tiny_phase2)
    edges = codec.tables.scale_edges
    near = np.concatenate([edges, np.nextafter(edges, np.inf), np.nextafter(edges, -np.inf)]).astype(np.float32)
    special = np.array([np.nan, 0.0, -0.0, -1.0, np.inf, -np.inf, 1e-45, 1e30], dtype=np.float32)
    rng = np.random.default_rng(0)
    scales = np.concatenate([near, special, np.exp(rng.uniform(-6, 5, 4000)).astype(np.float32)])
    host = ScaleIndexer(edges)(scales)
    device = codec.backend.bucket(torch.from_numpy(scales), edges)
    assert device.dtype == torch.int16
    np.testing.assert_array_equal(device.numpy().astype(np.int32), host)
    np.testing.assert_array_equal(Backend.bucket(codec.backend, scales, edges).astype(np.int32), host)


def test_stream_needs_a_cuda_backend(tiny_phase2):
    codec = hd.Codec(tiny_phase2)
    with pytest.raises(hd.InputError, match="CUDA"):
        codec.compress(images(1, 64, 64)[0], stream=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (none here)")
def test_a_caller_stream_codes_as_the_default_stream(tiny_phase2):
    codec = hd.Codec(tiny_phase2, device="cuda")
    x = images(1, 128, 128, seed=7)[0].cuda()
    side = torch.cuda.Stream()
    default = codec.compress(x)
    assert codec.compress(x, stream=side) == default
    with counting(codec.backend) as waits:
        out = codec.decompress(default, kind="torch", stream=side)
    assert _waits(waits) <= DECODE_WAITS
    assert torch.equal(out, codec.decompress(default, kind="torch"))


class _DLPackOnly:
    """An array that offers nothing but the DLPack protocol (as CuPy or JAX arrays do), over a NumPy array."""

    def __init__(self, array: np.ndarray) -> None:
        self._array = array

    def __dlpack__(self, **kwargs):
        return self._array.__dlpack__(**kwargs)

    def __dlpack_device__(self):
        return self._array.__dlpack_device__()


def test_dlpack_round_trip_on_the_cpu(tiny_phase2):
    """A DLPack object in (uint8 [H, W, 3]) codes as the same NumPy array does; kind="dlpack" out is read in
    place by NumPy and equals the uint8 NumPy output."""
    codec = hd.Codec(tiny_phase2)
    array = (images(1, 96, 128, seed=8)[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    stream = codec.compress(_DLPackOnly(array))
    assert stream == codec.compress(array)
    out = codec.decompress(stream, kind="dlpack")
    back = np.from_dlpack(out)
    assert back.dtype == np.uint8 and back.shape == (96, 128, 3)
    np.testing.assert_array_equal(back, codec.decompress(stream, kind="numpy"))


def test_layouts_and_batches_code_alike(tiny_phase2):
    """uint8 and float, [H, W, C] and [C, H, W], one image or a 4-D batch: the same streams."""
    codec = hd.Codec(tiny_phase2)
    x = images(2, 64, 96, seed=9)
    u8 = (x * 255).round().to(torch.uint8)
    single = codec.compress(u8[0].permute(1, 2, 0).numpy())  # [H, W, C] uint8 array, as before
    assert codec.compress(u8[0].numpy()) == single  # [C, H, W] array
    assert codec.compress(u8[0].permute(1, 2, 0)) == single  # [H, W, C] uint8 tensor
    assert codec.compress(u8[:1]) == single  # a 4-D batch of one: one stream
    batch = codec.compress(u8)  # [N, C, H, W]: a list
    assert isinstance(batch, list) and len(batch) == 2
    assert codec.compress(u8.permute(0, 2, 3, 1)) == batch  # [N, H, W, C] (channels last)
    out = codec.decompress(single, kind="torch", dtype=torch.uint8, layout="HWC")
    assert out.dtype == torch.uint8 and tuple(out.shape) == (64, 96, 3)
    np.testing.assert_array_equal(out.numpy(), codec.decompress(single, kind="numpy"))


def test_batches_in_flight_equal_one_call(tiny_phase2):
    """compress_many/decompress_many: in order, and what compress/decompress give on the same batches."""
    codec = hd.Codec(tiny_phase2)
    x = images(5, 64, 64, seed=10)
    items = [x[i] for i in range(5)]
    streams = list(codec.compress_many(iter(items), in_flight=2, batch=2))
    assert streams == codec.compress(items[:2]) + codec.compress(items[2:4]) + codec.compress(items[4:])
    decoded = list(codec.decompress_many(streams, in_flight=3, batch=2, kind="numpy"))
    chunks = (streams[:2], streams[2:4], streams[4:])
    one_call = [im for chunk in chunks for im in codec.decompress(chunk, kind="numpy")]
    for got, want in zip(decoded, one_call, strict=True):  # same batches: same arithmetic, to the bit
        np.testing.assert_array_equal(got, want)
    with pytest.raises(hd.InputError, match="in_flight"):
        list(codec.compress_many(items, in_flight=0))


def test_a_thumbnail_preview_runs_only_the_decoded_steps_and_draws_the_last_complete_scale(tiny_phase2):
    codec = hd.Codec(tiny_phase2)
    x = images(1, 64, 128, seed=11)[0]
    stream = codec.compress(x)
    ran: list[str] = []
    real = codec.backend.run
    codec.backend.run = lambda stage, inputs: ran.append(stage) or real(stage, inputs)
    try:
        fast = codec.preview(stream, 2, kind="numpy", fill="thumbnail")
    finally:
        del codec.backend.run
    assert ran == ["h_s", "s1_start", "s1_step1", "g_s"]
    slow = codec.preview(stream, 2, kind="numpy", fill="context")
    assert fast.image.shape == slow.image.shape == (64, 128, 3) and fast.steps == 2
    # the picture is g_s of the s1 grid of the latent the encoder coded, enlarged 4x (computed here from the
    # reference model, not from the decoder's state)
    model = codec.backend.model
    with torch.no_grad():
        xp, _ = hd.pad_image(x[None])
        y_hat = model.compress(xp, return_latents=True)["y_hat"]
        for steps, scale in ((2, 1), (5, 2)):
            grid = lattice.to_scale(y_hat, scale)
            h, w = grid.shape[-2:]
            small = model.g_s(F.pad(grid, (0, -w % 4, 0, -h % 4), mode="replicate")).clamp(0, 1)
            small = small[..., : 16 * h, : 16 * w]
            want = F.interpolate(small, size=xp.shape[-2:], mode="bilinear", align_corners=False).clamp(0, 1)
            want = hd.crop_image(want, (64, 128))
            got = codec.preview(stream, steps, kind="numpy", fill="thumbnail").image
            np.testing.assert_allclose(got, want[0].permute(1, 2, 0).numpy(), atol=1e-5)
    # inside a scale, the last complete scale is drawn: the same picture as at its end
    for inside, end in ((3, 2), (4, 2), (7, 5), (10, 5)):
        np.testing.assert_array_equal(codec.preview(stream, inside, kind="numpy", fill="thumbnail").image,
                                      codec.preview(stream, end, kind="numpy", fill="thumbnail").image)
    first = codec.preview(stream, 1, kind="numpy", fill="thumbnail").image  # half of scale 1
    assert first.shape == (64, 128, 3) and np.isfinite(first).all() and 0 <= first.min() and first.max() <= 1
    with pytest.raises(hd.InputError, match="fill must be 'thumbnail' or 'context'"):
        codec.preview(stream, 2, fill="hyperprior")
