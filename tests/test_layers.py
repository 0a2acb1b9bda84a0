"""The package's layers import only downward: a module imports its own layer or a lower one."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "metasearch"

ROOT = PACKAGE.parent

# Lowest first; the modules of one tuple form one layer.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("errors", "reading", "devices", "registry", "spec", "version"),
    ("tasks",),
    ("learners",),
    ("algorithms",),
    ("engines",),
    ("evaluation",),
    ("darts",),
    ("search",),
    ("export",),
    ("report",),
    ("commands", "cli", "__main__", ""),
)
RANK = {name: rank for rank, names in enumerate(LAYERS) for name in names}


def _part(module: str) -> str:
    """The top-level part of ``metasearch.<part>...``; ``""`` for the package root."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _layer(module: str) -> int:
    return RANK[_part(module)]


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(tree: ast.AST) -> set[str]:
    """Every ``metasearch.*`` module imported anywhere in ``tree``, functions included."""
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "metasearch":  # ``from metasearch import registry``
                found.update(f"metasearch.{alias.name}" for alias in node.names)
            else:
                found.add(node.module)
    return {name for name in found if name == "metasearch" or name.startswith("metasearch.")}


def test_imports_go_only_downward() -> None:
    offending = []
    for path in sorted(PACKAGE.rglob("*.py")):
        module = _module_name(path)
        for target in sorted(_imports(ast.parse(path.read_text(), str(path)))):
            if _layer(target) > _layer(module):
                offending.append(f"{module} -> {target}")
    assert not offending, "imports from a higher layer:\n" + "\n".join(offending)


def test_exported_learners_do_not_need_the_search() -> None:
    """Using an exported learner goes through the layers below the search only."""
    allowed = {*LAYERS[0], "tasks", "learners", "algorithms", "engines", "evaluation", "export"}
    offending = [
        f"{_module_name(path)} -> {target}"
        for path in sorted((PACKAGE / "export").rglob("*.py"))
        for target in sorted(_imports(ast.parse(path.read_text(), str(path))))
        if _part(target) not in allowed
    ]
    assert not offending, "export imports beyond its allowed layers:\n" + "\n".join(offending)


def test_every_layer_is_known() -> None:
    names = {path.stem if path.is_file() else path.name for path in PACKAGE.iterdir()}
    modules = {name for name in names if not name.startswith(("_", ".")) and name != "py.typed"}
    assert modules <= set(RANK), sorted(modules - set(RANK))


GENOTYPE = {
    "normal": [[["sep_conv_3x3", 0], ["skip_connect", 1]], [["dil_conv_3x3", 2], ["conv_5x5", 0]]],
    "reduce": [[["max_pool_3x3", 0], ["avg_pool_3x3", 1]], [["conv_3x3", 2], ["skip_connect", 1]]],
    "layout": ["reduce", "normal"],
}
BUILD_CELLS = """
import json, sys
from metasearch.learners import build_learner
from metasearch.spec import LearnerSpec
architecture = {"family": "cells", "widths": [4], "genotype": json.loads(sys.argv[1])}
spec = LearnerSpec.from_dict({"architecture": architecture})
build_learner(spec, (1, 12, 12), 2, "classification")
print("optuna" in sys.modules)
"""


@pytest.mark.slow
def test_a_cells_learner_builds_without_optuna() -> None:
    """Using a learner of derived cells needs the learners layer only, not the search's Optuna."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    run = subprocess.run(
        [sys.executable, "-c", BUILD_CELLS, json.dumps(GENOTYPE)],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    assert run.stdout.split() == ["False"], run.stdout
