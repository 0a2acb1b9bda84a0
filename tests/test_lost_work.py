"""Work never lost or wrongly reused: a new study under an old one's name starts afresh, a trial
killed after it stored its outcome is finished rather than retrained, concurrent runs of one
study explore different candidates, and a full disk stops the run with one line while nothing
is marked done that was not written.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import optuna
import pytest
import yaml
from conftest import mounted_tmpfs, write_tiny_study
from optuna.trial import TrialState
from typer.testing import CliRunner

from metasearch.cli import app
from metasearch.errors import SpecError
from metasearch.evaluation import evaluate_population
from metasearch.search import load_study_file, open_for_reading, open_study, rounds, run_study
from metasearch.search.weights import load_trial_weights, study_files


def write_study(folder: Path, **fields: Any) -> Path:
    defaults = {
        "budget": {"iterations": 30, "eval_tasks": 4},
        "checkpoint_every": 5,
        "trials": 1,
        "heartbeat": {"interval": 1, "grace_period": 2},
    }
    return write_tiny_study(folder, **(defaults | fields))


def stored(path: Path) -> optuna.Study:
    config = load_study_file(path)
    return optuna.load_study(study_name=config.name, storage=open_for_reading(config.storage))


@pytest.mark.slow
def test_a_new_study_with_an_old_name_never_resumes_its_checkpoints_or_weights(
    tmp_path: Path,
) -> None:
    path = write_study(tmp_path, trials=2)
    config = load_study_file(path)
    calls = iter(range(10_000))
    run_study(config, n_trials=1)  # trial 0 complete, with weights
    run_study(config, stop=lambda: next(calls) == 12)  # trial 1 interrupted at a checkpoint
    old = stored(path)
    old_files = study_files(config.storage, old)
    assert old_files is not None and (old_files.checkpoints / "trial-1").is_dir()
    old_artifact = old_files.store.base / old.trials[0].user_attrs["weights"]["artifact_id"]
    old_weights = old_artifact.read_bytes()

    (tmp_path / "tiny.db").unlink()  # the study is gone; its files stay
    new = run_study(load_study_file(write_study(tmp_path, trials=2, seed=7)))
    new_files = study_files(config.storage, new)
    assert new_files is not None and new_files.store.base == old_files.store.base
    assert new_files.folder.parent == old_files.folder.parent != new_files.folder
    complete = new.get_trials(states=(TrialState.COMPLETE,))
    assert [t.number for t in complete] == [0, 1]
    assert all(t.user_attrs["result"]["resumed_from"] is None for t in complete)
    assert {t.params["inner.lr"] for t in complete}.isdisjoint(
        {t.params["inner.lr"] for t in old.trials}
    )
    old_ids = {
        t.user_attrs["weights"]["artifact_id"] for t in old.trials if "weights" in t.user_attrs
    }
    for trial in complete:
        assert load_trial_weights(new_files, trial) is not None
        assert trial.user_attrs["weights"]["artifact_id"] not in old_ids  # never the old files
    assert old_artifact.read_bytes() == old_weights


@pytest.mark.parametrize("name", ["../../x", "/tmp/absolute", "..", "a/b", "a\\b"])
def test_a_study_name_that_is_a_path_is_refused_before_anything_is_written(
    name: str, tmp_path: Path
) -> None:
    path = write_study(tmp_path, name=name)
    with pytest.raises(SpecError, match="invalid study name"):
        run_study(load_study_file(path))
    result = CliRunner().invoke(app, ["search", str(path)])
    assert result.exit_code == 2 and "invalid study name" in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny.yaml"]


KILL_AFTER_STORING = """
import os, sys
from metasearch.search import load_study_file, rounds, runner

