"""Live progress inside a trial, the study ETA, log lines above the live display, escaped
output, and torch's thread count in the process that trains."""

from __future__ import annotations

import io
import logging
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import optuna
import pytest
from conftest import write_tiny_study
from rich.console import Console
from typer.testing import CliRunner

from metasearch import Budget, LearnerSpec, SinusoidSource, evaluate
from metasearch.cli import LogHandler, app
from metasearch.commands import threads as threads_module
from metasearch.commands.live import StudyDisplay, StudyEta, duration, rate_eta
from metasearch.evaluation import TrainingProgress
from metasearch.evaluation.progress import OBSERVE_SECONDS, ProgressWatch
from metasearch.search import load_study_file, open_study

SPEC = LearnerSpec.from_dict(
    {
        "architecture": {"family": "mlp", "widths": [8], "normalization": "none"},
        "inner": {"steps": 1, "lr": 0.01},
        "outer": {"algorithm": "fomaml", "meta_lr": 3e-3, "meta_batch_size": 4},
    }
)


BUDGET = {"iterations": 20, "eval_tasks": 10}


def tiny_study(folder: Path, **fields: Any) -> Path:
    """A tiny study of short trials, kept in SQLite in ``folder``."""
    storage = f"sqlite:///{folder / 'tiny.db'}"
    return write_tiny_study(folder, budget=BUDGET, storage=storage, **fields)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_evaluator_tells_its_observer_increasing_iterations_and_new_scores() -> None:
    told: list[TrainingProgress] = []
    budget = Budget(iterations=20, eval_every=5, eval_tasks=10)
    result = evaluate(SPEC, SinusoidSource(), budget, observe=told.append)
    assert result.status == "complete"
    iterations = [p.iterations for p in told]
    assert iterations == sorted(set(iterations)) and iterations[0] >= 1
    assert all(p.total == 20 and 0 < p.spent <= 1 for p in told)
    # Every new validation score is told at once, whatever the throttle.
    scored = {p.validation for p in told if p.validation is not None}
    assert scored == {loss for _, loss in result.curve}


def test_the_watch_throttles_and_estimates_the_time_left_from_its_own_pace() -> None:
    clock, told = FakeClock(), []
    watch = ProgressWatch(told.append, spent=0.2, clock=clock)  # resumed at a fifth
    clock.now += 10.0
    watch.update(10, 100, 0.4, None)  # 0.2 of the budget in 10 s: 0.6 left is 30 s
    clock.now += OBSERVE_SECONDS / 2
    watch.update(11, 100, 0.41, None)  # too soon, nothing new: not told
    watch.update(12, 100, 0.42, 1.5)  # a new score: told at once
    assert [p.iterations for p in told] == [10, 12]
    assert told[0].seconds_left == pytest.approx(30.0)
    assert told[1].validation == 1.5


def test_the_study_eta_counts_the_running_trial_then_the_mean_of_finished_ones() -> None:
    clock = FakeClock()
    eta = StudyEta(clock)
    assert eta.seconds_left(3) is None  # nothing measured yet
    clock.now += 6.0
    eta.trial_progress(TrainingProgress(30, 100, 0.5, None, seconds_left=6.0))
    assert eta.seconds_left(3) == pytest.approx(6.0 + 2 * 12.0)  # this trial: 12 s in all
    clock.now += 6.0
    eta.trial_ended()
    clock.now += 4.0
    eta.trial_ended()  # trials of 12 s and 4 s: 8 s each on average
    assert eta.seconds_left(2) == pytest.approx(8.0 + 8.0)
    clock.now += 3.0  # 3 s into the next trial, before it told anything
    assert eta.seconds_left(2) == pytest.approx(5.0 + 8.0)
    eta.trial_progress(TrainingProgress(90, 100, 0.9, None, seconds_left=1.0))
    assert eta.seconds_left(2) == pytest.approx(1.0 + 8.0)
    assert eta.seconds_left(2, workers=4) == pytest.approx(1.0 + 8.0 / 4)  # others run more
    assert eta.seconds_left(0) == 0.0
    assert rate_eta(finished=4, elapsed=60.0, remaining=2) == pytest.approx(30.0)
    assert rate_eta(finished=0, elapsed=60.0, remaining=2) is None
    assert [duration(s) for s in (None, 42.4, 600, 7200)] == ["?", "42 s", "10 min", "2.0 h"]


def _lines(raw: str) -> list[str]:
    """What a terminal shows of each line written: escape sequences dropped, a carriage return
    starting the line over."""
    lines = []
    for line in re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", raw).split("\n"):
        lines.append(line.rsplit("\r", 1)[-1])
    return lines


