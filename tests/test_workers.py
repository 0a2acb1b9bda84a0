"""Many workers, no lost work: checkpoints that resume exactly, SIGTERM, and worker processes on
one PostgreSQL study, one of them killed in the middle of a trial.

The PostgreSQL tests need a real server: ``METASEARCH_TEST_POSTGRES`` holds its URL (``.ci/run``
starts one on loopback).
"""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import optuna
import pytest
import torch
import yaml
from optuna.trial import TrialState

from metasearch import Budget, LearnerSpec, SinusoidSource, evaluate
from metasearch.commands.threads import threads_per_worker
from metasearch.errors import MetasearchError
from metasearch.evaluation import CheckpointStore, TrainingInterrupted
from metasearch.search import load_study_file, open_for_reading
from metasearch.search.weights import study_files

POSTGRES = os.environ.get("METASEARCH_TEST_POSTGRES")
needs_postgres = pytest.mark.skipif(
    not POSTGRES, reason="set METASEARCH_TEST_POSTGRES to a PostgreSQL URL (.ci/run does)"
)
SPEC = LearnerSpec.from_dict(
    {
        "architecture": {"family": "mlp", "widths": [32, 32], "normalization": "none"},
        "inner": {"steps": 1, "lr": 0.01},
        "outer": {"algorithm": "maml", "meta_lr": 3e-3, "meta_batch_size": 8},
    }
)


@pytest.mark.slow
def test_a_resumed_candidate_ends_exactly_where_an_uninterrupted_one_does(tmp_path: Path) -> None:
    source, budget = SinusoidSource(), Budget(iterations=60, eval_every=20, eval_tasks=20)
    straight = evaluate(SPEC, source, budget)

    store = CheckpointStore(tmp_path / "trial", every=10)
    calls = iter(range(1000))
    with pytest.raises(TrainingInterrupted, match="meta-iteration 35"):
        evaluate(SPEC, source, budget, checkpoints=store, stop=lambda: next(calls) == 34)
    assert store.load() is not None and store.load().iteration == 35

    resumed = evaluate(SPEC, source, budget, checkpoints=store)
    assert resumed.resumed_from == 35 and resumed.iterations == 60
    assert resumed.query_loss == pytest.approx(straight.query_loss, rel=1e-5)
    assert [i for i, _ in resumed.curve] == [20, 40, 60][: len(resumed.curve)] == [20, 40]
    assert resumed.curve[1][1] == pytest.approx(straight.curve[1][1], rel=1e-5)
    for name, tensor in straight.learner.state_tensors().items():
        torch.testing.assert_close(resumed.learner.state_tensors()[name], tensor)


@pytest.mark.slow
def test_a_checkpoint_killed_while_written_leaves_the_last_one_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = CheckpointStore(tmp_path / "trial", every=5)
    source, budget = SinusoidSource(), Budget(iterations=12, eval_tasks=4)
    evaluate(SPEC, source, budget, checkpoints=store)
    last = store.load()
    assert last is not None and last.iteration == 10
    assert sorted(p.name for p in (tmp_path / "trial").iterdir()) == ["state.safetensors"]

    def killed(descriptor: int) -> None:  # the process dies with the new one written, unrenamed
        raise SystemExit(137)

    monkeypatch.setattr(os, "fsync", killed)
    with pytest.raises(SystemExit):
        store.save(dataclasses.replace(last, iteration=11, learner={}))
    monkeypatch.undo()
    (tmp_path / "trial" / "state.safetensors.partial").write_bytes(b"torn")  # as a kill leaves
    kept = store.load()
    assert kept is not None and kept.iteration == 10 and kept.curve == last.curve
    for name, tensor in last.learner.items():
        torch.testing.assert_close(kept.learner[name], tensor)
    (tmp_path / "trial" / "state.safetensors").write_bytes(b"\x00" * 10)
    assert store.load() is None


