"""Study storages from URLs: SQLite, PostgreSQL (or any SQLAlchemy database), Optuna's journal.

- ``sqlite:///path/study.db``: one machine, the default (a file beside the study file);
  ``sqlite://`` keeps the study in memory, for one process;
- ``postgresql://user:password@host:5432/db``: many machines (psycopg 3 is the driver where the
  URL names none; ``postgres://`` is taken as ``postgresql://``);
- ``journal:/shared/path/study.log``: Optuna's journal file, for a shared file system without a
  database server;
- ``grpc://host:port``: Optuna's gRPC storage proxy (``metasearch storage-proxy``) in front of a
  database, for hundreds of workers: they hold one connection each to the proxy instead of
  several to the database.

Every command opens its storage here: :func:`creating` for the commands that run a study, which
may create the storage, its schema and the study; :func:`open_for_reading` for those that only
look, which create nothing. Creation holds a lock, so that workers starting together on a fresh
storage do not race on the schema or the study: an advisory lock on PostgreSQL, a lock on the
folder of an SQLite or journal file, a lock study through the proxy. Every failure to open is
a :class:`StorageError` of one line that names the problem, with :func:`redact` hiding any
password in what the user typed.

Database storages keep heartbeats: a running trial whose worker stopped beating for
``GRACE_PERIOD`` seconds is marked failed by the next worker that looks, and retried, with its
parameters and intermediate values, as a new trial (Optuna's
``RetryHeartbeatStaleTrialCallback``). The journal storage and the proxy pass no heartbeats:
trials of a worker that died there stay RUNNING.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import random
import re
import time
import warnings
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import optuna
import sqlalchemy
from optuna.exceptions import DuplicatedStudyError, StorageInternalError
from optuna.storages import (
    GrpcStorageProxy,
    JournalStorage,
    RDBStorage,
    RetryHeartbeatStaleTrialCallback,
)
from optuna.storages.journal import JournalFileBackend
from optuna.study import StudyDirection
from sqlalchemy.engine import make_url
from sqlalchemy.exc import NoSuchModuleError, SQLAlchemyError
from sqlalchemy.pool import NullPool

from metasearch.errors import StorageError

HEARTBEAT_INTERVAL = 5
"""Seconds between a running trial's heartbeats."""
GRACE_PERIOD = 30
"""Seconds without a heartbeat after which a running trial counts as dead."""
MAX_RETRIES = 3
"""How often a trial whose worker died is retried."""
CONNECT_TIMEOUT = 10
"""Seconds to wait for a database server to answer."""
SQLITE_BUSY_TIMEOUT = 60
"""Seconds a SQLite connection waits for another one's lock before it gives up."""
JOURNAL_PREFIX = "journal:"
PROXY_PREFIX = "grpc://"
LOCK_STUDY = "metasearch:creating-a-study"
"""The study that stands for the creation lock through a storage proxy, while it exists."""
LOCK_TIMEOUT = 60
"""Seconds after which a lock study is taken as left by a process that died holding it."""
IN_MEMORY = ("sqlite://", "sqlite:///:memory:")
EXAMPLES = (
    "sqlite:///path/study.db, postgresql://user:password@host:5432/db or journal:/path/study.log"
)
FULL = (errno.ENOSPC, errno.EDQUOT, errno.EROFS)
"""Write errors of a full or read-only file system: no trial can be stored until they are fixed."""
_LOCK_KEY = zlib.crc32(b"metasearch: creating a study") - 2**31
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*://")
_QUERY_PASSWORD = re.compile(r"(?i)(password=)[^&;\s]*")


class MissingStudyError(StorageError):
    """The storage holds no study yet; commands say which one to run first."""


@dataclass(frozen=True)
class Location:
    """A parsed storage URL: what kind of storage, the URL to open it by and its file, if any."""

    typed: str
    kind: Literal["memory", "sqlite", "journal", "database", "proxy"]
    url: str
    file: Path | None = None

    @property
    def shown(self) -> str:
        """The URL as typed, without its password."""
        return redact(self.typed)

    @property
    def in_memory(self) -> bool:
        return self.kind == "memory"


