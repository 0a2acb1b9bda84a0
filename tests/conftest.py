"""Shared fixtures: real data sets come from METASEARCH_DATA, never from a path in the code."""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch
import yaml

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


INNER_LR = {"inner.lr": {"type": "float", "low": 1e-3, "high": 0.1, "log": True}}
META_LR = {"outer.meta_lr": {"type": "float", "low": 1e-3, "high": 1e-2, "log": True}}


def write_tiny_study(
    folder: Path,
    *,
    stem: str = "tiny",
    name: str = "tiny",
    dimensions: dict | None = None,
    **fields: object,
) -> Path:
    """``folder/<stem>.yaml``: a study of tiny first-order MLP learners on sinusoid tasks on the
    CPU, searching ``dimensions`` (default: the inner and meta learning rates); ``fields``
    set or override the study file's top-level fields."""
    study = {
        "name": name,
        "task": {"source": "sinusoid"},
        "space": {
            "name": "tiny",
            "fixed": {
                "architecture.family": "mlp",
                "architecture.widths": [8],
                "outer.algorithm": "fomaml",
                "inner.steps": 1,
                "outer.meta_batch_size": 4,
            },
            "dimensions": dimensions or INNER_LR | META_LR,
        },
        "sampler": {"name": "random"},
        "device": "cpu",
    } | fields
    path = folder / f"{stem}.yaml"
    path.write_text(yaml.safe_dump(study, sort_keys=False))
    return path
