"""The PyTorch reference model: HPCM-Base and the Phase 2 multi-reference extension.

Follows CompressAI's conventions: ``forward(x)`` -> ``{"x_hat", "likelihoods": {"y", "z"}}``,
``compress(x)`` -> ``{"strings": [y_strings, z_strings], "shape"}``, ``decompress(strings, shape)`` ->
``{"x_hat"}``, ``update()`` builds the CDF tables.

The entropy model codes ``y`` in 11 steps over three scales (see :mod:`.lattice`). Every step is written here
as a method on explicit tensors (context, ``y_hat`` so far, memory-bank state) so the deployment stages can call
exactly the same code; :meth:`HPCM.progressive` is the loop that strings them together.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np
import torch
from torch import Tensor, nn

from ..config import SIZE_MULTIPLE, HPCMConfig
from ..entropy import ggm
from ..entropy.coder import StreamReader, StreamWriter
from ..errors import InputError
from ..schedule import CODING_STEPS, plan_memory
from . import lattice
from .layers import CrossAttentionCell, SpatialPrior, conv1x1
from .memory import FullContextMemoryBank, HierarchicalMemoryManager
from .transforms import AnalysisTransform, HyperAnalysis, HyperSynthesis, SynthesisTransform

WINDOWS = {1: 4, 2: 8, 3: 8}


@dataclass(frozen=True)
class ScaleState:
    """What the progressive loop carries between steps of one scale."""

    context: Tensor  # [B, 2M, h_s, w_s]
    y_hat: Tensor  # [B, M, h_s, w_s], zeros where not yet coded
    keys: Tensor | None = None  # [B, R, key_dim]
    values: Tensor | None = None  # [B, R, 2M, r, r]


# code(step_index, scales_packed, means_packed) -> quantized residual (float, integer valued)
StepCoder = Callable[[int, Tensor, Tensor], Tensor]


def ste_round(x: Tensor) -> Tensor:
    return (torch.round(x) - x).detach() + x


class HPCM(nn.Module):
    """HPCM-Base (``config.enable_multiref=False``) or Phase 2. Parameter names match the official code
    (and the Phase 2 reference code for the banks); bank memory is state, never in the ``state_dict``."""

    def __init__(self, config: HPCMConfig) -> None:
        super().__init__()
        self.config = config
        M, N, C = config.M, config.N, 2 * config.M
        self.g_a = AnalysisTransform(config.transform_widths, M)
        self.g_s = SynthesisTransform(config.transform_widths, M)
        self.h_a = HyperAnalysis(M, N)
        self.h_s = HyperSynthesis(M, N)
        self.means_hyper = nn.Parameter(torch.zeros(1, N, 1, 1))
        self.scales_hyper = nn.Parameter(torch.ones(1, N, 1, 1))
        self.y_spatial_prior_adaptor_list_s1 = nn.ModuleList(conv1x1(3 * M, 3 * M) for _ in range(1))
        self.y_spatial_prior_adaptor_list_s2 = nn.ModuleList(conv1x1(3 * M, 3 * M) for _ in range(3))
        self.y_spatial_prior_adaptor_list_s3 = nn.ModuleList(conv1x1(3 * M, 3 * M) for _ in range(6))
        self.y_spatial_prior_s1_s2 = SpatialPrior(M, depth_1=2, depth_2=1)
        self.y_spatial_prior_s3 = SpatialPrior(M, depth_1=3, depth_2=2)
        self.adaptive_params_list = nn.ParameterList(nn.Parameter(torch.ones(1, 3 * M, 1, 1)) for _ in range(10))
        self.attn_s1 = CrossAttentionCell(C, WINDOWS[1], config.attn_heads)
        self.attn_s2 = CrossAttentionCell(C, WINDOWS[2], config.attn_heads)
        self.attn_s3 = CrossAttentionCell(C, WINDOWS[3], config.attn_heads)
        self.context_net = nn.ModuleList(conv1x1(C, C) for _ in range(2))

        self.memory_plan = plan_memory(config)
        for s in (1, 2, 3):
            cap = self.memory_plan[s].capacity
            if cap:
                bank = FullContextMemoryBank(C, cap, config.compress_ratio, config.value_resolution)
                self.add_module(f"memory_bank_s{s}", bank)
        if config.enable_multiref and config.enable_hierarchical_transfer:
            self.hierarchical_manager = HierarchicalMemoryManager(C)

        self.table_y: ggm.CDFTable | None = None
        self.table_z: ggm.CDFTable | None = None
        self.register_buffer("scale_edges", ggm.scale_table()[:-1].clone(), persistent=False)

    # ------------------------------------------------------------------ structure helpers
    def bank(self, scale: int) -> FullContextMemoryBank | None:
        return getattr(self, f"memory_bank_s{scale}", None)

    def step_networks(self, scale: int, partition: int) -> tuple[nn.Module, Tensor, SpatialPrior, CrossAttentionCell]:
        """Adaptor, adaptive parameter, prior and attention of a network step, with the official index
        quirks: at loop index ``i`` the adaptor is ``adaptor_list[i - 1]`` (``i = 0`` takes the last one);
        adaptive parameters s1 -> [0], s2 step i -> [i + 1], s3 step i -> [i + 4]."""
        if scale == 1:
            i = partition
            return (self.y_spatial_prior_adaptor_list_s1[i - 1], self.adaptive_params_list[i - 1],
                    self.y_spatial_prior_s1_s2, self.attn_s1)
        if scale == 2:
            i = partition - 1
            return (self.y_spatial_prior_adaptor_list_s2[i - 1], self.adaptive_params_list[i + 1],
                    self.y_spatial_prior_s1_s2, self.attn_s2)
        i = partition - 2
        return (self.y_spatial_prior_adaptor_list_s3[i - 1], self.adaptive_params_list[i + 4],
                self.y_spatial_prior_s3, self.attn_s3)

    # ------------------------------------------------------------------ the stages of the codec
    def hyper_quantize(self, y: Tensor) -> Tensor:
        """z symbols: ``round(h_a(y) - means_hyper)``."""
        return torch.round(self.h_a(y) - self.means_hyper)

    def hyper_params(self, z_q: Tensor) -> Tensor:
        """Hyperprior parameters ``[B, 2M, h, w]`` from the z symbols."""
        return self.h_s(z_q + self.means_hyper)

    def enter_scale(self, scale: int, params: Tensor, prev: ScaleState | None = None) -> ScaleState:
        """Start a scale: its initial context and ``y_hat`` on its grid, and its bank (transferred entries,
        then the initial context written). ``prev`` is the finished lower scale (for s2 and s3)."""
        # params and contexts are [scales (M) | means (M)]: the lattice ops treat both halves in one pass
        if scale == 1:
            context = lattice.to_scale(params, 1, k=2)
            y_hat = torch.zeros_like(context[:, : self.config.M])
        else:
            assert prev is not None
            up = lattice.s1_to_s2 if scale == 2 else lattice.s2_to_y
            hyper = lattice.s2_hyper if scale == 2 else lattice.s2_lattice_removed
            context = self.context_net[scale - 2](up(prev.context, k=2) + hyper(params, k=2))
            y_hat = up(prev.y_hat)
        state = ScaleState(context, y_hat)
        plan, bank = self.memory_plan[scale], self.bank(scale)
        if bank is None:
            return state
        keys, values = bank.empty_state(context)
        if plan.transfer:
            assert prev is not None and prev.keys is not None and prev.values is not None
            keys, values = self.hierarchical_manager.transfer(scale, plan, prev.keys, prev.values, keys, values)
        if plan.init_slot is not None:
            keys, values = bank.write(keys, values, plan.init_slot, context)
        return replace(state, keys=keys, values=values)

    def initial_step_params(self, state: ScaleState) -> tuple[Tensor, Tensor]:
        """Packed scales and means of s1 partition 0, straight from the hyperprior."""
        masks = lattice.step_masks(state.context, 1, 0)
        scales, means = state.context.chunk(2, 1)
        return lattice.pack(scales, masks), lattice.pack(means, masks)

    def network_step(self, scale: int, partition: int, state: ScaleState,
                     force: Tensor | None = None) -> tuple[Tensor, Tensor, ScaleState, tuple[Tensor, Tensor] | None]:
        """One network-driven coding step: packed (scales, means) of ``partition``, the next state (context
        after cross-attention and memory fusion; bank after the write; ``y_hat`` unchanged) and, when the
        bank query chooses, the decision ``(chosen slots, score gap)``. ``force`` imposes the choice."""
        adaptor, adaptive, prior, attn = self.step_networks(scale, partition)
        psi = prior(adaptor(torch.cat((state.context, state.y_hat), dim=1)), adaptive)
        context = attn(psi, state.context)
        keys, values = state.keys, state.values
        bank = self.bank(scale)
        decision = None
        if bank is not None:
            step = next(s for s in self.memory_plan[scale].steps if s.partition == partition)
            if step.query_valid:
                context, slots, gap = bank.fuse(context, keys, values, step.query_valid, step.topk,
                                                self.config.temperature, force)
                if gap is not None:
                    decision = (slots, gap)
            if step.write_slot is not None:
                keys, values = bank.write(keys, values, step.write_slot, context)
        masks = lattice.step_masks(psi, scale, partition)
        scales, means = psi.chunk(2, 1)
        new_state = ScaleState(context, state.y_hat, keys, values)
        return lattice.pack(scales, masks), lattice.pack(means, masks), new_state, decision

    @staticmethod
    def place(scale: int, partition: int, y_hat: Tensor, q: Tensor, means: Tensor) -> Tensor:
        """``y_hat`` with the decoded step added: ``q + means`` at the positions of ``partition``."""
        return y_hat + lattice.unpack(q + means, lattice.step_masks(y_hat, scale, partition))

    def progressive(self, params: Tensor, code: StepCoder) -> Tensor:
        """Run the 11 coding steps; ``code`` turns each step's packed (scales, means) into symbols
        (quantising ``y`` when encoding, reading the stream when decoding). Returns ``y_hat``."""
        state = self.enter_scale(1, params)
        for index, (scale, partition) in enumerate(CODING_STEPS):
            if index and scale != CODING_STEPS[index - 1][0]:
                state = self.enter_scale(scale, params, state)
            if (scale, partition) == (1, 0):
                scales, means = self.initial_step_params(state)
            else:
                scales, means, state, _ = self.network_step(scale, partition, state)
            q = code(index, scales, means)
            state = replace(state, y_hat=self.place(scale, partition, state.y_hat, q, means))
        return state.y_hat

    # ------------------------------------------------------------------ CompressAI-style API
    def forward(self, x: Tensor) -> dict:
        """Training/evaluation pass with likelihoods. In training mode: uniform noise for the rates,
        straight-through rounding for the reconstruction (as the official training code).
        ``likelihoods["y"]`` has the latent's layout ``[B, M, H/16, W/16]`` (the likelihood of each latent
        position, wherever the coding steps took it from), ``likelihoods["z"]`` the hyper-latent's, as in
        CompressAI's models: per-position rate maps, losses and plots work unchanged."""
        y = self.g_a(x)
        z = self.h_a(y)
        if self.training:
            z_res = z - self.means_hyper
            z_hat = ste_round(z_res) + self.means_hyper
            z_lik = ggm.likelihood(z_res + torch.empty_like(z_res).uniform_(-0.5, 0.5), self.scales_hyper)
        else:
            z_q = torch.round(z - self.means_hyper)
            z_hat = z_q + self.means_hyper
            z_lik = ggm.likelihood(z_q, self.scales_hyper)
        params = self.h_s(z_hat)
        y_steps = self.packed_latent(y)
        liks: list[Tensor] = []

        def code(index: int, scales: Tensor, means: Tensor) -> Tensor:
            res = y_steps[index] - means
            if self.training:
                lik = ggm.likelihood(res + torch.empty_like(res).uniform_(-0.5, 0.5), scales)
                q = ste_round(res)
            else:
                q = torch.round(res)
                lik = ggm.likelihood(q, scales)
            scale, partition = CODING_STEPS[index]
            grid = lattice.to_scale(y, scale)
            liks.append(lattice.from_scale(lattice.unpack(lik, lattice.step_masks(grid, scale, partition)), scale))
            return q

        y_hat = self.progressive(params, code)
        # each latent position belongs to exactly one coding step: the sum puts every likelihood in its place
        return {"x_hat": self.g_s(y_hat), "likelihoods": {"y": torch.stack(liks).sum(0), "z": z_lik}}

    @staticmethod
    def packed_latent(y: Tensor) -> list[Tensor]:
        """``y`` cut into the 11 coding steps' packed tensors."""
        grids = {s: lattice.to_scale(y, s) for s in (1, 2, 3)}
        return [lattice.pack(grids[s], lattice.step_masks(grids[s], s, p)) for s, p in CODING_STEPS]

    def update(self, force: bool = False) -> bool:
        """Build the GGM CDF tables (y: the 60-scale table; z: one row per channel of ``scales_hyper``)."""
        if self.table_y is not None and not force:
            return False
        self.table_y = ggm.build_cdf_table(ggm.scale_table())
        self.table_z = ggm.build_cdf_table(self.scales_hyper.detach().reshape(-1))
        return True

    def _tables(self) -> tuple[ggm.CDFTable, ggm.CDFTable]:
        if self.table_y is None or self.table_z is None:
            self.update()
        assert self.table_y is not None and self.table_z is not None
        return self.table_y, self.table_z

    def check_input(self, x: Tensor) -> None:
        if x.dim() != 4 or x.shape[1] != 3:
            raise InputError(f"expected an image batch [B, 3, H, W], got shape {tuple(x.shape)}")
        h, w = x.shape[-2:]
        if h % SIZE_MULTIPLE or w % SIZE_MULTIPLE:
            raise InputError(f"image size {h}x{w} is not a multiple of {SIZE_MULTIPLE}; pad it first "
                             "(hpcm_deploy.pad_image) and crop after decoding (hpcm_deploy.crop_image)")

    @torch.no_grad()
    def compress(self, x: Tensor, return_latents: bool = False) -> dict:
        """Encode a padded batch. One y stream (11 steps in order) and one z stream per image.
        With ``return_latents``, also returns the encoder's ``y_hat`` and the per-step symbols."""
        self.check_input(x)
        table_y, table_z = self._tables()
        y = self.g_a(x)
        z_q = self.hyper_quantize(y)
        z_np = z_q.to(torch.int32).cpu().numpy()
        z_idx = np.broadcast_to(np.arange(z_q.shape[1], dtype=np.int32)[:, None, None], z_np.shape[1:])
        z_strings = []
        for b in range(z_q.shape[0]):
            writer = StreamWriter()
            writer.write(z_np[b], z_idx, table_z)
            z_strings.append(writer.finish())
        params = self.hyper_params(z_q)
        y_steps = self.packed_latent(y)
        edges = self.scale_edges.cpu().numpy()
        runs: list[tuple[np.ndarray, np.ndarray]] = []

        def code(index: int, scales: Tensor, means: Tensor) -> Tensor:
            q = torch.round(y_steps[index] - means)
            runs.append((q.to(torch.int32).cpu().numpy(), ggm.scale_indexes(scales.cpu().numpy(), edges)))
            return q

        y_hat = self.progressive(params, code)
        y_strings = []
        for b in range(x.shape[0]):
            writer = StreamWriter()
            for symbols, indexes in runs:
                writer.write(symbols[b], indexes[b], table_y)
            y_strings.append(writer.finish())
        out: dict = {"strings": [y_strings, z_strings], "shape": tuple(z_q.shape[-2:])}
        if return_latents:
            out["y_hat"] = y_hat
            out["symbols"] = [s for s, _ in runs]
            out["z_symbols"] = z_np
        return out

    @torch.no_grad()
    def decompress(self, strings: Sequence[Sequence[bytes]], shape: Sequence[int],
                   return_latents: bool = False) -> dict:
        """Decode streams produced by :meth:`compress` (all images of a batch share ``shape``)."""
        table_y, table_z = self._tables()
        y_strings, z_strings = strings
        batch = len(y_strings)
        device = self.means_hyper.device
        n = self.config.N
        z_idx = np.broadcast_to(np.arange(n, dtype=np.int32)[:, None, None], (n, *shape))
        z_np = np.stack([StreamReader(s, table_z, z_idx.size).read(z_idx) for s in z_strings])
        z_q = torch.from_numpy(z_np).to(device=device, dtype=torch.float32)
        params = self.hyper_params(z_q)
        readers = [StreamReader(s, table_y, self.config.M * 16 * int(shape[0]) * int(shape[1])) for s in y_strings]
        edges = self.scale_edges.cpu().numpy()
        decoded: list[np.ndarray] = []

        def code(index: int, scales: Tensor, means: Tensor) -> Tensor:
            indexes = ggm.scale_indexes(scales.cpu().numpy(), edges)
            q = np.stack([readers[b].read(indexes[b]) for b in range(batch)])
            decoded.append(q)
            return torch.from_numpy(q).to(device=device, dtype=means.dtype)

        y_hat = self.progressive(params, code)
        out: dict = {"x_hat": self.g_s(y_hat).clamp_(0, 1)}
        if return_latents:
            out["y_hat"] = y_hat
            out["symbols"] = decoded
        return out
