"""The static coding schedule: the 11 coding steps and their channel chunks, and the memory banks' plan (which
slot each step writes, how many are valid, the effective top-k). Pure Python over the configuration (no torch),
so that the coding program, the artifacts and the tools that only describe a model import it without loading
the model; the model itself (:mod:`hpcm_deploy.models`) runs the same schedule.

Slot rule (ring buffer with chronological fill). Each scale's bank sees a sequence of entries: first, with
hierarchical transfer, the entries the lower scale's bank holds at the end of that scale (oldest first, values
mapped by the transfer adapter, keys carried over); then the scale's initial context; then the context after each
coding step. Entry ``n`` of the sequence goes to slot ``n % R``; so the bank always holds the last ``R`` entries,
the valid slots are always ``0 .. min(n, R) - 1``, and transferring more entries than fit is the same as
transferring the newest ``R - 1``.
"""

from __future__ import annotations

from dataclasses import dataclass

from .config import HPCMConfig

# the 11 coding steps, in stream order: (scale, partition)
CODING_STEPS: tuple[tuple[int, int], ...] = ((1, 0), (1, 1), (2, 1), (2, 2), (2, 3),
                                              (3, 2), (3, 3), (3, 4), (3, 5), (3, 6), (3, 7))
CHUNKS = {1: 2, 2: 4, 3: 8}  # channel chunks per scale: a step's packed tensor has M / chunks channels

# network-driven partitions of each scale (s1 partition 0 is coded from the hyperprior alone;
# s2 partition 0 and s3 partitions 0-1 are the lower scales' lattices)
NETWORK_PARTITIONS: dict[int, tuple[int, ...]] = {1: (1,), 2: (1, 2, 3), 3: (2, 3, 4, 5, 6, 7)}


@dataclass(frozen=True)
class StepPlan:
    """What the bank of one scale does at one network-driven coding step."""

    partition: int
    query_valid: int  # number of valid slots queried (0: no multi-reference at this step)
    topk: int  # effective k (0 when not queried)
    write_slot: int | None  # where the fused context is stored; None when nothing ever reads it

    @property
    def has_choice(self) -> bool:
        """Whether the query chooses (top-k of more than k valid slots): a decision a decoder must repeat."""
        return 0 < self.topk < self.query_valid


@dataclass(frozen=True)
class ScalePlan:
    """The static memory schedule of one scale."""

    scale: int
    capacity: int
    transfer: tuple[tuple[int, int], ...]  # (slot here, slot in the lower scale's bank), in write order
    init_slot: int | None
    steps: tuple[StepPlan, ...]
    final_valid: int  # valid slots at the end of the scale (what a transfer to the next scale can read)

    @property
    def active(self) -> bool:
        return self.capacity > 0


def queried_partitions(config: HPCMConfig, scale: int) -> tuple[int, ...]:
    """Partitions at which ``scale``'s bank is queried under the configured schedule."""
    parts = NETWORK_PARTITIONS[scale]
    if config.multiref_schedule == "reference" and scale > 1:
        parts = parts[1:]  # the Phase 2 reference code skips the first coding step of s2 and s3
    return parts


def _plan_scale(config: HPCMConfig, scale: int, lower_chrono: list[int]) -> tuple[ScalePlan, list[int]]:
    """Plan one active scale given the lower bank's final content (its slots, oldest first; empty when
    nothing is transferred). Returns the plan and this bank's final content in the same form."""
    cap = config.max_refs(scale)
    parts = NETWORK_PARTITIONS[scale]
    queried = queried_partitions(config, scale)
    transferred = lower_chrono[-(cap - 1):] if cap > 1 else []
    n_transfer = len(transferred)
    # the bank's sequence: transferred entries, the initial context, one entry after each step
    total = n_transfer + 1 + len(parts)
    # "readers": moments (counted in entries written so far) at which the bank is looked at
    readers = [n_transfer + 1 + i for i, p in enumerate(parts) if p in queried]
    if scale < 3 and config.enable_hierarchical_transfer and config.max_refs(scale + 1) > 1:
        readers.append(total)  # the next scale copies the final content

    def is_read(entry: int) -> bool:  # present at some reader: written before it, not yet overwritten
        return any(entry < r <= entry + cap for r in readers)

    transfer = tuple((i % cap, src) for i, src in enumerate(transferred) if is_read(i))
    init_slot = n_transfer % cap if is_read(n_transfer) else None
    steps = []
    for i, p in enumerate(parts):
        written = n_transfer + 1 + i  # entries written before this step's query; this step writes entry `written`
        valid = min(written, cap) if p in queried else 0
        steps.append(StepPlan(p, valid, min(config.topk(scale), valid), written % cap if is_read(written) else None))
    plan = ScalePlan(scale, cap, transfer, init_slot, tuple(steps), min(total, cap))
    return plan, [e % cap for e in range(max(0, total - cap), total)]


def plan_memory(config: HPCMConfig) -> dict[int, ScalePlan]:
    """The static schedule of all three banks, with writes that nothing reads removed."""
    plans: dict[int, ScalePlan] = {}
    lower_chrono: list[int] = []  # slots of the lower bank's final content, oldest first
    for scale in (1, 2, 3):
        if config.max_refs(scale) == 0:
            idle = tuple(StepPlan(p, 0, 0, None) for p in NETWORK_PARTITIONS[scale])
            plans[scale] = ScalePlan(scale, 0, (), None, idle, 0)
            lower_chrono = []
            continue
        source = lower_chrono if config.enable_hierarchical_transfer else []
        plans[scale], lower_chrono = _plan_scale(config, scale, source)
    return plans
