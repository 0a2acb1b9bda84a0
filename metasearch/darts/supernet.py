"""The supernet: cells whose every edge mixes all candidate operations by softmax weights.

The architecture weights (``alphas``, one row of logits per edge) are parameters of the network
body, so the meta-algorithms differentiate the query loss with respect to them like any other
meta-parameter; :class:`SupernetLearner` keeps them out of the inner loop. During the search a
``keep`` mask drops whole operations (drop-path) so that parameter-free operations, which learn
fastest, do not crowd out the others.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from metasearch.learners.cells import Cell, CellNetwork
from metasearch.learners.init import initialize
from metasearch.learners.learner import (
    Learner,
    adapted_names,
    initial_meta_state,
    meta_parameters,
)
from metasearch.learners.networks import Network
from metasearch.learners.operations import OPS
from metasearch.spec import CellKind, LearnerSpec
from metasearch.tasks.base import TaskSource

ALPHAS = "body.alphas."
"""Parameter names of the architecture weights start with this: ``body.alphas.normal``, ..."""
KINDS: tuple[CellKind, ...] = ("normal", "reduce")


class MixedOp(nn.Module):
    """``sum_i weights[i] * op_i(x)``; the zero operation adds nothing and is not computed."""

    def __init__(self, channels: int, stride: int, operations: Sequence[str]) -> None:
        super().__init__()
        self.ops = nn.ModuleList(OPS[name](channels, stride) for name in operations)
        self.active = [i for i, name in enumerate(operations) if name != "none"]

    def forward(self, x: Tensor, weights: Tensor) -> Tensor:
        return sum(weights[i] * self.ops[i](x) for i in self.active)  # type: ignore[return-value]


class Supernet(CellNetwork):
    """Every node of a cell reads every earlier state through a :class:`MixedOp`."""

    def __init__(
        self,
        in_channels: int,
        channels: int,
        layout: Sequence[CellKind],
        gap: bool,
        nodes: int,
        operations: Sequence[str],
    ) -> None:
        inputs = [list(range(k + 2)) for k in range(nodes)]

        def make_cell(
            kind: CellKind, c_pp: int, c_p: int, c: int, reduction_prev: bool
        ) -> tuple[Cell, int]:
            def make_edge(k: int, j: int, stride: int) -> MixedOp:
                return MixedOp(c, stride, operations)

            cell = Cell(c_pp, c_p, c, kind == "reduce", reduction_prev, inputs, make_edge)
            return cell, nodes

        super().__init__(in_channels, channels, layout, gap, make_cell)
        self.operations, self.nodes = tuple(operations), nodes
        n_edges = sum(len(node) for node in inputs)
        self.alphas = nn.ParameterDict(
            {kind: nn.Parameter(1e-3 * torch.randn(n_edges, len(operations))) for kind in KINDS}
        )
        self.keep: dict[str, Tensor] | None = None

    def cell_weights(self, kind: CellKind) -> Tensor:
        weights = self.alphas[kind].softmax(-1)
        return weights if self.keep is None else weights * self.keep[kind]

    def sample_keep(self, drop_prob: float, generator: torch.Generator) -> dict[str, Tensor]:
        """A drop-path mask per cell kind: each operation of each edge is dropped with
        probability ``drop_prob`` and the kept ones scaled by ``1 / (1 - drop_prob)``."""
        masks = {}
        for kind, alphas in self.alphas.items():
            draw = torch.rand(alphas.shape, generator=generator, device=generator.device)
            masks[kind] = (draw >= drop_prob).to(alphas) / (1.0 - drop_prob)
        return masks


@dataclass
class SupernetLearner(Learner):
    """A learner whose inner loop leaves the architecture weights alone."""

    @property
    def adapted_names(self) -> list[str]:
        return [n for n in super().adapted_names if not n.startswith(ALPHAS)]

    @property
    def supernet(self) -> Supernet:
        return self.network.body  # type: ignore[return-value]

    def alphas(self) -> dict[str, Tensor]:
        """The architecture weights (logits ``[edges, operations]``) by cell kind."""
        return {n.removeprefix(ALPHAS): p for n, p in self.params.items() if n.startswith(ALPHAS)}


def build_supernet_learner(
    spec: LearnerSpec,
    source: TaskSource,
    channels: int,
    layout: Sequence[CellKind],
    nodes: int,
    operations: Sequence[str],
    seed: int = 0,
) -> SupernetLearner:
    """A fresh supernet learner for ``source``'s tasks; ``spec`` gives everything but the
    architecture (its head: ``gap`` or ``flatten``)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        body = Supernet(
            source.input_shape[0],
            channels,
            layout,
            spec.architecture.head == "gap",
            nodes,
            operations,
        )
        with torch.no_grad():
            features = body(torch.zeros(2, *source.input_shape)).flatten(1).shape[1]
        network = Network(body, nn.Linear(features, source.n_outputs))
        initialize(network, network.head, spec.init)
    network = network.to(source.device).train()
    params = meta_parameters(spec, network)
    adapted = [n for n in adapted_names(spec, params) if not n.startswith(ALPHAS)]
    meta_state = initial_meta_state(spec, params, adapted)
    return SupernetLearner(spec, network, params, meta_state, source.kind, source.n_outputs)
