"""The candidate operations of a cell edge (DARTS, Liu et al. 2019), one registry for all.

Every operation maps ``channels`` to ``channels`` feature maps, halving their size where
``stride`` is 2. Convolutions are ReLU -> conv -> batch normalization by the current batch's
statistics, so that each task is normalized by its own data under ``vmap``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from metasearch.learners.networks import BatchStatNorm
from metasearch.spec import PRIMITIVES


class ReLUConvNorm(nn.Sequential):
    def __init__(
        self, c_in: int, c_out: int, kernel: int, stride: int, padding: int, dilation: int = 1
    ) -> None:
        super().__init__(
            nn.ReLU(),
            nn.Conv2d(c_in, c_out, kernel, stride, padding, dilation, bias=False),
            BatchStatNorm(c_out),
        )


class DilatedSeparable(nn.Sequential):
    """ReLU -> depthwise (dilated) conv -> pointwise conv -> normalization."""

    def __init__(
        self, channels: int, kernel: int, stride: int, padding: int, dilation: int
    ) -> None:
        super().__init__(
            nn.ReLU(),
            nn.Conv2d(
                channels, channels, kernel, stride, padding, dilation, groups=channels, bias=False
            ),
            nn.Conv2d(channels, channels, 1, bias=False),
            BatchStatNorm(channels),
        )


class Separable(nn.Sequential):
    """Two depthwise-separable convolutions in a row, the first one with the stride."""

    def __init__(self, channels: int, kernel: int, stride: int) -> None:
        padding = kernel // 2
        super().__init__(
            DilatedSeparable(channels, kernel, stride, padding, 1),
            DilatedSeparable(channels, kernel, 1, padding, 1),
        )


class FactorizedReduce(nn.Module):
    """Halves the feature map without losing pixels: two strided 1x1 convs, one shifted by a
    pixel, concatenated. Odd sizes round up, like the other strided operations."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.conv_a = nn.Conv2d(c_in, c_out // 2, 1, 2, bias=False)
        self.conv_b = nn.Conv2d(c_in, c_out - c_out // 2, 1, 2, bias=False)
        self.norm = BatchStatNorm(c_out)

    def forward(self, x: Tensor) -> Tensor:
        x = F.relu(x)
        shifted = F.pad(x, (0, 1, 0, 1))[:, :, 1:, 1:]
        return self.norm(torch.cat([self.conv_a(x), self.conv_b(shifted)], dim=1))


class Zero(nn.Module):
    def __init__(self, stride: int) -> None:
        super().__init__()
        self.stride = stride

    def forward(self, x: Tensor) -> Tensor:
        return x[:, :, :: self.stride, :: self.stride].mul(0.0)


OPS: dict[str, Callable[[int, int], nn.Module]] = {
    "none": lambda c, stride: Zero(stride),
    "skip_connect": lambda c, stride: nn.Identity() if stride == 1 else FactorizedReduce(c, c),
    "conv_3x3": lambda c, stride: ReLUConvNorm(c, c, 3, stride, 1),
    "conv_5x5": lambda c, stride: ReLUConvNorm(c, c, 5, stride, 2),
    "sep_conv_3x3": lambda c, stride: Separable(c, 3, stride),
    "dil_conv_3x3": lambda c, stride: DilatedSeparable(c, 3, stride, 2, 2),
    "max_pool_3x3": lambda c, stride: nn.MaxPool2d(3, stride, 1),
    "avg_pool_3x3": lambda c, stride: nn.AvgPool2d(3, stride, 1, count_include_pad=False),
}
"""``OPS[name](channels, stride)``: a fresh module of the operation ``name``."""
assert tuple(OPS) == PRIMITIVES
