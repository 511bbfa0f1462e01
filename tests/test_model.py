"""The reference model: exact round trips, Phase 2 decisions, structure of the official model."""

from dataclasses import replace

import pytest
import torch

import hpcm_deploy as hd
from hpcm_deploy.models.hpcm import CODING_STEPS
from hpcm_deploy.models.memory import plan_memory, queried_partitions

from .helpers import images, open_gates, spread


def _round_trip(model: hd.HPCM, x: torch.Tensor) -> tuple[dict, dict]:
    enc = model.compress(x, return_latents=True)
    dec = model.decompress(enc["strings"], enc["shape"], return_latents=True)
    return enc, dec


def _assert_exact(model: hd.HPCM, enc: dict, dec: dict) -> None:
    assert len(enc["symbols"]) == len(dec["symbols"]) == len(CODING_STEPS)
    for a, b in zip(enc["symbols"], dec["symbols"]):
        assert (a == b).all()
    assert torch.equal(enc["y_hat"], dec["y_hat"])
    with torch.no_grad():
        assert torch.equal(dec["x_hat"], model.g_s(enc["y_hat"]).clamp(0, 1))


@pytest.mark.parametrize("name", ["tiny_base", "tiny_phase2"])
@pytest.mark.parametrize("batch,h,w", [(1, 256, 256), (2, 256, 512), (1, 512, 256)])
def test_round_trip_is_exact(request, name, batch, h, w):
    model = request.getfixturevalue(name)
    x = images(batch, h, w, seed=h + w + batch)
    enc, dec = _round_trip(model, x)
    assert len(enc["strings"][0]) == len(enc["strings"][1]) == batch
    assert sum(int((s != 0).sum()) for s in enc["symbols"]) > 1000  # not a trivial all-zero latent
    _assert_exact(model, enc, dec)


@pytest.mark.parametrize("name", ["tiny_base", "tiny_phase2"])
def test_any_size_through_pad_and_crop(request, name):
    model = request.getfixturevalue(name)
    x = images(1, 200, 333, seed=5)
    padded, size = hd.pad_image(x)
    assert padded.shape[-2:] == (256, 512) and size == (200, 333)
    enc, dec = _round_trip(model, padded)
    _assert_exact(model, enc, dec)
    out = hd.crop_image(dec["x_hat"], size)
    assert out.shape == x.shape
    assert torch.equal(hd.crop_image(padded, size), x)


def test_unpadded_input_is_a_clear_error(tiny_base):
    with pytest.raises(hd.InputError, match="multiple of 256"):
        tiny_base.compress(torch.rand(1, 3, 200, 256))


def test_batch_members_get_their_own_memory(tiny_phase2):
    x = images(2, 256, 256, seed=9)
    both = tiny_phase2.compress(x)["strings"]
    alone = [tiny_phase2.compress(x[i:i + 1])["strings"] for i in range(2)]
    assert both[0][0] != both[0][1]
    assert [both[0][i] for i in range(2)] == [alone[i][0][0] for i in range(2)]
    assert [both[1][i] for i in range(2)] == [alone[i][1][0] for i in range(2)]


@pytest.mark.parametrize("scale", [1, 2, 3])
def test_a_scale_without_bank_runs(scale):
    model = open_gates_model("tiny-phase2", **{f"max_refs_s{scale}": 0})
    assert model.bank(scale) is None and all(model.bank(s) is not None for s in (1, 2, 3) if s != scale)
    enc, dec = _round_trip(model, images(1, 256, 256, seed=scale))
    _assert_exact(model, enc, dec)


def open_gates_model(name: str, seed: int = 3, **overrides) -> hd.HPCM:
    model = spread(hd.load_model(name, seed=seed, **overrides))
    open_gates(model)
    return model


def test_transfer_fills_the_next_banks_and_changes_the_output():
    on = open_gates_model("tiny-phase2", enable_hierarchical_transfer=True)
    off = open_gates_model("tiny-phase2", enable_hierarchical_transfer=False)
    shared = {k: v for k, v in on.state_dict().items() if not k.startswith("hierarchical_manager")}
    off.load_state_dict(shared)
    x = images(1, 256, 256, seed=11)
    with torch.no_grad():
        y = on.g_a(x)
        params = on.hyper_params(on.hyper_quantize(y))
        s1 = on.enter_scale(1, params)
        _, _, s1, _ = on.network_step(1, 1, s1)
        s2 = on.enter_scale(2, params, s1)
        s2_off = off.enter_scale(2, params, s1)
    # s2's bank starts with the two s1 entries (slots 0, 1) before its own initial context (slot 2)
    assert [dst for dst, _ in on.memory_plan[2].transfer] == [0, 1]
    assert on.memory_plan[2].init_slot == 2 and off.memory_plan[2].init_slot == 0
    assert torch.equal(s2.keys[:, 0], s1.keys[:, 0]) and torch.equal(s2.keys[:, 1], s1.keys[:, 1])
    assert s2.keys[:, :3].abs().sum(-1).min() > 0
    assert s2_off.keys[:, 1:].abs().sum() == 0
    assert len(on.memory_plan[3].transfer) == 3  # s3 (capacity 4) starts with s2's last three entries
    assert on.memory_plan[2].steps[0].query_valid == 3 and off.memory_plan[2].steps[0].query_valid == 1
    a, b = on.compress(x)["strings"][0][0], off.compress(x)["strings"][0][0]
    assert a != b


