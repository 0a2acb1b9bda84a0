"""``metasearch studies``: the studies of a storage, and deleting one with its files."""

from __future__ import annotations

from collections.abc import Callable

import optuna
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from metasearch.errors import MetasearchError
from metasearch.search.results import INTEGER_COLUMNS, StudySummary, summarize
from metasearch.search.storage import MissingStudyError, open_for_reading, parse, writing
from metasearch.search.weights import delete_study_files

STATES = ("complete", "pruned", "fail", "running")
HEADINGS = {"fail": "failed"}


def list_studies(url: str, console: Console, errors: Console) -> int:
    """Prints a table of the storage's studies; returns 1 (saying so) where it holds none."""
    shown = parse(url).shown
    try:
        storage = open_for_reading(url)
    except MissingStudyError as error:
        errors.print(f"no studies in {escape(shown)}: {escape(str(error))}", soft_wrap=True)
        return 1
    with writing(url):  # a server lost on the way: one line
        names = sorted(optuna.get_all_study_names(storage))
        summaries = [summarize(optuna.load_study(study_name=n, storage=storage)) for n in names]
    if not summaries:
        errors.print(f"no studies in {escape(shown)}", soft_wrap=True)
        return 1
    states = [*STATES, *(["waiting"] if any(s.counts["waiting"] for s in summaries) else [])]
    table = Table(title=f"studies in {escape(shown)}", header_style="bold")
    table.add_column("study", style="bold")
    for state in states:
        table.add_column(HEADINGS.get(state, state), justify="right")
    table.add_column("best")
    for summary in summaries:
        counts = (str(summary.counts[state]) for state in states)
        table.add_row(escape(summary.name), *counts, escape(_best(summary)))
    console.print(table)
    return 0


def delete_study(url: str, name: str, confirm: Callable[[str], bool], console: Console) -> int:
    """Deletes the study ``name`` of the storage with the files its trials own, once
    ``confirm`` agrees; returns 1 where it did not."""
    shown = parse(url).shown
    try:
        storage = open_for_reading(url)
    except MissingStudyError as error:
        raise MetasearchError(f"no study named {name!r} in {shown}: {error}") from None
    with writing(url):
        names = optuna.get_all_study_names(storage)
        if name not in names:
            known = ", ".join(sorted(names)) or "none"
            raise MetasearchError(
                f"no study named {name!r} in {shown} (its studies: {known}); "
                "'metasearch studies' lists them"
            )
        study = optuna.load_study(study_name=name, storage=storage)
        summary = summarize(study)
    running = summary.counts["running"]
    question = f"delete study {name!r} of {shown}, its {_trials(summary)} and their weights"
    if running:
        question += f" ({running} still running: stop their workers first)"
    if not confirm(question + "?"):
        console.print("nothing deleted")
        return 1
    try:
        folder = delete_study_files(url, storage, name)
    except OSError as error:
        raise MetasearchError(
            f"cannot delete the files of study {name!r} ({error.filename}: "
            f"{error.strerror or error}); the study is kept, fix this and run again"
        ) from None
    with writing(url):
        optuna.delete_study(study_name=name, storage=storage)
    files = "" if folder is None else f" and its trials' files, {folder}"
    console.print(f"deleted study [bold]{escape(name)}[/]{escape(files)}", soft_wrap=True)
    return 0


def _trials(summary: StudySummary) -> str:
    counts = [f"{n} {HEADINGS.get(s, s)}" for s, n in summary.counts.items() if n]
    total = f"{summary.trials} trial" + ("" if summary.trials == 1 else "s")
    return total + (f" ({', '.join(counts)})" if counts else "")


def _best(summary: StudySummary) -> str:
    """``query_loss 0.5894 (#1), n_parameters 2,913 (#28)``: each objective's best."""
    parts = [f"{name} {_value(name, value)} (#{number})" for name, value, number in summary.best]
    return ", ".join(parts) or "-"


def _value(objective: str, value: float) -> str:
    return f"{value:,.0f}" if objective in INTEGER_COLUMNS else f"{value:.4g}"
