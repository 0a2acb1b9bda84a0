"""``metasearch search`` and ``worker``: run a study, alone or as one of many workers."""

from __future__ import annotations

import contextlib
import math
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import optuna
import torch
from optuna.trial import FrozenTrial, TrialState
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from metasearch.commands.common import STORAGE_VARIABLE, load_config, study_storage
from metasearch.commands.stopping import GracefulStop
from metasearch.errors import MetasearchError, StorageError
from metasearch.search.results import describe_trial
from metasearch.search.runner import open_study, run_study
from metasearch.search.storage import parse, redact, writing
from metasearch.search.study import StudyConfig, build_source
from metasearch.search.trials import FINISHED


@dataclass(frozen=True)
class RunOptions:
    """The command-line options shared by ``search`` and ``worker``."""

    n_trials: int | None
    timeout: float | None
    storage: str | None
    data_root: Path | None
    device: str | None


def run_search(study_file: Path, options: RunOptions, workers: int, console: Console) -> int:
    """Runs the study in this process with a live display, or in ``workers`` processes; returns
    the exit code."""
    config = load_config(study_file)
    storage_url = study_storage(config, options.storage)
    if workers > 1:
        _check_shared(storage_url, f"--workers {workers}")
        return _run_workers(study_file, config, storage_url, options, workers, console)
    source = build_source(config, options.data_root, options.device)  # no data: fail early
    opened = open_study(config, storage_url)  # a bad storage or a changed study: fail now
    target = options.n_trials or config.trials
    with GracefulStop(console) as stop, _display(console) as progress, writing(storage_url):
        task_id = progress.add_task(config.name, total=target, best="-", last="-", speed="")
        display = ProgressDisplay(progress, task_id)
        study = run_study(
            config,
            n_trials=options.n_trials,
            timeout=options.timeout,
            storage=storage_url,
            callbacks=[display],
            source=source,
            stop=stop,
            study=opened,
        )
        progress.update(task_id, completed=_finished(study), best=_best_text(study))
    _summary(study, config, study_file, console)
    return stop.exit_code


def run_worker(study_file: Path, options: RunOptions, console: Console) -> int:
    """Joins the study as one worker, logging a line per trial; returns the exit code."""
    config = load_config(study_file)
    storage_url = study_storage(config, options.storage)
    _check_shared(storage_url, "a worker")
    source = build_source(config, options.data_root, options.device)
    opened = open_study(config, storage_url)
    console.print(f"worker joined study {config.name} in {redact(storage_url)} on {source.device}")

    def log_trial(study: optuna.Study, trial: FrozenTrial) -> None:
        failure = trial.user_attrs.get("failure")
        console.print(
            f"trial {trial.number} {trial.state.name.lower()}"
            + (f": {failure}" if failure else f"; best {_best_text(study)}")
        )

    with GracefulStop(console) as stop, writing(storage_url):
        study = run_study(
            config,
            n_trials=options.n_trials,
            timeout=options.timeout,
            storage=storage_url,
            callbacks=[log_trial],
            source=source,
            stop=stop,
            study=opened,
        )
    console.print(f"worker done: the study has {_finished(study)} finished trials")
    return stop.exit_code


