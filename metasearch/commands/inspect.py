"""``metasearch show``, ``report`` and ``dashboard``: looking at what a study found."""

from __future__ import annotations

import json
import numbers
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from metasearch.commands.common import load_config, load_existing_study, study_storage
from metasearch.errors import MetasearchError
from metasearch.report import write_report
from metasearch.search.results import applicable, missing, objective_names, trials_frame
from metasearch.search.storage import open_for_reading
from metasearch.search.weights import study_files

SUMMARY_COLUMNS = ("accuracy", "iterations", "n_parameters", "meta_train_seconds")
TRAINED = "outer.iterations"
"""The spec's iterations: what the trial really trained, shown among the summary rows."""
LABELS = {"iterations": "iterations trained"}


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
    applies = applicable(shown)
    applies = applies.loc[:, applies.any()]  # a field of none of them is left out
    shown = shown.drop(columns=[c for c in shown if "." in c and c not in applies])
    if output == "table":
        console = Console()
        console.print(_table(shown, applies, names, config.name, len(frame)))
        if (shared := _shared(shown, applies)) is not None:
            console.print(shared)
        return
    fields = list(applies)
    shown[fields] = shown[fields].where(applies, None)
    if output == "csv":
        shown[fields] = shown[fields].map(_json_list)
        shown.to_csv(sys.stdout, index=False)
    else:
        records = json.loads(shown.to_json(orient="records", double_precision=15))
        sys.stdout.write(json.dumps(records, indent=2) + "\n")


def _table(
    frame: pd.DataFrame, applies: pd.DataFrame, objectives: list[str], name: str, total: int
) -> Table:
    """One column per trial, best first; rows: scores, then the spec fields that differ between
    the trials shown (:func:`_shared` lists those they share). A field that does not apply to
    a trial's learner stays empty."""
    rows = [c for c in dict.fromkeys(("state", *objectives, *SUMMARY_COLUMNS)) if c in frame]
    rows = [c for c in rows if not frame[c].map(missing).all()]
    if (frame["state"] == "COMPLETE").all():
        rows.remove("state")
    kind = "Pareto front" if len(objectives) > 1 else "best trials"
    title = escape(f"{name}: {kind} ({len(frame)} of {total})")
    table = Table(title=title, header_style="bold")
    table.add_column("trial", style="bold")
    for number in frame["number"]:
        table.add_column(f"#{number}", justify="right")
    for row in rows:
        cells = (escape(_cell(trial, row)) for _, trial in frame.iterrows())
        table.add_row(escape(_label(row)), *cells, end_section=row == rows[-1])
    for field in _varying(frame, applies):
        cells = (
            escape(_cell(trial, field)) if applies.at[i, field] else ""
            for i, trial in frame.iterrows()
        )
        table.add_row(escape(_label(field)), *cells)
    return table


def _varying(frame: pd.DataFrame, applies: pd.DataFrame) -> list[str]:
    """The spec fields worth a row: all of them for one trial, else those whose value (or
    whether they apply) differs between the trials."""
    fields = [c for c in applies if c != TRAINED]
    if len(frame) == 1:
        return fields
    values = frame[fields].astype(str).where(applies[fields], "")
    return [c for c in fields if values[c].nunique() > 1]


def _shared(frame: pd.DataFrame, applies: pd.DataFrame) -> Text | None:
    """The spec fields every trial shown has alike, as one paragraph under the table that
    wraps at the width of the terminal, whatever the width of the table."""
    varying = _varying(frame, applies)
    fixed = [c for c in applies if c != TRAINED and c not in varying]
    if not fixed:
        return None
    first = frame.iloc[0]
    return Text(
        "all shown: " + ", ".join(f"{_label(c)}={_cell(first, c)}" for c in fixed), style="dim"
    )


def _label(column: str) -> str:
    if column in LABELS:
        return LABELS[column]
    if column.startswith(("architecture.", "outer.")):
        return column.split(".", 1)[1]
    return column if "." in column else column.replace("_", " ")


def _cell(row: pd.Series, column: str) -> str:
    value = row[column]
    if column == "accuracy" and not missing(value):
        ci = row.get("accuracy_ci95")
        return f"{value:.2%}" + ("" if missing(ci) else f" ± {ci:.2%}")
    if column == "query_loss" and "query_loss_ci95" in row and not missing(row["query_loss_ci95"]):
        return f"{value:.4g} ± {row['query_loss_ci95']:.2g}"
    if missing(value):
        return "-"
    if isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_)):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list):
        return ",".join(str(v) for v in value)
    return str(value)


def _json_list(value: object) -> object:
    """Lists (and the genotype's mappings) as JSON, ``[102, 119]``, as ``--format json`` has
    them: a CSV reader gets them back with ``json.loads``."""
    return json.dumps(value) if isinstance(value, (list, dict)) else value


def write_study_report(study_file: Path, out: Path, storage: str | None) -> Path:
    config = load_config(study_file)
    study = load_existing_study(config, study_storage(config, storage))
    return write_report(study, out, title=f"metasearch study {config.name}")


def serve_dashboard(
    study_file: Path, storage: str | None, host: str, port: int, console: Console
) -> None:
    config = load_config(study_file)
    url = study_storage(config, storage)
    files = study_files(url, load_existing_study(config, url), config.artifacts)
    try:
        from optuna_dashboard import run_server
    except ImportError:
        raise MetasearchError(
            "the dashboard needs optuna-dashboard: pip install 'metasearch[dashboard]'"
        ) from None
    console.print(
        f"optuna-dashboard on http://{host}:{port} (Ctrl-C to stop)", markup=False, highlight=False
    )
    store = None if files is None else files.store  # the trials' weights, listed and downloadable
    run_server(open_for_reading(url), host=host, port=port, artifact_store=store)
