import pytest

from hpcm_deploy import PRESETS, ConfigError, HPCMConfig, get_config


def test_presets_follow_the_seed():
    p2 = PRESETS["phase2"]
    assert (p2.max_refs_s1, p2.max_refs_s2, p2.max_refs_s3) == (2, 3, 4)
    assert (p2.topk_refs_s1, p2.topk_refs_s2, p2.topk_refs_s3) == (1, 2, 2)
    assert (p2.compress_ratio, p2.value_resolution, p2.enable_hierarchical_transfer) == (4, 8, True)
    assert p2.multiref_schedule == "seed" and p2.enable_multiref
    mem = PRESETS["phase2-memory"]
    assert (mem.compress_ratio, mem.value_resolution) == (8, 4)
    assert (mem.max_refs_s1, mem.max_refs_s2, mem.max_refs_s3) == (1, 2, 3)
    speed = PRESETS["phase2-speed"]
    assert (speed.topk_refs_s1, speed.topk_refs_s2, speed.topk_refs_s3) == (1, 1, 2)
    assert not speed.enable_hierarchical_transfer
    q = PRESETS["phase2-quality"]
    assert (q.compress_ratio, q.value_resolution, q.max_refs_s1, q.max_refs_s2, q.max_refs_s3) == (2, 16, 3, 4, 6)
    assert (q.topk_refs_s1, q.topk_refs_s2, q.topk_refs_s3) == (2, 3, 3)
    assert not PRESETS["hpcm-base"].enable_multiref and PRESETS["hpcm-base"].max_refs(1) == 0
    assert PRESETS["tiny-phase2"].M == 64 and PRESETS["tiny-phase2"].enable_multiref


def test_overrides_and_validation():
    c = get_config("phase2", max_refs_s1=0, multiref_schedule="reference")
    assert c.max_refs(1) == 0 and c.multiref_schedule == "reference"
    with pytest.raises(ConfigError, match="unknown configuration field"):
        get_config("phase2", max_ref_s1=3)
    with pytest.raises(ConfigError, match="unknown preset"):
        get_config("phase3")
    with pytest.raises(ConfigError, match="multiref_schedule"):
        get_config("phase2", multiref_schedule="sometimes")
    with pytest.raises(ConfigError, match="M=12"):
        HPCMConfig(M=12)


def test_config_round_trips_through_dict():
    c = get_config("tiny-phase2", value_resolution=4)
    assert HPCMConfig.from_dict(c.to_dict()) == c
