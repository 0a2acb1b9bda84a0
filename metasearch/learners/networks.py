"""Networks built from an :class:`ArchitectureSpec`.

Every network is a ``body`` (the feature extractor) followed by a linear ``head``, so that ANIL
can adapt the head alone and Prototypical Networks can use the body as their embedding.
Normalization always uses the current batch's statistics and keeps no running statistics, so
under ``vmap`` each task is normalized by its own support or query set; under
:func:`statistics_from_first` only the first rows of a batch give them (the support set placed
before the queries).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn

from metasearch.spec import ArchitectureSpec

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "leaky_relu": nn.LeakyReLU,
    "elu": nn.ELU,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
    "tanh": nn.Tanh,
}


class BatchStatNorm(nn.Module):
    """Batch normalization by the current batch's statistics, with an affine transform.

    Written with elementary operations rather than ``F.batch_norm``: under ``vmap`` of a
    second-order ``torch.func.grad``, the fused kernel's batching rule returns wrong
    meta-gradients (checked against a per-task loop in the tests), while these are exact.
    Where ``statistics_rows`` is set (:func:`statistics_from_first`), the statistics are those
    of the batch's first ``statistics_rows`` examples alone.
    """

    statistics_rows: int | None = None

    def __init__(self, channels: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: Tensor) -> Tensor:
        x = at_least_float32(x)  # statistics of bfloat16 values lose too much
        dims = [0, *range(2, x.dim())]
        reference = x if self.statistics_rows is None else x[: self.statistics_rows]
        mean = reference.mean(dims, keepdim=True)
        var = (reference - mean).pow(2).mean(dims, keepdim=True)
        shape = (1, -1, *[1] * (x.dim() - 2))
        return (x - mean) * torch.rsqrt(var + self.eps) * self.weight.view(shape) + self.bias.view(
            shape
        )


def has_batch_norm(network: nn.Module) -> bool:
    """Whether ``network`` normalizes by batch statistics anywhere."""
    return any(isinstance(module, BatchStatNorm) for module in network.modules())


@contextmanager
def statistics_from_first(network: nn.Module, rows: int) -> Iterator[None]:
    """Within it, every batch normalization of ``network`` takes its statistics from the first
    ``rows`` examples of each batch only, so the outputs of the later ones do not depend on each
    other (``network`` is a template shared by all calls: not for concurrent use)."""
    norms = [module for module in network.modules() if isinstance(module, BatchStatNorm)]
    for norm in norms:
        norm.statistics_rows = rows
    try:
        yield
    finally:
        for norm in norms:
            norm.statistics_rows = None


def at_least_float32(x: Tensor) -> Tensor:
    """``x`` in float32 where it is in a lower precision (mixed precision), else unchanged."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


class Network(nn.Module):
    """``head(body(x))``; ``features(x)`` is the body's output, flattened."""

    def __init__(self, body: nn.Module, head: nn.Linear) -> None:
        super().__init__()
        self.body, self.head = body, head

    def features(self, x: Tensor) -> Tensor:
        return self.body(x).flatten(1)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))


def build_network(spec: ArchitectureSpec, input_shape: tuple[int, ...], n_outputs: int) -> Network:
    """The network for inputs of ``input_shape`` (without batch) and ``n_outputs`` outputs."""
    if spec.family == "conv":
        if len(input_shape) != 3:
            raise ValueError(f"the conv family needs image inputs [C, H, W], got {input_shape}")
        body = _conv_body(spec, input_shape[0])
    elif spec.family == "cells":  # differentiable architecture search's derived cells
        # Imported late: the cells build on this module's normalization.
        from metasearch.learners.cells import genotype_body

        body = genotype_body(spec, input_shape)
    else:
        body = _mlp_body(spec, int(torch.Size(input_shape).numel()))
    with torch.no_grad():
        feature_size = body(torch.zeros(2, *input_shape)).flatten(1).shape[1]
    return Network(body, nn.Linear(feature_size, n_outputs))


def _conv_body(spec: ArchitectureSpec, in_channels: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    stride = 2 if spec.pooling == "strided" else 1
    for width in spec.widths:
        layers.append(
            nn.Conv2d(in_channels, width, spec.kernel_size, stride, spec.kernel_size // 2)
        )
        if spec.normalization != "none":
            layers.append(_norm2d(spec.normalization, width))
        layers.append(ACTIVATIONS[spec.activation]())
        if spec.pooling in ("max", "avg"):
            pool = nn.MaxPool2d if spec.pooling == "max" else nn.AvgPool2d
            layers.append(pool(2, ceil_mode=False))
        in_channels = width
    if spec.head == "gap":
        layers.append(nn.AdaptiveAvgPool2d(1))
    return nn.Sequential(*layers)


def _norm2d(kind: str, channels: int) -> nn.Module:
    if kind == "batch":
        return BatchStatNorm(channels)
    if kind == "layer":
        return nn.GroupNorm(1, channels)
    return nn.GroupNorm(channels, channels)  # instance normalization with affine parameters


def _mlp_body(spec: ArchitectureSpec, in_features: int) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Flatten()]
    for width in spec.widths:
        layers.append(nn.Linear(in_features, width))
        if spec.normalization == "batch":
            layers.append(BatchStatNorm(width))
        elif spec.normalization == "layer":
            layers.append(nn.LayerNorm(width))
        layers.append(ACTIVATIONS[spec.activation]())
        in_features = width
    return nn.Sequential(*layers)
