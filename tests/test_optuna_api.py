"""metasearch uses Optuna's public API only, so that an Optuna release cannot break it by moving
a private module."""

from __future__ import annotations

import re
from pathlib import Path

PRIVATE = re.compile(r"optuna\.[a-z_.]*\._")
"""A dotted path into Optuna that passes through a name with a leading underscore."""


def test_no_private_optuna_module_is_imported() -> None:
    package = Path(__file__).parents[1] / "metasearch"
    found = [
        f"{path.relative_to(package.parent)}:{number}: {line.strip()}"
        for path in sorted(package.rglob("*.py"))
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if PRIVATE.search(line)
    ]
    assert not found, "\n".join(found)
    assert PRIVATE.search("from optuna.storages._heartbeat import x")  # the check can fail