def parse(typed: str) -> Location:
    """Checks a storage URL without opening it; raises :class:`StorageError` saying what is
    wrong with it."""
    if not typed.strip():
        raise StorageError(f"the storage URL is empty; use {EXAMPLES}")
    if typed.startswith(JOURNAL_PREFIX):
        path = typed.removeprefix(JOURNAL_PREFIX).removeprefix("//")
        if not path:
            raise StorageError("a journal storage needs a file: journal:/shared/path/study.log")
        return Location(typed, "journal", path, Path(path))
    if typed in IN_MEMORY:
        return Location(typed, "memory", typed)
    if typed.startswith(PROXY_PREFIX):
        _proxy_address(typed)
        return Location(typed, "proxy", typed)
    if not _SCHEME.match(typed):
        raise StorageError(f"the storage {redact(typed)!r} is not a URL; use {EXAMPLES}")
    userinfo = _userinfo(typed.split("://", 1)[1])
    if userinfo is not None and "@" in userinfo:
        raise StorageError(
            f"the storage URL {redact(typed)} has more than one '@'; write an '@' in the user "
            "name or password as %40"
        )
    try:
        url = make_url(with_driver(typed))
    except ValueError:  # SQLAlchemy's ArgumentError is one, as is a port that is not a number
        raise StorageError(
            f"cannot read the storage URL {redact(typed)} (is the port a number?); use {EXAMPLES}"
        ) from None
    if url.get_backend_name() == "sqlite":
        if not url.database or url.database == ":memory:":
            return Location(typed, "memory", typed)
        return Location(typed, "sqlite", url.render_as_string(False), Path(url.database))
    try:
        url.get_dialect().import_dbapi()
    except NoSuchModuleError:
        raise StorageError(
            f"unknown storage {url.drivername!r} in {redact(typed)}; use {EXAMPLES}"
        ) from None
    except ImportError as error:
        raise StorageError(
            f"the driver for {url.drivername} storages is not installed ({error.name or error}); "
            "install it, or use sqlite:///path/study.db or postgresql://"
        ) from None
    if not url.host and not url.database:
        raise StorageError(f"the storage URL {redact(typed)} names no server and no database")
    return Location(typed, "database", url.render_as_string(False))


def _proxy_address(typed: str) -> tuple[str, int]:
    """The host and port of a ``grpc://host:port`` URL."""
    host, colon, port = typed.removeprefix(PROXY_PREFIX).rstrip("/").rpartition(":")
    if not host or not colon or not port.isdigit() or not 0 < int(port) < 65536 or "/" in host:
        raise StorageError(
            f"the storage proxy URL {redact(typed)} is not grpc://host:port "
            "(where 'metasearch storage-proxy' listens)"
        )
    return host, int(port)  # an IPv6 host keeps its brackets: gRPC reads [::1]:port


def keeps_heartbeats(storage: str | optuna.storages.BaseStorage | None) -> bool:
    """Whether running trials in ``storage`` (a URL, a storage, or None: in memory) keep
    heartbeats: database storages opened here do (SQLite included); in-memory, journal and proxy
    storages do not."""
    if isinstance(storage, str):
        return parse(storage).kind in ("sqlite", "database")
    return isinstance(storage, RDBStorage) and storage.get_heartbeat_interval() is not None


def with_driver(url: str) -> str:
    """``postgresql://`` (or ``postgres://``) as ``postgresql+psycopg://``: psycopg 3 is the
    driver installed."""
    if url.startswith(("postgresql://", "postgres://")):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    return url


