"""Workers started at the same instant on a fresh storage: none dies on the creation of the
schema or the study, together they finish exactly the trials asked, and no candidate is tried
twice unless a retry links it to its original.

Each worker is the ``metasearch worker`` command in its own process, forked from this one once
metasearch is imported and released at once through a pipe, so that all of them open the fresh
storage together. The PostgreSQL part needs ``METASEARCH_TEST_POSTGRES``.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
import pytest
import torch
from conftest import write_tiny_study
from optuna.trial import TrialState

from metasearch.cli import app
from metasearch.search import load_study_file, open_for_reading

WORKERS, REPEATS, TRIALS = 4, 5, 6


def write_study(folder: Path, storage: str) -> Path:
    return write_tiny_study(
        folder,
        stem="together",
        name="together",
        sampler={"name": "tpe", "options": {"n_startup_trials": 3}},
        budget={"iterations": 10, "eval_tasks": 4},
        trials=TRIALS,
        storage=storage,
        heartbeat={"interval": 1, "grace_period": 20},
    )


def fork_worker(path: Path, log: Path, gate: int) -> int:
    """A ``metasearch worker`` process that starts once ``gate`` (a pipe) gives it a byte."""
    pid = os.fork()
    if pid:
        return pid
    code = 1
    try:
        descriptor = os.open(log, os.O_WRONLY | os.O_CREAT)
        os.dup2(descriptor, 1)
        os.dup2(descriptor, 2)
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        torch.set_num_threads(1)
        os.read(gate, 1)
        app(["worker", str(path)])
    except SystemExit as exit:
        code = exit.code if isinstance(exit.code, int) else 1
    finally:
        os._exit(code)


def run_together(path: Path, folder: Path) -> list[tuple[int, str]]:
    """Exit codes and output of ``WORKERS`` workers released at the same instant."""
    gate, release = os.pipe()
    logs = [folder / f"worker{i}.log" for i in range(WORKERS)]
    pids = [fork_worker(path, log, gate) for log in logs]
    os.write(release, b"go" * WORKERS)
    codes = [os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) for pid in pids]
    os.close(gate), os.close(release)
    return [(code, log.read_text()) for code, log in zip(codes, logs)]


def check_study(path: Path) -> None:
    config = load_study_file(path)
    study = optuna.load_study(study_name=config.name, storage=open_for_reading(config.storage))
    assert len(study.get_trials(states=(TrialState.COMPLETE,))) == TRIALS
    assert not study.get_trials(states=(TrialState.RUNNING, TrialState.WAITING))
    tried: dict[tuple[Any, ...], list[optuna.trial.FrozenTrial]] = {}
    for trial in study.trials:
        if trial.params:
            tried.setdefault(tuple(sorted(trial.params.items())), []).append(trial)
    for same in tried.values():
        originals = {t.system_attrs.get("failed_trial", t.number) for t in same}
        assert len(originals) == 1, [t.number for t in same]  # a repeat must be a retry
    failed = study.get_trials(states=(TrialState.FAIL,))
    assert all("nothing was trained" in t.user_attrs["failure"] for t in failed)


def repeat(make_storage: Callable[[Path], str], tmp_path: Path) -> None:
    for attempt in range(REPEATS):
        folder = tmp_path / f"attempt{attempt}"
        folder.mkdir()
        path = write_study(folder, make_storage(folder))
        outcomes = run_together(path, folder)
        for code, output in outcomes:
            assert code == 0 and "Traceback" not in output, output
        check_study(path)


@pytest.mark.slow
def test_workers_started_together_on_a_fresh_sqlite_file(tmp_path: Path) -> None:
    repeat(lambda folder: f"sqlite:///{folder / 'study.db'}", tmp_path)


@pytest.mark.slow
def test_workers_started_together_on_a_fresh_postgresql_database(
    tmp_path: Path, fresh_postgres: Callable[[], str]
) -> None:
    repeat(lambda _: fresh_postgres(), tmp_path)
