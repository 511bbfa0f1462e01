"""Each stage of the program as a PyTorch module over positional tensors (what the exporter traces and what
the PyTorch backend runs). Every module calls the reference model's own step methods, so running the stages
is the reference computation, only cut at different places."""

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

    def _unpack(self, inputs: tuple[Tensor, ...]) -> dict[str, Tensor]:
        return dict(zip(self.spec.inputs, inputs))

    def _bank(self, named: dict[str, Tensor], scale: int) -> tuple[Tensor | None, Tensor | None]:
        keys = next((v for k, v in named.items() if k.startswith(f"keys_s{scale}.")), None)
        values = next((v for k, v in named.items() if k.startswith(f"values_s{scale}.")), None)
        return keys, values

    def _outputs(self, produced: dict[str, Tensor]) -> tuple[Tensor, ...]:
        return tuple(produced[_base(name)] for name in self.spec.outputs)


def _base(name: str) -> str:
    """``ctx.s2_step1`` -> ``ctx``; ``scales.4`` -> ``scales``; ``keys_s2.s2_enter`` -> ``keys``."""
    head = name.split(".")[0]
    return head.split("_s")[0] if head.startswith(("keys_s", "values_s")) else head


class Transform(StageModule):
    def forward(self, x: Tensor) -> Tensor:
        return (self.model.g_a if self.spec.name == "g_a" else self.model.g_s)(x)


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
        named = self._unpack(inputs)
        scale = self.spec.scale
        prev = None
        if scale > 1:
            ctx, y_hat, q, means = (named[n] for n in self.spec.inputs[1:5])
            y_hat = HPCM.place(*self.spec.places, y_hat, q, means)  # type: ignore[misc]
            keys, values = self._bank(named, scale - 1)
            prev = ScaleState(ctx, y_hat, keys, values)
        state = self.model.enter_scale(scale, named["params"], prev)
        produced = {"ctx": state.context, "y_hat": state.y_hat, "keys": state.keys, "values": state.values}
        if scale == 1:
            produced["scales"], produced["means"] = self.model.initial_step_params(state)
        return self._outputs(produced)


class Step(StageModule):
    def forward(self, *inputs: Tensor) -> tuple[Tensor, ...]:
        named = self._unpack(inputs)
        ctx, y_hat = inputs[0], inputs[1]
        if self.spec.places:
            y_hat = HPCM.place(*self.spec.places, y_hat, inputs[2], inputs[3])
        keys, values = self._bank(named, self.spec.scale)
        force = named.get(f"topk_force.{self.spec.name}")
        scales, means, state, decision = self.model.network_step(self.spec.scale, self.spec.partition,
                                                                 ScaleState(ctx, y_hat, keys, values), force)
        produced = {"ctx": state.context, "y_hat": y_hat, "scales": scales, "means": means,
                    "keys": state.keys, "values": state.values}
        if decision is not None:
            produced["topk"], produced["topk_gap"] = decision
        return self._outputs(produced)


class Synthesis(StageModule):
    def forward(self, y_hat: Tensor, q: Tensor, means: Tensor) -> Tensor:
        y_hat = HPCM.place(*self.spec.places, y_hat, q, means)  # type: ignore[misc]
        return torch.clamp(self.model.g_s(y_hat), 0, 1)


_KINDS = {"hyper": None, "pack": LatentPack, "enter": Enter, "step": Step, "synthesis": Synthesis}


def stage_module(model: HPCM, spec: StageSpec) -> StageModule:
    """The PyTorch module computing ``spec``."""
    if spec.kind == "transform":
        cls: type[StageModule] = Transform
    elif spec.kind == "hyper":
        cls = HyperAnalysis if spec.name == "h_a" else HyperSynthesis
    else:
        cls = _KINDS[spec.kind]  # type: ignore[assignment]
    return cls(model, spec).eval()


def stage_modules(model: HPCM, program: CodingProgram) -> dict[str, StageModule]:
    return {name: stage_module(model, spec) for name, spec in program.stages.items()}
