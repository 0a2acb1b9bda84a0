"""The report's plots of how the architecture weights evolved during each search."""

from __future__ import annotations

import io
import math

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import optuna  # noqa: E402

from metasearch.darts.objective import HISTORY_ATTR  # noqa: E402
from metasearch.search.results import best_trials  # noqa: E402

TRIALS_SHOWN = 3


def architecture_weight_pngs(study: optuna.Study) -> list[tuple[str, bytes]]:
    """For the best trials that ran a differentiable search (at most three), one PNG per cell
    kind: a panel per edge with each operation's softmax weight over the search's iterations.
    Returns ``(title, PNG)`` pairs (none for a study without such trials)."""
    trials = [t for t in best_trials(study) if HISTORY_ATTR in t.user_attrs][:TRIALS_SHOWN]
    pngs = []
    for trial in trials:
        for kind in ("normal", "reduce"):
            title = f"trial {trial.number}: {kind} cell"
            png = io.BytesIO()
            draw_history(trial.user_attrs[HISTORY_ATTR], kind, title).savefig(png, dpi=100)
            plt.close("all")
            pngs.append((title, png.getvalue()))
    return pngs


def draw_history(history: dict, kind: str, title: str) -> plt.Figure:
    """One panel per edge of the ``kind`` cell: each operation's softmax weight over the
    iterations of a search's ``history`` (:attr:`SearchResult.history`)."""
    edges, operations = history["edges"], history["operations"]
    columns = min(len(edges), 5)
    rows = math.ceil(len(edges) / columns)
    figure, axes = plt.subplots(
        rows,
        columns,
        figsize=(2.6 * columns, 2.2 * rows + 0.8),
        sharex=True,
        sharey=True,
        squeeze=False,
    )
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
