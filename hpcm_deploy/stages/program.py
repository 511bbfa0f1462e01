"""The coding program: the model cut into stages, and the order in which they and the host coder run.

Every tensor that flows between stages has one name (single assignment: a stage that updates the context
produces a new name, e.g. ``ctx.s2_step1``), so a program is a data-flow graph that any backend can run and
that the manifest can describe. The program depends only on the configuration (which banks exist and the
static memory plan), never on tensor values.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from ..config import HPCMConfig
from ..models.hpcm import CHUNKS, CODING_STEPS
from ..models.memory import plan_memory


@dataclass(frozen=True)
class TensorInfo:
    """A named tensor of the program. ``shape`` entries are ints or symbolic strings over the batch ``B`` and
    the padded image size ``H x W`` (e.g. ``"H/16"``)."""

    name: str
    shape: tuple[int | str, ...]
    dtype: str = "float32"


@dataclass(frozen=True)
class StageSpec:
    """One stage: a pure function from named tensors to named tensors."""

    name: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    kind: str  # "transform", "hyper", "pack", "enter", "step", "synthesis"
    scale: int = 0
    partition: int = -1
    places: tuple[int, int] | None = None  # (scale, partition) of the coded step it adds to y_hat first
    code_step: int = -1  # the coding step whose parameters it outputs (step stages)
    choice: str = ""  # name of the top-k decision it makes ("topk.<stage>"), "" when its query has no choice


@dataclass(frozen=True)
class CodeStep:
    """Host entropy coding of one y step: ``q = round(y - means)`` (encoder) or read from the stream
    (decoder), with CDF indexes from ``scales``."""

    index: int
    scale: int
    partition: int
    scales: str
    means: str
    q: str
    y: str


@dataclass(frozen=True)
class Op:
    """One entry of an encode or decode sequence: ``("stage", name)``, ``("code_z", "")`` or ``("code_y", index)``."""

    kind: str
    ref: str | int = ""


@dataclass
class CodingProgram:
    config: HPCMConfig
    tensors: dict[str, TensorInfo] = field(default_factory=dict)
    stages: dict[str, StageSpec] = field(default_factory=dict)
    code_steps: list[CodeStep] = field(default_factory=list)
    encode: list[Op] = field(default_factory=list)
    decode: list[Op] = field(default_factory=list)

    # ----- queries used by runners
    def stage_order(self, ops: list[Op]) -> list[StageSpec]:
        return [self.stages[str(op.ref)] for op in ops if op.kind == "stage"]

    def last_use(self, ops: list[Op], encoding: bool, keep: frozenset[str] = frozenset()) -> dict[int, list[str]]:
        """For each op position, the tensors no later op reads (a runner frees them there)."""
        last: dict[str, int] = {}
        for i, op in enumerate(ops):
            for name in self.reads(op, encoding):
                last[name] = i
        out: dict[int, list[str]] = {}
        for name, i in last.items():
            if name not in keep:
                out.setdefault(i, []).append(name)
        return out

    def reads(self, op: Op, encoding: bool) -> tuple[str, ...]:
        if op.kind == "stage":
            return self.stages[str(op.ref)].inputs
        if op.kind == "code_y":
            s = self.code_steps[int(op.ref)]
            return (s.scales, s.means, s.y) if encoding else (s.scales,)
        return ("z_q",) if encoding else ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "tensors": {k: asdict(v) for k, v in self.tensors.items()},
            "stages": [asdict(s) for s in self.stages.values()],
            "code_steps": [asdict(c) for c in self.code_steps],
            "encode": [[op.kind, op.ref] for op in self.encode],
            "decode": [[op.kind, op.ref] for op in self.decode],
        }


def _grid(scale: int) -> tuple[str, str]:
    return {1: ("H/64", "W/64"), 2: ("H/32", "W/32"), 3: ("H/16", "W/16")}[scale]


def build_program(config: HPCMConfig) -> CodingProgram:
    """The stages and the encode/decode sequences for ``config``."""
    M, N, C = config.M, config.N, 2 * config.M
    plans = plan_memory(config)
    prog = CodingProgram(config)
    t = prog.tensors

    def tensor(name: str, *shape: int | str) -> str:
        t[name] = TensorInfo(name, tuple(shape))
        return name

    def add(spec: StageSpec) -> None:
        prog.stages[spec.name] = spec

    tensor("x", "B", 3, "H", "W")
    tensor("y", "B", M, "H/16", "W/16")
    tensor("z_q", "B", N, "H/64", "W/64")
    tensor("params", "B", C, "H/16", "W/16")
    tensor("x_hat", "B", 3, "H", "W")
    add(StageSpec("g_a", ("x",), ("y",), "transform"))
    add(StageSpec("h_a", ("y",), ("z_q",), "hyper"))
    add(StageSpec("h_s", ("z_q",), ("params",), "hyper"))

    for i, (scale, part) in enumerate(CODING_STEPS):
        gh, gw = _grid(scale)
        n = M // CHUNKS[scale]
        prog.code_steps.append(CodeStep(i, scale, part, tensor(f"scales.{i}", "B", n, gh, gw),
                                        tensor(f"means.{i}", "B", n, gh, gw), tensor(f"q.{i}", "B", n, gh, gw),
                                        tensor(f"y.{i}", "B", n, gh, gw)))
    add(StageSpec("y_pack", ("y",), tuple(c.y for c in prog.code_steps), "pack"))

    def bank_names(scale: int, stage: str) -> tuple[str, str]:
        r, v = plans[scale].capacity, config.value_resolution
        return (tensor(f"keys_s{scale}.{stage}", "B", r, config.key_dim),
                tensor(f"values_s{scale}.{stage}", "B", r, C, v, v))

    def bank_needed(scale: int) -> bool:
        plan = plans[scale]
        transfer_out = scale < 3 and bool(plans[scale + 1].transfer)
        return plan.active and (any(s.query_valid or s.write_slot is not None for s in plan.steps) or transfer_out)

    banks: dict[int, tuple[str, str]] = {}  # latest bank tensors per scale
    ctx = yhat = ""
    order: list[str | int] = []  # stage names and code-step indexes, in coding order
    step_of = {sp: i for i, sp in enumerate(CODING_STEPS)}
    prev_code: CodeStep | None = None

    for scale in (1, 2, 3):
        gh, gw = _grid(scale)
        name = "s1_start" if scale == 1 else f"s{scale}_enter"
        ins: tuple[str, ...] = ("params",)
        places = None
        if scale > 1:
            assert prev_code is not None
            ins += (ctx, yhat, prev_code.q, prev_code.means)
            places = (prev_code.scale, prev_code.partition)
            if plans[scale].transfer:
                ins += banks[scale - 1]
        ctx, yhat = tensor(f"ctx.{name}", "B", C, gh, gw), tensor(f"y_hat.{name}", "B", M, gh, gw)
        outs: tuple[str, ...] = (ctx, yhat)
        if scale == 1:
            first = prog.code_steps[0]
            outs += (first.scales, first.means)
        if bank_needed(scale):
            banks[scale] = bank_names(scale, name)
            outs += banks[scale]
        add(StageSpec(name, ins, outs, "enter", scale, -1, places))
        order.append(name)
        if scale == 1:
            order.append(0)
            prev_code = prog.code_steps[0]
        for plan_step in plans[scale].steps:
            part = plan_step.partition
            code = prog.code_steps[step_of[(scale, part)]]
            name = f"s{scale}_step{part}"
            ins = (ctx, yhat)
            places = None
            assert prev_code is not None
            if (prev_code.scale, prev_code.partition) != (scale, part) and prev_code.scale == scale:
                ins += (prev_code.q, prev_code.means)
                places = (prev_code.scale, prev_code.partition)
            reads_bank = plan_step.query_valid or plan_step.write_slot is not None
            if plans[scale].active and reads_bank:
                ins += banks[scale]
            choice = ""
            if plans[scale].active and plan_step.has_choice:
                # the bank query chooses: a decoder may be handed the encoder's choice, and reports its own
                ins += (tensor(f"topk_force.{name}", "B", plan_step.topk),)
                choice = tensor(f"topk.{name}", "B", plan_step.topk)
                tensor(f"topk_gap.{name}", "B")
                prog.tensors[f"topk_force.{name}"] = TensorInfo(f"topk_force.{name}", ("B", plan_step.topk), "int64")
                prog.tensors[choice] = TensorInfo(choice, ("B", plan_step.topk), "int64")
            new_ctx = tensor(f"ctx.{name}", "B", C, gh, gw)
            outs = (new_ctx,)
            if places:
                yhat = tensor(f"y_hat.{name}", "B", M, gh, gw)
                outs += (yhat,)
            outs += (code.scales, code.means)
            if plans[scale].active and plan_step.write_slot is not None:
                banks[scale] = bank_names(scale, name)
                outs += banks[scale]
            if choice:
                outs += (choice, f"topk_gap.{name}")
            ctx = new_ctx
            add(StageSpec(name, ins, outs, "step", scale, part, places, code.index, choice))
            order += [name, code.index]
            prev_code = code
    assert prev_code is not None
    add(StageSpec("g_s", (yhat, prev_code.q, prev_code.means), ("x_hat",), "synthesis",
                  places=(prev_code.scale, prev_code.partition)))

    loop = [Op("stage", o) if isinstance(o, str) else Op("code_y", o) for o in order]
    prog.encode = [Op("stage", "g_a"), Op("stage", "h_a"), Op("code_z"), Op("stage", "h_s"), Op("stage", "y_pack"),
                   *loop]
    prog.decode = [Op("code_z"), Op("stage", "h_s"), *loop, Op("stage", "g_s")]
    return prog