def study_file(tmp_path: Path, storage: str, **fields: Any) -> Path:
    space = {
        "name": "workers",
        "fixed": {
            "architecture.family": "mlp",
            "architecture.widths": [32, 32],
            "architecture.normalization": "none",
            "outer.algorithm": "maml",
            "inner.steps": 1,
            "outer.meta_batch_size": 8,
        },
        "dimensions": {
            "inner.lr": {"type": "float", "low": 0.005, "high": 0.05, "log": True},
            "outer.meta_lr": {"type": "float", "low": 1e-3, "high": 1e-2, "log": True},
        },
    }
    study = {
        "name": f"workers-{uuid.uuid4().hex[:8]}",
        "task": {"source": "sinusoid"},
        "space": space,
        "sampler": {"name": "random"},
        "budget": {"iterations": 400, "eval_tasks": 20},
        "trials": 5,
        "storage": storage,
        "device": "cpu",
        "checkpoint_every": 20,
        "heartbeat": {"interval": 1, "grace_period": 4},
    } | fields
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(study, sort_keys=False))
    return path


def start_worker(path: Path, tmp_path: Path, log_name: str) -> subprocess.Popen[bytes]:
    log = (tmp_path / log_name).open("wb")
    environment = os.environ | {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "metasearch", "worker", str(path)],
        cwd=tmp_path,
        stdout=log,
        stderr=subprocess.STDOUT,
        env=environment,
    )


def load(path: Path) -> optuna.Study:
    config = load_study_file(path)
    storage = open_for_reading(config.storage)
    return optuna.load_study(study_name=config.name, storage=storage)


def wait_for_a_checkpointed_trial(
    path: Path, tmp_path: Path, workers: list[subprocess.Popen[bytes]], timeout: float
) -> Any:
    """A running trial that has written a checkpoint (its files sit beside the study).

    The study is read only once a checkpoint file exists, so the polling barely touches the
    database the workers write to; a worker that exits early fails the wait with its log.
    """
    end = time.monotonic() + timeout
    config = load_study_file(path)
    while time.monotonic() < end:
        exited = [w for w in workers if w.poll() is not None]
        if exited:
            raise AssertionError(
                f"a worker exited with {exited[0].returncode} before a checkpoint:\n"
                + worker_logs(tmp_path)
            )
        if not any(tmp_path.glob("**/checkpoints/trial-*/state.safetensors")):
            time.sleep(0.2)
            continue
        try:
            study = load(path)
        except (KeyError, MetasearchError):  # the study is not created yet
            time.sleep(0.2)
            continue
        files = study_files(config.storage, study)
        if files is None:  # created, its identity not recorded yet
            time.sleep(0.2)
            continue
        checkpoints = tmp_path / files.checkpoints
        for trial in study.get_trials(states=(TrialState.RUNNING,)):
            if (checkpoints / f"trial-{trial.number}" / "state.safetensors").is_file():
                return trial
        time.sleep(0.2)
    raise AssertionError("no trial wrote a checkpoint in time:\n" + worker_logs(tmp_path))


def worker_logs(tmp_path: Path) -> str:
    return "\n".join(p.read_text()[-2000:] for p in sorted(tmp_path.glob("*.log")))


def finish(processes: list[subprocess.Popen[bytes]], tmp_path: Path, timeout: float) -> None:
    for index, process in enumerate(processes):
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            raise AssertionError(
                f"worker {index} did not finish:\n{worker_logs(tmp_path)}"
            ) from None


