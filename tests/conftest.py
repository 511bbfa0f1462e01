from __future__ import annotations

import pytest

import hpcm_deploy as hd

from .helpers import open_gates, spread


@pytest.fixture(scope="session")
def tiny_base() -> hd.HPCM:
    return spread(hd.load_model("tiny-base", seed=1))


@pytest.fixture(scope="session")
def tiny_phase2() -> hd.HPCM:
    model = spread(hd.load_model("tiny-phase2", seed=2))
    open_gates(model)
    return model
