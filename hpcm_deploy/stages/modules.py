"""Each stage of the program as a PyTorch module over positional tensors (what the exporter traces and what
the PyTorch backend runs). Every module calls the reference model's own step methods, so running the stages
is the reference computation, only cut at different places. Inputs and outputs are matched by the roles the
program gives them (:class:`~.program.StageSpec`), never by their names."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..models.hpcm import HPCM, ScaleState
from .program import CodingProgram, StageSpec


class StageModule(nn.Module):
    """Base: holds the model (its parameters become the graph's weights) and the stage's spec."""

    def __init__(self, model: HPCM, spec: StageSpec) -> None:
        super().__init__()
        self.model, self.spec = model, spec

    def _named(self, inputs: tuple[Tensor, ...]) -> dict[str, Tensor]:
        """The inputs by role."""
        return dict(zip(self.spec.roles, inputs))

    def _outputs(self, produced: dict[str, Tensor]) -> tuple[Tensor, ...]:
        return tuple(produced[role] for role in self.spec.out_roles)

    def _y_hat(self, named: dict[str, Tensor]) -> Tensor:
        """``y_hat`` with the last coded step placed, when this stage places one."""
        if self.spec.places is None:
            return named["y_hat"]
        return HPCM.place(*self.spec.places, named["y_hat"], named["q"], named["means"])


class Analysis(StageModule):
    def forward(self, x: Tensor) -> Tensor:
        return self.model.g_a(x)


class HyperAnalysis(StageModule):
    def forward(self, y: Tensor) -> Tensor:
        return self.model.hyper_quantize(y)


class HyperSynthesis(StageModule):
    def forward(self, z_q: Tensor) -> Tensor:
        return self.model.hyper_params(z_q)


class LatentPack(StageModule):
    def forward(self, y: Tensor) -> tuple[Tensor, ...]:
        return tuple(self.model.packed_latent(y))


class Enter(StageModule):
    def forward(self, *inputs: Tensor) -> tuple[Tensor, ...]:
        named = self._named(inputs)
        scale = self.spec.scale
        prev = None
        if scale > 1:
            prev = ScaleState(named["ctx"], self._y_hat(named), named.get("keys"), named.get("values"))
        state = self.model.enter_scale(scale, named["params"], prev)
        produced = {"ctx": state.context, "y_hat": state.y_hat, "keys": state.keys, "values": state.values}
        if scale == 1:
            produced["scales"], produced["means"] = self.model.initial_step_params(state)
        return self._outputs(produced)


class Step(StageModule):
    def forward(self, *inputs: Tensor) -> tuple[Tensor, ...]:
        named = self._named(inputs)
        y_hat = self._y_hat(named)
        state = ScaleState(named["ctx"], y_hat, named.get("keys"), named.get("values"))
        scales, means, state, decision = self.model.network_step(self.spec.scale, self.spec.partition, state,
                                                                 named.get("topk_force"))
        produced = {"ctx": state.context, "y_hat": y_hat, "scales": scales, "means": means,
                    "keys": state.keys, "values": state.values}
        if decision is not None:
            produced["topk"], produced["topk_gap"] = decision
        return self._outputs(produced)


class Synthesis(StageModule):
    def forward(self, y_hat: Tensor, q: Tensor, means: Tensor) -> Tensor:
        return torch.clamp(self.model.g_s(self._y_hat({"y_hat": y_hat, "q": q, "means": means})), 0, 1)


KINDS: dict[str, type[StageModule]] = {
    "analysis": Analysis, "hyper_analysis": HyperAnalysis, "hyper_synthesis": HyperSynthesis, "pack": LatentPack,
    "enter": Enter, "step": Step, "synthesis": Synthesis,
}


def stage_module(model: HPCM, spec: StageSpec) -> StageModule:
    """The PyTorch module computing ``spec``."""
    return KINDS[spec.kind](model, spec).eval()


def stage_modules(model: HPCM, program: CodingProgram) -> dict[str, StageModule]:
    return {name: stage_module(model, spec) for name, spec in program.stages.items()}
