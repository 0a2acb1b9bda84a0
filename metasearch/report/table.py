"""The report's table of trials: a few score columns and one wrapped cell per trial with what
sets it apart, so that the table reads without scrolling sideways."""

from __future__ import annotations

import html

import optuna
import pandas as pd

from metasearch.search.results import missing, objective_names, trials_frame

ROWS = 50
"""Trials listed, best first; ``metasearch show --format csv`` prints them all."""
SCORES = ("accuracy", "n_parameters", "iterations", "meta_train_seconds")
HEADINGS = {
    "n_parameters": "parameters",
    "iterations": "meta-iterations",
    "meta_train_seconds": "seconds",
}
COUNTS = ("n_parameters", "iterations")
TRAINED = "outer.iterations"  # the spec's record of what ran: the meta-iterations column


def trials_table(study: optuna.Study) -> str:
    """The best :data:`ROWS` trials as HTML: trial, state (where not all are complete), the
    objectives and scores that some trial has (no accuracy for regression), then the spec
    fields that differ between trials, wrapped; the fields all share are listed once above."""
    frame = trials_frame(study)
    if frame.empty:
        return "<p class=note>No trials yet.</p>"
    names = objective_names(study)
    columns = [c for c in (*names, *(s for s in SCORES if s not in names)) if c in frame]
    columns = [c for c in columns if not frame[c].map(missing).all()]
    if not (frame["state"] == "COMPLETE").all():
        columns.insert(0, "state")
    spec = [c for c in frame.columns if "." in c and c != TRAINED]
    varying = [c for c in spec if frame[c].astype(str).nunique() > 1]
    shared = [c for c in spec if c not in varying]
    shown = frame.head(ROWS)
    head = "".join(f"<th>{html.escape(HEADINGS.get(c, c))}</th>" for c in columns)
    rows = [
        f"<tr><td>#{row['number']}</td>"
        + "".join(f"<td>{html.escape(_cell(row, c))}</td>" for c in columns)
        + f"<td class=spec>{_details(row, varying)}</td></tr>"
        for _, row in shown.iterrows()
    ]
    parts = []
    if shared:
        fields = ", ".join(f"{_label(c)}={_cell(frame.iloc[0], c)}" for c in shared)
        parts.append(f"<p class=note>Shared by all trials: {html.escape(fields)}.</p>")
    parts.append(
        f'<table id="trials"><thead><tr><th>trial</th>{head}<th>candidate</th></tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table>"
    )
    if len(frame) > ROWS:
        parts.append(
            f"<p class=note>{len(frame) - ROWS} more trials: metasearch show --format csv.</p>"
        )
    return "\n".join(parts)


def _label(column: str) -> str:
    """A spec field without its section where the name says enough (``meta_lr``)."""
    if column.startswith(("architecture.", "outer.")):
        return column.split(".", 1)[1]
    return column


def _cell(row: pd.Series, column: str) -> str:
    """A value as the table shows it: scores with their 95% confidence half-widths."""
    value = row[column]
    if missing(value):
        return "-"
    ci = row.get(f"{column}_ci95")
    if column == "accuracy":
        return f"{value:.2%}" + ("" if missing(ci) else f" ± {ci:.2%}")
    if column in COUNTS:
        return f"{int(value):,}"
    if isinstance(value, float):
        return f"{value:.4g}" + ("" if missing(ci) else f" ± {ci:.2g}")
    if isinstance(value, tuple):
        return ",".join(str(v) for v in value)
    return str(value)


def _details(row: pd.Series, varying: list[str]) -> str:
    fields = " · ".join(
        f"<b>{html.escape(_label(c))}</b>={html.escape(_cell(row, c))}" for c in varying
    )
    why = next((row[c] for c in ("failure", "reason") if not missing(row.get(c))), None)
    return fields + (f" <span class=note>({html.escape(str(why))})</span>" if why else "")
