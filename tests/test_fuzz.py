"""Structure-aware fuzzing of the decoder: mutated streams with the checksum recomputed must end in an image of
the announced size or a BitstreamError, never another exception, a crash, a hang or a memory blow-up."""

from __future__ import annotations

import numpy as np
import pytest

import hpcm_deploy as hd
from hpcm_deploy.checks.fuzz import Layout, fuzz, mutate
from hpcm_deploy.codec import container
from hpcm_deploy.runtime.decisions import Margins

from .helpers import images


@pytest.fixture(scope="module")
def streams(tiny_phase2_export, tmp_path_factory):
    folder = tmp_path_factory.mktemp("streams")
    pic = (images(1, 40, 56, seed=3)[0].permute(1, 2, 0).numpy() * 255).astype(np.uint8)
    paths = []
    for name, options in {"v3-signalled": {"margins": Margins(4e-3, 1.0)}, "v3-plain": {"margins": None},
                          "v2": {"margins": Margins(4e-3, 1.0), "legacy_streams": True}}.items():
        path = folder / f"{name}.hpcm"
        path.write_bytes(hd.Codec(tiny_phase2_export, **options).compress(pic))
        paths.append(str(path))
    return paths


def test_mutations_keep_the_checksum_valid_and_reach_the_decoder(streams):
    rng = np.random.default_rng(0)
    past_crc = 0
    for i in range(300):
        source = open(streams[i % len(streams)], "rb").read()
        kind, data = mutate(source, rng)
        if kind == "truncate":
            continue
        try:
            container.parse(data)
            past_crc += 1
        except hd.BitstreamError as exc:
            assert "checksum" not in str(exc)  # the checksum is never what stops a mutated stream
    assert past_crc > 100  # many mutations parse as containers and reach the entropy decoder and the network
    layout = Layout.of(open(streams[0], "rb").read())
    assert layout.to_bytes() == open(streams[0], "rb").read() and layout.side


def test_fuzzed_streams_end_in_an_image_or_a_bitstream_error(tiny_phase2_export, streams):
    report = fuzz(tiny_phase2_export, streams, cases=240, seed=1, batch=120, case_timeout=120)
    assert report.cases == 240
    assert report.ok, report.bugs[:5]
    assert report.outcomes["BitstreamError"] > 100 and report.outcomes["decoded"] > 0
    assert set(report.kinds) >= {"header", "z", "y", "side", "side-structure"}


@pytest.mark.slow
def test_ten_thousand_fuzzed_streams(tiny_phase2_export, streams):
    report = fuzz(tiny_phase2_export, streams, cases=10000, seed=2024, batch=1000, case_timeout=120)
    assert report.cases == 10000 and report.ok, report.bugs[:10]
