"""From architecture weights to a discrete genotype, and from a genotype to a learner spec."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor

from metasearch.spec import ArchitectureSpec, CellKind, Genotype, LearnerSpec


def edge_inputs(nodes: int) -> list[tuple[int, int]]:
    """``(node, input)`` of each supernet edge, in the order of the rows of the weights."""
    return [(k, j) for k in range(nodes) for j in range(k + 2)]


def edge_label(node: int, source: int) -> str:
    """``"n1<-in0"``: node 1 reads the cell's first input; ``"n2<-n0"``: node 2 reads node 0."""
    return f"n{node}<-" + (f"in{source}" if source < 2 else f"n{source - 2}")


def derive_genotype(
    weights: dict[str, Tensor],
    operations: Sequence[str],
    nodes: int,
    layout: Sequence[CellKind],
    edges_per_node: int = 2,
) -> Genotype:
    """DARTS's discretization: for each node, keep the ``edges_per_node`` incoming edges whose
    strongest operation other than ``none`` weighs most, each with that operation.

    ``weights`` holds the softmax weights ``[edges, operations]`` by cell kind.
    """
    allowed = [i for i, name in enumerate(operations) if name != "none"]
    cells = {}
    for kind in ("normal", "reduce"):
        rows = weights[kind].detach().cpu()[:, allowed]
        strength, best = rows.max(dim=1)
        chosen = []
        for k in range(nodes):
            edges = [(e, j) for e, (node, j) in enumerate(edge_inputs(nodes)) if node == k]
            edges.sort(key=lambda edge: -float(strength[edge[0]]))
            kept = sorted(edges[:edges_per_node], key=lambda edge: edge[1])
            chosen.append(tuple((operations[allowed[int(best[e])]], j) for e, j in kept))
        cells[kind] = tuple(chosen)
    return Genotype(normal=cells["normal"], reduce=cells["reduce"], layout=tuple(layout))


def genotype_spec(spec: LearnerSpec, genotype: Genotype, channels: int) -> LearnerSpec:
    """``spec`` with the ``cells`` architecture of ``genotype`` (keeping ``spec``'s head)."""
    architecture = ArchitectureSpec(
        family="cells", widths=(channels,), head=spec.architecture.head, genotype=genotype
    )
    return spec.model_copy(update={"architecture": architecture})
