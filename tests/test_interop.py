"""Signalled decisions: a stream decodes exactly on a decoder whose arithmetic differs from the encoder's.

Near-edge scales and near-tie top-k scores are constructed deliberately: an encoder-side wrapper moves some
predicted scales onto a bucket edge (just across it), a model with constant bank keys makes every top-k
choice an exact tie, and a decoder-side wrapper perturbs what the decoder computes by a tiny amount, as
another backend's rounding would.
"""

from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest
import torch

import hpcm_deploy as hd
from hpcm_deploy.backends.base import Backend
from hpcm_deploy.backends.torch_backend import TorchBackend
from hpcm_deploy.codec import container
from hpcm_deploy.entropy.tables import EntropyTables
from hpcm_deploy.runtime.decisions import Margins, SideInfo, near_edges
from hpcm_deploy.runtime.runner import ProgramRunner
from hpcm_deploy.stages import build_program

from .helpers import images, open_gates, spread


class Skewed(Backend):
    """Another backend's arithmetic, simulated: wraps a backend and changes what some stages compute."""

    def __init__(self, inner: TorchBackend, edges: np.ndarray, snap: float = 0.0, scale_noise: float = 0.0,
                 key_noise: float = 0.0, seed: int = 0) -> None:
        self.inner, self.edges = inner, torch.from_numpy(edges)
        self.snap, self.scale_noise, self.key_noise = snap, scale_noise, key_noise
        self.gen = torch.Generator().manual_seed(seed)
        self.name, self.device, self.torch_native = "skewed", inner.device, True
        self.snapped = 0

    @classmethod
    def open(cls, export, device, options):  # a wrapper around an open backend, never opened from an export
        raise NotImplementedError

    def run(self, stage: str, inputs: Sequence[Any]) -> list[Any]:
        spec = self.inner.modules[stage].spec
        if self.key_noise:
            inputs = [t * (1 + self.key_noise * torch.randn(t.shape, generator=self.gen)) if n.startswith("keys_")
                      else t for n, t in zip(spec.inputs, inputs)]
        outs = self.inner.run(stage, inputs)
        for i, name in enumerate(spec.outputs):
            if name.startswith("scales."):
                outs[i] = self._scales(outs[i])
        return outs

    def _scales(self, s: torch.Tensor) -> torch.Tensor:
        if self.snap:  # move scales within `snap` (log distance) of an edge just across that edge
            i = torch.searchsorted(self.edges, s.contiguous()).clamp(1, len(self.edges) - 1)
            lo, hi = self.edges[i - 1], self.edges[i]
            to_lo = (s.log() - lo.log()).abs() < self.snap
            to_hi = (s.log() - hi.log()).abs() < self.snap
            s = torch.where(to_lo, lo * (1 - 1e-6), torch.where(to_hi, hi * (1 + 1e-6), s))
            self.snapped += int((to_lo | to_hi).sum())
        if self.scale_noise:
            s = s * (1 + self.scale_noise * torch.randn(s.shape, generator=self.gen))
        return s

    def from_host(self, array: np.ndarray) -> Any:
        return self.inner.from_host(array)

    def to_host(self, tensor: Any) -> np.ndarray:
        return self.inner.to_host(tensor)


def _runners(model: hd.HPCM, **skew):
    prog = build_program(model.config)
    tables = EntropyTables.from_model(model)
    plain = TorchBackend(model, prog)
    return prog, tables, ProgramRunner(prog, plain, tables), plain


def _decodes_exactly(runner: ProgramRunner, enc, side) -> bool:
    """Whether ``runner`` reads back exactly ``enc``'s symbols: a desynchronised decoder either reads other
    symbols or, far more often, finds the stream inconsistent (a BitstreamError)."""
    try:
        dec = runner.decode(enc.y_strings, enc.z_strings, enc.z_shape, side=side)
    except hd.BitstreamError:
        return False
    return all(bool((a == b).all()) for a, b in zip(dec.symbols, enc.symbols))


@pytest.fixture(scope="module")
def model() -> hd.HPCM:
    m = spread(hd.load_model("tiny-phase2", seed=11))
    open_gates(m)
    return m


def test_near_edge_scales_break_a_plain_stream_and_signalling_repairs_it(model):
    prog, tables, _, plain = _runners(model)
    encoder = ProgramRunner(prog, Skewed(plain, tables.scale_edges, snap=0.01), tables)
    decoder = ProgramRunner(prog, Skewed(plain, tables.scale_edges, scale_noise=1e-6, seed=1), tables)
    x = images(1, 256, 256, seed=3)
    unsignalled = encoder.encode(x)
    assert encoder.backend.snapped > 50  # the construction really put scales on edges
    assert not _decodes_exactly(decoder, unsignalled, None)
    margins = Margins(scale=2e-5, topk=1e-4)
    signalled = encoder.encode(x, margins=margins)
    assert signalled.y_strings == unsignalled.y_strings  # signalling changes no symbol, only adds side info
    side = [SideInfo.from_bytes(s.to_bytes()) for s in signalled.side]  # through the serialised form
    assert sum(len(p) for p, _ in side[0].cdf.values()) >= encoder.backend.snapped // 2
    assert _decodes_exactly(decoder, signalled, side)


