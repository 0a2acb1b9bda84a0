"""Cells and the network around them, shared by the supernet and the derived (discrete) network.

A cell reads the outputs of the two cells before it, brings both to its width with a 1x1 conv
(or a factorized reduction after a reduction cell), and computes each node as the sum of its
incoming edges. The network is a stem conv, the cells, ReLU, and global average pooling where
the head asks for it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from metasearch.learners.networks import BatchStatNorm
from metasearch.learners.operations import OPS, FactorizedReduce, ReLUConvNorm
from metasearch.spec import ArchitectureSpec, CellKind, Genotype

MakeEdge = Callable[[int, int, int], nn.Module]
"""``make_edge(node, input, stride)``: the module on that edge, at the cell's width."""


class Cell(nn.Module):
    """Node ``k`` sums ``edges[e](states[inputs[k][i]])`` over its edges; the output is every
    node, concatenated. ``forward`` passes ``weights[e]`` to edge ``e`` where weights are given
    (the supernet's mixed operations)."""

    def __init__(
        self,
        c_pp: int,
        c_p: int,
        channels: int,
        reduction: bool,
        reduction_prev: bool,
        inputs: Sequence[Sequence[int]],
        make_edge: MakeEdge,
    ) -> None:
        super().__init__()
        self.pre0 = (
            FactorizedReduce(c_pp, channels)
            if reduction_prev
            else ReLUConvNorm(c_pp, channels, 1, 1, 0)
        )
        self.pre1 = ReLUConvNorm(c_p, channels, 1, 1, 0)
        self.inputs = [list(node) for node in inputs]
        self.edges = nn.ModuleList(
            make_edge(k, j, 2 if reduction and j < 2 else 1)
            for k, node in enumerate(self.inputs)
            for j in node
        )

    def forward(self, s0: Tensor, s1: Tensor, weights: Tensor | None = None) -> Tensor:
        states = [self.pre0(s0), self.pre1(s1)]
        e = 0
        for node in self.inputs:
            total = 0
            for j in node:
                edge = self.edges[e]
                total = total + (
                    edge(states[j]) if weights is None else edge(states[j], weights[e])
                )
                e += 1
            states.append(total)
        return torch.cat(states[2:], dim=1)


class CellNetwork(nn.Module):
    """stem -> cells -> ReLU (-> global average pooling); a network body.

    ``make_cell(kind, c_pp, c_p, channels, reduction_prev)`` builds each cell of ``layout``; it
    returns the cell and its number of nodes. :meth:`cell_weights` gives the weights passed to
    the cells of a kind (none here).
    """

    def __init__(
        self,
        in_channels: int,
        channels: int,
        layout: Sequence[CellKind],
        gap: bool,
        make_cell: Callable[[CellKind, int, int, int, bool], tuple[Cell, int]],
    ) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, channels, 3, padding=1, bias=False), BatchStatNorm(channels)
        )
        self.layout, self.gap = tuple(layout), gap
        cells = []
        c_pp = c_p = c = channels
        reduction_prev = False
        for kind in self.layout:
            c = c * 2 if kind == "reduce" else c
            cell, nodes = make_cell(kind, c_pp, c_p, c, reduction_prev)
            cells.append(cell)
            c_pp, c_p, reduction_prev = c_p, nodes * c, kind == "reduce"
        self.cells = nn.ModuleList(cells)

    def cell_weights(self, kind: CellKind) -> Tensor | None:
        return None

    def forward(self, x: Tensor) -> Tensor:
        s0 = s1 = self.stem(x)
        weights = {kind: self.cell_weights(kind) for kind in set(self.layout)}
        for kind, cell in zip(self.layout, self.cells, strict=True):
            s0, s1 = s1, cell(s0, s1, weights[kind])
        out = F.relu(s1)
        return F.adaptive_avg_pool2d(out, 1) if self.gap else out


def genotype_body(spec: ArchitectureSpec, input_shape: tuple[int, ...]) -> CellNetwork:
    """The discrete network of ``spec.genotype`` (the ``cells`` family) for images of
    ``input_shape`` ``[C, H, W]``."""
    if len(input_shape) != 3:
        raise ValueError(f"the cells family needs image inputs [C, H, W], got {input_shape}")
    genotype: Genotype = spec.genotype  # type: ignore[assignment]

    def make_cell(
        kind: CellKind, c_pp: int, c_p: int, c: int, reduction_prev: bool
    ) -> tuple[Cell, int]:
        nodes = genotype.normal if kind == "normal" else genotype.reduce
        ops = {(k, j): op for k, node in enumerate(nodes) for op, j in node}
        inputs = [[j for _, j in node] for node in nodes]
        cell = Cell(
            c_pp,
            c_p,
            c,
            kind == "reduce",
            reduction_prev,
            inputs,
            lambda k, j, stride: OPS[ops[k, j]](c, stride),
        )
        return cell, len(nodes)

    return CellNetwork(
        input_shape[0], spec.widths[0], genotype.layout, spec.head == "gap", make_cell
    )
