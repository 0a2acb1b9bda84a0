"""``metasearch show``, ``report`` and ``dashboard``: looking at what a study found."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pandas as pd
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from metasearch.commands.common import load_config, load_existing_study, study_storage
from metasearch.errors import MetasearchError
from metasearch.report import write_report
from metasearch.search.results import objective_names, trials_frame
from metasearch.search.storage import open_for_reading

SUMMARY_COLUMNS = ("accuracy", "iterations", "n_parameters", "meta_train_seconds")
TRAINED = "outer.iterations"
"""The spec's iterations: what the trial really trained, shown among the summary rows."""


def show_best(study_file: Path, top: int, output: str, storage: str | None) -> None:
    config = load_config(study_file)
    study = load_existing_study(config, study_storage(config, storage))
    frame = trials_frame(study)
    if frame.empty:
        raise MetasearchError(f"study {config.name!r} has no trials yet")
    names = objective_names(study)
    if len(names) > 1:
        frame = frame[frame["pareto"]]
    shown = frame.head(top)
    if output == "csv":
        shown.to_csv(sys.stdout, index=False)
    elif output == "json":
        sys.stdout.write(shown.to_json(orient="records", indent=2) + "\n")
    else:
        Console().print(_table(shown, names, config.name, len(frame)))


def _table(frame: pd.DataFrame, objectives: list[str], name: str, total: int) -> Table:
    """One column per trial, best first; rows: scores, then the spec fields that differ between
    the trials shown (the fields they share go into the caption)."""
    spec_fields = [c for c in frame.columns if "." in c and c != TRAINED]
    varying = [c for c in spec_fields if frame[c].astype(str).nunique() > 1]
    rows = [c for c in ("state", *objectives, *SUMMARY_COLUMNS) if c in frame]
    rows = [c for c in rows if not frame[c].map(_missing).all()]
    if (frame["state"] == "COMPLETE").all():
        rows.remove("state")
    kind = "Pareto front" if len(objectives) > 1 else "best trials"
    title = escape(f"{name}: {kind} ({len(frame)} of {total})")
    table = Table(title=title, header_style="bold")
    table.add_column("trial", style="bold")
    for number in frame["number"]:
        table.add_column(f"#{number}", justify="right")
    for row in rows + varying:
        cells = (escape(_cell(trial, row)) for _, trial in frame.iterrows())
        table.add_row(escape(_label(row)), *cells, end_section=row == rows[-1])
    fixed = [c for c in spec_fields if c not in varying]
    if fixed:
        table.caption = "all shown: " + ", ".join(
            escape(f"{_label(c)}={_cell(frame.iloc[0], c)}") for c in fixed
        )
    return table


def _label(column: str) -> str:
    if column.startswith(("architecture.", "outer.")):
        return column.split(".", 1)[1]
    return column if "." in column else column.replace("_", " ")


def _cell(row: pd.Series, column: str) -> str:
    value = row[column]
    if column == "accuracy" and value is not None and not _missing(value):
        ci = row.get("accuracy_ci95")
        return f"{value:.2%}" + ("" if _missing(ci) else f" ± {ci:.2%}")
    if column == "query_loss" and "query_loss_ci95" in row and not _missing(row["query_loss_ci95"]):
        return f"{value:.4g} ± {row['query_loss_ci95']:.2g}"
    if isinstance(value, float):
        return "-" if math.isnan(value) else f"{value:.4g}"
    if isinstance(value, tuple):
        return ",".join(str(v) for v in value)
    return "-" if value is None else str(value)


def _missing(value: object) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def write_study_report(study_file: Path, out: Path, storage: str | None) -> Path:
    config = load_config(study_file)
    study = load_existing_study(config, study_storage(config, storage))
    return write_report(study, out, title=f"metasearch study {config.name}")


def serve_dashboard(
    study_file: Path, storage: str | None, host: str, port: int, console: Console
) -> None:
    config = load_config(study_file)
    url = study_storage(config, storage)
    load_existing_study(config, url)
    try:
        from optuna_dashboard import run_server
    except ImportError:
        raise MetasearchError(
            "the dashboard needs optuna-dashboard: pip install 'metasearch[dashboard]'"
        ) from None
    console.print(
        f"optuna-dashboard on http://{host}:{port} (Ctrl-C to stop)", markup=False, highlight=False
    )
    run_server(open_for_reading(url), host=host, port=port)
