"""The first convolution of a body and its batch normalization, on data, as one convolution.

The first feature map is the network's largest (64 channels at the input's full resolution for
the four-block learner), and normalizing it, forward and backward, costs more than a later
layer's convolution. Folding the normalization into the convolution's weights avoids that,
exactly: output channel ``o`` of the convolution is ``w_o . p + b_o`` over the input's patches
``p``, so its batch mean is ``w_o . mu + b_o`` and its variance ``w_o' S w_o``, with ``mu`` and
``S`` the mean and covariance of the patches, which depend on the data alone. Normalizing then
only rescales ``w_o`` by ``gamma_o / sqrt(var_o + eps)`` and shifts the bias.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from metasearch.learners.networks import BatchStatNorm

FOLD_PATCH = 75
"""Largest patch (input channels x kernel area) folded: an RGB image under a 5x5 kernel. The
covariance costs about ``patch / out`` times the convolution's own multiply-adds, so much larger
patches would cost more than the normalization they replace."""

Opt = Tensor | None


def folds_input_norm(modules: Sequence[nn.Module]) -> bool:
    """Whether the body starts with a convolution followed by batch-statistics normalization
    on patches small enough (at most :data:`FOLD_PATCH` values) for a cheap covariance."""
    if len(modules) < 2 or not isinstance(modules[0], nn.Conv2d):
        return False
    conv = modules[0]
    patch = conv.in_channels // conv.groups * conv.kernel_size[0] * conv.kernel_size[1]
    return isinstance(modules[1], BatchStatNorm) and conv.groups == 1 and patch <= FOLD_PATCH


def fold_input_norm(
    conv: nn.Module, norm: nn.Module, x: Tensor, params: Sequence[Opt], groups: int
) -> tuple[Tensor, Tensor]:
    """The weight ``[G, out, C, k, k]`` and bias ``[G, out]`` of one grouped convolution equal to
    ``norm(conv(x))`` for ``groups`` groups of data ``x`` ``[N, G*C, H, W]`` (no gradient flows
    into it); ``params`` are the convolution's weight and bias and the normalization's weight
    and bias, each with the leading group dimension. The fold runs in the weights' precision
    even under autocast."""
    assert isinstance(conv, nn.Conv2d) and isinstance(norm, BatchStatNorm)
    weight, bias, gamma, beta = params
    assert weight is not None and gamma is not None and beta is not None
    with torch.no_grad(), torch.autocast(x.device.type, enabled=False):
        patches = F.unfold(
            x.to(weight.dtype), conv.kernel_size, conv.dilation, conv.padding, conv.stride
        )
        patches = patches.unflatten(1, (groups, -1)).permute(1, 2, 0, 3).flatten(2)
        mean = patches.mean(2, keepdim=True)  # [G, D, 1]
        centered = patches - mean
        covariance = centered @ centered.mT / centered.shape[2]  # [G, D, D]
    with torch.autocast(x.device.type, enabled=False):
        w = weight.flatten(2)  # [G, out, D]
        shift = 0.0 if bias is None else bias  # cancels, but stays in the graph: exact 0 grad
        scale = gamma * torch.rsqrt(((w @ covariance) * w).sum(2) + norm.eps)
        folded_bias = beta + scale * (shift - ((w @ mean).squeeze(2) + shift))
        return (w * scale[..., None]).view_as(weight), folded_bias
