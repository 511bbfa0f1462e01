from __future__ import annotations

import os
from pathlib import Path

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


def _export(model: hd.HPCM, name: str, tmp_path_factory) -> Path:
    """The model exported once per test session (dynamic batch). With ``HPCM_TEST_EXPORTS=DIR`` (for repeated
    local runs, not CI) an export already in DIR is reused when it holds exactly this model."""
    from hpcm_deploy.artifacts.export import Manifest, model_fingerprint
    from hpcm_deploy.entropy.tables import EntropyTables
    from hpcm_deploy.errors import ExportError
    from hpcm_deploy.exporting.onnx_export import export_model

    cache = os.environ.get("HPCM_TEST_EXPORTS")
    root = Path(cache) / name if cache else tmp_path_factory.mktemp("exports") / name
    if cache:
        fingerprint = model_fingerprint(model.config, model.state_dict(), EntropyTables.from_model(model).digest())
        try:
            if Manifest.load(root).fingerprint == fingerprint:
                return root
        except ExportError:
            pass
    return export_model(model, root, name, jobs=2)


@pytest.fixture(scope="session")
def tiny_phase2_export(tmp_path_factory, tiny_phase2):
    return _export(tiny_phase2, "tiny-phase2", tmp_path_factory)


@pytest.fixture(scope="session")
def tiny_base_export(tmp_path_factory, tiny_base):
    return _export(tiny_base, "tiny-base", tmp_path_factory)
