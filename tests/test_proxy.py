"""Optuna's gRPC storage proxy: eight workers through ``metasearch storage-proxy`` finish a
study with each trial done once, and a proxy that is not there gets one line.

The proxy serves the PostgreSQL server of ``METASEARCH_TEST_POSTGRES`` where it is set (``.ci/run``
sets it), else an SQLite file.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import optuna
import pytest
from conftest import write_tiny_study
from optuna.artifacts import get_all_artifact_meta
from optuna.trial import TrialState
from typer.testing import CliRunner

from metasearch.cli import app
from metasearch.errors import StorageError
from metasearch.search import load_study_file, open_for_reading, storage
from metasearch.search.runner import OPENINGS
from metasearch.search.weights import load_trial_weights, study_files

WORKERS, TRIALS = 8, 10
ENVIRONMENT = os.environ | {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def database(tmp_path: Path, request: pytest.FixtureRequest) -> str:
    """A fresh PostgreSQL database where the tests have a server, else an SQLite file."""
    if not os.environ.get("METASEARCH_TEST_POSTGRES"):
        return f"sqlite:///{tmp_path / 'proxied.db'}"
    make: Callable[[], str] = request.getfixturevalue("fresh_postgres")
    return make()


@pytest.fixture
def proxy(database: str, tmp_path: Path) -> Iterator[str]:
    """``metasearch storage-proxy`` over ``database`` on a free loopback port; its URL."""
    port = free_port()
    log = (tmp_path / "proxy.log").open("wb")
    command = [sys.executable, "-m", "metasearch", "storage-proxy", "--storage", database]
    server = subprocess.Popen(
        [*command, "--port", str(port)], stdout=log, stderr=subprocess.STDOUT, env=ENVIRONMENT
    )
    url = f"grpc://127.0.0.1:{port}"
    try:
        end = time.monotonic() + 60
        while "workers connect with" not in (tmp_path / "proxy.log").read_text():
            assert server.poll() is None, (tmp_path / "proxy.log").read_text()
            assert time.monotonic() < end, "the proxy did not start"
            time.sleep(0.2)
        yield url
    finally:
        server.terminate()
        server.wait(timeout=30)


@pytest.mark.slow
def test_eight_workers_through_the_proxy_do_every_trial_once(
    proxy: str, database: str, tmp_path: Path
) -> None:
    path = write_tiny_study(
        tmp_path,
        name="proxied",
        storage=proxy,
        artifacts=str(tmp_path / "artifacts"),
        trials=TRIALS,
        budget={"iterations": 10, "eval_tasks": 4},
    )
    workers = []
    for index in range(WORKERS):
        log = (tmp_path / f"worker{index}.log").open("wb")
        workers.append(
            subprocess.Popen(
                [sys.executable, "-m", "metasearch", "worker", str(path)],
                cwd=tmp_path,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=ENVIRONMENT,
            )
        )
    for index, worker in enumerate(workers):
        try:
            code = worker.wait(timeout=600)
        except subprocess.TimeoutExpired:
            worker.kill()
            code = None
        assert code == 0, (tmp_path / f"worker{index}.log").read_text()[-3000:]

    config = load_study_file(path)
    for url in (proxy, database):  # through the proxy, and in the database itself
        reading = open_for_reading(url)
        assert [s.study_name for s in reading.get_all_studies()] == ["proxied"]  # no lock left
        study = optuna.load_study(study_name="proxied", storage=reading)
        complete = study.get_trials(states=(TrialState.COMPLETE,))
        assert len(complete) == TRIALS
        assert not study.get_trials(states=(TrialState.RUNNING, TrialState.WAITING))
        assert len({tuple(sorted(t.params.items())) for t in complete}) == TRIALS
        others = study.get_trials(states=(TrialState.FAIL, TrialState.PRUNED))
        assert all("nothing was trained" in t.user_attrs["failure"] for t in others)
        assert sorted(t.number for t in study.trials) == list(range(len(study.trials)))
    study_id = reading.get_study_id_from_name("proxied")
    assert reading.get_study_system_attrs(study_id)[OPENINGS] == WORKERS  # one opening each
    assert len({t.user_attrs["worker"] for t in complete}) > 1  # the work was shared
    files = study_files(proxy, study, config.artifacts)
    assert files is not None and files.store.base == tmp_path / "artifacts"
    for trial in complete:
        assert load_trial_weights(files, trial) is not None
        (meta,) = get_all_artifact_meta(trial, storage=reading)
        assert meta.artifact_id == trial.user_attrs["weights"]["artifact_id"]


@pytest.mark.slow
def test_a_proxy_that_is_not_there_gets_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(storage, "CONNECT_TIMEOUT", 1)
    url = f"grpc://127.0.0.1:{free_port()}"
    path = write_tiny_study(tmp_path, storage=url)
    for command in (["search", str(path)], ["show", str(path)]):
        result = CliRunner().invoke(app, command)
        lines = result.stderr.strip().splitlines()
        assert result.exit_code == 2 and len(lines) == 1, result.output
        assert f"cannot reach the storage proxy {url}" in lines[0]
        assert "metasearch storage-proxy" in lines[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny.yaml"]


@pytest.mark.parametrize("typed", ["grpc://", "grpc://host", "grpc://host:port", "grpc://:1"])
def test_a_proxy_url_without_host_and_port_is_refused(typed: str) -> None:
    with pytest.raises(StorageError, match="is not grpc://host:port"):
        storage.parse(typed)


def test_the_proxy_serves_only_a_database(tmp_path: Path) -> None:
    journal = f"journal:{tmp_path / 'study.log'}"
    result = CliRunner().invoke(app, ["storage-proxy", "--storage", journal])
    assert result.exit_code == 2 and "serves a database" in result.stderr