def _run_workers(
    study_file: Path,
    config: StudyConfig,
    storage_url: str,
    options: RunOptions,
    workers: int,
    console: Console,
) -> int:
    """Starts ``workers`` worker processes on this machine (one GPU each, round robin, where
    there are several) and follows the study until they end."""
    study = open_study(config, storage_url)
    target = options.n_trials or config.trials
    environment = os.environ | {STORAGE_VARIABLE: storage_url}  # not argv: others see that
    processes = [
        # Own sessions: a Ctrl-C in the terminal reaches them once, forwarded below.
        subprocess.Popen(
            _worker_command(study_file, options, index), env=environment, start_new_session=True
        )
        for index in range(workers)
    ]
    with GracefulStop(console) as stop, _display(console) as progress:
        task_id = progress.add_task(config.name, total=target, best="-", last="-", speed="")
        forwarded = False
        while any(p.poll() is None for p in processes):
            if stop() and not forwarded:
                for process in processes:
                    process.send_signal(stop.received)  # each checkpoints its own trial
                forwarded = True
            progress.update(task_id, completed=_finished(study), best=_best_text(study))
            time.sleep(1.0)
        progress.update(task_id, completed=_finished(study), best=_best_text(study))
    _summary(study, config, study_file, console)
    failed = [p.returncode for p in processes if p.returncode not in (0, None)]
    if failed and not stop():
        raise MetasearchError(f"{len(failed)} of {workers} workers failed; see their output above")
    return stop.exit_code


def _check_shared(storage_url: str, what: str) -> None:
    """Refuses a storage that other processes cannot see: SQLite in memory."""
    if parse(storage_url).in_memory:
        raise StorageError(
            f"{what} needs a storage that processes share; {storage_url} is in this process's "
            "memory only: use sqlite:///path/study.db"
        )


def _worker_command(study_file: Path, options: RunOptions, index: int) -> list[str]:
    command = [sys.executable, "-m", "metasearch", "worker", str(study_file)]
    if options.n_trials is not None:
        command += ["--n-trials", str(options.n_trials)]
    if options.timeout is not None:
        command += ["--timeout", str(options.timeout)]
    if options.data_root is not None:
        command += ["--data-root", str(options.data_root)]
    device = options.device
    gpus = torch.cuda.device_count()
    if device in (None, "auto", "cuda") and gpus > 1:
        device = f"cuda:{index % gpus}"
    if device is not None:
        command += ["--device", device]
    return command


class ProgressDisplay:
    """An Optuna callback that keeps a progress bar with the best value and the speed."""

    def __init__(self, progress: Progress, task_id: int) -> None:
        self.progress, self.task_id = progress, task_id
        self.started, self.ran = time.perf_counter(), 0

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self.ran += 1
        per_trial = (time.perf_counter() - self.started) / self.ran
        self.progress.update(
            self.task_id,
            completed=_finished(study),
            best=_best_text(study),
            last=f"#{trial.number} {trial.state.name.lower()}",
            speed=f"{per_trial:.1f} s/trial",
        )


@contextlib.contextmanager
def _display(console: Console) -> Iterator[Progress]:
    """The live progress bar; it vanishes where the run fails, leaving the error's one line."""
    with _progress(console) as progress:
        try:
            yield progress
        except BaseException:
            progress.live.transient = True
            raise


def _progress(console: Console) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("best {task.fields[best]}"),
        TextColumn("last {task.fields[last]}"),
        TextColumn("{task.fields[speed]}"),
        TimeElapsedColumn(),
        console=console,
    )


def _summary(study: optuna.Study, config: StudyConfig, study_file: Path, console: Console) -> None:
    failed = len(study.get_trials(deepcopy=False, states=(TrialState.FAIL,)))
    console.print(
        f"study [bold]{config.name}[/]: {_finished(study)} finished trials"
        + (f", {failed} failed" if failed else "")
        + f"; best {_best_line(study)}. Next: metasearch show {study_file}"
    )


def _finished(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=FINISHED))


def _best_text(study: optuna.Study) -> str:
    if len(study.directions) > 1:
        return f"{len(study.best_trials)} on the Pareto front"
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    values = [t.value for t in complete if t.value is not None and math.isfinite(t.value)]
    if not values:
        return "-"
    best = study.best_trial
    return f"{best.value:.4g} (#{best.number})"


def _best_line(study: optuna.Study) -> str:
    """The summary's account of the best trial: its scores with their intervals and the
    meta-iterations it really trained."""
    if len(study.directions) > 1 or _best_text(study) == "-":
        return _best_text(study)
    return describe_trial(study.best_trial)
