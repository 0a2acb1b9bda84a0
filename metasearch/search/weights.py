"""Meta-learned weights of finished trials, kept as Optuna artifacts so export needs no
retraining and the dashboard lists them; checkpoints of running trials, kept in a folder.

Each complete trial's tensors are uploaded as ``trial-<N>.safetensors`` with
:func:`optuna.artifacts.upload_artifact`; the trial records the artifact's ID and the tensors'
SHA-256 (user attribute ``weights``), so a missing or damaged artifact is never mistaken for the
trial's own. The artifact store is, first found: ``$METASEARCH_ARTIFACTS``, the study file's
``artifacts:``, else the folder ``<stem>.weights`` beside an SQLite or journal file, else
``./<study name>.weights``. A folder is a :class:`FileSystemArtifactStore` that writes each
artifact under a temporary name and renames it once whole and durable; ``s3://BUCKET`` is
Optuna's :class:`~optuna.artifacts.Boto3ArtifactStore` (credentials as boto3 finds them,
``AWS_ENDPOINT_URL`` for another S3 service). With several machines, give every worker the
same store: a shared folder or a bucket.

Checkpoints are not artifacts: one is written every ``checkpoint_every`` meta-iterations and only
the last counts, while an artifact is immutable, so each would add a file to the store and a
record to the study storage, to be deleted again. They stay in the folder
``<local folder>/<study>/<study uuid>/checkpoints/`` (the store's folder, or the default folder
where the store is a bucket), written by rename so that a kill never tears the last good one.
The study's UUID (user attribute ``study_uuid``, given at creation) keeps a new study that
reuses an old one's name from ever resuming the old one's checkpoints; artifacts are tied to
their trials by ID and need no such care. Studies from before artifacts keep their weights in
that same study folder (``trial-<N>.safetensors``), where they are still read.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import optuna
from optuna.artifacts import (
    Boto3ArtifactStore,
    FileSystemArtifactStore,
    download_artifact,
    get_all_artifact_meta,
    upload_artifact,
)
from optuna.artifacts.exceptions import ArtifactNotFound
from safetensors import SafetensorError
from safetensors.torch import load, save
from torch import Tensor

from metasearch.errors import SpecError
from metasearch.learners import Learner
from metasearch.search.storage import parse

ARTIFACTS_VARIABLE = "METASEARCH_ARTIFACTS"
OLD_VARIABLE = "METASEARCH_WEIGHTS"
IDENTITY = "study_uuid"
"""The study user attribute holding its UUID."""
_BUCKET = re.compile(r"^s3://([a-z0-9][a-z0-9.\-]{1,61}[a-z0-9])/?$")


def check_study_name(name: str) -> None:
    """Refuses a study name that is not a plain name: it names folders of checkpoints."""
    if name in (".", "..") or any(c in name for c in "/\\\0"):
        raise SpecError(
            f"invalid study name {name!r}: a name, without '/', '\\' or '..'; "
            f"say where files go with storage: or {ARTIFACTS_VARIABLE}"
        )


class AtomicFileSystemStore(FileSystemArtifactStore):
    """Optuna's folder store (same layout: one file per artifact ID, so optuna-dashboard's
    ``--artifact-dir`` reads it), except that an artifact appears under its ID only once
    written whole and synced: a crash or a full disk leaves no torn artifact behind."""

    def __init__(self, base_path: Path) -> None:
        super().__init__(base_path)
        self.base = base_path

    def write(self, artifact_id: str, content_body: BinaryIO) -> None:
        if Path(artifact_id).name != artifact_id or artifact_id.startswith("."):
            raise ValueError(f"invalid artifact id {artifact_id!r}")
        self.base.mkdir(parents=True, exist_ok=True)
        partial = self.base / f".{artifact_id}.partial"
        try:
            with partial.open("wb") as file:
                shutil.copyfileobj(content_body, file)
                file.flush()
                os.fsync(file.fileno())
            os.replace(partial, self.base / artifact_id)
        finally:
            partial.unlink(missing_ok=True)
        _sync_folder(self.base)


@dataclass(frozen=True)
class StudyFiles:
    """Where one study's files live: the artifact store of its trials' weights, and the
    folder of its checkpoints (and of weights from before artifacts)."""

    store: AtomicFileSystemStore | Boto3ArtifactStore
    folder: Path
    where: str
    """The store as the user gave it, for messages."""

    def __str__(self) -> str:
        return self.where

    @property
    def checkpoints(self) -> Path:
        return self.folder / "checkpoints"


def artifact_location(study_artifacts: str | None = None) -> str | None:
    """The store the user named: ``$METASEARCH_ARTIFACTS``, else the study file's field."""
    if os.environ.get(OLD_VARIABLE) and not os.environ.get(ARTIFACTS_VARIABLE):
        raise SpecError(
            f"{OLD_VARIABLE} was renamed: set {ARTIFACTS_VARIABLE}={os.environ[OLD_VARIABLE]} "
            "instead (the same folder: weights stored there before are still read)"
        )
    return os.environ.get(ARTIFACTS_VARIABLE) or study_artifacts


