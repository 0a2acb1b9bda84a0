"""Trial weights as Optuna artifacts: listed on their trials, exported without retraining, in
a folder or an S3 bucket; studies from before artifacts still export; deleting a study's files
removes its artifacts and checkpoints and nothing of another study's."""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path
from typing import Any

import optuna
import pytest
import sqlalchemy
from botocore.exceptions import ClientError
from conftest import write_tiny_study
from optuna.artifacts import Boto3ArtifactStore, get_all_artifact_meta
from optuna.trial import TrialState
from safetensors.torch import load
from typer.testing import CliRunner

from metasearch.cli import app
from metasearch.commands import exporting
from metasearch.errors import SpecError
from metasearch.search import load_study_file, open_for_reading, run_study
from metasearch.search.weights import (
    artifact_store,
    delete_study_files,
    load_trial_weights,
    study_files,
)


def write_study(folder: Path, **fields: Any) -> Path:
    return write_tiny_study(folder, **({"budget": {"iterations": 20, "eval_tasks": 4}} | fields))


def stored(path: Path) -> tuple[optuna.Study, optuna.storages.BaseStorage]:
    config = load_study_file(path)
    storage = open_for_reading(config.storage)
    return optuna.load_study(study_name=config.name, storage=storage), storage


@pytest.fixture
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for variable in ("METASEARCH_ARTIFACTS", "METASEARCH_WEIGHTS", "METASEARCH_STORAGE"):
        monkeypatch.delenv(variable, raising=False)


def no_retraining(*args: object, **kwargs: object) -> None:
    raise AssertionError("export meta-trained the trial again")


