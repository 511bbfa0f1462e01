"""``hpcm-deploy train``: the loss, logging, checkpoints, and a resume that continues exactly where it stopped."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch

import hpcm_deploy as hd
from hpcm_deploy.cli.train import resolve_init
from hpcm_deploy.errors import CheckpointError, ConfigError
from hpcm_deploy.models.loading import copy_shared_weights
from hpcm_deploy.training.train import TrainSettings, bundle_weights, train

SETTINGS = TrainSettings(preset="tiny-base", steps=4, batch=1, crop=256, checkpoint_every=2, log_every=2, seed=3)


def test_resume_continues_exactly_and_the_weights_load(tmp_path):
    straight = train(tmp_path / "straight", SETTINGS)
    train(tmp_path / "split", replace(SETTINGS, steps=2))
    resumed = train(tmp_path / "split", SETTINGS)  # picks up the step-2 checkpoint
    a = torch.load(straight, weights_only=False)["state_dict"]
    b = torch.load(resumed, weights_only=False)["state_dict"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)

    log = [json.loads(line) for line in (tmp_path / "straight" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [2, 4]
    assert all(r["loss"] > 0 and r["bpp"] > 0 and r["psnr"] > 0 for r in log)

    model = hd.load_model(checkpoint=straight, seed=None)
    assert model.config == hd.get_config("tiny-base") and not model.training
    shipped = bundle_weights(straight, tmp_path / "shipped.pt")
    assert all(v.dtype == torch.float16 for v in torch.load(shipped, weights_only=False)["state_dict"].values()
               if v.is_floating_point())
    half = hd.load_model(checkpoint=shipped, seed=None)
    p_full, p_half = dict(model.named_parameters()), dict(half.named_parameters())
    assert all(torch.allclose(p_full[k], p_half[k], rtol=1e-3, atol=1e-4) for k in p_full)


def test_resume_with_other_settings_or_a_bad_crop_is_refused(tmp_path):
    train(tmp_path / "run", replace(SETTINGS, steps=1))
    with pytest.raises(CheckpointError, match="other settings"):
        train(tmp_path / "run", replace(SETTINGS, lmbda=0.013))
    with pytest.raises(ConfigError, match="multiple of 256"):
        train(tmp_path / "other", replace(SETTINGS, crop=200))


def test_a_run_can_start_from_shipped_weights(tmp_path):
    first = train(tmp_path / "first", replace(SETTINGS, steps=1, seed=4))  # other weights than seed 3
    shipped = bundle_weights(first, tmp_path / "shipped.pt")
    cont = train(tmp_path / "cont", replace(SETTINGS, steps=1), init=shipped)
    fresh = train(tmp_path / "fresh", replace(SETTINGS, steps=1))
    a, b, c = (torch.load(p, weights_only=False)["state_dict"] for p in (shipped, cont, fresh))
    k = "g_a.branch.0.weight"
    # one step from the shipped weights stays near them; a fresh run is elsewhere
    assert (b[k] - a[k].float()).abs().max() < (c[k] - a[k].float()).abs().max()
    with pytest.raises(CheckpointError, match="differs in N"):  # other layer widths: nothing to start from
        train(tmp_path / "wrong", replace(SETTINGS, steps=1, overrides=(("N", 48),)), init=shipped)


def test_an_ablation_starts_from_weights_that_differ_only_in_banks(tmp_path):
    """Phase 2 without the s1/s2 banks (or without transfer) from the shipped Phase 2 weights: every shared
    layer is copied exactly; the banks the ablation drops are dropped; HPCM-Base weights start Phase 2 with
    fresh banks."""
    shipped = hd.load_model(checkpoint=resolve_init("demo-phase2"), seed=None)
    s3_only = hd.load_model("tiny-phase2", seed=5, max_refs_s1=0, max_refs_s2=0)
    left = copy_shared_weights(s3_only, shipped)
    assert left == {"fresh": [], "dropped": ["memory_bank_s1", "memory_bank_s2"]}
    own = s3_only.state_dict()
    for k, v in shipped.state_dict().items():
        if not k.startswith(("memory_bank_s1", "memory_bank_s2")):
            assert torch.equal(own[k], v), k
    phase2 = hd.load_model("tiny-phase2", seed=5)
    banks_before = {k: v.clone() for k, v in phase2.state_dict().items() if k.startswith("memory_bank_")}
    left = copy_shared_weights(phase2, hd.load_model(checkpoint=resolve_init("demo-base"), seed=None))
    assert "memory_bank_s3" in left["fresh"] and left["dropped"] == []
    assert all(torch.equal(phase2.state_dict()[k], v) for k, v in banks_before.items())
    with pytest.raises(CheckpointError, match="no such file"):
        resolve_init(tmp_path / "missing.pt")


def test_the_command_shows_progress_and_says_resumed_as_news(tmp_path):
    """Not a terminal (as here): a plain line per 100 steps and at the end, with loss, PSNR, bpp and the time
    left; a resumed run says so in a plain line, not as a WARNING."""
    from click.testing import CliRunner

    from hpcm_deploy.cli import main

    args = ["train", "--preset", "tiny-base", "--batch", "1", "--out", str(tmp_path / "run")]
    first = CliRunner().invoke(main, [*args, "--steps", "1"])
    assert first.exit_code == 0, first.output
    line = first.stderr.strip().splitlines()[-1]
    assert line.startswith("step 1/1  loss ") and " dB " in line and " bpp" in line and "h left" in line
    assert first.stdout.strip() == f"wrote {tmp_path / 'run' / 'model.pt'}"
    second = CliRunner().invoke(main, [*args, "--steps", "2"])
    assert second.exit_code == 0, second.output
    assert second.stderr.splitlines()[0].startswith(f"resumed {tmp_path / 'run'} at step 1 (")
    assert "WARNING" not in second.stderr and second.stderr.strip().splitlines()[-1].startswith("step 2/2  loss ")