def bucket_of(location: str) -> str | None:
    """The bucket of ``s3://BUCKET``, None for a folder; ``ValueError`` saying what is wrong
    for anything else."""
    if location.startswith("s3://"):
        match = _BUCKET.match(location)
        if match is None:
            raise ValueError(
                f"the artifact store {location!r} is not s3://BUCKET (a bucket name, no path: "
                "Optuna keeps artifacts at the bucket's top level)"
            )
        return match.group(1)
    if "://" in location:
        raise ValueError(f"unknown artifact store {location!r}; give a folder or s3://BUCKET")
    return None


def artifact_store(location: str) -> AtomicFileSystemStore | Boto3ArtifactStore:
    """The store a folder path or ``s3://BUCKET`` names."""
    try:
        bucket = bucket_of(location)
    except ValueError as error:
        raise SpecError(str(error)) from None
    if bucket is None:
        return AtomicFileSystemStore(Path(location))
    try:
        return Boto3ArtifactStore(bucket)
    except ImportError:
        raise SpecError(
            f"the artifact store {location} needs boto3: pip install 'metasearch[s3]'"
        ) from None


def study_files(
    storage_url: str, study: optuna.Study, study_artifacts: str | None = None
) -> StudyFiles | None:
    """Where ``study``'s files live (``study_artifacts``: the study file's ``artifacts:``);
    None for a study in memory or from before studies had a UUID (nothing is kept)."""
    check_study_name(study.study_name)
    identity = study.user_attrs.get(IDENTITY)
    location = parse(storage_url)
    if location.in_memory or not identity:
        return None
    if location.file is not None:
        default = location.file.with_suffix(".weights")
    else:
        default = Path(f"{study.study_name}.weights")
    named = artifact_location(study_artifacts)
    store = artifact_store(named or str(default))
    base = store.base if isinstance(store, AtomicFileSystemStore) else default
    return StudyFiles(store, base / study.study_name / identity, named or str(default))


def save_trial_weights(files: StudyFiles, trial: optuna.Trial, learner: Learner) -> None:
    """Uploads the learner's tensors as the trial's artifact and records them on ``trial``
    once stored. A failed upload (a full disk) records nothing; Optuna may have listed the
    artifact's name on the trial already, which then fails or is retried."""
    data = save({n: t.detach().cpu().contiguous() for n, t in learner.state_tensors().items()})
    with tempfile.TemporaryDirectory(prefix="metasearch-") as staging:
        path = Path(staging) / f"trial-{trial.number}.safetensors"
        path.write_bytes(data)
        artifact_id = upload_artifact(
            artifact_store=files.store, file_path=str(path), study_or_trial=trial
        )
    record = {"artifact_id": artifact_id, "sha256": hashlib.sha256(data).hexdigest()}
    trial.set_user_attr("weights", record)


def load_trial_weights(
    files: StudyFiles | None, trial: optuna.trial.FrozenTrial
) -> dict[str, Tensor] | None:
    """The trial's tensors, or None where they were not kept or no longer match the record."""
    record = trial.user_attrs.get("weights")
    if files is None or not record:
        return None
    if "artifact_id" in record:
        data = _download(files, record["artifact_id"])
    else:  # a study from before artifacts: a file in the study's folder
        path = files.folder / record["file"]
        data = path.read_bytes() if path.is_file() else None
    if data is None or hashlib.sha256(data).hexdigest() != record["sha256"]:
        return None
    try:
        return load(data)
    except SafetensorError:
        return None


def delete_study_files(
    storage_url: str,
    storage: optuna.storages.BaseStorage,
    study_name: str,
    study_artifacts: str | None = None,
) -> Path | None:
    """Removes the artifacts and checkpoints of the study ``study_name`` in ``storage`` (opened
    from ``storage_url``; ``study_artifacts``: the study file's ``artifacts:``) and returns the
    study's folder, None where it kept no files. Call it before the study is deleted from its
    storage: the storage lists which artifacts are the study's. Raises ``KeyError`` where the
    storage holds no such study."""
    study = optuna.load_study(study_name=study_name, storage=storage)
    files = study_files(storage_url, study, study_artifacts)
    if files is None:
        return None
    ids = {meta.artifact_id for meta in get_all_artifact_meta(study)}
    for trial in study.get_trials(deepcopy=False):
        ids |= {meta.artifact_id for meta in get_all_artifact_meta(trial, storage=storage)}
    for artifact_id in sorted(ids):
        with contextlib.suppress(ArtifactNotFound):  # a failed upload, or an interrupted delete
            files.store.remove(artifact_id)
    shutil.rmtree(files.folder, ignore_errors=True)
    return files.folder


def _download(files: StudyFiles, artifact_id: str) -> bytes | None:
    with tempfile.TemporaryDirectory(prefix="metasearch-") as staging:
        path = Path(staging) / "weights.safetensors"
        try:
            download_artifact(
                artifact_store=files.store, file_path=str(path), artifact_id=artifact_id
            )
        except ArtifactNotFound:
            return None
        return path.read_bytes()


def _sync_folder(folder: Path) -> None:
    """Makes a rename in ``folder`` survive a crash."""
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
