"""Plots of how the architecture weights evolved during a differentiable search.

Figures are drawn on :class:`matplotlib.figure.Figure` directly, without pyplot, so that no
backend has to be chosen (PNG output uses Agg)."""

from __future__ import annotations

import io
import math
from collections.abc import Sequence

from matplotlib.figure import Figure


def architecture_weight_pngs(histories: Sequence[tuple[int, dict]]) -> list[tuple[str, bytes]]:
    """For each ``(trial number, history)``, one PNG per cell kind: a panel per edge with each
    operation's softmax weight over the search's iterations. Returns ``(title, PNG)`` pairs."""
    pngs = []
    for number, history in histories:
        for kind in ("normal", "reduce"):
            title = f"trial {number}: {kind} cell"
            png = io.BytesIO()
            draw_history(history, kind, title).savefig(png, format="png", dpi=100)
            pngs.append((title, png.getvalue()))
    return pngs


def draw_history(history: dict, kind: str, title: str) -> Figure:
    """One panel per edge of the ``kind`` cell: each operation's softmax weight over the
    iterations of a search's ``history`` (:attr:`SearchResult.history`)."""
    edges, operations = history["edges"], history["operations"]
    columns = min(len(edges), 5)
    rows = math.ceil(len(edges) / columns)
    figure = Figure(figsize=(2.6 * columns, 2.2 * rows + 0.8))
    axes = figure.subplots(rows, columns, sharex=True, sharey=True, squeeze=False)
    tables = history[kind]  # [records][edges][operations]
    for e, axis in enumerate(axes.flat):
        if e >= len(edges):
            axis.axis("off")
            continue
        for o, name in enumerate(operations):
            axis.plot(history["iterations"], [table[e][o] for table in tables], label=name)
        axis.set_title(edges[e], fontsize=9)
    axes[0, 0].set_ylabel("softmax weight")
    axes[-1, 0].set_xlabel("meta-iteration")
    figure.legend(*axes[0, 0].get_legend_handles_labels(), loc="lower center", ncol=4, fontsize=8)
    figure.suptitle(title)
    figure.tight_layout(rect=(0, 0.12, 1, 1))
    return figure
