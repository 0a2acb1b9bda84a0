"""Study storages from URLs: SQLite, PostgreSQL (or any SQLAlchemy database), Optuna's journal.

- ``sqlite:///path/study.db``: one machine, the default (a file beside the study file);
- ``postgresql://user:password@host:5432/db``: many machines (psycopg 3 is the driver where the
  URL names none);
- ``journal:/shared/path/study.log``: Optuna's journal file, for a shared file system without a
  database server.

Database storages keep heartbeats: a running trial whose worker stopped beating for
``GRACE_PERIOD`` seconds is marked failed by the next worker that looks, and retried, with its
parameters and intermediate values, as a new trial (Optuna's
``RetryHeartbeatStaleTrialCallback``). The
journal storage has no heartbeats: trials of a worker that died there stay RUNNING.
"""

from __future__ import annotations

import warnings

import optuna
from optuna.storages import JournalStorage, RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.storages.journal import JournalFileBackend
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from metasearch.errors import SpecError

HEARTBEAT_INTERVAL = 5
"""Seconds between a running trial's heartbeats."""
GRACE_PERIOD = 30
"""Seconds without a heartbeat after which a running trial counts as dead."""
MAX_RETRIES = 3
"""How often a trial whose worker died is retried."""
JOURNAL_PREFIX = "journal:"


def open_storage(
    url: str, heartbeat_interval: int = HEARTBEAT_INTERVAL, grace_period: int = GRACE_PERIOD
) -> optuna.storages.BaseStorage:
    """The storage ``url`` names; raises :class:`SpecError` saying why it cannot be opened."""
    if url.startswith(JOURNAL_PREFIX):
        path = url.removeprefix(JOURNAL_PREFIX).removeprefix("//")
        if not path:
            raise SpecError("a journal storage needs a file: journal:/shared/path/study.log")
        try:
            return JournalStorage(JournalFileBackend(path))
        except OSError as error:
            raise SpecError(f"cannot open the journal {path}: {error.strerror}") from None
    try:
        with warnings.catch_warnings():  # Optuna marks the retry callback experimental
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return RDBStorage(
                with_driver(url),
                heartbeat_interval=heartbeat_interval,
                grace_period=grace_period,
                heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(
                    max_retry=MAX_RETRIES, inherit_intermediate_values=True
                ),
            )
    except Exception as error:  # SQLAlchemy's errors for bad URLs and unreachable databases
        reason = str(getattr(error, "orig", None) or error).strip().splitlines()[0]
        raise SpecError(f"cannot open the study storage {redact(url)}: {reason}") from None


def with_driver(url: str) -> str:
    """``postgresql://`` as ``postgresql+psycopg://``: psycopg 3 is the driver installed."""
    if url.startswith(("postgresql://", "postgres://")):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    return url


def redact(storage: str) -> str:
    """A storage URL with its password hidden, for messages and records."""
    try:
        return make_url(storage).render_as_string(hide_password=True)
    except ArgumentError:
        return storage
