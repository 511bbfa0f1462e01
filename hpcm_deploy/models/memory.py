"""Phase 2 multi-reference memory: the bank's layers, its explicit state, and the static schedule.

A bank's memory is state, not parameters: ``keys [B, R, key_dim]`` and ``values [B, R, C, r, r]`` tensors
that the caller passes in and gets back (each sample has its own memory). Which slot is written, how many are
valid and the effective top-k are known in advance at every step, so they are baked into a
:class:`ScalePlan` instead of being read from tensors (no ``.item()``, no boolean indexing, no dynamic top-k).

The static schedule (the slot rule, :func:`plan_memory`) lives in :mod:`hpcm_deploy.schedule`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..schedule import NETWORK_PARTITIONS, ScalePlan, StepPlan, plan_memory, queried_partitions

__all__ = ["GATE_BIAS_INIT", "NETWORK_PARTITIONS", "FullContextMemoryBank", "HierarchicalMemoryManager", "ScalePlan",
           "StepPlan", "adaptive_pool", "adaptive_pool_matrix", "plan_memory", "queried_partitions", "set_slot"]

# an untrained bank's gate starts almost closed: sigmoid(-4) = 0.018, so fresh banks on top of trained
# HPCM-Base weights change the context only a little
GATE_BIAS_INIT = -4.0


def adaptive_pool_matrix(size: Tensor | int, out: int, like: Tensor) -> Tensor:
    """``[out, size]`` matrix whose product is ``adaptive_avg_pool1d`` (bins ``floor(i*n/out)`` to
    ``ceil((i+1)*n/out)``). Built from the input size so it exports correctly with dynamic shapes, where
    ``adaptive_avg_pool2d`` silently does not."""
    j = torch.arange(size, device=like.device)
    i = torch.arange(out, device=like.device)
    start = torch.div(i * size, out, rounding_mode="floor")
    end = torch.div((i + 1) * size + out - 1, out, rounding_mode="floor")
    inside = (j[None, :] >= start[:, None]) & (j[None, :] < end[:, None])
    return inside.to(like.dtype) / (end - start).to(like.dtype)[:, None]


def adaptive_pool(x: Tensor, out: int) -> Tensor:
    """Exact-bins adaptive average pooling of ``[B, C, H, W]`` to ``[B, C, out, out]``."""
    h, w = x.shape[-2:]
    ph = adaptive_pool_matrix(h, out, x)
    pw = adaptive_pool_matrix(w, out, x)
    return torch.matmul(torch.matmul(ph, x), pw.transpose(0, 1))


def set_slot(state: Tensor, slot: int, entry: Tensor) -> Tensor:
    """``state`` with ``state[:, slot] = entry``, functionally (no scatter in the exported graph)."""
    return torch.cat((state[:, :slot], entry.unsqueeze(1), state[:, slot + 1:]), dim=1)


class FullContextMemoryBank(nn.Module):
    """One scale's bank: key/query/value encoders, value decoder and the gated fusion network.

    Attribute names follow the Phase 2 reference implementation so its checkpoints load.
    """

    def __init__(self, context_dim: int, capacity: int, compress_ratio: int, value_resolution: int) -> None:
        super().__init__()
        c, kd = context_dim, context_dim // compress_ratio
        self.context_dim, self.key_dim, self.capacity, self.value_resolution = c, kd, capacity, value_resolution
        self.key_encoder = nn.Sequential(nn.Conv2d(c, kd, 1, bias=False), nn.GroupNorm(min(8, kd), kd))
        self.query_proj = nn.Sequential(nn.Conv2d(c, kd, 1), nn.GELU())
        self.value_encoder = nn.Sequential(nn.Conv2d(c, c, 3, padding=1, groups=c), nn.Conv2d(c, c, 1), nn.GELU())
        self.value_decoder = nn.Sequential(nn.Conv2d(c, c, 1), nn.GELU(), nn.Conv2d(c, c, 3, padding=1, groups=c))
        self.fusion_net = nn.Sequential(
            nn.Conv2d(2 * c, c, 1), nn.GroupNorm(32, c), nn.GELU(),
            nn.Conv2d(c, c, 3, padding=1, groups=c), nn.Conv2d(c, c, 1),
        )
        self.fusion_gate = nn.Sequential(nn.Conv2d(2 * c, c, 1), nn.Sigmoid())
        nn.init.constant_(self.fusion_gate[0].bias, GATE_BIAS_INIT)

    def empty_state(self, like: Tensor) -> tuple[Tensor, Tensor]:
        """Zeroed ``(keys, values)`` for a batch like ``like``."""
        b, r, v = like.shape[0], self.capacity, self.value_resolution
        keys = like.new_zeros(b, r, self.key_dim)
        values = like.new_zeros(b, r, self.context_dim, v, v)
        return keys, values

    def encode_entry(self, context: Tensor) -> tuple[Tensor, Tensor]:
        """Key ``[B, key_dim]`` and value ``[B, C, r, r]`` of a context ``[B, C, H, W]``."""
        key = self.key_encoder(context).mean(dim=(2, 3))
        value = adaptive_pool(self.value_encoder(context), self.value_resolution)
        return key, value

    def write(self, keys: Tensor, values: Tensor, slot: int, context: Tensor) -> tuple[Tensor, Tensor]:
        key, value = self.encode_entry(context)
        return set_slot(keys, slot, key), set_slot(values, slot, value)

    def fuse(self, context: Tensor, keys: Tensor, values: Tensor, valid: int, k: int, temperature: float,
             force: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor | None]:
        """Retrieve the top-``k`` of the first ``valid`` slots by cosine similarity and fuse them in.

        Returns ``(fused context, chosen slots [B, k], gap [B] or None)``. When ``k < valid`` the choice is a
        discontinuous decision: ``gap`` is the k-th best score minus the next one (how far the choice is from
        flipping), and ``force`` (``[B, k]`` slots, or -1 in the first column to decide here) imposes a
        choice, as a decoder does with the one an encoder signalled.
        """
        b, c, h, w = context.shape
        query = self.query_proj(context).mean(dim=(2, 3))  # [B, kd]
        q = F.normalize(query, dim=1)
        stored = F.normalize(keys[:, :valid], dim=2)  # [B, n, kd]
        similarity = (q.unsqueeze(1) * stored).sum(dim=2)  # [B, n]
        gap = None
        if k < valid:
            ranked_scores, ranked_slots = torch.topk(similarity, k + 1, dim=1)
            gap = ranked_scores[:, k - 1] - ranked_scores[:, k]
            top_scores, top_slots = ranked_scores[:, :k], ranked_slots[:, :k]
            if force is not None:
                top_slots = torch.where(force[:, :1] >= 0, force, top_slots)
                top_scores = torch.gather(similarity, 1, top_slots)
        else:  # every valid slot is taken: nothing to decide
            top_scores, top_slots = torch.topk(similarity, k, dim=1)
        weights = F.softmax(top_scores / temperature, dim=1)  # [B, k]
        r = self.value_resolution
        index = top_slots.reshape(b, k, 1, 1, 1).expand(b, k, c, r, r)
        chosen = torch.gather(values[:, :valid], 1, index).reshape(b * k, c, r, r)
        restored = F.interpolate(chosen, size=(h, w), mode="bilinear", align_corners=False)
        refs = self.value_decoder(restored).reshape(b, k, c, h, w)
        reference = (refs * weights.reshape(b, k, 1, 1, 1)).sum(dim=1)
        joint = torch.cat((context, reference), dim=1)
        gate = self.fusion_gate(joint)
        return gate * self.fusion_net(joint) + (1 - gate) * context, top_slots, gap


class HierarchicalMemoryManager(nn.Module):
    """Adapters that map stored values of one scale's bank into the next scale's bank."""

    def __init__(self, context_dim: int) -> None:
        super().__init__()
        self.s1_to_s2_adapter = nn.Sequential(nn.Conv2d(context_dim, context_dim, 1), nn.GELU())
        self.s2_to_s3_adapter = nn.Sequential(nn.Conv2d(context_dim, context_dim, 1), nn.GELU())

    def adapter(self, to_scale: int) -> nn.Module:
        return self.s1_to_s2_adapter if to_scale == 2 else self.s2_to_s3_adapter

    def transfer(self, to_scale: int, plan: ScalePlan, lower_keys: Tensor, lower_values: Tensor,
                 keys: Tensor, values: Tensor) -> tuple[Tensor, Tensor]:
        """Copy the planned entries of the lower bank into ``(keys, values)`` of scale ``to_scale``."""
        if not plan.transfer:
            return keys, values
        src = [s for _, s in plan.transfer]
        b, _, c, r, _ = lower_values.shape
        moved = torch.cat([lower_values[:, s:s + 1] for s in src], dim=1).reshape(b * len(src), c, r, r)
        moved = self.adapter(to_scale)(moved).reshape(b, len(src), c, r, r)
        for i, (dst, s) in enumerate(plan.transfer):
            keys = set_slot(keys, dst, lower_keys[:, s])
            values = set_slot(values, dst, moved[:, i])
        return keys, values
