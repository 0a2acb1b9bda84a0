"""Pieces every command shares: which storage, which study."""

from __future__ import annotations

import os
from pathlib import Path

import optuna

from metasearch.errors import MetasearchError
from metasearch.search.storage import MissingStudyError, open_for_reading
from metasearch.search.study import StudyConfig, load_study_file
from metasearch.search.weights import check_study_name

STORAGE_VARIABLE = "METASEARCH_STORAGE"


def study_storage(config: StudyConfig, flag: str | None) -> str:
    """The storage URL: the flag, else ``$METASEARCH_STORAGE``, else the study file's."""
    storage = flag or os.environ.get(STORAGE_VARIABLE) or config.storage
    assert storage is not None  # load_study_file fills in the SQLite default
    return storage


def storage_of(study_file: Path | None, flag: str | None) -> str:
    """The storage URL for a command that needs no study file: that of ``study_file`` where one
    is given (:func:`study_storage`), else the flag, else ``$METASEARCH_STORAGE``."""
    if study_file is not None:
        return study_storage(load_config(study_file), flag)
    storage = flag or os.environ.get(STORAGE_VARIABLE)
    if not storage:
        raise MetasearchError(
            f"which storage? pass --storage URL, set ${STORAGE_VARIABLE}, or name a study file "
            "for the storage it uses"
        )
    return storage


def load_config(study_file: Path) -> StudyConfig:
    """The study file, checked; its name must be a name (it names folders)."""
    config = load_study_file(study_file)
    check_study_name(config.name)
    return config


def load_existing_study(config: StudyConfig, storage: str) -> optuna.Study:
    """The study as stored, for reading: a clear error, and nothing created, where the storage
    or the study does not exist yet."""
    try:
        return optuna.load_study(study_name=config.name, storage=open_for_reading(storage))
    except (KeyError, MissingStudyError) as error:
        where = f" ({error})" if isinstance(error, MissingStudyError) else ""
        raise MetasearchError(
            f"no study named {config.name!r} in its storage yet{where}; run "
            f"'metasearch search {config.path or 'STUDY.yaml'}' first"
        ) from None
