"""Building blocks of HPCM. Module and attribute names follow the official code so its weights load."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def conv1x1(cin: int, cout: int) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, kernel_size=1)


def conv2x2_down(cin: int, cout: int) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, kernel_size=2, stride=2)


def conv4x4_down(cin: int, cout: int) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, kernel_size=4, stride=2, padding=1)


def deconv2x2_up(cin: int, cout: int) -> nn.ConvTranspose2d:
    return nn.ConvTranspose2d(cin, cout, kernel_size=2, stride=2)


def deconv4x4_up(cin: int, cout: int) -> nn.ConvTranspose2d:
    return nn.ConvTranspose2d(cin, cout, kernel_size=4, stride=2, padding=1)


def dwconv3x3(ch: int) -> nn.Conv2d:
    return nn.Conv2d(ch, ch, kernel_size=3, padding=1, groups=ch)


class PartialConv3x3(nn.Module):
    """3x3 convolution over the first ``n_conv`` channels; the others pass through unchanged."""

    def __init__(self, channels: int, n_conv: int) -> None:
        super().__init__()
        self.channels, self.n_conv = channels, n_conv
        self.pconv = nn.Conv2d(n_conv, n_conv, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        head, tail = torch.split(x, [self.n_conv, self.channels - self.n_conv], dim=1)
        return torch.cat((self.pconv(head), tail), dim=1)


class PConvRB(nn.Module):
    """Residual block: partial 3x3 conv on a quarter of the channels, then a pointwise MLP."""

    def __init__(self, channels: int, mlp_ratio: int = 4, partial_ratio: int = 4) -> None:
        super().__init__()
        hidden = channels * mlp_ratio
        self.branch = nn.Sequential(
            PartialConv3x3(channels, channels // partial_ratio),
            conv1x1(channels, hidden),
            nn.LeakyReLU(),
            conv1x1(hidden, channels),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.branch(x)


class DWConvRB(nn.Module):
    """Residual block: depthwise 3x3 conv, then a pointwise MLP of width ``mlp_ratio``."""

    def __init__(self, channels: int, mlp_ratio: int = 2) -> None:
        super().__init__()
        hidden = channels * mlp_ratio
        self.branch = nn.Sequential(
            dwconv3x3(channels),
            conv1x1(channels, hidden),
            nn.LeakyReLU(),
            conv1x1(hidden, channels),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.branch(x)


def to_windows(x: Tensor, ws: int) -> Tensor:
    """``[B, C, H, W]`` -> ``[B * H/ws * W/ws, C, ws, ws]``, windows in row-major order per image."""
    b, c, h, w = x.shape
    x = x.reshape(b, c, h // ws, ws, w // ws, ws).permute(0, 2, 4, 1, 3, 5)
    return x.reshape(b * (h // ws) * (w // ws), c, ws, ws)


def from_windows(x: Tensor, b: int, h: int, w: int, ws: int) -> Tensor:
    """Inverse of :func:`to_windows`."""
    c = x.shape[1]
    x = x.reshape(b, h // ws, w // ws, c, ws, ws).permute(0, 3, 1, 4, 2, 5)
    return x.reshape(b, c, h, w)


class CrossAttentionCell(nn.Module):
    """Window cross-attention that fuses this step's parameters ``psi`` into the running context.

    Queries come from ``psi``, keys and values from the previous context; the output adds
    ``conv_out(psi)``. The projections run on the windowed tensors, in the official order, so results
    match the official code to the bit.
    """

    def __init__(self, channels: int, window_size: int, num_heads: int) -> None:
        super().__init__()
        if channels % num_heads:
            raise ValueError(f"channels={channels} not divisible by num_heads={num_heads}")
        self.channels, self.window_size, self.num_heads = channels, window_size, num_heads
        self.head_dim = channels // num_heads
        self.conv_q = conv1x1(channels, channels)
        self.conv_k = conv1x1(channels, channels)
        self.conv_v = conv1x1(channels, channels)
        self.conv_out = conv1x1(channels, channels)

    def forward(self, psi: Tensor, context: Tensor) -> Tensor:
        b, c, h, w = psi.shape
        ws, nh, hd = self.window_size, self.num_heads, self.head_dim
        psi_w, ctx_w = to_windows(psi, ws), to_windows(context, ws)
        q, k, v = self.conv_q(psi_w), self.conv_k(ctx_w), self.conv_v(ctx_w)
        n = q.shape[0]
        q = q.reshape(n, nh, hd, ws * ws).transpose(2, 3)
        k = k.reshape(n, nh, hd, ws * ws)
        v = v.reshape(n, nh, hd, ws * ws).transpose(2, 3)
        attn = F.softmax(torch.matmul(q, k) / math.sqrt(hd), dim=-1)
        out = torch.matmul(attn, v).transpose(2, 3).reshape(n, c, ws, ws)
        return from_windows(out, b, h, w, ws) + self.conv_out(psi)


class SpatialPrior(nn.Module):
    """The context network of one step: ``branch_2(branch_1(x) * adaptive_param)``.

    ``depth_1``/``depth_2`` DWConvRB blocks in each branch; branch_2 ends in a 1x1 conv 3M -> 2M.
    """

    def __init__(self, M: int, depth_1: int, depth_2: int) -> None:
        super().__init__()
        self.branch_1 = nn.Sequential(*(DWConvRB(3 * M) for _ in range(depth_1)))
        self.branch_2 = nn.Sequential(*(DWConvRB(3 * M) for _ in range(depth_2)), conv1x1(3 * M, 2 * M))

    def forward(self, x: Tensor, adaptive_param: Tensor) -> Tensor:
        return self.branch_2(self.branch_1(x) * adaptive_param)
