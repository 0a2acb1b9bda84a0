"""Initialization schemes for the meta-parameters (what MAML then learns to improve)."""

from __future__ import annotations

import math

import torch
from torch import nn

from metasearch.learners.networks import BatchStatNorm
from metasearch.spec import InitSpec


@torch.no_grad()
def initialize(network: nn.Module, head: nn.Linear, spec: InitSpec) -> None:
    """Re-initializes every conv and linear weight by ``spec``; biases start at zero,
    normalization at identity, and the head at zero when ``spec.zero_head``."""
    for module in network.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            _init_weight(module.weight, spec)
            if module.bias is not None:
                module.bias.zero_()
        elif isinstance(module, (BatchStatNorm, nn.GroupNorm, nn.LayerNorm)):
            module.weight.fill_(1.0)
            module.bias.zero_()
    if spec.zero_head:
        head.weight.zero_()
        head.bias.zero_()


def _init_weight(weight: torch.Tensor, spec: InitSpec) -> None:
    fan_in = weight[0].numel()
    if spec.scheme == "kaiming":
        weight.normal_(0.0, spec.gain * math.sqrt(2.0 / fan_in))
    elif spec.scheme == "normal":
        weight.normal_(0.0, spec.gain / math.sqrt(fan_in))
    elif spec.scheme == "xavier":
        nn.init.xavier_uniform_(weight, gain=spec.gain)
    else:
        nn.init.orthogonal_(weight, gain=spec.gain)
