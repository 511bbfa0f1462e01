"""Checkpoint formats: raw, wrapped, prefixed; official HPCM-Base and Phase 2 reference-code files."""

import logging

import pytest
import torch

import hpcm_deploy as hd

OFFICIAL_BUFFERS = {
    "scale_table": torch.zeros(0), "quantized_cdf_z": torch.zeros(0), "cdf_length_z": torch.zeros(0),
    "offset_z": torch.zeros(0), "quantized_cdf_y": torch.zeros(0), "cdf_length_y": torch.zeros(0),
    "offset_y": torch.zeros(0), "entropy_estimation.beta": torch.tensor([1.5]),
    "entropy_estimation.scale_lower_bound.bound": torch.tensor([0.12]),
    "entropy_estimation.likelihood_lower_bound.bound": torch.tensor([1e-9]),
}


def _official_like(seed: int = 5) -> dict:
    """A state_dict laid out like an official HPCM-Base file (tiny widths): table buffers, no adaptive params."""
    sd = hd.build_model(hd.get_config("tiny-base"), seed=seed).state_dict()
    sd = {k: v for k, v in sd.items() if not k.startswith("adaptive_params_list")}
    return {**sd, **OFFICIAL_BUFFERS}


def _same_weights(a: hd.HPCM, b: hd.HPCM, prefix: str = "") -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return all(torch.equal(sa[k], sb[k]) for k in sa if k.startswith(prefix) and k in sb)


@pytest.mark.parametrize("wrap", ["raw", "state_dict", "module"])
def test_wrapped_forms_load(tmp_path, wrap):
    src = hd.build_model(hd.get_config("tiny-phase2"), seed=7)
    sd = src.state_dict()
    obj = {"raw": sd, "state_dict": {"state_dict": sd, "epoch": torch.tensor(3)},
           "module": {f"module.{k}": v for k, v in sd.items()}}[wrap]
    path = tmp_path / "ckpt.pth"
    torch.save(obj, path)
    model = hd.load_model("tiny-phase2", path)
    assert _same_weights(src, model) and not model.training and model.table_y is not None


def test_official_file_loads_into_base_and_phase2(caplog):
    official = _official_like()
    base = hd.load_model("tiny-base", official)
    assert all(torch.equal(p, torch.ones_like(p)) for p in base.adaptive_params_list)
    with caplog.at_level(logging.WARNING):
        p2 = hd.load_model("tiny-phase2", official)
    assert "initialised fresh" in caplog.text and "memory_bank_s1" in caplog.text
    assert _same_weights(base, p2, "g_a.") and _same_weights(base, p2, "attn_s2.")


def test_reference_code_file_loads_with_a_notice(caplog):
    sd = hd.build_model(hd.get_config("tiny-phase2"), seed=8).state_dict()
    extras = {}
    for s, cap in ((1, 2), (2, 3), (3, 4)):
        extras[f"memory_bank_s{s}.memory_keys"] = torch.zeros(1, cap, 32, 1, 1)
        extras[f"memory_bank_s{s}.memory_initialized"] = torch.zeros(cap, dtype=torch.bool)
        extras[f"memory_bank_s{s}.memory_values"] = torch.zeros(1, cap, 128, 8, 8)
        for part in ("query", "key", "value"):
            extras[f"memory_bank_s{s}.mha_{part}.weight"] = torch.zeros(32, 32)
            extras[f"memory_bank_s{s}.mha_{part}.bias"] = torch.zeros(32)
    with caplog.at_level(logging.WARNING):
        model = hd.load_model("tiny-phase2", {**sd, **extras, **OFFICIAL_BUFFERS})
    assert "ignored 27 Phase 2 reference-code entries" in caplog.text
    assert torch.equal(model.state_dict()["memory_bank_s2.fusion_gate.0.bias"], sd["memory_bank_s2.fusion_gate.0.bias"])


def test_mismatches_name_the_keys():
    sd = hd.build_model(hd.get_config("tiny-base"), seed=1).state_dict()
    missing = {k: v for k, v in sd.items() if k != "h_a.branch.1.weight"}
    with pytest.raises(hd.CheckpointError, match=r"missing 1: h_a\.branch\.1\.weight"):
        hd.load_model("tiny-base", missing)
    with pytest.raises(hd.CheckpointError, match=r"unexpected 1: g_a\.extra"):
        hd.load_model("tiny-base", {**sd, "g_a.extra": torch.zeros(1)})
    with pytest.raises(hd.CheckpointError, match=r"shape mismatch.*g_a\.branch\.0\.weight"):
        hd.load_model("tiny-base", {**sd, "g_a.branch.0.weight": torch.zeros(1, 3, 4, 4)})
    with pytest.raises(hd.CheckpointError, match="shape mismatch"):
        hd.load_model("hpcm-base", sd)  # a tiny checkpoint into the full-size model
    with pytest.raises(hd.CheckpointError, match="beta"):
        hd.load_model("tiny-base", {**sd, "entropy_estimation.beta": torch.tensor([2.0])})
    partial_bank = {**hd.build_model(hd.get_config("tiny-phase2"), seed=1).state_dict()}
    del partial_bank["memory_bank_s2.fusion_net.0.weight"]
    with pytest.raises(hd.CheckpointError, match="memory_bank_s2.fusion_net.0.weight"):
        hd.load_model("tiny-phase2", partial_bank)


def test_unreadable_files(tmp_path):
    with pytest.raises(hd.CheckpointError, match="not found"):
        hd.load_model("tiny-base", tmp_path / "nope.pth")
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"this is not a checkpoint")
    with pytest.raises(hd.CheckpointError, match="junk.pth is not a PyTorch checkpoint .*starts with b'this'"):
        hd.load_model("tiny-base", junk)
    broken = tmp_path / "broken.pth"
    broken.write_bytes(b"PK\x03\x04 a zip archive cut short")
    with pytest.raises(hd.CheckpointError, match="cannot read checkpoint"):
        hd.load_model("tiny-base", broken)


def test_own_checkpoint_carries_its_config(tmp_path):
    src = hd.build_model(hd.get_config("tiny-phase2", value_resolution=4), seed=2)
    path = tmp_path / "mine.pth"
    torch.save({"config": src.config.to_dict(), "state_dict": src.state_dict()}, path)
    model = hd.load_model(checkpoint=path)
    assert model.config == src.config and _same_weights(src, model)