def redact(typed: str) -> str:
    """Anything typed as a storage URL, with what could be a password hidden: after the user
    name up to the last '@', a ``password=`` parameter, and a port that is not a number (a
    password whose '@' was forgotten)."""
    text = _QUERY_PASSWORD.sub(r"\1***", typed)
    scheme = _SCHEME.match(text)
    head, rest = (text[: scheme.end()], text[scheme.end() :]) if scheme else ("", text)
    if typed.startswith(JOURNAL_PREFIX) or head.startswith("sqlite"):
        return text  # a file path: nothing secret
    userinfo = _userinfo(rest)
    if userinfo is not None:
        user = userinfo.split(":", 1)[0]
        hidden = f"{user}:***" if ":" in userinfo else user
        return head + hidden + rest[len(userinfo) :]
    netloc, slash, path = rest.partition("/")
    host, colon, port = netloc.rpartition(":") if netloc.startswith("[") else netloc.partition(":")
    if colon and not port.isdigit():
        return head + host + ":***" + slash + path
    return text


def scrub(message: str, typed: str) -> str:
    """``message`` (from a driver) with every piece of ``typed`` that :func:`redact` hides
    replaced by ``***``."""
    shown = redact(typed)
    hidden = [piece for piece in re.split(r"[@:/?&=]", typed) if piece and piece not in shown]
    for piece in sorted(hidden, key=len, reverse=True):
        message = message.replace(piece, "***")
    return message


def _userinfo(rest: str) -> str | None:
    """What comes before the last '@' of a URL without its scheme, if it has one."""
    at = rest.rfind("@")
    return rest[:at] if at >= 0 else None


@contextlib.contextmanager
def creating(
    typed: str, heartbeat_interval: int = HEARTBEAT_INTERVAL, grace_period: int = GRACE_PERIOD
) -> Iterator[optuna.storages.BaseStorage]:
    """The storage ``typed`` names, its schema created where missing, while holding its creation
    lock; create or load studies in the ``with`` block. Storage errors there, too, become one
    :class:`StorageError`."""
    location = parse(typed)
    _check_writable(location)
    try:
        if location.kind == "proxy":
            proxy = _open(location, heartbeat_interval, grace_period, create=True)
            with _lock_study(proxy):
                yield proxy
            return
        with _creation_lock(location):
            yield _open(location, heartbeat_interval, grace_period, create=True)
    except (SQLAlchemyError, StorageInternalError, OSError) as error:
        raise StorageError(describe(error, location)) from None


def open_for_reading(typed: str) -> optuna.storages.BaseStorage:
    """The storage ``typed`` names, where it exists and holds Optuna's tables; creates nothing.
    Raises :class:`StorageError` (a :class:`MissingStudyError` where there is nothing yet)."""
    location = parse(typed)
    if location.in_memory:
        raise StorageError(
            f"the in-memory storage {typed} keeps no study after the run that made it; "
            "give a file, sqlite:///path/study.db"
        )
    if location.file is not None:
        _refuse_folder(location.file)
        if not location.file.exists():
            raise MissingStudyError(f"{location.file} does not exist")
    try:
        if location.kind == "database" and not _has_tables(location):
            raise MissingStudyError(f"{location.shown} holds no Optuna studies")
        return _open(location, HEARTBEAT_INTERVAL, GRACE_PERIOD, create=False)
    except (SQLAlchemyError, StorageInternalError, OSError) as error:
        raise StorageError(describe(error, location)) from None


@contextlib.contextmanager
def writing(typed: str) -> Iterator[None]:
    """Turns the storage errors of the block (a full disk, a lost server or proxy) into one
    :class:`StorageError`."""
    location = parse(typed)
    try:
        yield
    except (SQLAlchemyError, StorageInternalError) as error:
        raise StorageError(describe(error, location)) from None
    except OSError as error:
        if error.errno not in FULL:
            raise
        raise StorageError(unwritable(error)) from None
    except Exception as error:
        if location.kind != "proxy" or not callable(getattr(error, "details", None)):
            raise
        raise StorageError(  # a grpc.RpcError: the proxy stopped, or its database failed
            f"lost the storage proxy {location.shown} ({error.details()}); check that "
            "'metasearch storage-proxy' runs, then run again to resume"
        ) from None


