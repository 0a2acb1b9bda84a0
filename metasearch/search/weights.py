"""Meta-learned weights of finished trials, kept beside the study so export needs no retraining.

Each complete trial's tensors go to ``<weights dir>/<study>/<study uuid>/trial-<N>.safetensors``
and its in-training checkpoints under ``.../checkpoints/``. The study's UUID (user attribute
``study_uuid``, given at creation) keeps a new study that reuses an old one's name from ever
reading the old one's files. The trial records the file's name and SHA-256 (user attribute
``weights``), so a stale or damaged file is never mistaken for the trial's own. The folder is
``<stem>.weights`` beside an SQLite or journal file, else ``./<study name>.weights``; on several
machines, put it on a shared file system (``METASEARCH_WEIGHTS``). Study names are names, not
paths, so nothing is written outside these folders.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import optuna
from safetensors.torch import load, save
from torch import Tensor

from metasearch.errors import SpecError
from metasearch.learners import Learner
from metasearch.search.storage import parse

WEIGHTS_VARIABLE = "METASEARCH_WEIGHTS"
IDENTITY = "study_uuid"
"""The study user attribute holding its UUID."""


def check_study_name(name: str) -> None:
    """Refuses a study name that is not a plain name: it names folders of weights."""
    if name in (".", "..") or any(c in name for c in "/\\\0"):
        raise SpecError(
            f"invalid study name {name!r}: a name, without '/', '\\' or '..'; "
            "say where files go with storage: or METASEARCH_WEIGHTS"
        )


def weights_dir(storage_url: str, study: optuna.Study) -> Path | None:
    """Where the weights and checkpoints of ``study``'s trials live; None for a study in memory
    or from before studies had a UUID (its weights are not kept)."""
    check_study_name(study.study_name)
    identity = study.user_attrs.get(IDENTITY)
    location = parse(storage_url)
    if location.in_memory or not identity:
        return None
    if os.environ.get(WEIGHTS_VARIABLE):
        base = Path(os.environ[WEIGHTS_VARIABLE])
    elif location.file is not None:
        base = location.file.with_suffix(".weights")
    else:
        base = Path(f"{study.study_name}.weights")
    return base / study.study_name / identity


def save_trial_weights(directory: Path, trial: optuna.Trial, learner: Learner) -> None:
    """Writes the learner's tensors, durably and under their final name only once whole, and
    records them on ``trial``. A write that fails (a full disk) leaves nothing behind."""
    data = save({n: t.detach().cpu().contiguous() for n, t in learner.state_tensors().items()})
    directory.mkdir(parents=True, exist_ok=True)
    name = f"trial-{trial.number}.safetensors"
    partial = directory / f".{name}.{os.getpid()}.partial"
    try:
        with partial.open("wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(partial, directory / name)
    finally:
        partial.unlink(missing_ok=True)
    folder = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(folder)  # the rename itself survives a crash
    finally:
        os.close(folder)
    trial.set_user_attr("weights", {"file": name, "sha256": hashlib.sha256(data).hexdigest()})


def load_trial_weights(
    directory: Path | None, trial: optuna.trial.FrozenTrial
) -> dict[str, Tensor] | None:
    """The trial's tensors, or None where they were not kept or no longer match the record."""
    record = trial.user_attrs.get("weights")
    if directory is None or not record:
        return None
    path = directory / record["file"]
    if not path.is_file():
        return None
    data = path.read_bytes()
    if hashlib.sha256(data).hexdigest() != record["sha256"]:
        return None
    return load(data)


def delete_study_files(storage_url: str, study: optuna.Study) -> Path | None:
    """Removes every file ``study`` owns: its trials' weights, their checkpoints and those of
    its retrainings. Called while the study is still stored (it names its files), before it is
    deleted. Returns the folder removed, None where the study kept none. Folders above it that
    this leaves empty go too, except ``METASEARCH_WEIGHTS`` itself."""
    if not study.user_attrs.get(IDENTITY):  # not made by metasearch: it kept no files
        return None
    folder = weights_dir(storage_url, study)
    if folder is None or not folder.exists():
        return None
    shutil.rmtree(folder)
    keep = Path(os.environ[WEIGHTS_VARIABLE]) if os.environ.get(WEIGHTS_VARIABLE) else None
    for parent in (folder.parent, folder.parent.parent):  # <study name>, then the base
        if parent == keep or any(parent.iterdir()):
            break
        parent.rmdir()
    return folder
