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
from ..schedule import CHUNKS, CODING_STEPS, plan_memory


@dataclass(frozen=True)
class TensorInfo:
    """A named tensor of the program. ``shape`` entries are ints or symbolic strings over the batch ``B`` and
    the padded image size ``H x W`` (e.g. ``"H/16"``)."""

    name: str
    shape: tuple[int | str, ...]
    dtype: str = "float32"


@dataclass(frozen=True)
class StageSpec:
    """One stage: a pure function from named tensors to named tensors.

    ``roles`` and ``out_roles`` say what each input and output is (``"ctx"``, ``"y_hat"``, ``"q"``, ``"means"``,
    ``"keys"``, ``"values"``, ``"topk_force"``, ``"params"``...), aligned with ``inputs`` and ``outputs``, so the
    code that computes a stage never parses tensor names.
    """

    name: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    kind: str  # "analysis", "hyper_analysis", "hyper_synthesis", "pack", "enter", "step", "synthesis"
    roles: tuple[str, ...] = ()
    out_roles: tuple[str, ...] = ()
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
    def query_valid(self, spec: StageSpec) -> int:
        """How many bank slots the query of a step stage chooses among (0 when it does not query)."""
        for step in plan_memory(self.config)[spec.scale].steps if spec.kind == "step" else ():
            if step.partition == spec.partition:
                return step.query_valid
        return 0

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