def unwritable(error: OSError, where: object = None) -> str:
    """One line for a write to ``where`` (else the error's file) that failed on a full or
    read-only file system."""
    return _full(error.errno or errno.ENOSPC, error.filename or where or "the disk")


def describe(error: BaseException, location: Location) -> str:
    """One line saying why ``location`` could not be opened or written, with what to do."""
    where = location.file if location.file is not None else location.shown
    if isinstance(error, StorageInternalError) and error.__cause__ is not None:
        error = error.__cause__  # Optuna's wrapping of the database's error
    if isinstance(error, OSError) and error.errno in FULL:
        return _full(error.errno, where)
    message = str(getattr(error, "orig", None) or error).strip()
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    reason = scrub(lines[0] if lines else type(error).__name__, location.typed)
    reason = reason.split("FATAL:")[-1].strip()  # the server's words, without where it was
    lowered = message.lower()
    if "database or disk is full" in lowered:
        return _full(errno.ENOSPC, where)
    if "readonly database" in lowered or "read-only file system" in lowered:
        return _full(errno.EROFS, where)
    if "file is not a database" in lowered:
        return f"{where} is not an SQLite database; give another file for the study storage"
    if "password authentication failed" in lowered:
        return (
            f"the database server of {location.shown} refused the user name or password; "
            "check them in the storage URL"
        )
    if "connection refused" in lowered or "could not connect" in lowered:
        return (
            f"cannot reach the database server of {location.shown} (connection refused); "
            "check the host and port, and that the server runs"
        )
    return f"cannot open the study storage {location.shown}: {reason}"


def _full(number: int, where: object) -> str:
    """What to do about a full (``ENOSPC``, ``EDQUOT``) or read-only (``EROFS``) target."""
    if number == errno.EROFS:
        return f"cannot write to {where}: the file system is read-only; choose a writable place"
    return f"cannot write to {where}: no space left on the device; free some space and run again"


def _check_writable(location: Location) -> None:
    """Refuses a file storage that cannot be created where asked, before anything is written."""
    if location.file is None:
        return
    file, folder = location.file, location.file.parent
    _refuse_folder(file)
    if not folder.is_dir():
        raise StorageError(
            f"the folder {folder} of the study storage does not exist; create it or give "
            "another path"
        )
    target = file if file.exists() else folder
    if not os.access(target, os.W_OK):
        read_only = os.statvfs(folder).f_flag & os.ST_RDONLY
        raise StorageError(
            f"cannot write to {target}: "
            + ("the file system is read-only" if read_only else "permission denied")
            + "; choose a writable place for the study storage"
        )


def _refuse_folder(file: Path) -> None:
    if file.is_dir():
        raise StorageError(f"the study storage {file} is a folder; give a file")


@contextlib.contextmanager
def _creation_lock(location: Location) -> Iterator[None]:
    """Held while a storage's schema and studies are created: an advisory lock on PostgreSQL,
    a lock on the folder of a file storage (not the file itself, which SQLite locks its own way)."""
    if location.file is not None:
        folder = os.open(location.file.parent, os.O_RDONLY)
        try:
            try:
                fcntl.flock(folder, fcntl.LOCK_EX)
            except OSError as error:  # a shared file system without locks: go on without
                if error.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.EINVAL):
                    raise
            yield
        finally:
            os.close(folder)  # releases the lock
    elif location.kind == "database" and make_url(location.url).get_backend_name() == "postgresql":
        engine = _engine(location)
        try:
            with engine.connect() as connection:
                connection.execute(sqlalchemy.text(f"SELECT pg_advisory_lock({_LOCK_KEY})"))
                try:
                    yield
                finally:
                    connection.execute(sqlalchemy.text(f"SELECT pg_advisory_unlock({_LOCK_KEY})"))
        finally:
            engine.dispose()
    else:
        yield


