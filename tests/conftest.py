"""Shared fixtures: real data sets come from METASEARCH_DATA, never from a path in the code."""

from __future__ import annotations

import os
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
