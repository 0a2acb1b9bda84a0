"""``metasearch studies``: a storage's studies listed from any of the places the other commands
take it from, one deleted with the files it owns after asking, and one line for each mistake."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import optuna
import pytest
from conftest import write_tiny_study
from typer.testing import CliRunner

from metasearch.cli import app
from metasearch.commands.common import STORAGE_VARIABLE

BUDGET = {"iterations": 10, "eval_tasks": 4}
TOO_SLOW = {"iterations": 50, "time_limit": 60, "min_iterations": 1_000_000, "eval_tasks": 4}


def run(
    *args: str | Path, stdin: str | None = None, env: dict[str, str | None] | None = None
) -> Any:
    """The command line on ``args``, with ``$METASEARCH_STORAGE`` unset unless ``env`` sets it."""
    environment = {"COLUMNS": "200", STORAGE_VARIABLE: None, **(env or {})}
    return CliRunner().invoke(app, [str(a) for a in args], input=stdin, env=environment)


def one_line_error(result: Any, *expected: str) -> str:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.exit_code == 2 and len(lines) == 1, result.output
    assert lines[0].startswith("error: ") and "Traceback" not in result.output, result.output
    for words in expected:
        assert words in lines[0], lines[0]
    return lines[0]


def row(output: str, name: str) -> list[str]:
    for line in output.splitlines():
        parts = [part.strip() for part in line.replace("┃", "│").split("│")]
        if len(parts) > 2 and parts[1] == name:
            return parts[2:-1]
    raise AssertionError(f"no study {name!r} in\n{output}")


@pytest.fixture
def storage(tmp_path: Path) -> tuple[str, Path, Path]:
    """One SQLite storage holding two small sinusoid studies, each with files: ``tiny`` (two
    complete trials) and ``slow`` (one trial pruned as too slow); the URL and both study files."""
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    tiny = write_tiny_study(tmp_path, trials=2, budget=BUDGET, storage=url)
    slow = write_tiny_study(
        tmp_path,
        stem="slow",
        name="slow",
        trials=1,
        budget=TOO_SLOW,
        storage=url,
        checkpoint_every=1,
    )  # its checkpoints' folder stays
    for study in (tiny, slow):
        assert run("search", study).exit_code == 0
    return url, tiny, slow


@pytest.mark.slow
def test_studies_lists_each_study_with_its_trials_and_best(
    storage: tuple[str, Path, Path],
) -> None:
    url, tiny, _ = storage
    listed = run("studies", "--storage", url)
    assert listed.exit_code == 0, listed.output
    header = row(listed.stdout, "study")
    assert header == ["complete", "pruned", "failed", "running", "best"]
    study = optuna.load_study(study_name="tiny", storage=url)
    best = study.best_trial
    assert row(listed.stdout, "tiny") == [
        "2",
        "0",
        "0",
        "0",
        f"query_loss {best.value:.4g} (#{best.number})",
    ]
    assert row(listed.stdout, "slow") == ["0", "1", "0", "0", "-"]
    assert run("studies", tiny).stdout == listed.stdout  # the study file's storage
    from_variable = run("studies", env={STORAGE_VARIABLE: url})
    assert from_variable.stdout == listed.stdout


@pytest.mark.slow
def test_delete_asks_then_removes_the_study_and_its_files(
    storage: tuple[str, Path, Path], tmp_path: Path
) -> None:
    url, _, _ = storage
    weights = tmp_path / "shared.weights"
    tiny = artifact_files(weights, url, "tiny")
    assert tiny and all(path.is_file() for path in tiny)
    declined = run("studies", "--storage", url, "--delete", "tiny", stdin="n\n")
    assert declined.exit_code == 1 and "nothing deleted" in declined.output
    unanswered = run("studies", "--storage", url, "--delete", "tiny", stdin="")
    assert unanswered.exit_code == 1 and "nothing deleted" in unanswered.output
    assert "tiny" in optuna.get_all_study_names(url) and all(path.is_file() for path in tiny)

    slow = artifact_files(weights, url, "slow")
    deleted = run("studies", "--storage", url, "--delete", "tiny", stdin="y\n")
    assert deleted.exit_code == 0, deleted.output
    assert "2 trials (2 complete)" in deleted.output and "deleted study tiny" in deleted.output
    assert optuna.get_all_study_names(url) == ["slow"]
    assert not any(path.exists() for path in tiny)  # its trials' weights went with it
    assert all(path.is_file() for path in slow)  # the other study's stay
    assert run("studies", "--storage", url).stdout.count("│ slow") == 1

    gone = run("studies", "--storage", url, "--delete", "slow", "--yes")
    assert gone.exit_code == 0, gone.output
    assert not [path for path in weights.rglob("*") if path.is_file()]
    empty = run("studies", "--storage", url)
    assert empty.exit_code == 1 and "no studies in" in empty.stderr and not empty.stdout


def artifact_files(store: Path, url: str, name: str) -> list[Path]:
    """The files in ``store`` of the artifacts that study ``name``'s trials list."""
    study = optuna.load_study(study_name=name, storage=url)
    ids = {
        meta.artifact_id
        for trial in study.trials
        for meta in optuna.artifacts.get_all_artifact_meta(trial, storage=study._storage)
    }
    return [path for path in store.rglob("*") if path.is_file() and path.name in ids]