@contextlib.contextmanager
def _lock_study(storage: optuna.storages.BaseStorage) -> Iterator[None]:
    """The creation lock through a storage proxy, which passes no database lock: the study
    ``LOCK_STUDY``, which one process at a time can create. One left by a process that died
    holding it is deleted after ``LOCK_TIMEOUT`` seconds."""
    deadline = time.monotonic() + LOCK_TIMEOUT
    while True:
        try:
            lock = storage.create_new_study([StudyDirection.MINIMIZE], LOCK_STUDY)
            break
        except DuplicatedStudyError:
            if time.monotonic() > deadline:
                with contextlib.suppress(KeyError):
                    storage.delete_study(storage.get_study_id_from_name(LOCK_STUDY))
                deadline = time.monotonic() + LOCK_TIMEOUT
            time.sleep(random.uniform(0.02, 0.1))
    try:
        yield
    finally:
        with contextlib.suppress(KeyError):  # broken by another as left
            storage.delete_study(lock)


def _open(
    location: Location, heartbeat_interval: int, grace_period: int, *, create: bool
) -> optuna.storages.BaseStorage:
    if location.in_memory:
        return optuna.storages.InMemoryStorage()  # one process: SQLite in memory is one per thread
    if location.kind == "proxy":
        return _connect_proxy(location)
    if location.kind == "journal":
        _check_journal(location)
        return JournalStorage(JournalFileBackend(location.url))
    with warnings.catch_warnings():  # Optuna marks the retry callback experimental
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return RDBStorage(
            location.url,
            engine_kwargs=_engine_kwargs(location),
            heartbeat_interval=heartbeat_interval,
            grace_period=grace_period,
            heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(
                max_retry=MAX_RETRIES, inherit_intermediate_values=True
            ),
            skip_table_creation=not create,
        )


def _connect_proxy(location: Location) -> GrpcStorageProxy:
    """A client of the storage proxy, once the proxy answers."""
    host, port = _proxy_address(location.typed)
    try:
        with warnings.catch_warnings():  # Optuna marks the proxy experimental
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            proxy = GrpcStorageProxy(host=host, port=port)
    except ImportError as error:
        raise StorageError(
            f"the storage proxy needs {error.name or 'grpcio'}: pip install grpcio protobuf"
        ) from None
    try:
        proxy.wait_server_ready(timeout=CONNECT_TIMEOUT)
    except ConnectionError:
        proxy.close()
        raise StorageError(
            f"cannot reach the storage proxy {location.shown} within {CONNECT_TIMEOUT} s; check "
            "the host and port, and that 'metasearch storage-proxy' runs there"
        ) from None
    return proxy


def _check_journal(location: Location) -> None:
    """Refuses a file whose first line is not an Optuna journal record (Optuna would skip it as
    a torn write, and append to the file)."""
    assert location.file is not None
    if not location.file.is_file():
        return
    with location.file.open("rb") as file:
        first = file.readline()
    try:
        record = json.loads(first) if first else {"op_code": None}
    except ValueError:
        record = None
    if not isinstance(record, dict) or "op_code" not in record:
        raise StorageError(
            f"{location.file} is not an Optuna journal file; give another file for the journal "
            "storage"
        )


def _has_tables(location: Location) -> bool:
    engine = _engine(location)
    try:
        return sqlalchemy.inspect(engine).has_table("studies")
    finally:
        engine.dispose()


def _engine(location: Location) -> sqlalchemy.Engine:
    """An engine of single connections, for a look before the storage opens."""
    return sqlalchemy.create_engine(location.url, poolclass=NullPool, **_engine_kwargs(location))


def _engine_kwargs(location: Location) -> dict[str, object]:
    backend = make_url(location.url).get_backend_name()
    if backend == "postgresql":
        return {"connect_args": {"connect_timeout": CONNECT_TIMEOUT}}
    if backend == "sqlite":  # a reader (`show`, a report) holding the file must not fail a worker
        return {"connect_args": {"timeout": SQLITE_BUSY_TIMEOUT}}
    return {}