rounds.TrialRound._tell = lambda self, study, trial, record: os._exit(9)  # killed before the tell
runner.run_study(load_study_file(sys.argv[1]))
"""


@pytest.mark.slow
def test_a_trial_killed_after_storing_its_outcome_is_finished_not_retrained(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_study(tmp_path)
    killed = subprocess.run([sys.executable, "-c", KILL_AFTER_STORING, str(path)], timeout=120)
    assert killed.returncode == 9
    original = stored(path).trials[0]
    assert original.state == TrialState.RUNNING and original.user_attrs["weights"]
    time.sleep(3)  # past the grace period: the next run retries it

    def no_training(*args: object, **kwargs: object) -> None:
        raise AssertionError("the retry meta-trained again")

    monkeypatch.setattr(rounds, "evaluate_population", no_training)
    study = run_study(load_study_file(path))
    retry = study.get_trials(states=(TrialState.COMPLETE,))
    assert [t.system_attrs["failed_trial"] for t in retry] == [0]
    assert retry[0].params == original.params
    assert retry[0].value == original.user_attrs["result"]["query_loss"]
    assert retry[0].user_attrs["weights"] == original.user_attrs["weights"]
    files = study_files(load_study_file(path).storage, study)
    assert load_trial_weights(files, retry[0]) is not None


@pytest.mark.slow
def test_a_population_killed_after_one_member_stored_its_outcome_retrains_only_the_other(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_study(tmp_path, trials=2, population=2)
    killed = subprocess.run([sys.executable, "-c", KILL_AFTER_STORING, str(path)], timeout=120)
    assert killed.returncode == 9  # at the first member's tell
    first, second = stored(path).trials
    assert first.state == second.state == TrialState.RUNNING
    assert first.user_attrs["weights"] and "result" not in second.user_attrs
    time.sleep(3)  # past the grace period: the next run retries both
    trained: list[int] = []

    def counted(specs: list[Any], *args: Any, **kwargs: Any) -> Any:
        trained.append(len(specs))
        return evaluate_population(specs, *args, **kwargs)

    monkeypatch.setattr(rounds, "evaluate_population", counted)
    study = run_study(load_study_file(path))
    retries = {t.system_attrs["failed_trial"]: t for t in study.trials if t.number > 1}
    assert sorted(retries) == [0, 1] and len(study.trials) == 4
    assert all(t.state == TrialState.COMPLETE for t in retries.values())
    assert trained == [1]  # the member without a stored outcome, alone
    assert retries[0].value == first.user_attrs["result"]["query_loss"]
    assert retries[0].user_attrs["weights"] == first.user_attrs["weights"]
    assert retries[1].params == second.params


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:Heartbeat of storage")  # asked outside optimize
def test_runs_opening_one_study_together_propose_different_candidates(tmp_path: Path) -> None:
    config = load_study_file(write_study(tmp_path, sampler={"name": "tpe"}))
    run_study(config, n_trials=1)
    askers = [open_study(config) for _ in range(4)]  # four processes joining the same study
    proposed = [study.ask().suggest_float("inner.lr", 1e-3, 0.1, log=True) for study in askers]
    assert len(set(proposed)) == 4


@pytest.mark.slow
def test_a_single_run_is_reproducible(tmp_path: Path) -> None:
    runs = []
    for attempt in ("a", "b"):
        folder = tmp_path / attempt
        folder.mkdir()
        study = run_study(load_study_file(write_study(folder, trials=2)))
        runs.append([t.params for t in study.trials])
    assert runs[0] == runs[1]


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 512 KiB file system of its own (needs root; skips elsewhere)."""
    yield from mounted_tmpfs(tmp_path / "disk", "size=512k")


def fill(disk: Path) -> Path:
    """Fills ``disk`` to the last byte; returns the file that does it."""
    filler = disk / "filler"
    with filler.open("wb", buffering=0) as file:
        try:
            while True:
                file.write(b"\0" * 4096)
        except OSError:
            pass
    return filler


