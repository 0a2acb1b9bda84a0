"""``metasearch search`` and ``worker``: run a study, alone or as one of many workers."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import optuna
import torch
from optuna.trial import TrialState
from rich.console import Console
from rich.markup import escape

from metasearch.commands.common import STORAGE_VARIABLE, load_config, study_storage
from metasearch.commands.live import FollowedStudy, StudyDisplay, best_text, finished_count
from metasearch.commands.stopping import GracefulStop
from metasearch.commands.threads import threads_per_worker, use_threads
from metasearch.errors import MetasearchError, StorageError
from metasearch.search.results import describe_trial
from metasearch.search.runner import open_study, run_study
from metasearch.search.storage import parse, redact, writing
from metasearch.search.study import StudyConfig, build_source


@dataclass(frozen=True)
class RunOptions:
    """The command-line options shared by ``search`` and ``worker``."""

    n_trials: int | None
    timeout: float | None
    storage: str | None
    data_root: Path | None
    device: str | None
    threads: int | None = None


def run_search(study_file: Path, options: RunOptions, workers: int, console: Console) -> int:
    """Runs the study in this process with a live display, or in ``workers`` processes; returns
    the exit code."""
    config = load_config(study_file)
    storage_url = study_storage(config, options.storage)
    if workers > 1:
        _check_shared(storage_url, f"--workers {workers}")
        return _run_workers(study_file, config, storage_url, options, workers, console)
    use_threads(options.threads or config.threads)
    source = build_source(config, options.data_root, options.device)  # no data: fail early
    opened = open_study(config, storage_url)  # a bad storage or a changed study: fail now
    display = StudyDisplay(console, config.name, options.n_trials or config.trials, opened)
    with GracefulStop(console) as stop, display.shown(), writing(storage_url):
        study = run_study(
            config,
            n_trials=options.n_trials,
            timeout=options.timeout,
            storage=storage_url,
            callbacks=[display],
            source=source,
            stop=stop,
            study=opened,
            observe=display.observe,
        )
    _summary(study, config, study_file, console)
    return stop.exit_code


def run_worker(study_file: Path, options: RunOptions, console: Console) -> int:
    """Joins the study as one worker, with a live display on a terminal and a line per trial
    elsewhere; returns the exit code."""
    config = load_config(study_file)
    storage_url = study_storage(config, options.storage)
    _check_shared(storage_url, "a worker")
    threads = use_threads(options.threads or config.threads)
    source = build_source(config, options.data_root, options.device)
    opened = open_study(config, storage_url)
    console.print(
        f"worker joined study {config.name} in {redact(storage_url)} on {source.device} with "
        f"{threads} CPU threads",
        markup=False,
        highlight=False,
        soft_wrap=True,
    )
    target = options.n_trials or config.trials
    display = StudyDisplay(console, config.name, target, opened, shared=True)
    with GracefulStop(console) as stop, display.shown(), writing(storage_url):
        study = run_study(
            config,
            n_trials=options.n_trials,
            timeout=options.timeout,
            storage=storage_url,
            callbacks=[display],
            source=source,
            stop=stop,
            study=opened,
            observe=display.observe,
        )
    console.print(
        f"worker done: the study has {finished_count(study)} finished trials", soft_wrap=True
    )
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
    there are several; the CPU cores shared out among them) and follows the study until they
    end, printing their output above the display."""
    study = open_study(config, storage_url)
    target = options.n_trials or config.trials
    threads = options.threads or config.threads or threads_per_worker(workers)
    environment = os.environ | {STORAGE_VARIABLE: storage_url}  # not argv: others see that
    processes = [
        # Own sessions: a Ctrl-C in the terminal reaches them once, forwarded below.
        subprocess.Popen(
            _worker_command(study_file, options, index, threads),
            env=environment,
            start_new_session=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
        )
        for index in range(workers)
    ]
    relays = [_relay(process, index, console) for index, process in enumerate(processes)]
    display = FollowedStudy(console, config.name, target)
    with GracefulStop(console) as stop, display.shown():
        forwarded = False
        while any(p.poll() is None for p in processes):
            if stop() and not forwarded:
                for process in processes:
                    process.send_signal(stop.received)  # each checkpoints its own trial
                forwarded = True
            display.update(study)
            time.sleep(1.0)
        for relay in relays:
            relay.join()
        display.update(study)
    _summary(study, config, study_file, console)
    failed = [p.returncode for p in processes if p.returncode not in (0, None)]
    if failed and not stop():
        raise MetasearchError(f"{len(failed)} of {workers} workers failed; see their output above")
    return stop.exit_code


def _relay(process: subprocess.Popen[str], index: int, console: Console) -> threading.Thread:
    """Prints the worker's output line by line through ``console``, above the live display."""

    def relay() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            text = f"worker {index}: {line.rstrip()}"
            console.print(text, markup=False, highlight=False, soft_wrap=True)

    thread = threading.Thread(target=relay, daemon=True)
    thread.start()
    return thread


def _check_shared(storage_url: str, what: str) -> None:
    """Refuses a storage that other processes cannot see: SQLite in memory."""
    if parse(storage_url).in_memory:
        raise StorageError(
            f"{what} needs a storage that processes share; {storage_url} is in this process's "
            "memory only: use sqlite:///path/study.db"
        )


def _worker_command(study_file: Path, options: RunOptions, index: int, threads: int) -> list[str]:
    command = [sys.executable, "-m", "metasearch", "worker", str(study_file)]
    command += ["--threads", str(threads)]
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


def _summary(study: optuna.Study, config: StudyConfig, study_file: Path, console: Console) -> None:
    failed = len(study.get_trials(deepcopy=False, states=(TrialState.FAIL,)))
    console.print(
        f"study [bold]{escape(config.name)}[/]: {finished_count(study)} finished trials"
        + (f", {failed} failed" if failed else "")
        + escape(f"; best {_best_line(study)}. Next: metasearch show {study_file}"),
        soft_wrap=True,
    )


def _best_line(study: optuna.Study) -> str:
    """The summary's account of the best trial: its scores with their intervals and the
    meta-iterations it really trained."""
    if len(study.directions) > 1 or best_text(study) == "-":
        return best_text(study)
    return describe_trial(study.best_trial)
