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


@pytest.fixture(scope="session")
def tiny_phase2_export(tmp_path_factory, tiny_phase2):
    """The tiny Phase 2 model exported once per test session (dynamic batch)."""
    from hpcm_deploy.exporting.onnx_export import export_model

    return export_model(tiny_phase2, tmp_path_factory.mktemp("exports") / "tiny-phase2", "tiny-phase2", jobs=2)


@pytest.fixture(scope="session")
def tiny_base_export(tmp_path_factory, tiny_base):
    from hpcm_deploy.exporting.onnx_export import export_model

    return export_model(tiny_base, tmp_path_factory.mktemp("exports") / "tiny-base", "tiny-base", jobs=2)