def assert_complete_trials_are_whole(path: Path) -> optuna.Study:
    study = stored(path)
    files = study_files(load_study_file(path).storage, study)
    for trial in study.get_trials(states=(TrialState.COMPLETE,)):
        assert load_trial_weights(files, trial) is not None, trial.number
        data = (files.store.base / trial.user_attrs["weights"]["artifact_id"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == trial.user_attrs["weights"]["sha256"]
    return study


def one_line(result: Any, *expected: str) -> str:
    """The one error line the run ended with; before it, off a terminal, only the plain
    progress lines of the trials it ran."""
    *progress, last = result.stderr.strip().splitlines()
    assert result.exit_code == 2 and last.startswith("error:"), result.stderr
    assert all(line.startswith("trial ") for line in progress), result.stderr
    assert "Traceback" not in result.output, result.output
    for words in expected:
        assert words in last, last
    return last


@pytest.mark.slow
def test_a_full_disk_for_weights_stops_with_one_line_and_loses_nothing(
    tmp_path: Path, small_disk: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("METASEARCH_ARTIFACTS", str(small_disk))
    path = write_study(tmp_path, trials=3)
    assert CliRunner().invoke(app, ["search", str(path), "--n-trials", "1"]).exit_code == 0
    filler = fill(small_disk)

    full = CliRunner().invoke(app, ["search", str(path)])
    one_line(full, "no space left", str(small_disk))
    study = assert_complete_trials_are_whole(path)
    assert len(study.get_trials(states=(TrialState.COMPLETE,))) == 1
    failed = study.get_trials(states=(TrialState.FAIL,))
    assert len(failed) == 1 and "no space left" in failed[0].user_attrs["failure"]
    assert len(study.get_trials(states=(TrialState.WAITING,))) == 1  # queued again
    assert not [p for p in small_disk.rglob("*") if p.name.endswith(".partial")]

    filler.unlink()
    assert CliRunner().invoke(app, ["search", str(path)]).exit_code == 0
    study = assert_complete_trials_are_whole(path)
    complete = study.get_trials(states=(TrialState.COMPLETE,))
    assert len(complete) == 3
    assert failed[0].number in {t.system_attrs.get("failed_trial") for t in complete}


@pytest.mark.slow
def test_a_full_disk_under_the_database_stops_with_one_line(
    tmp_path: Path, small_disk: Path
) -> None:
    path = write_study(tmp_path, trials=3, storage=f"sqlite:///{small_disk / 'tiny.db'}")
    assert CliRunner().invoke(app, ["search", str(path), "--n-trials", "1"]).exit_code == 0
    filler = fill(small_disk)

    one_line(CliRunner().invoke(app, ["search", str(path)]), "no space left", str(small_disk))
    filler.unlink()
    study = assert_complete_trials_are_whole(path)
    assert len(study.get_trials(states=(TrialState.COMPLETE,))) == 1
    assert CliRunner().invoke(app, ["search", str(path)]).exit_code == 0
    assert (
        len(assert_complete_trials_are_whole(path).get_trials(states=(TrialState.COMPLETE,))) == 3
    )


@pytest.mark.slow
def test_a_report_whose_plots_cannot_be_written_fails_loudly(
    tmp_path: Path, small_disk: Path
) -> None:
    path = write_study(tmp_path, trials=2)
    assert CliRunner().invoke(app, ["search", str(path)]).exit_code == 0
    fill(small_disk)
    result = CliRunner().invoke(app, ["report", str(path), "--out", str(small_disk / "report")])
    one_line(result, "no space left")
    assert "report written" not in result.output


@pytest.mark.slow
def test_a_worker_stopped_by_a_run_of_failures_exits_non_zero_with_its_reason(
    tmp_path: Path,
) -> None:
    path = write_study(tmp_path, trials=50)
    study = yaml.safe_load(path.read_text())
    study["space"]["fixed"]["outer.algorithm"] = "metasgd"  # invalid without inner.learned
    path.write_text(yaml.safe_dump(study))
    result = CliRunner().invoke(app, ["worker", str(path)])
    assert result.exit_code == 2, result.output
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: stopped: the last 10 trials failed") and "metasgd" in last
