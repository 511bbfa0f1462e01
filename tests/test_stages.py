"""The coding program and the stage modules: the PyTorch stages are the reference model, cut up."""

import pytest
import torch

import hpcm_deploy as hd
from hpcm_deploy.backends.torch_backend import TorchBackend
from hpcm_deploy.entropy.tables import EntropyTables
from hpcm_deploy.runtime.runner import ProgramRunner
from hpcm_deploy.stages import build_program

from .helpers import images


def test_program_is_single_assignment_and_complete():
    for name in ("tiny-phase2", "phase2", "phase2-quality", "hpcm-base"):
        for schedule in ("seed", "reference"):
            prog = build_program(hd.get_config(name, multiref_schedule=schedule))
            for ops, encoding, start in ((prog.encode, True, {"x"}), (prog.decode, False, set())):
                known = set(start)
                produced: set[str] = set()
                for op in ops:
                    for n in prog.reads(op, encoding):
                        # a stage's top-k override is supplied by the host coder (signalled decisions)
                        assert n in known or n.startswith("topk_force."), (name, schedule, op, n)
                    if op.kind == "stage":
                        outs = prog.stages[str(op.ref)].outputs
                        assert not produced & set(outs), outs  # every tensor is written once
                        produced |= set(outs)
                        known |= set(outs)
                    elif op.kind == "code_y":
                        known.add(prog.code_steps[int(op.ref)].q)
                    else:
                        known.add("z_q")
                assert ("x_hat" in known) != encoding
    names = list(build_program(hd.get_config("tiny-phase2")).stages)
    assert names == ["g_a", "h_a", "h_s", "y_pack", "s1_start", "s1_step1", "s2_enter", "s2_step1", "s2_step2",
                     "s2_step3", "s3_enter", "s3_step2", "s3_step3", "s3_step4", "s3_step5", "s3_step6", "s3_step7",
                     "g_s"]


def test_bank_tensors_are_explicit_stage_io():
    prog = build_program(hd.get_config("tiny-phase2"))
    s2 = prog.stages["s2_step2"]
    assert "keys_s2.s2_step1" in s2.inputs and "keys_s2.s2_step2" in s2.outputs
    assert prog.tensors["values_s2.s2_step2"].shape == ("B", 3, 128, 8, 8)
    assert "keys_s1.s1_step1" in prog.stages["s2_enter"].inputs  # the transfer reads the s1 bank
    assert not any(o.startswith("keys") for o in prog.stages["s3_step7"].outputs)  # nothing reads it later
    base = build_program(hd.get_config("tiny-base"))
    assert not any("keys" in t for t in base.tensors)
    no_transfer = build_program(hd.get_config("tiny-phase2", enable_hierarchical_transfer=False))
    assert not any(i.startswith("keys_s1") for i in no_transfer.stages["s2_enter"].inputs)


@pytest.mark.parametrize("name", ["tiny_base", "tiny_phase2"])
@pytest.mark.parametrize("batch,h,w", [(1, 256, 256), (2, 512, 256)])
def test_torch_stages_equal_the_reference_model(request, name, batch, h, w):
    model = request.getfixturevalue(name)
    prog = build_program(model.config)
    runner = ProgramRunner(prog, TorchBackend(model, prog), EntropyTables.from_model(model))
    x = images(batch, h, w, seed=batch * h)
    enc = runner.encode(x, legacy=True)  # CompressAI payloads: the official code's strings
    ref = model.compress(x, return_latents=True)
    assert enc.y_strings == ref["strings"][0] and enc.z_strings == ref["strings"][1]
    assert all((a == b).all() for a, b in zip(enc.symbols, ref["symbols"]))
    dec = runner.decode(enc.y_strings, enc.z_strings, enc.z_shape, legacy=True)
    assert all((a == b).all() for a, b in zip(dec.symbols, enc.symbols))
    assert torch.equal(dec.x_hat, model.decompress(ref["strings"], ref["shape"])["x_hat"])
    lane = runner.encode(x)  # lane payloads (version 3): same symbols, same reconstruction
    assert all((a == b).all() for a, b in zip(lane.symbols, ref["symbols"]))
    dec = runner.decode(lane.y_strings, lane.z_strings, lane.z_shape)
    assert all((a == b).all() for a, b in zip(dec.symbols, enc.symbols))
    assert torch.equal(dec.x_hat, model.decompress(ref["strings"], ref["shape"])["x_hat"])


@pytest.mark.parametrize("overrides", [{"multiref_schedule": "reference"}, {"max_refs_s2": 0},
                                       {"enable_hierarchical_transfer": False}, {"value_resolution": 4}])
def test_torch_stages_follow_every_phase2_variant(overrides):
    model = hd.load_model("tiny-phase2", seed=4, **overrides)
    prog = build_program(model.config)
    runner = ProgramRunner(prog, TorchBackend(model, prog), EntropyTables.from_model(model))
    x = images(1, 256, 256, seed=7)
    assert runner.encode(x, legacy=True).y_strings == model.compress(x)["strings"][0]