@pytest.mark.slow
def test_sigterm_checkpoints_the_running_trial_and_a_rerun_resumes_it(tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    path = study_file(tmp_path, storage, trials=2, budget={"iterations": 600, "eval_tasks": 20})
    worker = start_worker(path, tmp_path, "worker.log")
    trial = wait_for_a_checkpointed_trial(path, tmp_path, [worker], timeout=240)
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(timeout=60) == 128 + signal.SIGTERM, (tmp_path / "worker.log").read_text()

    study = load(path)
    interrupted = next(t for t in study.trials if t.number == trial.number)
    assert interrupted.state == TrialState.FAIL
    assert "interrupted at meta-iteration" in interrupted.user_attrs["failure"]
    assert [t.state for t in study.trials if t.number > trial.number] == [TrialState.WAITING]
    assert not study.get_trials(states=(TrialState.RUNNING,))

    rerun = start_worker(path, tmp_path, "rerun.log")
    finish([rerun], tmp_path, timeout=300)
    study = load(path)
    assert len(study.get_trials(states=(TrialState.COMPLETE,))) == 2
    retry = next(t for t in study.trials if t.system_attrs.get("failed_trial") == trial.number)
    assert retry.state == TrialState.COMPLETE and retry.user_attrs["failure"] is None
    assert retry.user_attrs["result"]["resumed_from"] >= 20
    assert retry.params == interrupted.params


@pytest.mark.slow
@needs_postgres
def test_three_workers_one_killed_mid_trial_end_with_exactly_the_trials_asked(
    tmp_path: Path,
) -> None:
    assert POSTGRES is not None
    path = study_file(tmp_path, POSTGRES)
    workers = [start_worker(path, tmp_path, f"worker{i}.log") for i in range(3)]
    victim = wait_for_a_checkpointed_trial(path, tmp_path, workers, timeout=240)
    pid = int(victim.user_attrs["worker"].rsplit(":", 1)[1])
    os.kill(pid, signal.SIGKILL)
    finish([w for w in workers if w.pid != pid], tmp_path, timeout=400)
    assert next(w for w in workers if w.pid == pid).wait(timeout=10) == -signal.SIGKILL

    study = load(path)
    complete = study.get_trials(states=(TrialState.COMPLETE,))
    assert len(complete) == 5
    assert not study.get_trials(states=(TrialState.RUNNING, TrialState.WAITING))
    killed = next(t for t in study.trials if t.number == victim.number)
    assert killed.state == TrialState.FAIL
    retries = [t for t in study.trials if t.system_attrs.get("failed_trial") == victim.number]
    assert [t.state for t in retries] == [TrialState.COMPLETE]
    assert retries[0].params == killed.params
    assert retries[0].user_attrs["result"]["resumed_from"] >= 20
    # Nothing lost or done twice: every complete trial is a distinct candidate, and every other
    # failure is a worker's surplus ask that trained nothing.
    assert len({tuple(sorted(t.params.items())) for t in complete}) == 5
    others = [t for t in study.get_trials(states=(TrialState.FAIL,)) if t.number != killed.number]
    assert all("nothing was trained" in t.user_attrs["failure"] for t in others)


@pytest.mark.slow
@needs_postgres
def test_the_password_never_reaches_the_study_or_the_output(tmp_path: Path) -> None:
    assert POSTGRES is not None
    path = study_file(tmp_path, POSTGRES, trials=1, budget={"iterations": 5, "eval_tasks": 4})
    worker = start_worker(path, tmp_path, "worker.log")
    finish([worker], tmp_path, timeout=120)
    password = POSTGRES.split("://", 1)[1].split("@", 1)[0].split(":", 1)[1]
    output = (tmp_path / "worker.log").read_text()
    assert "***" in output and password not in output
    study = load(path)
    assert password not in repr(study.user_attrs) + repr(study.trials[0].user_attrs)


@pytest.mark.slow
def test_search_with_two_workers_on_sqlite_ends_with_exactly_the_trials_asked(
    tmp_path: Path,
) -> None:
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    path = study_file(tmp_path, storage, trials=4, budget={"iterations": 300, "eval_tasks": 10})
    environment = os.environ | {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "metasearch", "search", str(path), "--workers", "2"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=environment,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    study = load(path)
    complete = study.get_trials(states=(TrialState.COMPLETE,))
    assert len(complete) == 4
    assert len({t.user_attrs["worker"] for t in study.trials}) == 2  # both processes took part
    assert not study.get_trials(states=(TrialState.RUNNING, TrialState.WAITING))
    shared = threads_per_worker(2)  # the cores shared out, whatever OMP_NUM_THREADS says
    assert {t.user_attrs["threads"] for t in study.trials} == {shared}
    joined = [line for line in done.stderr.splitlines() if "worker joined study" in line]
    assert len(joined) == 2 and all(f"with {shared} CPU threads" in line for line in joined)
    assert all(line.startswith("worker ") for line in joined), done.stderr