@pytest.mark.slow
@pytest.mark.usefixtures("clean_environment")
def test_weights_are_artifacts_of_their_trials_and_export_needs_no_retraining(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_study(tmp_path, trials=2, artifacts="store")  # relative to the study file
    assert CliRunner().invoke(app, ["search", str(path)]).exit_code == 0
    study, storage = stored(path)
    for trial in study.trials:
        (meta,) = get_all_artifact_meta(trial, storage=storage)
        assert meta.filename == f"trial-{trial.number}.safetensors"
        record = trial.user_attrs["weights"]
        assert meta.artifact_id == record["artifact_id"]
        data = (tmp_path / "store" / meta.artifact_id).read_bytes()  # the dashboard's layout
        assert hashlib.sha256(data).hexdigest() == record["sha256"]
    assert not list((tmp_path / "store").glob(".*.partial"))

    monkeypatch.setattr(exporting, "evaluate", no_retraining)
    best = min(study.trials, key=lambda t: t.value)
    result = CliRunner().invoke(app, ["export", str(path), "--out", str(tmp_path / "learner")])
    assert result.exit_code == 0, result.output
    exported = load((tmp_path / "learner" / "weights.safetensors").read_bytes())
    artifact = load((tmp_path / "store" / best.user_attrs["weights"]["artifact_id"]).read_bytes())
    assert exported.keys() == artifact.keys()
    assert all(exported[name].equal(artifact[name]) for name in artifact)


@pytest.mark.slow
@pytest.mark.usefixtures("clean_environment")
def test_a_damaged_artifact_is_never_taken_for_the_trials_weights(tmp_path: Path) -> None:
    path = write_study(tmp_path)
    run_study(load_study_file(path))
    study, _ = stored(path)
    files = study_files(load_study_file(path).storage, study)
    trial = study.trials[0]
    assert load_trial_weights(files, trial) is not None
    artifact = tmp_path / "tiny.weights" / trial.user_attrs["weights"]["artifact_id"]
    data = artifact.read_bytes()
    artifact.write_bytes(data[:-1] + bytes([data[-1] ^ 0xFF]))
    assert load_trial_weights(files, trial) is None
    artifact.unlink()
    assert load_trial_weights(files, trial) is None


@pytest.mark.slow
@pytest.mark.usefixtures("clean_environment")
def test_a_study_from_before_artifacts_still_exports_its_weights(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_study(tmp_path)
    run_study(load_study_file(path))
    study, _ = stored(path)
    trial = study.trials[0]
    artifact = tmp_path / "tiny.weights" / trial.user_attrs["weights"]["artifact_id"]
    old = tmp_path / "tiny.weights" / "tiny" / study.user_attrs["study_uuid"]
    old.mkdir(parents=True)
    artifact.rename(old / "trial-0.safetensors")  # the old layout, and the old record
    record = {"file": "trial-0.safetensors", "sha256": trial.user_attrs["weights"]["sha256"]}
    engine = sqlalchemy.create_engine(f"sqlite:///{tmp_path / 'tiny.db'}")
    with engine.begin() as connection:  # a finished trial's attributes are Optuna's to keep
        connection.execute(
            sqlalchemy.text(
                "UPDATE trial_user_attributes SET value_json = :record "
                "WHERE trial_id = :trial AND key = 'weights'"
            ),
            {"record": json.dumps(record), "trial": trial._trial_id},
        )
    engine.dispose()

    monkeypatch.setattr(exporting, "evaluate", no_retraining)
    result = CliRunner().invoke(app, ["export", str(path), "--out", str(tmp_path / "learner")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "learner" / "weights.safetensors").is_file()


@pytest.mark.slow
def test_the_old_variable_gets_one_line_saying_what_to_set(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("METASEARCH_ARTIFACTS", raising=False)
    monkeypatch.setenv("METASEARCH_WEIGHTS", str(tmp_path / "weights"))
    result = CliRunner().invoke(app, ["search", str(write_study(tmp_path))])
    lines = result.stderr.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == 1, result.output
    assert f"set METASEARCH_ARTIFACTS={tmp_path / 'weights'}" in lines[0]


@pytest.mark.parametrize(
    ("location", "words"),
    [
        ("s3://", "is not s3://BUCKET"),
        ("s3://bucket/prefix", "is not s3://BUCKET"),
        ("gs://bucket", "unknown artifact store"),
    ],
)
def test_an_artifact_store_that_cannot_be_is_refused(location: str, words: str) -> None:
    with pytest.raises(SpecError, match=words):
        artifact_store(location)


class FakeS3:
    """The three calls of an S3 client that Optuna's Boto3ArtifactStore makes, in memory."""

    def __init__(self) -> None:
        self.objects: dict[tuple[str, str], bytes] = {}

    def upload_fileobj(self, body: io.BytesIO, bucket: str, key: str) -> None:
        self.objects[bucket, key] = body.read()

    def get_object(self, Bucket: str, Key: str) -> dict[str, Any]:  # noqa: N803
        if (Bucket, Key) not in self.objects:
            raise ClientError({"Error": {"Code": "NoSuchKey"}}, "GetObject")
        return {"Body": io.BytesIO(self.objects[Bucket, Key])}

    def delete_object(self, Bucket: str, Key: str) -> None:  # noqa: N803
        self.objects.pop((Bucket, Key), None)


@pytest.mark.slow
@pytest.mark.usefixtures("clean_environment")
def test_weights_go_to_a_bucket_and_checkpoints_stay_in_a_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    s3 = FakeS3()
    monkeypatch.setattr("boto3.client", lambda service, **kwargs: s3)
    monkeypatch.setenv("METASEARCH_ARTIFACTS", "s3://study-weights")
    path = write_study(tmp_path, trials=2, checkpoint_every=5)
    run_study(load_study_file(path), n_trials=1)
    calls = iter(range(10_000))
    run_study(load_study_file(path), stop=lambda: next(calls) == 3)  # trial 1 checkpointed
    study, storage = stored(path)
    files = study_files(load_study_file(path).storage, study)
    assert files is not None and isinstance(files.store, Boto3ArtifactStore)
    assert files.folder.parent.parent == tmp_path / "tiny.weights"
    assert any(files.checkpoints.iterdir())
    complete = study.get_trials(states=(TrialState.COMPLETE,))
    assert complete and s3.objects
    for trial in complete:
        assert ("study-weights", trial.user_attrs["weights"]["artifact_id"]) in s3.objects
        assert load_trial_weights(files, trial) is not None
    assert not list((tmp_path / "tiny.weights").glob("*-*-*"))  # no artifact in the folder

    delete_study_files(load_study_file(path).storage, storage, "tiny")
    assert not s3.objects and not files.folder.exists()


@pytest.mark.slow
@pytest.mark.usefixtures("clean_environment")
def test_deleting_a_studys_files_keeps_those_of_another_in_the_same_store(
    tmp_path: Path,
) -> None:
    storage_url = f"sqlite:///{tmp_path / 'shared.db'}"
    kept_path = write_study(tmp_path, stem="kept", name="kept", storage=storage_url)
    gone_path = write_study(
        tmp_path, stem="gone", name="gone", storage=storage_url, trials=2, checkpoint_every=5
    )
    run_study(load_study_file(kept_path))
    run_study(load_study_file(gone_path), n_trials=1)
    calls = iter(range(10_000))
    run_study(load_study_file(gone_path), stop=lambda: next(calls) == 3)  # trial 1 checkpointed
    storage = open_for_reading(storage_url)
    kept = optuna.load_study(study_name="kept", storage=storage)
    gone = optuna.load_study(study_name="gone", storage=storage)
    gone_files = study_files(storage_url, gone)
    assert gone_files is not None and any(gone_files.checkpoints.iterdir())
    store = tmp_path / "shared.weights"
    kept_ids = {t.user_attrs["weights"]["artifact_id"] for t in kept.trials}
    gone_ids = {
        t.user_attrs["weights"]["artifact_id"] for t in gone.trials if "weights" in t.user_attrs
    }
    assert gone_ids and {p.name for p in store.iterdir() if p.is_file()} == kept_ids | gone_ids

    delete_study_files(storage_url, storage, "gone")
    assert {p.name for p in store.iterdir() if p.is_file()} == kept_ids
    assert not gone_files.folder.exists()
    kept_files = study_files(storage_url, kept)
    assert all(load_trial_weights(kept_files, t) is not None for t in kept.trials)
