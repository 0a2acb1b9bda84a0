"""Shared fixtures: real data sets come from METASEARCH_DATA, never from a path in the code."""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch

from metasearch.tasks import ClassificationSource, omniglot


@pytest.fixture(autouse=True)
def _deterministic() -> None:
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def data_root() -> Path:
    root = os.environ.get("METASEARCH_DATA")
    if not root or not (Path(root) / "omniglot" / "omniglot-py").is_dir():
        pytest.skip("set METASEARCH_DATA to the folder holding omniglot/omniglot-py")
    return Path(root)


@pytest.fixture(scope="session")
def omniglot_5way(data_root: Path) -> ClassificationSource:
    return omniglot(data_root, ways=5, shots=1, query_shots=5)


@pytest.fixture
def fresh_postgres() -> Iterator[Callable[[], str]]:
    """Makes empty databases on the server ``METASEARCH_TEST_POSTGRES`` names (skips without
    one) and drops them after the test."""
    server = os.environ.get("METASEARCH_TEST_POSTGRES")
    if not server:
        pytest.skip("set METASEARCH_TEST_POSTGRES to a PostgreSQL URL (.ci/run does)")
    import sqlalchemy

    engine = sqlalchemy.create_engine(server, isolation_level="AUTOCOMMIT")
    made: list[str] = []

    def make() -> str:
        name = f"fresh_{uuid.uuid4().hex[:12]}"
        with engine.connect() as connection:
            connection.execute(sqlalchemy.text(f"CREATE DATABASE {name}"))
        made.append(name)
        return server.rsplit("/", 1)[0] + f"/{name}"

    yield make
    with engine.connect() as connection:
        for name in made:
            connection.execute(sqlalchemy.text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
    engine.dispose()


def mounted_tmpfs(mount: Path, options: str) -> Iterator[Path]:
    """A tmpfs of its own at ``mount`` with mount ``options`` (needs root; skips elsewhere),
    unmounted lazily afterwards, since an in-process run may still hold a file open there."""
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(mount)], capture_output=True
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a file system here: {done.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "--lazy", str(mount)], check=True)