def test_reference_schedule_differs_exactly_where_the_reference_code_skips():
    seed_cfg = hd.get_config("tiny-phase2")
    ref_cfg = replace(seed_cfg, multiref_schedule="reference")
    assert queried_partitions(seed_cfg, 2) == (1, 2, 3) and queried_partitions(ref_cfg, 2) == (2, 3)
    assert queried_partitions(seed_cfg, 3) == (2, 3, 4, 5, 6, 7) and queried_partitions(ref_cfg, 3) == (3, 4, 5, 6, 7)
    assert queried_partitions(seed_cfg, 1) == queried_partitions(ref_cfg, 1) == (1,)
    seed_model = open_gates_model("tiny-phase2")
    ref_model = open_gates_model("tiny-phase2", multiref_schedule="reference")
    ref_model.load_state_dict(seed_model.state_dict())
    x = images(1, 256, 256, seed=4)
    differing = []
    with torch.no_grad():
        y = seed_model.g_a(x)
        params = seed_model.hyper_params(seed_model.hyper_quantize(y))
        state = seed_model.enter_scale(1, params)
        for index, (scale, part) in enumerate(CODING_STEPS):
            if index and scale != CODING_STEPS[index - 1][0]:
                state = seed_model.enter_scale(scale, params, state)
            if (scale, part) == (1, 0):
                continue
            _, _, a, _ = seed_model.network_step(scale, part, state)
            _, _, b, _ = ref_model.network_step(scale, part, state)
            if not torch.equal(a.context, b.context):
                differing.append((scale, part))
            state = a
    assert differing == [(2, 1), (3, 2)]


def test_official_structure_and_parameter_count():
    model = hd.build_model(hd.get_config("hpcm-base"), seed=0)
    n = sum(p.numel() for name, p in model.named_parameters() if not name.startswith("adaptive_params_list"))
    assert n == 68_495_699  # the official HPCM-Base, counted on the official code
    names = set(model.state_dict())
    for key in ("g_a.branch.1.branch.0.pconv.weight", "h_s.branch.5.branch.3.bias", "attn_s3.conv_out.weight",
                "y_spatial_prior_s3.branch_2.2.weight", "y_spatial_prior_adaptor_list_s2.2.weight",
                "context_net.1.bias", "adaptive_params_list.9", "means_hyper", "scales_hyper"):
        assert key in names


def test_memory_is_state_not_parameters(tiny_phase2):
    names = list(tiny_phase2.state_dict())
    assert any(n.startswith("memory_bank_s3.fusion_gate") for n in names)
    assert not any("memory_keys" in n or "memory_values" in n or "memory_initialized" in n for n in names)


def test_static_plan_never_reads_a_skipped_write():
    for name in ("phase2", "phase2-memory", "phase2-quality", "phase2-speed"):
        for schedule in ("seed", "reference"):
            plans = plan_memory(hd.get_config(name, multiref_schedule=schedule))
            for plan in plans.values():
                written: set[int] = {d for d, _ in plan.transfer}
                if plan.init_slot is not None:
                    written.add(plan.init_slot)
                for step in plan.steps:
                    assert set(range(step.query_valid)) <= written, (name, schedule, plan.scale)
                    if step.write_slot is not None:
                        written.add(step.write_slot)
            assert plans[3].steps[-1].write_slot is None  # nothing reads the last s3 write


def test_training_forward_reaches_every_parameter():
    model = spread(hd.load_model("tiny-phase2", seed=0)).train()
    open_gates(model)
    out = model(images(2, 256, 256))
    bpp = sum(-lik.log2().sum() for lik in out["likelihoods"].values()) / (2 * 256 * 256)
    loss = 0.01 * 255 ** 2 * torch.mean((out["x_hat"] - images(2, 256, 256)) ** 2) + bpp
    loss.backward()
    dead = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    # A bank whose every query keeps one entry (top-1) gives it weight 1 whatever the similarity, so its
    # query projection cannot affect the loss (s1 of the seed presets: top-1 of one stored entry).
    # Nothing else may be cut off from the loss.
    inert = [f"memory_bank_s{s}.query_proj.0.{p}" for s, plan in model.memory_plan.items()
             if plan.active and all(step.topk <= 1 for step in plan.steps) for p in ("weight", "bias")]
    assert inert == ["memory_bank_s1.query_proj.0.weight", "memory_bank_s1.query_proj.0.bias"]
    assert dead == inert


def test_forward_likelihoods_have_the_latent_layout():
    """``likelihoods["y"]`` is ``[B, M, H/16, W/16]`` (CompressAI's convention), and each position holds the
    likelihood of its own symbol: packing the map step by step gives back what the coding loop computed."""
    from hpcm_deploy.entropy import ggm
    from hpcm_deploy.models import lattice

    model = hd.load_model("tiny-phase2", seed=3)
    x = images(2, 256, 512, seed=4)
    with torch.no_grad():
        out = model(x)
        lik = out["likelihoods"]["y"]
        assert lik.shape == (2, model.config.M, 16, 32) and out["likelihoods"]["z"].shape == (2, model.config.N, 4, 8)
        y = model.g_a(x)
        params = model.hyper_params(model.hyper_quantize(y))
        steps = model.packed_latent(y)
        coded = []

        def code(index, scales, means):
            q = torch.round(steps[index] - means)
            coded.append(ggm.likelihood(q, scales))
            return q

        model.progressive(params, code)
    for index, (scale, part) in enumerate(CODING_STEPS):
        grid = lattice.to_scale(lik, scale)
        assert torch.equal(lattice.pack(grid, lattice.step_masks(grid, scale, part)), coded[index])