@pytest.mark.slow
def test_a_new_study_of_a_deleted_ones_name_starts_afresh(tmp_path: Path) -> None:
    study = write_tiny_study(tmp_path, trials=1, budget=BUDGET)
    url = f"sqlite:///{tmp_path / 'tiny.db'}"
    assert run("search", study).exit_code == 0
    before = artifact_files(tmp_path / "tiny.weights", url, "tiny")
    assert before
    assert run("studies", study, "--delete", "tiny", "--yes").exit_code == 0
    assert run("search", study).exit_code == 0
    again = optuna.load_study(study_name="tiny", storage=url)
    assert [t.number for t in again.trials] == [0]
    after = artifact_files(tmp_path / "tiny.weights", url, "tiny")
    assert after and not any(path.exists() for path in before)


def test_mistakes_get_one_line(tmp_path: Path) -> None:
    study = write_tiny_study(tmp_path)
    url = f"sqlite:///{tmp_path / 'tiny.db'}"
    one_line_error(run("studies"), "--storage URL", STORAGE_VARIABLE, "study file")
    one_line_error(run("studies", "--storage", "nonsense"), "is not a URL")
    one_line_error(run("studies", "--storage", "sqlite://"), "in-memory")
    one_line_error(run("studies", "--yes"), "--yes confirms --delete NAME")
    one_line_error(run("studies", "--storage", url, "--delete", "tiny"), "no study named 'tiny'")
    missing = run("studies", study)  # never searched: no storage file yet
    assert missing.exit_code == 1 and "no studies in" in missing.stderr, missing.output
    assert "does not exist" in missing.stderr and not (tmp_path / "tiny.db").exists()
    optuna.create_study(storage=url, study_name="other")
    unknown = one_line_error(run("studies", study, "--delete", "tiny", "--yes"), "no study")
    assert "its studies: other" in unknown
    optuna.delete_study(study_name="other", storage=url)
    empty = run("studies", study)
    assert empty.exit_code == 1 and "no studies in" in empty.stderr


def test_a_space_is_read_beside_its_study_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "studies"
    (folder / "spaces").mkdir(parents=True)
    study = write_tiny_study(folder, space="spaces/tiny.yaml")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    missing = one_line_error(run("show", study), "cannot read search space")
    assert f"{folder.resolve() / 'spaces' / 'tiny.yaml'}: no such file" in missing
    assert "relative space: is read from the study file's folder" in missing
    (folder / "spaces" / "tiny.yaml").write_text(
        "name: tiny\nfixed: {architecture.family: mlp, architecture.widths: [8]}\n"
    )
    one_line_error(run("show", study), "no study named 'tiny'")  # the file was read
