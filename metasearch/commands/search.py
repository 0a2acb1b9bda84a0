"""``metasearch search``: run a study with a live progress display."""

from __future__ import annotations

import math
import time
from pathlib import Path

import optuna
from optuna.trial import FrozenTrial, TrialState
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from metasearch.commands.common import load_config, study_storage
from metasearch.search.runner import FINISHED, open_study, run_study
from metasearch.search.study import build_source


class ProgressDisplay:
    """An Optuna callback that keeps a progress bar with the best value and the speed."""

    def __init__(self, progress: Progress, task_id: int) -> None:
        self.progress, self.task_id = progress, task_id
        self.started, self.ran = time.perf_counter(), 0

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self.ran += 1
        finished = len(study.get_trials(deepcopy=False, states=FINISHED))
        per_trial = (time.perf_counter() - self.started) / self.ran
        self.progress.update(
            self.task_id,
            completed=finished,
            best=_best_text(study),
            last=f"#{trial.number} {trial.state.name.lower()}",
            speed=f"{per_trial:.1f} s/trial",
        )


def run_search(
    study_file: Path,
    n_trials: int | None,
    timeout: float | None,
    storage: str | None,
    data_root: Path | None,
    device: str | None,
    console: Console,
) -> None:
    config = load_config(study_file)
    storage_url = study_storage(config, storage)
    source = build_source(config, data_root, device)  # missing data: fail before any record
    open_study(config, storage_url)  # a bad storage or a changed study: fail before the display
    target = n_trials or config.trials
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("best {task.fields[best]}"),
        TextColumn("last {task.fields[last]}"),
        TextColumn("{task.fields[speed]}"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console, transient=False) as progress:
        task_id = progress.add_task(config.name, total=target, best="-", last="-", speed="")
        display = ProgressDisplay(progress, task_id)
        study = run_study(
            config,
            n_trials=n_trials,
            timeout=timeout,
            storage=storage_url,
            data_root=data_root,
            callbacks=[display],
            source=source,
        )
        finished = len(study.get_trials(deepcopy=False, states=FINISHED))
        progress.update(task_id, completed=finished, best=_best_text(study))
    failed = len(study.get_trials(deepcopy=False, states=(TrialState.FAIL,)))
    console.print(
        f"study [bold]{config.name}[/]: {finished} finished trials"
        + (f", {failed} failed" if failed else "")
        + f"; best {_best_text(study)}. Next: metasearch show {study_file}"
    )


def _best_text(study: optuna.Study) -> str:
    if len(study.directions) > 1:
        return f"{len(study.best_trials)} on the Pareto front"
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    values = [t.value for t in complete if t.value is not None and math.isfinite(t.value)]
    if not values:
        return "-"
    best = study.best_trial
    return f"{best.value:.4g} (#{best.number})"
