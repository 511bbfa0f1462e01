"""Analysis/synthesis transforms and the hyperprior (no GDN, no normalisation)."""

from __future__ import annotations

from torch import Tensor, nn

from .layers import PConvRB, conv2x2_down, conv4x4_down, deconv2x2_up, deconv4x4_up


class _Branch(nn.Module):
    """A plain sequential network kept under the attribute name ``branch`` (the official layout)."""

    def __init__(self, *layers: nn.Module) -> None:
        super().__init__()
        self.branch = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.branch(x)


class AnalysisTransform(_Branch):
    """``g_a``: image ``[B, 3, H, W]`` -> latent ``[B, M, H/16, W/16]``."""

    def __init__(self, widths: tuple[int, int, int], M: int) -> None:
        a, b, c = widths
        super().__init__(
            conv4x4_down(3, a), *(PConvRB(a) for _ in range(2)),
            conv2x2_down(a, b), *(PConvRB(b) for _ in range(2)),
            conv2x2_down(b, c), *(PConvRB(c) for _ in range(4)),
            conv2x2_down(c, M),
        )


class SynthesisTransform(_Branch):
    """``g_s``: latent ``[B, M, h, w]`` -> image ``[B, 3, 16h, 16w]`` (not clamped)."""

    def __init__(self, widths: tuple[int, int, int], M: int) -> None:
        a, b, c = widths
        super().__init__(
            deconv2x2_up(M, c), *(PConvRB(c) for _ in range(4)),
            deconv2x2_up(c, b), *(PConvRB(b) for _ in range(2)),
            deconv2x2_up(b, a), *(PConvRB(a) for _ in range(2)),
            deconv4x4_up(a, 3),
        )


class HyperAnalysis(_Branch):
    """``h_a``: latent ``[B, M, h, w]`` -> hyper-latent ``[B, N, h/4, w/4]``."""

    def __init__(self, M: int, N: int) -> None:
        super().__init__(PConvRB(M), conv2x2_down(M, N), *(PConvRB(N) for _ in range(3)), conv2x2_down(N, N))


class HyperSynthesis(_Branch):
    """``h_s``: hyper-latent -> ``params [B, 2M, h, w]`` (scales first, then means)."""

    def __init__(self, M: int, N: int) -> None:
        super().__init__(deconv2x2_up(N, N), *(PConvRB(N) for _ in range(3)), deconv2x2_up(N, 2 * M), PConvRB(2 * M))
