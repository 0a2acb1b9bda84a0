"""Bad storages through every command that opens one: wrong and malformed URLs, unreachable
servers (a closed port on 127.0.0.1 only), missing and read-only folders, files that are no
database or journal, SQLite in memory. Each gets a non-zero exit, one line on stderr that names
the problem, no traceback, no file created anywhere, and no password in the output.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from conftest import INNER_LR, mounted_tmpfs, write_tiny_study
from typer.testing import CliRunner

from metasearch.cli import app
from metasearch.search.storage import redact, scrub

SECRET = "hunter2SECRET"
POSTGRES = os.environ.get("METASEARCH_TEST_POSTGRES")
SECRETS = (SECRET, POSTGRES.split("@")[0].rsplit(":", 1)[1]) if POSTGRES else (SECRET,)
CLOSED = "127.0.0.1:9"  # the discard port: nothing listens on loopback there


def write_study(folder: Path) -> Path:
    budget = {"iterations": 5, "eval_tasks": 4}
    return write_tiny_study(folder, dimensions=INNER_LR, budget=budget, trials=2)


@dataclass(frozen=True)
class Case:
    """A storage URL (built in the test's folder) and the words its error must hold."""

    url: Callable[[Path], str]
    expected: str
    reading: str | None = None  # what show, report, export and dashboard say, where it differs


def _not_a_database(folder: Path) -> str:
    (folder / "notes.db").write_text("these are notes, not a database\n")
    return f"sqlite:///{folder / 'notes.db'}"


def _not_a_journal(folder: Path) -> str:
    (folder / "notes.log").write_text("these are notes, not a journal\n")
    return f"journal:{folder / 'notes.log'}"


def _a_folder(folder: Path) -> str:
    (folder / "study.db").mkdir()
    return f"sqlite:///{folder / 'study.db'}"


CASES: dict[str, Case] = {
    "garbage": Case(lambda _: "garbage", "not a URL"),
    "no-scheme-password": Case(lambda _: f"user:{SECRET}@db-host/studies", "not a URL"),
    "postgres-empty": Case(lambda _: "postgres://", "names no server"),
    "postgresql-empty": Case(lambda _: "postgresql+psycopg://", "names no server"),
    "two-ats": Case(lambda _: f"postgresql://u:x@{SECRET}@{CLOSED}/db", "more than one '@'"),
    "port-not-number": Case(lambda _: f"postgresql://u:{SECRET}@127.0.0.1:port/db", "port"),
    "password-as-port": Case(lambda _: f"postgresql://u:{SECRET}/db", "port"),
    "closed-port": Case(lambda _: f"postgresql://u:{SECRET}@{CLOSED}/db", "connection refused"),
    "postgres-alias-closed": Case(lambda _: f"postgres://u:{SECRET}@{CLOSED}/db", "cannot reach"),
    "password-parameter": Case(
        lambda _: f"postgresql://u@{CLOSED}/db?password={SECRET}", "connection refused"
    ),
    "unknown-scheme": Case(lambda _: f"http://u:{SECRET}@{CLOSED}/db", "unknown storage"),
    "missing-driver": Case(lambda _: f"mysql://u:{SECRET}@{CLOSED}/db", "driver"),
    "sqlite-missing-folder": Case(
        lambda folder: f"sqlite:///{folder / 'missing' / 'study.db'}",
        "does not exist",
    ),
    "sqlite-folder-not-file": Case(_a_folder, "is a folder"),
    "sqlite-not-a-database": Case(_not_a_database, "not an SQLite database"),
    "journal-not-a-journal": Case(_not_a_journal, "not an Optuna journal"),
    "journal-missing-folder": Case(
        lambda folder: f"journal:{folder / 'missing' / 'study.log'}", "does not exist"
    ),
    "journal-empty": Case(lambda _: "journal:", "needs a file"),
}
if POSTGRES:
    CASES["wrong-password"] = Case(
        lambda _: _with_password(POSTGRES, SECRET), "refused the user name or password"
    )
    CASES["missing-database"] = Case(
        lambda _: POSTGRES.rsplit("/", 1)[0] + "/missing_database", "does not exist"
    )


def _with_password(url: str, password: str) -> str:
    scheme, rest = url.split("://", 1)
    user = rest.split(":", 1)[0]
    return f"{scheme}://{user}:{password}@{rest.rsplit('@', 1)[1]}"


def command(name: str, study: Path, url: str | None, folder: Path) -> list[str]:
    extra = {"report": ["--out", str(folder / "report")], "export": ["--out", str(folder / "out")]}
    storage = [] if url is None else ["--storage", url]
    return [name, str(study), *extra.get(name, []), *storage]


COMMANDS = ("search", "worker", "show", "report", "export", "dashboard")
READING = ("show", "report", "export", "dashboard")


def files_under(*folders: Path) -> set[Path]:
    return {path for folder in folders for path in folder.rglob("*")}


def assert_one_clean_line(result: Any, expected: str, *secrets: str) -> str:
    assert result.exit_code != 0, result.output
    assert result.stdout == "", result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error:") and "Traceback" not in result.stderr, result.stderr
    assert expected in lines[0], lines[0]
    for secret in secrets:
        assert secret not in result.output, result.output
    return lines[0]


@pytest.fixture
def folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The test's folder, also the working directory (stray files would land there)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("METASEARCH_STORAGE", raising=False)
    monkeypatch.delenv("METASEARCH_ARTIFACTS", raising=False)
    return tmp_path


@pytest.mark.parametrize("name", COMMANDS)
@pytest.mark.parametrize("case", CASES, ids=list(CASES))
def test_a_bad_storage_gets_one_line_and_leaves_nothing(name: str, case: str, folder: Path) -> None:
    study = write_study(folder)
    url = CASES[case].url(folder)
    before = files_under(folder)
    result = CliRunner().invoke(app, command(name, study, url, folder), catch_exceptions=False)
    expected = CASES[case].reading if name in READING and CASES[case].reading else None
    assert_one_clean_line(result, expected or CASES[case].expected, *SECRETS)
    assert files_under(folder) == before


@pytest.mark.parametrize("name", ("worker", *READING))
def test_sqlite_in_memory_is_refused_where_it_cannot_hold_the_study(
    name: str, folder: Path
) -> None:
    study = write_study(folder)
    result = CliRunner().invoke(app, command(name, study, "sqlite://", folder))
    assert_one_clean_line(result, "memory")
    assert files_under(folder) == {study}


def test_search_with_several_workers_refuses_sqlite_in_memory(folder: Path) -> None:
    study = write_study(folder)
    arguments = ["search", str(study), "--storage", "sqlite://", "--workers", "2"]
    assert_one_clean_line(CliRunner().invoke(app, arguments), "memory")
    assert files_under(folder) == {study}


@pytest.mark.parametrize("name", READING)
@pytest.mark.parametrize("kind", ("default", "sqlite", "journal"))
def test_reading_a_study_never_searched_says_so_and_creates_nothing(
    name: str, kind: str, folder: Path
) -> None:
    study = write_study(folder)
    urls = {"sqlite": f"sqlite:///{folder / 'other.db'}", "journal": f"journal:{folder / 'j.log'}"}
    result = CliRunner().invoke(app, command(name, study, urls.get(kind), folder))
    assert_one_clean_line(result, "metasearch search")
    assert files_under(folder) == {study}


@pytest.fixture
def read_only(tmp_path: Path) -> Iterator[Path]:
    """A folder on a small file system mounted read-only (needs root; skips elsewhere)."""
    yield from mounted_tmpfs(tmp_path / "read-only", "ro,size=1m")


@pytest.mark.parametrize("kind", ("sqlite", "journal"))
@pytest.mark.parametrize("name", COMMANDS)
def test_a_read_only_folder_gets_one_line(
    name: str, kind: str, read_only: Path, folder: Path
) -> None:
    study = write_study(folder)
    url = f"sqlite:///{read_only / 'study.db'}" if kind == "sqlite" else f"journal:{read_only}/j"
    result = CliRunner().invoke(app, command(name, study, url, folder))
    line = assert_one_clean_line(result, "read-only" if name not in READING else "does not exist")
    assert str(read_only) in line
    assert not any(read_only.iterdir())


@pytest.mark.parametrize(
    "typed",
    [
        f"postgresql://user:{SECRET}@host:5432/db",
        f"postgresql://user:{SECRET}@@host/db",
        f"postgresql://user:x@{SECRET}@host/db",
        f"postgresql://user:{SECRET}/db",
        f"postgresql://user:{SECRET}",
        f"user:{SECRET}@host/db",
        f"postgresql://host/db?user=u&password={SECRET}",
        f"mysql+pymysql://user:{SECRET}@[::1]:3306/db",
        f"{SECRET}@host",
    ],
)
def test_redaction_hides_the_password_of_anything_typed(typed: str) -> None:
    shown = redact(typed)
    assert SECRET not in shown and "***" in shown or typed.startswith(SECRET)
    message = f"could not translate host name '{typed.split('@')[-1]}' for {typed}"
    assert SECRET not in scrub(message, typed) or typed.startswith(SECRET)


def test_redaction_keeps_file_paths_and_users_whole() -> None:
    assert redact("sqlite:////data/a@b:c.db") == "sqlite:////data/a@b:c.db"
    assert redact("journal:/shared/x:y@z.log") == "journal:/shared/x:y@z.log"
    assert redact("postgresql://metasearch@db:5432/m") == "postgresql://metasearch@db:5432/m"


@pytest.mark.parametrize("name", READING)
def test_reading_an_empty_postgresql_database_creates_no_tables(
    name: str, folder: Path, fresh_postgres: Callable[[], str]
) -> None:
    import sqlalchemy

    url = fresh_postgres()
    study = write_study(folder)
    result = CliRunner().invoke(app, command(name, study, url, folder))
    assert_one_clean_line(result, "metasearch search", *SECRETS)
    engine = sqlalchemy.create_engine(url)
    assert sqlalchemy.inspect(engine).get_table_names() == []
    engine.dispose()