def test_a_warning_during_a_live_run_prints_on_its_own_line_above_the_bars(
    tmp_path: Path,
) -> None:
    output = io.StringIO()
    console = Console(file=output, force_terminal=True, width=120)
    config = load_study_file(write_tiny_study(tmp_path, trials=3))
    study = open_study(config, None)
    display = StudyDisplay(console, config.name, 3, study)
    logger = logging.getLogger("metasearch.test_progress")
    handler = LogHandler(console)
    logger.addHandler(handler)
    try:
        with display.shown():
            display.observe(0, TrainingProgress(40, 100, 0.4, 1.25, seconds_left=3.0))
            display.progress.refresh()
            logger.warning("the disk is [dashboard] nearly full")
            display.observe(0, TrainingProgress(80, 100, 0.8, 1.0, seconds_left=1.0))
            display.progress.refresh()
    finally:
        logger.removeHandler(handler)
    lines = _lines(output.getvalue())
    warned = [line for line in lines if "nearly full" in line]
    assert warned and all(line.startswith("WARNING") for line in warned), lines
    assert "the disk is [dashboard] nearly full" in warned[0]  # never read as markup
    assert any("trial #0" in line and "80/100 it" in line for line in lines), lines


@pytest.mark.slow
def test_without_a_terminal_a_search_prints_plain_lines_per_trial(tmp_path: Path) -> None:
    study = tiny_study(tmp_path, trials=2)
    result = CliRunner().invoke(app, ["search", str(study)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "\x1b[" not in result.output and "\r" not in result.output
    lines = result.output.splitlines()
    assert lines[0].startswith("trial 0 complete; 1/2 finished, best ")
    assert lines[1].startswith("trial 1 complete; 2/2 finished") and "study ETA 0 s" in lines[1]
    assert lines[2].startswith("study tiny: 2 finished trials")


@pytest.mark.slow
def test_error_text_and_paths_print_literally_not_as_markup(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    study = tiny_study(tmp_path, trials=1)
    runner = CliRunner()
    assert runner.invoke(app, ["search", str(study)]).exit_code == 0
    monkeypatch.setitem(sys.modules, "optuna_dashboard", None)  # not installed
    missing = runner.invoke(app, ["dashboard", str(study)])
    assert missing.exit_code == 2
    assert "pip install 'metasearch[dashboard]'" in missing.output, missing.output
    out = tmp_path / "[bold]report"
    written = runner.invoke(app, ["report", str(study), "--out", str(out)])
    assert written.exit_code == 0, written.output
    assert f"{out}" in written.output.replace("\n", ""), written.output
    odd = tmp_path / "[red]odd" / "study.yaml"
    assert str(odd) in runner.invoke(app, ["show", str(odd)]).output.replace("\n", "")


def _search_in_a_process(study: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "metasearch", "--verbose", "search", str(study), *args],
        capture_output=True,
        text=True,
        timeout=600,  # a busy machine: two processes that import torch
    )


@pytest.mark.slow
def test_threads_sets_torchs_thread_count_in_the_training_process(tmp_path: Path) -> None:
    study = tiny_study(tmp_path, trials=1, threads=3)
    storage = f"sqlite:///{tmp_path / 'tiny.db'}"
    done = _search_in_a_process(study, "--threads", "1")
    assert done.returncode == 0, done.stdout + done.stderr
    trial = optuna.load_study(study_name="tiny", storage=storage).trials[0]
    assert trial.user_attrs["threads"] == 1 and trial.user_attrs["device"] == "cpu"
    assert "torch uses 1 CPU threads" in done.stderr
    # Without the option, the study file's threads.
    done = _search_in_a_process(study, "--n-trials", "2")
    assert done.returncode == 0, done.stdout + done.stderr
    trial = optuna.load_study(study_name="tiny", storage=storage).trials[1]
    assert trial.user_attrs["threads"] == 3


def test_workers_share_out_the_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(threads_module, "available_cores", lambda: 16)
    assert [threads_module.threads_per_worker(n) for n in (1, 4, 5, 32)] == [16, 4, 3, 1]


@pytest.mark.parametrize("command", ["search", "worker", "train", "evaluate"])
def test_a_bad_thread_count_gets_one_line(command: str, tmp_path: Path) -> None:
    from test_cli import assert_one_line_error

    args: list[Any] = [command, tmp_path / "x.yaml", "--threads", "0"]
    if command == "train":
        args += ["--out", tmp_path / "out"]
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert_one_line_error(result, "--threads must be between 1 and 1,024, got 0")