def test_tied_topk_choices_break_a_plain_stream_and_signalling_repairs_it():
    tied = spread(hd.load_model("tiny-phase2", seed=12))
    open_gates(tied)
    with torch.no_grad():  # constant keys: every similarity is equal, every top-k choice is a tie
        for s in (1, 2, 3):
            tied.bank(s).key_encoder[0].weight.zero_()
            tied.bank(s).key_encoder[1].bias.fill_(0.7)
    prog, tables, encoder, plain = _runners(tied)
    decoder = ProgramRunner(prog, Skewed(plain, tables.scale_edges, key_noise=1e-4, seed=2), tables)
    x = images(1, 256, 256, seed=5)
    unsignalled = encoder.encode(x)
    assert len(unsignalled.choices) == 9  # s2 steps 1-3 and s3 steps 2-7 choose 2 of 3 or 4 entries
    assert all(float(g.max()) < 1e-6 for _, g in unsignalled.choices.values())  # (near) ties everywhere
    assert not _decodes_exactly(decoder, unsignalled, None)
    signalled = encoder.encode(x, margins=Margins())
    side = [SideInfo.from_bytes(s.to_bytes()) for s in signalled.side]
    assert set(side[0].topk) == set(unsignalled.choices)  # every choice was signalled
    assert _decodes_exactly(decoder, signalled, side)


def test_side_information_round_trips_and_rejects_garbage():
    info = SideInfo(Margins(3e-5, 2e-4))
    info.cdf[3] = (np.array([0, 7, 8, 4000], dtype=np.int64), np.array([5, 6, 6, 59], dtype=np.int32))
    info.cdf[9] = (np.array([123456], dtype=np.int64), np.array([1], dtype=np.int32))
    info.topk[7] = np.array([2, 0])
    back = SideInfo.from_bytes(info.to_bytes())
    assert back.margins == Margins(np.float32(3e-5), np.float32(2e-4))
    assert {k: (p.tolist(), v.tolist()) for k, (p, v) in back.cdf.items()} == \
        {k: (p.tolist(), v.tolist()) for k, (p, v) in info.cdf.items()}
    assert back.topk[7].tolist() == [2, 0] and back.count == 6
    with pytest.raises(hd.BitstreamError):
        SideInfo.from_bytes(info.to_bytes()[:-1])
    with pytest.raises(hd.BitstreamError):
        SideInfo.from_bytes(b"\x09" + info.to_bytes()[1:])


def test_near_edges_measures_log_distance():
    edges = np.array([1.0, 2.0, 4.0], dtype=np.float32)
    s = np.array([1.0, 1.00001, 1.1, 1.99999, 3.0, 4.00008, -1.0, 0.0], dtype=np.float32)
    assert near_edges(s, edges, 1e-4).tolist() == [True, True, False, True, False, True, False, False]


def test_codec_streams_carry_the_decisions(model):
    codec = hd.Codec.from_model(model)
    plain = hd.Codec.from_model(model, margins=None)
    pic = (images(1, 300, 400, seed=9)[0].permute(1, 2, 0).numpy() * 255).astype(np.uint8)
    a, b = codec.compress(pic), plain.compress(pic)
    assert b[4] == 3 and b[5] == 2  # lane payloads, no signalling
    assert a[4] == 3 and a[5] == 3  # with side information (a 300x400 image always has a decision near an edge)
    assert container.parse(a).side and not container.parse(b).side
    assert np.array_equal(codec.decompress(a, kind="numpy"), plain.decompress(b, kind="numpy"))


def test_verify_measures_cross_backend_decoding_on_random_images(tiny_phase2_export, tiny_phase2):
    """The measurement behind `verify --random-images`: every signalled stream decodes on the other backend,
    and the scale error between ONNX Runtime and PyTorch stays inside the margin."""
    from hpcm_deploy.artifacts.export import Manifest
    from hpcm_deploy.backends.onnxrt import OnnxRuntimeBackend
    from hpcm_deploy.checks.verify import compare_random_images

    manifest = Manifest.load(tiny_phase2_export)
    program = manifest.program()
    backend = OnnxRuntimeBackend(manifest)
    tables = EntropyTables.load(manifest.path("tables"))
    margins = Margins()
    r = compare_random_images(tiny_phase2, program, backend, tables, [(256, 256), (256, 512)], margins)
    assert r["images"] == 2
    assert r["decode_failures"]["torch->other/signalled"] == 0
    assert r["decode_failures"]["other->torch/signalled"] == 0
    assert 1 <= r["scale_error_images"] <= 2
    assert 0 < r["largest_scale_error"] < margins.scale
    assert r["side_bytes"] < r["stream_bytes"]
