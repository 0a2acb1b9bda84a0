"""Pieces every command shares: which storage, which study."""

from __future__ import annotations

import os
from pathlib import Path

import optuna

from metasearch.errors import MetasearchError
from metasearch.search.study import StudyConfig, load_study_file

STORAGE_VARIABLE = "METASEARCH_STORAGE"


def study_storage(config: StudyConfig, flag: str | None) -> str:
    """The storage URL: the flag, else ``$METASEARCH_STORAGE``, else the study file's."""
    storage = flag or os.environ.get(STORAGE_VARIABLE) or config.storage
    assert storage is not None  # load_study_file fills in the SQLite default
    return storage


def load_config(study_file: Path) -> StudyConfig:
    return load_study_file(study_file)


def load_existing_study(config: StudyConfig, storage: str) -> optuna.Study:
    """The study as stored; a clear error where it was never run."""
    try:
        return optuna.load_study(study_name=config.name, storage=storage)
    except KeyError:
        raise MetasearchError(
            f"no study named {config.name!r} in its storage yet; run "
            f"'metasearch search {config.path or 'STUDY.yaml'}' first"
        ) from None