class _Builder:
    """Builds a :class:`CodingProgram` stage by stage, tracking the latest name of each piece of state."""

    def __init__(self, config: HPCMConfig) -> None:
        self.config = config
        self.plans = plan_memory(config)
        self.prog = CodingProgram(config)
        self.banks: dict[int, tuple[str, str]] = {}  # latest (keys, values) tensor names per scale
        self.ctx = self.y_hat = ""
        self.prev: CodeStep | None = None  # the last coded step
        self.order: list[str | int] = []  # stage names and code-step indexes, in coding order

    def tensor(self, name: str, *shape: int | str, dtype: str = "float32") -> str:
        self.prog.tensors[name] = TensorInfo(name, tuple(shape), dtype)
        return name

    def add(self, name: str, kind: str, ins: list[tuple[str, str]], outs: list[tuple[str, str]], **fields) -> None:
        """A stage from (role, tensor) pairs."""
        self.prog.stages[name] = StageSpec(name, tuple(t for _, t in ins), tuple(t for _, t in outs), kind,
                                           tuple(r for r, _ in ins), tuple(r for r, _ in outs), **fields)

    def build(self) -> CodingProgram:
        self.common()
        for scale in (1, 2, 3):
            self.enter(scale)
            for step in self.plans[scale].steps:
                self.step(scale, step)
        self.synthesis()
        return self.prog

    def common(self) -> None:
        M, N, C = self.config.M, self.config.N, 2 * self.config.M
        t = self.tensor
        t("x", "B", 3, "H", "W")
        t("y", "B", M, "H/16", "W/16")
        t("z_q", "B", N, "H/64", "W/64")
        t("params", "B", C, "H/16", "W/16")
        t("x_hat", "B", 3, "H", "W")
        self.add("g_a", "analysis", [("x", "x")], [("y", "y")])
        self.add("h_a", "hyper_analysis", [("y", "y")], [("z_q", "z_q")])
        self.add("h_s", "hyper_synthesis", [("z_q", "z_q")], [("params", "params")])
        for i, (scale, part) in enumerate(CODING_STEPS):
            gh, gw = _grid(scale)
            n = M // CHUNKS[scale]
            self.prog.code_steps.append(CodeStep(i, scale, part, t(f"scales.{i}", "B", n, gh, gw),
                                                 t(f"means.{i}", "B", n, gh, gw), t(f"q.{i}", "B", n, gh, gw),
                                                 t(f"y.{i}", "B", n, gh, gw)))
        self.add("y_pack", "pack", [("y", "y")], [("y", c.y) for c in self.prog.code_steps])

    def bank(self, scale: int, stage: str) -> tuple[str, str]:
        r, v, C = self.plans[scale].capacity, self.config.value_resolution, 2 * self.config.M
        self.banks[scale] = (self.tensor(f"keys_s{scale}.{stage}", "B", r, self.config.key_dim),
                             self.tensor(f"values_s{scale}.{stage}", "B", r, C, v, v))
        return self.banks[scale]

    def bank_needed(self, scale: int) -> bool:
        plan = self.plans[scale]
        transfer_out = scale < 3 and bool(self.plans[scale + 1].transfer)
        return plan.active and (any(s.query_valid or s.write_slot is not None for s in plan.steps) or transfer_out)

    def placed(self) -> list[tuple[str, str]]:
        """The inputs that place the last coded step into ``y_hat``."""
        assert self.prev is not None
        return [("y_hat", self.y_hat), ("q", self.prev.q), ("means", self.prev.means)]

    def enter(self, scale: int) -> None:
        """The stage that starts a scale (``s1_start``, ``s2_enter``, ``s3_enter``)."""
        M, C = self.config.M, 2 * self.config.M
        gh, gw = _grid(scale)
        name = "s1_start" if scale == 1 else f"s{scale}_enter"
        ins, places = [("params", "params")], None
        if scale > 1:
            assert self.prev is not None
            ins += [("ctx", self.ctx), *self.placed()]
            places = (self.prev.scale, self.prev.partition)
            if self.plans[scale].transfer:
                ins += list(zip(("keys", "values"), self.banks[scale - 1]))
        self.ctx = self.tensor(f"ctx.{name}", "B", C, gh, gw)
        self.y_hat = self.tensor(f"y_hat.{name}", "B", M, gh, gw)
        outs = [("ctx", self.ctx), ("y_hat", self.y_hat)]
        if scale == 1:
            first = self.prog.code_steps[0]
            outs += [("scales", first.scales), ("means", first.means)]
        if self.bank_needed(scale):
            outs += list(zip(("keys", "values"), self.bank(scale, name)))
        self.add(name, "enter", ins, outs, scale=scale, places=places)
        self.order.append(name)
        if scale == 1:
            self.order.append(0)
            self.prev = self.prog.code_steps[0]

    def step(self, scale: int, plan_step) -> None:
        """A network-driven coding step: context model, attention, bank query and write."""
        M, C = self.config.M, 2 * self.config.M
        gh, gw = _grid(scale)
        part = plan_step.partition
        code = self.prog.code_steps[CODING_STEPS.index((scale, part))]
        name = f"s{scale}_step{part}"
        assert self.prev is not None
        places = None
        if self.prev.scale == scale:
            ins = [("ctx", self.ctx), *self.placed()]
            places = (self.prev.scale, self.prev.partition)
        else:  # the first step of a scale: its entry stage placed the last step already
            ins = [("ctx", self.ctx), ("y_hat", self.y_hat)]
        active = self.plans[scale].active
        if active and (plan_step.query_valid or plan_step.write_slot is not None):
            ins += list(zip(("keys", "values"), self.banks[scale]))
        choice = ""
        if active and plan_step.has_choice:
            # the bank query chooses: a decoder may be handed the encoder's choice, and reports its own
            ins.append(("topk_force", self.tensor(f"topk_force.{name}", "B", plan_step.topk, dtype="int64")))
            choice = self.tensor(f"topk.{name}", "B", plan_step.topk, dtype="int64")
            self.tensor(f"topk_gap.{name}", "B")
        self.ctx = self.tensor(f"ctx.{name}", "B", C, gh, gw)
        outs = [("ctx", self.ctx)]
        if places:
            self.y_hat = self.tensor(f"y_hat.{name}", "B", M, gh, gw)
            outs.append(("y_hat", self.y_hat))
        outs += [("scales", code.scales), ("means", code.means)]
        if active and plan_step.write_slot is not None:
            outs += list(zip(("keys", "values"), self.bank(scale, name)))
        if choice:
            outs += [("topk", choice), ("topk_gap", f"topk_gap.{name}")]
        self.add(name, "step", ins, outs, scale=scale, partition=part, places=places, code_step=code.index,
                 choice=choice)
        self.order += [name, code.index]
        self.prev = code

    def synthesis(self) -> None:
        assert self.prev is not None
        self.add("g_s", "synthesis", self.placed(), [("x_hat", "x_hat")], places=(self.prev.scale,
                                                                                 self.prev.partition))
        loop = [Op("stage", o) if isinstance(o, str) else Op("code_y", o) for o in self.order]
        self.prog.encode = [Op("stage", "g_a"), Op("stage", "h_a"), Op("code_z"), Op("stage", "h_s"),
                            Op("stage", "y_pack"), *loop]
        self.prog.decode = [Op("code_z"), Op("stage", "h_s"), *loop, Op("stage", "g_s")]


def build_program(config: HPCMConfig) -> CodingProgram:
    """The stages and the encode/decode sequences for ``config``."""
    return _Builder(config).build()
